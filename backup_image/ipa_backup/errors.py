"""Failures with a clear message and a distinct exit code (documented in README.md)."""

from __future__ import annotations

import signal


class BackupError(Exception):
    """A failure the tool explains; `exit_code` tells its class."""

    exit_code = 1


class ConfigError(BackupError):
    exit_code = 2


class SourceError(BackupError):
    """PostgreSQL or Redis could not be read (unreachable, authentication, dump failed, version)."""

    exit_code = 3


class StorageError(BackupError):
    """Blob storage could not be read or written."""

    exit_code = 4


class IntegrityError(BackupError):
    """A set is incomplete, missing or does not match its manifest."""

    exit_code = 5


class TargetError(BackupError):
    """A restore target refused (not empty) or the restore into it failed."""

    exit_code = 6


class NoBaseBackupError(IntegrityError):
    """pitr-restore: no complete base backup ends at or before the target time."""

    exit_code = 8


class WalGapError(IntegrityError):
    """pitr-restore: the WAL archive lacks a segment the recovery needs, or ends before the target."""

    exit_code = 9


class UnsupportedMajorError(TargetError):
    """The image has no PostgreSQL programs of the server's (or base backup's) major version."""

    exit_code = 10


class Interrupted(BaseException):
    """SIGTERM or SIGINT. Not an Exception, so that no `except Exception` on the way swallows it;
    the exit code is the shell's 128 + signal number (143 for SIGTERM, 130 for SIGINT)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")
