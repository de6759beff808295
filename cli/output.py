"""How the CLI prints: rich tables and colour on a terminal, plain text when piped, JSON on request.

Commands build cells as `str` or `rich.text.Text` (text with a style); on a terminal they are
drawn by rich, otherwise the styles are dropped and tables become aligned plain columns
that `grep`/`awk` can read. `--json` prints the API's own JSON, unchanged.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["Cell", "Output", "ago", "local_time", "parse_time", "percent", "plain_table", "shorten", "styled"]

Cell = str | Text


def styled(text: str, style: str) -> Text:
    return Text(text, style=style)


def _plain(cell: Cell) -> str:
    text = cell.plain if isinstance(cell, Text) else str(cell)
    return " ".join(text.split()) if "\n" in text else text


class Output:
    """One command's output. `Output(json_mode)`; write with `json`, `fields`, `table`, `line`."""

    def __init__(self, json_mode: bool = False) -> None:
        self.json_mode = json_mode
        # Created per command, so it binds the stdout of this run (CliRunner swaps it).
        self.console = Console(highlight=False, soft_wrap=True)
        self.err_console = Console(stderr=True, highlight=False, soft_wrap=True)
        self.rich = self.console.is_terminal and not json_mode

    # ------------------------------------------------------------------ JSON

    def json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    def json_line(self, data: Any) -> None:
        """One JSON document per line (for streams such as `logs --follow --json`)."""
        sys.stdout.write(json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n")
        sys.stdout.flush()

    # ------------------------------------------------------------------ text

    def line(self, cell: Cell = "") -> None:
        if self.rich:
            self.console.print(cell)
        else:
            sys.stdout.write(_plain(cell) + "\n")
            sys.stdout.flush()

    def note(self, cell: Cell) -> None:
        """A remark for people (stderr), so stdout stays clean for pipes."""
        if self.err_console.is_terminal:
            self.err_console.print(cell)
        else:
            sys.stderr.write(_plain(cell) + "\n")
            sys.stderr.flush()

    def fields(self, rows: Sequence[tuple[str, Cell]], title: str | None = None) -> None:
        """A block of `name: value` lines."""
        if self.rich:
            table = Table(box=None, show_header=False, title=title, title_justify="left",
                          title_style="bold", padding=(0, 2, 0, 0))
            table.add_column(style="dim", no_wrap=True)
            table.add_column(overflow="fold")
            for name, value in rows:
                table.add_row(name, value)
            self.console.print(table)
            return
        if title:
            self.line(title)
        width = max((len(name) for name, _ in rows), default=0) + 1
        for name, value in rows:
            self.line(f"{name + ':':<{width}} {_plain(value)}")

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[Cell]], title: str | None = None) -> None:
        if self.rich:
            table = Table(*columns, box=box.SIMPLE_HEAD, title=title, title_justify="left",
                          title_style="bold", header_style="bold", show_edge=False)
            for row in rows:
                table.add_row(*row)
            self.console.print(table)
            return
        if title:
            self.line(title)
        for line in plain_table(columns, rows):
            self.line(line)

    def row_line(self, widths: Sequence[int], row: Sequence[Cell]) -> None:
        """One row of a table that is printed as it grows (e.g. `logs --follow`)."""
        if self.rich:
            text = Text()
            for index, (width, cell) in enumerate(zip(widths, row, strict=True)):
                piece = cell if isinstance(cell, Text) else Text(str(cell))
                piece = piece.copy()
                last = index == len(widths) - 1
                if not last:
                    piece.truncate(width, overflow="ellipsis", pad=True)
                    piece.append("  ")
                text.append_text(piece)
            self.console.print(text, no_wrap=True, overflow="ellipsis", crop=True)
        else:
            self.line("  ".join(_fit(_plain(cell), width, last=index == len(widths) - 1)
                                for index, (width, cell) in enumerate(zip(widths, row, strict=True))))


def _fit(text: str, width: int, *, last: bool) -> str:
    if last:
        return text
    if len(text) > width:
        text = text[: max(width - 1, 0)] + "…"
    return f"{text:<{width}}"


def plain_table(columns: Sequence[str], rows: Sequence[Sequence[Cell]]) -> list[str]:
    cells = [[column.upper() for column in columns]] + [[_plain(cell) for cell in row] for row in rows]
    widths = [max(len(row[index]) for row in cells) for index in range(len(columns))]
    return ["  ".join(cell if index == len(columns) - 1 else f"{cell:<{widths[index]}}"
                      for index, cell in enumerate(row)).rstrip() for row in cells]


# --------------------------------------------------------------------------- values

def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def local_time(value: str | None) -> str:
    """An API timestamp in local time, to the second; "-" when absent."""
    moment = parse_time(value)
    if moment is None:
        return value or "-"
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def ago(value: str | None, now: datetime | None = None) -> str:
    moment = parse_time(value)
    if moment is None:
        return "never"
    seconds = ((now or datetime.now(UTC)) - moment).total_seconds()
    if seconds < 0:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def percent(score: float | None) -> str:
    return "-" if score is None else f"{score * 100:.1f}%"


def shorten(text: str | None, width: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"
