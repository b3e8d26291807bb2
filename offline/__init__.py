"""Runs the Pulumi program without the Pulumi CLI or a cloud: Pulumi's own mocks, recording
every resource, used by the unit tests and by `make render`."""
