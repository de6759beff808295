"""The CLI's config file: `$SMOLTBOT_HOME/config.json` (default `~/.smoltbot/config.json`).

Where it is, and where the API and the gateway are when neither the command line nor the file
says, come from the environment through `cli_settings()` (SMOLTBOT_HOME, SMOLTBOT_API_URL,
SMOLTBOT_API_PORT, SMOLTBOT_GATEWAY_URL, SMOLTBOT_GATEWAY_PORT: docs/configuration.md).

It holds where things are and who the agent is: `agent_id`, `gateway_url`, `api_url`,
`email`, `created_at`. It never holds the agent's credential: the credential stays in the
environment (ANTHROPIC_API_KEY / ANTHROPIC_AUTH_TOKEN) and is read only when a command
needs to prove ownership. `save` refuses to write a value equal to the credential in the
environment, and drops any key whose name looks like a secret, so not even a hand edit
through `smoltbot config edit` can put one there.

The file is written atomically (temporary file in the same directory, fsync, rename) with
mode 0600, in a directory created with mode 0700.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from smoltbot.cli.errors import ConfigError, NotInitialised
from smoltbot.core.ids import AGENT_ID_PATTERN
from smoltbot.core.settings import CliSettings, load_cli_settings

__all__ = [
    "CONFIG_FILE",
    "CREDENTIAL_ENV_VARS",
    "KEYS",
    "Config",
    "cli_settings",
    "config_path",
    "credential_from_env",
    "json_text",
    "load",
    "normalize_value",
    "parse",
    "save",
    "smoltbot_home",
]

CONFIG_FILE = "config.json"
_EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+$"
#: Where the agent's credential is read from, in order (the variables the Anthropic SDK reads).
CREDENTIAL_ENV_VARS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")
_SECRET_LOOKING_KEY = re.compile(r"key|token|secret|credential|password|auth", re.IGNORECASE)


def cli_settings() -> CliSettings:
    """The commands' settings from the environment (`smoltbot.core.settings.CliSettings`, the same
    fields as the services' for SMOLTBOT_HOME and the ports); a bad value is a ConfigError
    naming its variable."""
    try:
        return load_cli_settings()
    except ValidationError as error:
        problems = []
        for problem in error.errors():
            name = "SMOLTBOT_" + "_".join(str(part) for part in problem["loc"]).upper()
            problems.append(f"{name} {problem['msg'].lower()}, got {problem.get('input')!r}")
        raise ConfigError("; ".join(problems)) from None


def smoltbot_home() -> Path:
    """SMOLTBOT_HOME, else ~/.smoltbot (the services' setting, read the same way)."""
    return cli_settings().home.expanduser()


def config_path() -> Path:
    return smoltbot_home() / CONFIG_FILE


def credential_from_env() -> tuple[str, str] | None:
    """(variable name, credential) from the environment, or None. The value is never shown."""
    for name in CREDENTIAL_ENV_VARS:
        value = os.environ.get(name, "").strip()
        if value:
            return name, value
    return None


# --------------------------------------------------------------------------- values

def _url(key: str, value: str) -> str:
    value = value.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{key} must be an http:// or https:// URL, got {value!r}")
    if parts.query or parts.fragment:
        raise ConfigError(f"{key} must not carry a query or fragment, got {value!r}")
    return value


def _gateway_url(key: str, value: str) -> str:
    # People paste the ANTHROPIC_BASE_URL they exported; the config keeps the gateway's root.
    return _url(key, value).removesuffix("/anthropic")


def _email(key: str, value: str) -> str:
    value = value.strip()
    if len(value) > 320 or not re.match(_EMAIL_PATTERN, value):
        raise ConfigError(f"{key} must be an email address like you@example.com, got {value!r}")
    return value


def _agent_id(key: str, value: str) -> str:
    value = value.strip()
    if not re.match(AGENT_ID_PATTERN, value):
        raise ConfigError(f"{key} must look like smolt-0a1b2c3d (smolt- and hex digits), got {value!r}")
    return value


def _timestamp(key: str, value: str) -> str:
    try:
        datetime.fromisoformat(value.strip())
    except ValueError:
        raise ConfigError(f"{key} must be an ISO 8601 time, got {value!r}") from None
    return value.strip()


@dataclass(frozen=True)
class KeySpec:
    description: str
    normalize: Callable[[str, str], str]
    settable: bool = True


#: Every key of the config file. `created_at` is written by `smoltbot init` only.
KEYS: dict[str, KeySpec] = {
    "agent_id": KeySpec("The agent this machine's credential resolves to.", _agent_id),
    "gateway_url": KeySpec("The gateway (without /anthropic); ANTHROPIC_BASE_URL is <gateway_url>/anthropic.",
                           _gateway_url),
    "api_url": KeySpec("The public REST API and dashboard (used unless --api / SMOLTBOT_API_URL is given).",
                       _url),
    "email": KeySpec("Your contact, used by `smoltbot claim` when --email is not given.", _email),
    "created_at": KeySpec("When `smoltbot init` wrote this config.", _timestamp, settable=False),
}


def normalize_value(key: str, value: str) -> str:
    """The value as stored, or a ConfigError naming what is wrong with it."""
    spec = KEYS.get(key)
    if spec is None:
        raise ConfigError(f"unknown config key {key!r}; known keys: {', '.join(KEYS)}")
    return spec.normalize(key, value)


# --------------------------------------------------------------------------- the file

@dataclass
class Config:
    agent_id: str | None = None
    gateway_url: str | None = None
    api_url: str | None = None
    email: str | None = None
    created_at: str | None = None
    #: Keys written by a newer smoltbot; kept as they are.
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def initialised(self) -> bool:
        return bool(self.agent_id)

    def require_agent(self) -> str:
        if not self.agent_id:
            raise NotInitialised(config_path())
        return self.agent_id

    def get(self, key: str) -> str | None:
        if key not in KEYS:
            raise ConfigError(f"unknown config key {key!r}; known keys: {', '.join(KEYS)}")
        value: str | None = getattr(self, key)
        return value

    def to_dict(self) -> dict[str, Any]:
        known = {key: getattr(self, key) for key in KEYS if getattr(self, key) is not None}
        return {**known, **self.extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: Path | str = CONFIG_FILE) -> Config:
        values: dict[str, str] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            if key in KEYS:
                if value is None:
                    continue
                if not isinstance(value, str):
                    raise ConfigError(f"{source}: {key} must be a string; fix it with `smoltbot config edit`")
                try:
                    values[key] = normalize_value(key, value)
                except ConfigError as error:
                    raise ConfigError(
                        f"{source}: {error.message}; fix it with `smoltbot config edit`"
                    ) from None
            elif not _SECRET_LOOKING_KEY.search(key):
                extra[key] = value
        return cls(**values, extra=extra)


def load(path: Path | None = None) -> Config:
    """The config, or an empty one when the file does not exist yet."""
    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config()
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror or error}") from None
    return parse(text, source=path)


def parse(text: str, *, source: Path | str = CONFIG_FILE) -> Config:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{source} is not valid JSON (line {error.lineno}: {error.msg}); "
                          "fix it with `smoltbot config edit` or delete it and run `smoltbot init`") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must hold a JSON object; delete it and run `smoltbot init`")
    return Config.from_dict(data, source=source)


def _refuse_credential(data: dict[str, Any]) -> None:
    found = credential_from_env()
    if found is None:
        return
    name, credential = found
    if credential in json.dumps(data):
        raise ConfigError(f"refusing to write the value of {name} to the config file; "
                          "the credential stays in your environment")


def json_text(config: Config, *, all_keys: bool = False) -> str:
    """The file's text; with `all_keys`, unset keys appear as null (a template for editing)."""
    data = config.to_dict()
    if all_keys:
        data = {**{key: None for key in KEYS}, **data}
    return json.dumps(data, indent=2) + "\n"


def save(config: Config, path: Path | None = None) -> Path:
    """Writes the config atomically with mode 0600; returns its path."""
    path = path or config_path()
    _refuse_credential(config.to_dict())
    text = json_text(config)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkstemp creates the file with mode 0600 in the same directory, so the rename is atomic.
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".config.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, 0o600)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        _fsync_dir(path.parent)
    except OSError as error:
        raise ConfigError(f"cannot write {path}: {error.strerror or error}") from None
    return path


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)

