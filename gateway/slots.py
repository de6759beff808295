"""Which spool and dead-letter directories a gateway process owns, when several share a data dir.

Several gateway processes can serve one port (`gateway_processes`, SO_REUSEPORT). Two of them
must never append to or ack the same spool segment, so each owns a *slot*: slot 0 is
`SMOLTBOT_HOME/spool` and `SMOLTBOT_HOME/dead-letter` (where a single gateway has always kept
them), slot n is `spool/<n>` and `dead-letter/<n>`. Ownership is an exclusive `flock` on
`<spool dir>/owner.lock`, taken at start on the lowest free slot and held until the process
ends. The kernel drops the lock when the process dies, however it dies (SIGKILL included), so
a free lock on a directory that still holds segments means its writer is gone: any gateway that
takes that lock may ship what is there (`Gateway` scans for such directories at start and
every few seconds). Nothing spooled is lost when the number of processes changes: a slot no
process claims any more is shipped by whichever process finds it first.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

__all__ = ["MAX_SLOTS", "SlotLock", "claim_slot", "dead_letter_directory", "free_slots_with_records",
           "spool_directory"]

#: More than any sensible number of gateway processes on one data dir; bounds the scans.
MAX_SLOTS = 256
_LOCK_NAME = "owner.lock"


def spool_directory(home: Path, slot: int) -> Path:
    return home / "spool" if slot == 0 else home / "spool" / str(slot)


def dead_letter_directory(home: Path, slot: int) -> Path:
    return home / "dead-letter" if slot == 0 else home / "dead-letter" / str(slot)


class SlotLock:
    """An exclusive hold on one slot's directories; `release()` (idempotent) gives it up."""

    def __init__(self, home: Path, slot: int, fd: int) -> None:
        self.home = home
        self.slot = slot
        self._fd: int | None = fd

    @property
    def spool_directory(self) -> Path:
        return spool_directory(self.home, self.slot)

    @property
    def dead_letter_directory(self) -> Path:
        return dead_letter_directory(self.home, self.slot)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor of the lock file drops the flock

    def __del__(self) -> None:
        self.release()


def try_slot(home: Path, slot: int) -> SlotLock | None:
    """The slot's lock if no other holder has it (in this process or any other), else None."""
    directory = spool_directory(home, slot)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(directory / _LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return SlotLock(home, slot, fd)


def claim_slot(home: Path) -> SlotLock:
    """The lowest free slot, held until released (or the process ends)."""
    for slot in range(MAX_SLOTS):
        lock = try_slot(home, slot)
        if lock is not None:
            return lock
    raise RuntimeError(f"all {MAX_SLOTS} gateway spool slots in {home} are held by running processes")


def _slots_on_disk(home: Path) -> list[int]:
    slots = [0]
    try:
        entries = list((home / "spool").iterdir())
    except FileNotFoundError:
        return []
    for entry in entries:
        if entry.name.isdigit() and 0 < int(entry.name) < MAX_SLOTS and entry.is_dir():
            slots.append(int(entry.name))
    return sorted(slots)


def free_slots_with_records(home: Path, *, exclude: set[int]) -> list[SlotLock]:
    """Slots whose owner is gone and whose spool still holds segments, each now locked by the
    caller (who ships them, then releases the lock)."""
    found: list[SlotLock] = []
    for slot in _slots_on_disk(home):
        if slot in exclude or not any(spool_directory(home, slot).glob("*.seg")):
            continue
        lock = try_slot(home, slot)
        if lock is not None:
            found.append(lock)
    return found
