"""The CLI's one exception hierarchy, and the decorator that turns it into one line and exit 1.

Every user command raises `CliError` (or a subclass) with a message that says what went wrong
and what to do; `handles_errors` prints it as `error: <message>` on stderr and exits with
code 1. Nothing the user can cause ends in a traceback.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from pydantic import ValidationError

from smoltbot.core.settings import load_cli_settings

__all__ = ["ApiError", "CliError", "ConfigError", "NotInitialised", "fail", "handles_errors", "scrub"]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


class CliError(Exception):
    """A failure to report to the user as one line; `message` says what to do about it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(CliError):
    """The config file is unreadable, malformed, or a value given for it is invalid."""


class NotInitialised(ConfigError):
    """No agent is configured yet."""

    def __init__(self, path: object) -> None:
        super().__init__(f"smoltbot is not initialised: no agent in {path}; run `smoltbot init` first")


class ApiError(CliError):
    """The API could not be reached, or answered with an error.

    `status` is the HTTP status (None when there was no answer); `reason` the API's
    UPPER_SNAKE reason; `field` the parameter or body field the API names.
    """

    def __init__(self, message: str, *, status: int | None = None, reason: str | None = None,
                 field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.field = field


#: Variables whose values must never be printed (the agent's credential).
_SECRET_ENV_VARS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")


def scrub(text: str) -> str:
    """The text with the credential from the environment, should it appear, replaced.

    Messages are written not to contain it; this is the last line of defence, for text that
    comes from elsewhere (an exception of a library, a server's answer).
    """
    for name in _SECRET_ENV_VARS:
        value = os.environ.get(name, "").strip()
        if len(value) >= 4 and value in text:
            text = text.replace(value, f"[${name}]")
    return text


def fail(message: str) -> typer.Exit:
    """Prints `error: <message>` (on one line, credential scrubbed) and returns the Exit to raise."""
    typer.echo(f"error: {' '.join(scrub(message).split())}", err=True)
    return typer.Exit(code=1)


def _debugging() -> bool:
    """SMOLTBOT_DEBUG (`CliSettings.debug`). A value that is not a boolean counts as on: whoever
    set it wants to see more."""
    try:
        return load_cli_settings().debug
    except ValidationError as error:
        return any(problem["loc"] == ("debug",) for problem in error.errors())


def handles_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Wraps a command: a `CliError` (or anything unexpected) becomes one line on stderr and exit 1.

    The signature is kept (functools.wraps), so Typer still sees the command's options.
    """

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except CliError as error:
            raise fail(error.message) from None
        except (typer.Exit, typer.Abort, typer.TyperException, KeyboardInterrupt):
            raise
        except Exception as error:  # a bug of ours: still one line, with a way to see more
            if _debugging():
                raise
            logger.debug("unexpected error", exc_info=True)
            raise fail(f"unexpected {type(error).__name__}: {error} "
                       "(this is a smoltbot bug; set SMOLTBOT_DEBUG=1 to see the traceback)") from None

    return wrapper
