"""Open text in the user's editor ($VISUAL, else $EDITOR, else vi) and return what they saved."""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import tempfile

from smoltbot.cli.errors import CliError

__all__ = ["edit_text"]


def _editor() -> str:
    for name in ("VISUAL", "EDITOR"):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return "vi"


def edit_text(text: str, *, suffix: str = ".json") -> str | None:
    """The edited text, or None when the file was not saved or not changed.

    The editor command may carry arguments (`code --wait`), as in git; the file is private
    (mode 0600) and removed afterwards.
    """
    editor = _editor()
    fd, path = tempfile.mkstemp(prefix="smoltbot-", suffix=suffix)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        before = os.stat(path).st_mtime_ns
        try:
            completed = subprocess.run(f"{editor} {shlex.quote(path)}", shell=True, check=False)
        except OSError as error:
            raise CliError(f"could not run your editor {editor!r} ({error}); set EDITOR, "
                           "e.g. `export EDITOR=nano`") from None
        if completed.returncode != 0:
            hint = " (not found?)" if completed.returncode == 127 else ""
            raise CliError(f"your editor {editor!r} exited with code {completed.returncode}{hint}; "
                           "nothing was changed (set EDITOR to choose another)")
        with open(path, encoding="utf-8") as handle:
            edited = handle.read()
        if os.stat(path).st_mtime_ns == before and edited == text:
            return None
        return edited
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
