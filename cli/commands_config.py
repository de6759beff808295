"""`smoltbot config [path|get KEY|set KEY VALUE|unset KEY|edit]`: the CLI's config file."""

from __future__ import annotations

from typing import Annotated

import typer

from smoltbot.cli import config_store
from smoltbot.cli.config_store import KEYS
from smoltbot.cli.editor import edit_text
from smoltbot.cli.errors import CliError, ConfigError, handles_errors
from smoltbot.cli.output import Output, styled

__all__ = ["app"]

app = typer.Typer(name="config", help="Show or change the config (agent id, gateway and API URLs, email).")

KeyArgument = Annotated[str, typer.Argument(metavar="KEY", help=f"One of: {', '.join(KEYS)}.")]


@app.callback(invoke_without_command=True)
@handles_errors
def show_command(ctx: typer.Context, json_mode: Annotated[bool, typer.Option(
        "--json", help="Print the config as JSON.")] = False) -> None:
    """Without a subcommand: show every key of the config."""
    if ctx.invoked_subcommand is not None:
        return
    out = Output(json_mode)
    path = config_store.config_path()
    config = config_store.load()
    if json_mode:
        out.json(config.to_dict())
        return
    out.fields([(key, config.get(key) or styled("(not set)", "dim")) for key in KEYS], title=str(path))
    if not config.initialised:
        out.note("Not initialised yet: run `smoltbot init`.")


@app.command("path")
@handles_errors
def path_command() -> None:
    """Print where the config file is (it may not exist yet)."""
    typer.echo(str(config_store.config_path()))


@app.command("get")
@handles_errors
def get_command(key: KeyArgument) -> None:
    """Print one value (exit 1 when it is not set)."""
    value = config_store.load().get(key)
    if value is None:
        raise CliError(f"{key} is not set in {config_store.config_path()}")
    typer.echo(value)


@app.command("set")
@handles_errors
def set_command(key: KeyArgument, value: Annotated[str, typer.Argument(metavar="VALUE")]) -> None:
    """Set one value (checked first: URLs, email, agent id)."""
    spec = KEYS.get(key)
    if spec is not None and not spec.settable:
        raise ConfigError(f"{key} is written by `smoltbot init`; it cannot be set")
    normalized = config_store.normalize_value(key, value)
    config = config_store.load()
    setattr(config, key, normalized)
    config_store.save(config)
    typer.echo(f"{key} = {normalized}")


@app.command("unset")
@handles_errors
def unset_command(key: KeyArgument) -> None:
    """Remove one value."""
    config = config_store.load()
    config.get(key)  # rejects unknown keys
    setattr(config, key, None)
    config_store.save(config)
    typer.echo(f"{key} unset")


@app.command("edit")
@handles_errors
def edit_command() -> None:
    """Open the config in $EDITOR; what you save is checked before it is written."""
    path = config_store.config_path()
    current = config_store.load()
    text = config_store.json_text(current, all_keys=True)
    edited = edit_text(text)
    if edited is None or edited.strip() == text.strip():
        typer.echo("No changes.")
        return
    config = config_store.parse(edited, source="the edited config")
    config_store.save(config, path)
    typer.echo(f"Saved {path}.")
