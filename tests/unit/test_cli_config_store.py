"""The CLI config file: atomic, private, validated, and never holding the credential."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from smoltbot.cli import config_store
from smoltbot.cli.config_store import Config
from smoltbot.cli.errors import ConfigError, NotInitialised


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SMOLTBOT_HOME", str(tmp_path / "sb"))
    for name in config_store.CREDENTIAL_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "sb"


def test_the_config_lives_in_smoltbot_home_else_dot_smoltbot_in_home(home: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    assert config_store.config_path() == home / "config.json"
    monkeypatch.delenv("SMOLTBOT_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert config_store.config_path() == tmp_path / ".smoltbot" / "config.json"


def test_save_writes_mode_0600_in_a_0700_directory_and_load_reads_it_back(home: Path) -> None:
    config = Config(agent_id="smolt-0a1b2c3d", gateway_url="http://127.0.0.1:8080", api_url="http://127.0.0.1:8000",
                    email="me@example.com", created_at="2026-01-02T03:04:05Z")

    path = config_store.save(config)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert config_store.load() == config
    assert [p.name for p in home.iterdir()] == ["config.json"]  # no temporary file left behind


def test_save_replaces_a_world_readable_file_with_a_private_one(home: Path) -> None:
    home.mkdir()
    path = home / "config.json"
    path.write_text("{}")
    os.chmod(path, 0o644)

    config_store.save(Config(agent_id="smolt-0a1b2c3d"))

    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_failed_write_leaves_the_old_file_intact(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_store.save(Config(agent_id="smolt-0a1b2c3d"))
    before = config_store.config_path().read_text()

    def broken_replace(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(ConfigError, match="No space left on device"):
        config_store.save(Config(agent_id="smolt-ffffffff"))
    assert config_store.config_path().read_text() == before
    assert [p.name for p in home.iterdir()] == ["config.json"]


def test_save_refuses_to_write_the_credential_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-api03-SECRET")

    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY") as raised:
        config_store.save(Config(agent_id="smolt-0a1b2c3d", email="sk-ant-api03-SECRET@example.com"))

    assert "SECRET" not in raised.value.message
    assert not config_store.config_path().exists()


def test_keys_that_look_like_secrets_are_dropped_and_unknown_ones_kept(home: Path) -> None:
    home.mkdir()
    config_store.config_path().write_text(json.dumps(
        {"agent_id": "smolt-0a1b2c3d", "api_key": "sk-x", "auth_token": "t", "future_option": 3}))

    config_store.save(config_store.load())

    assert json.loads(config_store.config_path().read_text()) == {
        "agent_id": "smolt-0a1b2c3d",
        "future_option": 3,
    }


@pytest.mark.parametrize("key,value,stored", [
    ("api_url", " https://smoltbot.example.com/ ", "https://smoltbot.example.com"),
    ("gateway_url", "http://127.0.0.1:8080/anthropic", "http://127.0.0.1:8080"),
    ("gateway_url", "http://gw:8080/anthropic/", "http://gw:8080"),
    ("email", "me@example.com", "me@example.com"),
    ("agent_id", "smolt-0a1b2c3d", "smolt-0a1b2c3d"),
])
def test_values_are_normalised(key: str, value: str, stored: str) -> None:
    assert config_store.normalize_value(key, value) == stored


@pytest.mark.parametrize("key,value", [
    ("api_url", "ftp://x"), ("api_url", "127.0.0.1:8000"), ("api_url", "http://x/?q=1"),
    ("email", "me"), ("agent_id", "agent-1"), ("agent_id", "smolt-XYZ12345"), ("created_at", "yesterday"),
    ("password", "x"),
])
def test_bad_values_and_unknown_keys_are_config_errors(key: str, value: str) -> None:
    with pytest.raises(ConfigError):
        config_store.normalize_value(key, value)


def test_a_missing_file_is_an_empty_not_initialised_config() -> None:
    config = config_store.load()

    assert not config.initialised
    with pytest.raises(NotInitialised, match="smoltbot init"):
        config.require_agent()


@pytest.mark.parametrize("text,message", [
    ("{oops", "not valid JSON"),
    ("[]", "JSON object"),
    ('{"agent_id": 3}', "must be a string"),
    ('{"api_url": "nope"}', "api_url must be an http"),
])
def test_a_malformed_file_is_one_config_error_naming_the_fix(home: Path, text: str, message: str) -> None:
    home.mkdir()
    config_store.config_path().write_text(text)

    with pytest.raises(ConfigError, match=message):
        config_store.load()


def test_credential_from_env_prefers_the_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    assert config_store.credential_from_env() is None
    monkeypatch.setenv("ANTHROPIC_AUTH_TOKEN", "token")
    assert config_store.credential_from_env() == ("ANTHROPIC_AUTH_TOKEN", "token")
    monkeypatch.setenv("ANTHROPIC_API_KEY", " key ")
    assert config_store.credential_from_env() == ("ANTHROPIC_API_KEY", "key")
