"""Evidence the gateway alone can give: history integrity and argument provenance.

Plain, deterministic domain modules (no model call, no I/O): `history` checks a resent history
against the turns the gateway relayed; `provenance` traces each tool call argument to the earlier
content it came from; `saydo` holds a turn's announced intent against its tool calls. The observer
wires them in; nothing here runs on the user's path.
"""

#: A namespace of modules: import from each (smoltbot.core.evidence.history, ...).
__all__: list[str] = []
