"""The components of the ipa-ops Pulumi program, one concern each."""
