"""Exchanges the observer could not take, set aside on disk so that they stop blocking the rest.

The shipper retries an exchange the observer refuses or chokes on a bounded number of times;
after that its record (the encoded `IngestRequest`, as it was spooled) is written here, in
`SMOLTBOT_HOME/dead-letter` (0700, files 0600), next to a `.reason` file that says why. A
minimal record of the call goes to the observer in its place, so the call is still on record
as a failure. Nothing here is sent again automatically: an operator can inspect the files and
replay them once the cause is fixed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

__all__ = ["DeadLetters"]

logger = logging.getLogger(__name__)


class DeadLetters:
    """The dead-letter directory. `count` covers earlier runs too (files found at `open()`)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0
        self.write_failures = 0

    def open(self) -> int:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        self.count = sum(1 for _ in self.directory.glob("*.ingest"))
        return self.count

    def put(self, exchange_id: str, payload: bytes, reason: str) -> bool:
        """Writes the record and its reason; False (logged and counted) when the disk refuses."""
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            text = reason.encode("utf-8", "replace") + b"\n"
            _write_private(self.directory / f"{exchange_id}.reason", text)
            _write_private(self.directory / f"{exchange_id}.ingest", payload)
        except OSError as error:
            self.write_failures += 1
            logger.error("dead-letter: cannot write exchange %s (%s); its minimal record still goes out",
                         exchange_id, error)
            return False
        self.count += 1
        return True


def _write_private(path: Path, data: bytes) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
