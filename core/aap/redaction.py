"""Masking secrets in text and JSON-like data before anything is stored.

Every pattern is precompiled, anchored on a literal or a character-class boundary,
and bounded (`{n,m}`, no nested unbounded quantifiers), so each scan is linear in
the input: a multi-megabyte tool input or thinking block costs a few regex passes,
never a backtracking blow-up.

Replacements say what was masked: `[REDACTED:anthropic_key]`. For key/value
pairs and connection strings only the secret part is masked, so
`password=hunter2` becomes `password=[REDACTED:password]` and the reader still
sees which setting it was.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = ["is_secret_key", "redact", "redact_text"]

_MAX_DEPTH = 200

# Word parts that make a key name secret. "token" must be a whole part: max_tokens
# and input_tokens are counts, not secrets.
_KEY_WORDS = (
    r"(?:password|passwd|pwd|passphrase|secret|token|api[_\-]?key|apikey|access[_\-]?key|private[_\-]?key)"
)
_KEY_SUFFIX = r"(?:[_\-](?:access[_\-]?key|key|value))?"
_KEY_NAME = rf"(?:[A-Za-z0-9]{{1,40}}[_\-.]){{0,4}}{_KEY_WORDS}{_KEY_SUFFIX}"

_VALUE_GUARD = r"(?!\[REDACTED)"

# Order matters: specific token formats first, generic key/value pairs last (they
# skip values that are already masked). Patterns start with a literal where they can
# (the boundary check comes as a lookbehind after it), so the regex engine jumps
# between occurrences instead of trying every position; `hints` are substrings one of
# which must be present (in the lower-cased text) for the pattern to be run at all.
_PATTERNS: list[tuple[str, re.Pattern[str], str, tuple[str, ...]]] = [
    (
        "anthropic_key",
        re.compile(r"sk-ant-(?<![A-Za-z0-9_\-]sk-ant-)(?=[A-Za-z0-9_\-]{0,200}\d)[A-Za-z0-9_\-]{16,300}"),
        "whole",
        ("sk-ant-",),
    ),
    (
        "openai_key",
        re.compile(r"sk-(?<![A-Za-z0-9_\-]sk-)(?!ant-)(?=[A-Za-z0-9_\-]{0,200}\d)[A-Za-z0-9_\-]{20,300}"),
        "whole",
        ("sk-",),
    ),
    (
        "github_token",
        re.compile(r"gh(?<![A-Za-z0-9_]gh)[pousr]_[A-Za-z0-9]{36,255}"),
        "whole",
        ("gh",),
    ),
    (
        "github_token",
        re.compile(r"github_pat_(?<![A-Za-z0-9_]github_pat_)[A-Za-z0-9_]{22,255}"),
        "whole",
        ("github_pat_",),
    ),
    (
        "aws_access_key",
        re.compile(r"(?<![A-Za-z0-9])A(?:KIA|SIA|GPA|IDA|ROA|NPA|NVA|IPA)[A-Z0-9]{16}(?![A-Za-z0-9])"),
        "whole",
        ("akia", "asia", "agpa", "aida", "aroa", "anpa", "anva", "aipa"),
    ),
    (
        "jwt",
        re.compile(
            r"eyJ(?<![A-Za-z0-9_\-]eyJ)[A-Za-z0-9_\-]{5,4096}\.eyJ[A-Za-z0-9_\-]{5,8192}\.[A-Za-z0-9_\-]{8,4096}"
        ),
        "whole",
        ("eyj",),
    ),
    (
        "password",
        # scheme://user:password@host: keep scheme, user and host; mask the password.
        re.compile(
            r"(?<![A-Za-z0-9+.\-])([A-Za-z][A-Za-z0-9+.\-]{1,20}://[^\s:/@\[]{1,256}:)"
            + _VALUE_GUARD
            + r"([^\s@/]{1,256})(@)"
        ),
        "conn",
        ("://",),
    ),
    (
        "bearer_token",
        re.compile(
            r"(?i)(?<![A-Za-z0-9])(bearer\s{1,10})" + _VALUE_GUARD + r"([A-Za-z0-9\-._~+/]{8,4096}=*)"
        ),
        "prefixed",
        ("bearer",),
    ),
    (
        "kv",
        re.compile(
            r"(?i)(?<![A-Za-z0-9_\-.])(" + _KEY_NAME + r")(?![A-Za-z0-9])"
            r"(\\?[\"']?\s{0,10}[:=]\s{0,10})"
            + _VALUE_GUARD
            + r"(\"(?:[^\"\\\n]|\\.){1,4096}\"|'(?:[^'\\\n]|\\.){1,4096}'"
            r"|\\\"[^\"\\\n]{1,4096}\\\"|[^\s,;&\"'}\])<>\\]{1,4096})"
        ),
        "kv",
        ("pass", "pwd", "secret", "token", "key"),
    ),
]

_PRIVATE_BEGIN = re.compile(r"-----BEGIN[A-Z0-9 ]{0,40} PRIVATE KEY-----")
_PRIVATE_END = re.compile(r"-----END[A-Z0-9 ]{0,40} PRIVATE KEY-----")
_PRIVATE_BODY = re.compile(r"[A-Za-z0-9+/=\s]{0,16384}")
_PRIVATE_MAX = 16384

_KEY_RE = re.compile(rf"(?i){_KEY_NAME}")
# Headers/keys that carry credentials under names without a secret word in them.
_SECRET_KEYS = {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "credentials"}
_CAMEL_RE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def _label_for_key(key: str) -> str:
    low = key.lower()
    if "pass" in low or "pwd" in low:
        return "password"
    if re.search(r"api[_\-]?key|apikey", low):
        return "api_key"
    if "token" in low:
        return "token"
    if "key" in low:
        return "key"
    return "secret"


def is_secret_key(key: str) -> bool:
    """Whether a dict key / header name names a secret (its value gets masked)."""
    if not isinstance(key, str) or len(key) > 200:
        return False
    if key.lower() in _SECRET_KEYS:
        return True
    snake = _CAMEL_RE.sub("_", key)
    return _KEY_RE.fullmatch(snake) is not None


def _kv_replacement(m: re.Match[str]) -> str:
    key, sep, value = m.group(1), m.group(2), m.group(3)
    label = _label_for_key(key)
    if value[:1] in ("'", '"'):
        return f"{key}{sep}{value[0]}[REDACTED:{label}]{value[0]}"
    return f"{key}{sep}[REDACTED:{label}]"


def _after_prefix(label: str) -> Callable[[re.Match[str]], str]:
    """The replacement of a "prefixed" pattern: its first group (the prefix) kept, the rest masked."""
    return lambda m: f"{m.group(1)}[REDACTED:{label}]"


def _redact_private_keys(s: str) -> str:
    """Mask PEM private key blocks; an unterminated one (truncated text) up to its base64 end.

    BEGIN and END markers are found in two linear scans and paired in order, so a text
    full of BEGIN markers without END costs no more than one pass.
    """
    begins = [m.span() for m in _PRIVATE_BEGIN.finditer(s)]
    if not begins:
        return s
    ends = [m.end() for m in _PRIVATE_END.finditer(s)]
    out: list[str] = []
    pos = 0
    j = 0
    for start, header_end in begins:
        if start < pos:
            continue
        while j < len(ends) and ends[j] <= header_end:
            j += 1
        if j < len(ends) and ends[j] - header_end <= _PRIVATE_MAX + 64:
            stop = ends[j]
        else:
            body = _PRIVATE_BODY.match(s, header_end)
            stop = body.end() if body else header_end
        out.append(s[pos:start])
        out.append("[REDACTED:private_key]")
        pos = stop
    out.append(s[pos:])
    return "".join(out)


def redact_text(s: str) -> str:
    """Mask every secret the patterns know in `s`."""
    if not s:
        return s
    if "PRIVATE KEY-----" in s:
        s = _redact_private_keys(s)
    lower = s.lower()
    for label, pattern, mode, hints in _PATTERNS:
        if not any(hint in lower for hint in hints):
            continue
        if mode == "whole":
            s = pattern.sub(f"[REDACTED:{label}]", s)
        elif mode == "conn":
            s = pattern.sub(lambda m: f"{m.group(1)}[REDACTED:password]{m.group(3)}", s)
        elif mode == "prefixed":
            s = pattern.sub(_after_prefix(label), s)
        else:
            s = pattern.sub(_kv_replacement, s)
        lower = s.lower()
    return s


def redact(obj: Any, _depth: int = 0) -> Any:
    """A copy of a JSON-like value with secrets masked: strings scanned, secret keys' values replaced."""
    if isinstance(obj, str):
        return redact_text(obj)
    if _depth > _MAX_DEPTH:
        return "[REDACTED:too_deep]"
    if isinstance(obj, dict):
        out: dict[Any, Any] = {}
        for key, value in obj.items():
            if isinstance(key, str) and is_secret_key(key) and value not in (None, "", True, False):
                out[key] = f"[REDACTED:{_label_for_key(key)}]"
            else:
                out[key] = redact(value, _depth + 1)
        return out
    if isinstance(obj, (list, tuple)):
        return [redact(item, _depth + 1) for item in obj]
    return obj
