"""Assertions shared by the CLI tests."""

from __future__ import annotations

from pathlib import Path

from typer.testing import Result


def assert_one_error_line(result: Result, *fragments: str) -> str:
    """Exit 1, nothing on stdout, exactly one `error: ...` line on stderr, no traceback."""
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output + result.stderr
    assert result.stdout == "", result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: "), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


def assert_nowhere(secret: str, *texts: str, under: Path | None = None) -> None:
    """The secret is in none of the texts, and in no file under `under`."""
    for text in texts:
        assert secret not in text
    if under is not None and under.exists():
        for path in under.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), f"credential written to {path}"


def fields_of(stdout: str) -> dict[str, str]:
    """The `name: value` lines of a plain-text (piped) field block."""
    fields = {}
    for line in stdout.splitlines():
        name, sep, value = line.partition(":")
        if sep and not line.startswith(" "):
            fields[name.strip()] = value.strip()
    return fields
