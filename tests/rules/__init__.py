"""promtool unit-test files of the rules (*.test.yaml) and the helper that runs them on a render."""
