"""The Observer's side of the id rules in `core.ids`: list filters are optional (an empty
agent or session id means "any"), where the shared validators require a value."""

from __future__ import annotations

from smoltbot.core import ids
from smoltbot.core.errors import InvalidArgument

__all__ = ["validate_agent_id", "validate_session_filter"]


def validate_agent_id(value: str, *, required: bool = False) -> None:
    """An agent id, or "" (any agent) unless `required`."""
    if not value:
        if required:
            raise InvalidArgument("agent_id", "is required")
        return
    ids.validate_agent_id(value)


def validate_session_filter(value: str) -> None:
    """A session id, or "" (any session)."""
    if value:
        ids.validate_session_id(value)
