"""Options several user commands take: where the API is (`--api`) and JSON output (`--json`)."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["ApiOption", "JsonOption"]

ApiOption = Annotated[
    str | None,
    typer.Option("--api", metavar="URL",
                 help="The smoltbot REST API (default: SMOLTBOT_API_URL, else the configured one, else the "
                      "local stack's)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of a table.")]
