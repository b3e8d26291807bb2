"""Builds a component's `<Name>Args` from the stack settings.

Each component takes only the settings it reads: its Args dataclass names them with the
`Settings` field names, so `args_from_settings` copies them across by name and the caller adds
whatever is derived (values built by pure functions, computed names).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, TypeVar

from components.settings import Settings

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

A = TypeVar("A", bound="DataclassInstance")


def args_from_settings(cls: type[A], settings: Settings, **derived: Any) -> A:
    """`cls` with every field that is not in `derived` read from the setting of the same name."""
    copied = {f.name: getattr(settings, f.name) for f in dataclasses.fields(cls) if f.name not in derived}
    return cls(**copied, **derived)
