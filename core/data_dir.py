"""The data dir (`SMOLTBOT_HOME`) is private to the user who runs smoltbot.

It holds the database and its WAL, the hash secret, the service credential, the gateway's
spool of raw exchanges, logs and the CLI's config: all of it is readable by nobody else. The
directory and every directory in it are 0700 and every file 0600. Each entry point calls
`make_private` before anything else: it sets the process umask to 077, so whatever a service
creates later (SQLite's WAL and SHM, spool files, logs) is born private, and it tightens what an
older version or a looser umask left behind.

Secrets that every process of one installation must agree on are made by `read_or_create_secret`:
written whole to a private temporary file and then linked into place, so that two processes
starting at once agree on one value and nobody ever reads a half-written file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
from pathlib import Path

__all__ = [
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILE_MODE",
    "make_private",
    "read_or_create_secret",
    "restrict",
    "tighten",
]

logger = logging.getLogger(__name__)

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
_PRIVATE_UMASK = 0o077


def make_private(home: Path) -> None:
    """umask 077 for this process; `home` created 0700, or tightened (with its contents) when
    it exists. Call it at a process's entry point: the umask is process-wide."""
    os.umask(_PRIVATE_UMASK)
    home.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    tighten(home)


def tighten(home: Path) -> None:
    """chmod 0700 on `home` and the directories in it and 0600 on its files, where they are
    looser. Symbolic links are not followed; what we cannot change (another owner) is logged."""
    restrict(home, PRIVATE_DIR_MODE)
    for root, directories, files in os.walk(home, followlinks=False):
        for name in directories:
            restrict(Path(root) / name, PRIVATE_DIR_MODE)
        for name in files:
            restrict(Path(root) / name, PRIVATE_FILE_MODE)


def restrict(path: Path, mode: int = PRIVATE_FILE_MODE) -> None:
    """Takes from `path` every permission bit `mode` does not have (missing paths and symbolic
    links are left alone)."""
    try:
        info = path.lstat()
    except FileNotFoundError:  # removed meanwhile (a spool file acked by a running gateway)
        return
    if stat.S_ISLNK(info.st_mode) or stat.S_IMODE(info.st_mode) & ~mode == 0:
        return
    try:
        os.chmod(path, stat.S_IMODE(info.st_mode) & mode)
    except FileNotFoundError:
        return
    except OSError as error:
        logger.warning("cannot make %s private (mode %o): %s", path, mode, error.strerror or error)


def read_or_create_secret(path: Path, nbytes: int = 32) -> str:
    """The secret in `path` (a 0600 file in a 0700 directory), created as `nbytes` random bytes
    in hex when there is none. Safe when several processes do it at once: the one that links its
    file first wins and the others read that one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    if not path.exists():
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(nbytes) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):  # another process was first: use theirs
                os.link(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
    restrict(path, PRIVATE_FILE_MODE)
    value = path.read_text().strip()
    if not value:
        raise OSError(f"{path} is empty; delete it and restart every smoltbot service to make a new one")
    return value
