"""ipa-ops: reads the stack settings once and wires the components. Nothing else happens here."""

import pulumi

from components.settings import load_settings

settings = load_settings()

pulumi.export("environment", settings.environment)
