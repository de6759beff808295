"""The `smoltbot` command. Each command group lives in its own module; this one wires them."""

from __future__ import annotations

import typer

from smoltbot.cli import (
    commands_alerts,
    commands_card,
    commands_claim,
    commands_config,
    commands_data,
    commands_drift,
    commands_init,
    commands_integrity,
    commands_logs,
    commands_status,
    commands_usage,
    stack,
)

__all__ = ["app", "main"]

app = typer.Typer(
    name="smoltbot",
    help="Transparent tracing for AI agents: run the stack, then see every decision your agent makes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stack.register(app)
commands_init.register(app)
commands_status.register(app)
commands_logs.register(app)
commands_integrity.register(app)
commands_usage.register(app)
app.add_typer(commands_card.app, name="card")
app.add_typer(commands_config.app, name="config")
app.add_typer(commands_drift.app, name="drift")
app.add_typer(commands_alerts.app, name="alerts")
app.add_typer(commands_data.app, name="agent")
commands_claim.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
