# ipa-ops: `make drill` (the DR and alerting rehearsal) and `make test` (every check).
# Every target installs what it needs first; the install steps skip what is present.

STACK ?= dev
PY := .venv/bin/python

.PHONY: help setup setup-python setup-services setup-prometheus-tools setup-helm setup-checkov image-rootfs image-tar servers-rootfs lint unit test render generate drill bench clean

help:
	@echo "make drill               the local disaster-recovery and alerting rehearsal (main job)"
	@echo "make test                install what is needed, then run every check"
	@echo "make unit                lint and every test that needs no service, in parallel (after make setup)"
	@echo "make render STACK=dev    offline render of a stack into build/<stack>/"
	@echo "make generate            write the settings' schema, stack defaults and README table, and the metrics doc's tables"
	@echo "make bench               backup/restore benchmark (slow; not part of make test)"
	@echo "make image-rootfs        the backup image's userland in build/image-rootfs (scripts/in-image.sh runs in it)"
	@echo "make image-tar           build/image-rootfs.tar, the input of backup_image/Dockerfile"

setup-python:
	bash scripts/setup/python.sh

setup-services:
	bash scripts/setup/services.sh

setup-prometheus-tools:
	bash scripts/setup/prometheus-tools.sh

# Helm renders the charts (offline/charts.py); checkov scans the renders (tests/test_checkov.py).
setup-helm: setup-python
	bash scripts/setup/helm.sh

setup-checkov:
	bash scripts/setup/checkov.sh

image-rootfs: setup-python
	bash scripts/image-rootfs.sh

image-tar: setup-python
	bash scripts/image-rootfs.sh --tar

servers-rootfs: image-rootfs
	bash scripts/servers-rootfs.sh

setup: setup-python setup-services setup-prometheus-tools setup-helm setup-checkov image-rootfs servers-rootfs

lint: setup-python
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# The fast loop: what `make test` runs minus the tests marked `services` (see pyproject.toml).
unit: lint
	$(PY) -m pytest -m "not services" -n auto

test: setup lint
	$(PY) -m pytest

render: setup-python setup-helm
	$(PY) -m offline.render --stack $(STACK)

generate: setup-python
	$(PY) -m offline.generate

drill: setup
	$(PY) -m offline.render --stack dev
	$(PY) -m drill

bench: setup
	$(PY) bench/backup_bench.py

clean:
	rm -rf build
