"""Structured JSON logs, one object per line on stderr."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

LOG = logging.getLogger("ipa_backup")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        return json.dumps(entry, ensure_ascii=False, default=str)


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    LOG.handlers[:] = [handler]
    LOG.setLevel(level)
    LOG.propagate = False
    # The Azure SDK logs every HTTP request at INFO; keep only its warnings.
    logging.getLogger("azure").setLevel(logging.WARNING)


def info(msg: str, **fields: Any) -> None:
    LOG.info(msg, extra={"fields": fields})


def warning(msg: str, **fields: Any) -> None:
    LOG.warning(msg, extra={"fields": fields})


def error(msg: str, **fields: Any) -> None:
    LOG.error(msg, extra={"fields": fields})
