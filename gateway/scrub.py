"""Keeping credentials out of the record, by every route they could take into it.

- Headers that carry a credential (`smoltbot.core.identity.CREDENTIAL_HEADERS`, the one list of
  their names) and query parameters named like one (`CREDENTIAL_QUERY_PARAMS`, any case; Gemini's
  `key` among them) are left out of the capture altogether.
- The exact credential of the call is removed wherever else it shows up in what is captured
  (bodies, other header values, the path and query, a stream's reassembled message), in the
  forms it takes there: as is, JSON-escaped, percent-encoded. A model that repeats the key
  does not publish it. A captured copy cut short never ends with the beginning of a key.

Text that a proto `string` cannot hold (header values with bytes that are not UTF-8, which
the gateway's server hands over as surrogate escapes) is made valid here too (`proto_text`, `raw_bytes`).
"""

from __future__ import annotations

import functools
import json
import urllib.parse

__all__ = [
    "CREDENTIAL_QUERY_PARAMS",
    "REDACTED",
    "Scrubber",
    "proto_text",
    "raw_bytes",
    "scrubber_for",
]

#: Query parameters never captured (compared case-insensitively, after percent-decoding).
CREDENTIAL_QUERY_PARAMS = frozenset({
    "key", "api_key", "api-key", "apikey", "x-api-key", "access_token", "access-token", "token",
    "auth", "auth_token", "client_secret", "secret", "password", "sig", "signature",
})
#: What replaces a credential found in captured text.
REDACTED = "[credential removed]"
#: A credential shorter than this is removed from headers and query only when it is the whole
#: value: removing every occurrence of a two-letter "key" would wreck bodies and say nothing.
_MIN_SEARCHED = 8
#: A cut-short copy never ends with this many or more leading characters of a key.
_MIN_PREFIX = 4


def raw_bytes(text: str) -> bytes:
    """The bytes a str from the gateway's server stands for (it decodes with surrogate escapes)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # lone surrogates that are not escaped bytes
        return text.encode("utf-8", "surrogatepass")


def proto_text(text: str) -> str:
    """`text` as a proto string can hold it: bytes that are not UTF-8 become U+FFFD."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return raw_bytes(text).decode("utf-8", "replace")


class Scrubber:
    """Removes one credential from captured data. With an empty credential it changes nothing."""

    __slots__ = ("_credential", "_forms", "_text_forms")

    def __init__(self, credential: str) -> None:
        self._credential = credential
        forms: set[str] = set()
        if len(credential) >= _MIN_SEARCHED:
            # A key with bytes that are not UTF-8 comes as surrogate escapes: every form is built
            # from its bytes, so none of this can fail on it.
            raw = raw_bytes(credential)
            forms = {
                credential,
                json.dumps(credential)[1:-1],
                json.dumps(credential, ensure_ascii=False)[1:-1],
                json.dumps(credential)[1:-1].replace("/", "\\/"),
                urllib.parse.quote(raw, safe=""),
                urllib.parse.quote_plus(raw, safe=""),
            }
        # Longest first, so a form that contains another is replaced whole.
        self._text_forms = sorted(forms, key=len, reverse=True)
        self._forms = [raw_bytes(form) for form in self._text_forms]

    @property
    def active(self) -> bool:
        return bool(self._credential)

    def text(self, value: str) -> str:
        if not self._credential:
            return value
        if value == self._credential:
            return REDACTED
        for form in self._text_forms:
            if form in value:
                value = value.replace(form, REDACTED)
        return value

    def data(self, value: bytes, *, cut: bool = False) -> bytes:
        """`value` without the credential; with `cut` (a copy cut short), also without a trailing
        beginning of it."""
        if not self._forms:
            return value
        redacted = REDACTED.encode()
        for form in self._forms:
            if form in value:
                value = value.replace(form, redacted)
        if cut:
            for form in self._forms:
                for size in range(len(form) - 1, _MIN_PREFIX - 1, -1):
                    if value.endswith(form[:size]):
                        value = value[:-size]
                        break
        return value

    def query(self, query: str) -> tuple[str, int]:
        """The query string without credential parameters (and the credential itself), and how
        many parameters were removed."""
        if not query:
            return query, 0
        kept: list[str] = []
        removed = 0
        for part in query.split("&"):
            name = urllib.parse.unquote_plus(part.partition("=")[0]).strip().lower()
            if name in CREDENTIAL_QUERY_PARAMS:
                removed += 1
                continue
            kept.append(part)
        return self.text("&".join(kept)), removed


@functools.lru_cache(maxsize=256)
def scrubber_for(credential: str) -> Scrubber:
    """The `Scrubber` of `credential`, built once for the calls of the same key (building one
    encodes the key six ways: about a third of building a small call's record, issue 16).
    Scrubbers never change, so the capture thread and the loop share them. The cache holds the
    keys of the 256 most recent agents in memory, as the calls in flight hold theirs."""
    return Scrubber(credential)
