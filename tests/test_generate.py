"""`make generate`: the settings' defaults and the metrics contract's tables are written from their modules only."""

from __future__ import annotations

import pytest
import yaml

from offline.generate import SECTION_END, SECTION_START, GenerateError, outputs, stack_defaults, stack_file


def test_generated_files_are_current() -> None:
    stale = [path.name for path, text in outputs().items() if path.read_text() != text]
    assert not stale, f"{stale} differ from components/settings.py or components/metrics_contract.py: run `make generate`"


def _stack(above: str, section: str, below: str = "") -> str:
    return f"# header\nconfig:\n{above}{SECTION_START}\n{section}{SECTION_END}\n{below}"


def test_section_holds_the_defaults_of_keys_not_set_elsewhere() -> None:
    above = "  # prod needs a second region\n  ipa-ops:location: northeurope\n"
    below = "  ipa-ops:smtpPassword:\n    secure: AAABAKc2\n  azure-native:location: westeurope\n"
    # A stale default in the section is rewritten; the override and the secure value stay as written.
    text = stack_file(_stack(above, "  ipa-ops:location: westeurope\n  ipa-ops:backupSchedule: 0 * * * *\n", below))
    assert text.startswith("# header\nconfig:\n" + above + SECTION_START + "\n")
    assert text.endswith(SECTION_END + "\n" + below)
    config = yaml.safe_load(text)["config"]
    assert config["ipa-ops:location"] == "northeurope"
    assert config["ipa-ops:smtpPassword"] == {"secure": "AAABAKc2"}
    assert config["ipa-ops:backupSchedule"] == "*/30 * * * *"
    assert config["ipa-ops:claudeDefaultPricing"]["cacheWrite"] == 18.75
    assert set(stack_defaults()) <= set(config)
    assert text.count("ipa-ops:location") == 1


def test_refuses_to_drop_what_it_does_not_own() -> None:
    with pytest.raises(GenerateError, match="ipa-ops:smtpPassword"):
        stack_file(_stack("", "  ipa-ops:smtpPassword:\n    secure: AAABAKc2\n"))
    with pytest.raises(GenerateError, match="marker lines"):
        stack_file("config:\n  ipa-ops:location: westeurope\n")
