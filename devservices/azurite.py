"""Azurite (Azure Blob Storage emulator from npm, installed in .tools/azurite) on a free 127.0.0.1 port.

Usage::

    with azurite() as az:
        az.connection_string      # AZURE_STORAGE_CONNECTION_STRING for azure-storage-blob
        az.stop(); az.start()     # simulate an outage; data on disk survives a restart

Data lives in a private temp dir (or `in_memory=True`). Azurite's account name and key are the
fixed, publicly documented development ones; they are not secrets.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from devservices.process import TOOLS_DIR, ManagedProcess, ServiceError, free_port, require_binary

INSTALL_HINT = "run `bash scripts/setup/services.sh` (installs Azurite from npm into .tools/azurite)"
ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public; same for every Azurite install).
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class AzuriteServer:
    def __init__(self, tmp: Path, in_memory: bool) -> None:
        self.tmp = tmp
        self.in_memory = in_memory
        self.port = free_port()
        self.binary = require_binary(TOOLS_DIR / "azurite" / "node_modules" / ".bin" / "azurite-blob", INSTALL_HINT)
        self.process: ManagedProcess | None = None

    @property
    def blob_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={DEV_KEY};BlobEndpoint={self.blob_endpoint};"

    def start(self, timeout: float = 60.0) -> None:
        """(Re)start on the same port and data location."""
        if self.process is not None and self.process.running():
            return
        argv = [
            self.binary,
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(self.port),
            "--location",
            str(self.tmp / "data"),
            "--skipApiVersionCheck",
            "--loose",
            "--disableProductStyleUrl",
        ]
        if self.in_memory:
            argv.append("--inMemoryPersistence")
        self.process = ManagedProcess("azurite", argv, self.tmp / "azurite.log", cwd=self.tmp).start()
        self.process.wait_for_port(self.port, timeout=timeout)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def running(self) -> bool:
        return self.process is not None and self.process.running()


@contextmanager
def azurite(in_memory: bool = False, base_dir: Path | None = None) -> Iterator[AzuriteServer]:
    """Start Azurite's blob service; yield it; stop it and delete its data on exit."""
    tmp = Path(tempfile.mkdtemp(prefix="devservices-azurite-", dir=base_dir))
    server = AzuriteServer(tmp, in_memory)
    try:
        server.start()
        yield server
    except ServiceError:
        raise
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
