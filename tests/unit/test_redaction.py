"""Secret masking: what is masked, what is left alone, and linear behaviour on large input."""

from __future__ import annotations

import pytest

from smoltbot.core.aap.redaction import is_secret_key, redact, redact_text

ANTHROPIC_KEY = "sk-ant-api03-R2D2c3po_4567890abcdefGHIJKLmnopQRSTuvwxYZ-0123456789AA"
OPENAI_KEY = "sk-proj-Abc123DEF456ghi789JKL012mno345PQR678"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM2k\nQ0VVGJXw5ZbpE1ObCaAf1Ay2\n"
    "-----END RSA PRIVATE KEY-----"
)


@pytest.mark.parametrize(
    ("text", "secret", "label"),
    [
        (f"key={ANTHROPIC_KEY}", ANTHROPIC_KEY, "anthropic_key"),
        (f"export OPENAI={OPENAI_KEY}", OPENAI_KEY, "openai_key"),
        ("Authorization: Bearer abc.DEF-123_xyz~tok", "abc.DEF-123_xyz~tok", "bearer_token"),
        ("aws AKIAIOSFODNN7EXAMPLE here", "AKIAIOSFODNN7EXAMPLE", "aws_access_key"),
        ("token ghp_" + "A1b2" * 9 + " end", "ghp_" + "A1b2" * 9, "github_token"),
        ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuv", "github_pat_11ABCDEFG", "github_token"),
        (f"jwt: {JWT}", JWT, "jwt"),
        (f"here is a key\n{PEM}\nthanks", "MIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM2k", "private_key"),
        ("postgres://admin:S3cr3t!@db.internal:5432/app", "S3cr3t!", "password"),
        ("password=hunter2 next", "hunter2", "password"),
        ('{"password": "correct horse"}', "correct horse", "password"),
        ("passwd: swordfish", "swordfish", "password"),
        ("client_secret='abc123xyz'", "abc123xyz", "secret"),
        ("GITHUB_TOKEN=abcdef123", "abcdef123", "token"),
        ('"api_key":"k-123456"', "k-123456", "api_key"),
        ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI", "key"),
        (r"{\"password\": \"hunter2\"}", "hunter2", "password"),
    ],
)
def test_secrets_are_masked_with_their_kind(text, secret, label):
    out = redact_text(text)
    assert secret not in out
    assert f"[REDACTED:{label}]" in out


def test_only_the_secret_part_of_a_pair_or_url_is_masked():
    assert redact_text("password=hunter2") == "password=[REDACTED:password]"
    assert redact_text("postgres://admin:pw@db:5432/x") == "postgres://admin:[REDACTED:password]@db:5432/x"
    assert redact_text('{"password": "x y"}') == '{"password": "[REDACTED:password]"}'
    assert redact_text("Bearer abcdefgh123") == "Bearer [REDACTED:bearer_token]"


def test_an_unterminated_private_key_is_masked_to_its_end():
    out = redact_text("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAA\nAAAA")
    assert out == "[REDACTED:private_key]"


def test_a_key_inside_a_bearer_header_keeps_the_specific_label():
    out = redact_text(f"curl -H 'Authorization: Bearer {ANTHROPIC_KEY}'")
    assert out == "curl -H 'Authorization: Bearer [REDACTED:anthropic_key]'"


@pytest.mark.parametrize(
    "text",
    [
        "The quick brown fox; max_tokens=1024, input_tokens: 5, tokens=12",
        "sk-learn-is-a-library-name-without-digits",
        "task-1234567890abcdefghijklmnop",
        "password policy: use long passphrases",
        "see https://example.com/path?x=1",
        "monkey AKIA short",
        "eyJ alone",
        "redis://host:6379/0",
    ],
)
def test_ordinary_text_is_left_alone(text):
    assert redact_text(text) == text


def test_secret_key_names():
    for key in (
        "password",
        "DB_PASSWORD",
        "api_key",
        "apiKey",
        "x-api-key",
        "Authorization",
        "access_token",
        "refreshToken",
        "client_secret",
        "aws_secret_access_key",
        "private_key",
        "cookie",
        "secret",
    ):
        assert is_secret_key(key), key
    for key in (
        "max_tokens",
        "input_tokens",
        "token_count",
        "keyboard",
        "path",
        "monkey",
        "passage",
        "description",
    ):
        assert not is_secret_key(key), key


def test_redact_walks_nested_data_and_masks_values_of_secret_keys():
    data = {
        "headers": {"x-api-key": "whatever", "Authorization": "Basic dXNlcjpwYXNz"},
        "input": {
            "apiKey": 12345,
            "max_tokens": 5,
            "enabled": True,
            "cmd": f"curl -H 'x-api-key: {ANTHROPIC_KEY}' https://api",
        },
        "list": [{"password": {"nested": "x"}}, f"{OPENAI_KEY}", 3, None],
    }
    out = redact(data)
    assert out["headers"] == {"x-api-key": "[REDACTED:api_key]", "Authorization": "[REDACTED:secret]"}
    assert out["input"]["apiKey"] == "[REDACTED:api_key]"
    assert out["input"]["max_tokens"] == 5 and out["input"]["enabled"] is True
    assert ANTHROPIC_KEY not in out["input"]["cmd"]
    assert out["list"][0] == {"password": "[REDACTED:password]"}
    assert out["list"][1] == "[REDACTED:openai_key]"
    assert out["list"][2:] == [3, None]
    assert data["headers"]["x-api-key"] == "whatever"  # the input is not modified


@pytest.mark.parametrize(
    "unit",
    [
        "a",
        "a_",
        "sk-",
        "eyJ",
        "x://",
        "Bearer ",
        '"',
        'key"',
        "password=",
        "-----BEGIN PRIVATE KEY-----",
        "ghp_",
        "AKIA",
        "postgres://u:",
    ],
)
def test_repetitive_input_is_handled_in_one_linear_pass(unit):
    # Inputs that make naive secret regexes backtrack; 1 MB each. No timing assert:
    # this test finishing at all (under the per-test timeout) is the check.
    text = unit * (1_000_000 // len(unit))
    out = redact_text(text)
    assert isinstance(out, str)


def test_a_large_realistic_text_is_masked_throughout():
    block = f"step: run the migration with password=hunter2 and key {ANTHROPIC_KEY}.\n" + "lorem ipsum " * 50
    text = block * 2000  # ~1.4 MB
    out = redact_text(text)
    assert "hunter2" not in out and ANTHROPIC_KEY not in out
    assert out.count("[REDACTED:anthropic_key]") == 2000
