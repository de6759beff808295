"""Page sizes and opaque keyset page tokens (core/pagination.py)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from smoltbot.core.errors import InvalidArgument
from smoltbot.core.pagination import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    decode_page_token,
    encode_page_token,
    next_page,
    page_size,
)

WHEN = datetime(2026, 5, 1, 8, 30, 15, 250000, tzinfo=UTC)


def test_page_size_defaults_caps_and_rejects_negative() -> None:
    assert page_size(0) == DEFAULT_PAGE_SIZE == 50
    assert page_size(7) == 7
    assert page_size(10**9) == MAX_PAGE_SIZE == 1000
    with pytest.raises(InvalidArgument) as caught:
        page_size(-1)
    assert caught.value.field == "page_size"


def test_tokens_round_trip_their_keys() -> None:
    key = (WHEN.astimezone(timezone(timedelta(hours=-5))), "smolt-1234abcd", 3, 1.5, None)
    token = encode_page_token("agents", key)
    assert "=" not in token and "+" not in token and "/" not in token
    decoded = decode_page_token(token, scope="agents", types=(datetime, str, int, float, str))
    assert decoded == (WHEN, "smolt-1234abcd", 3, 1.5, None)
    assert decoded[0].tzinfo == UTC


def test_empty_token_means_first_page() -> None:
    assert decode_page_token("", scope="agents", types=(str,)) is None


_NAIVE_TIME = json.dumps({"s": "agents", "k": [{"t": "2026-01-01T00:00:00"}]}).encode()


@pytest.mark.parametrize(("token", "types"), [
    ("garbage!", (str,)),
    ("e30", (str,)),  # {}
    (base64.urlsafe_b64encode(b"[1,2]").decode(), (str,)),
    (encode_page_token("agents", ["a", "b"]), (str,)),  # wrong arity
    (encode_page_token("agents", [5]), (str,)),  # wrong type
    (encode_page_token("agents", ["x"]), (datetime,)),  # wrong type
    (base64.urlsafe_b64encode(_NAIVE_TIME).decode(), (datetime,)),
    ("A" * 5000, (str,)),
])
def test_malformed_tokens_are_invalid_argument_naming_page_token(token: str, types: tuple[type, ...]) -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(token, scope="agents", types=types)
    assert caught.value.field == "page_token"
    assert "page_token" in str(caught.value)


def _raw_token(payload: object) -> str:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


_AFTER = {"t": "2026-01-01T00:00:00+00:00"}


@pytest.mark.parametrize(("token", "types"), [
    (_raw_token(b"[" * 3000), (str,)),  # deeper than the JSON parser recurses
    (_raw_token(b'{"s":"agents","k":[NaN]}'), (float,)),
    (_raw_token(b'{"s":"agents","k":[Infinity]}'), (float,)),
    (_raw_token({"s": "agents", "k": [2**31]}), (int,)),  # no INTEGER column holds it
    (_raw_token({"s": "agents", "k": [-(2**31) - 1]}), (int,)),
    (_raw_token({"s": "agents", "k": [2**80]}), (int,)),
    (_raw_token({"s": "agents", "k": [_AFTER, "a\u0000b"]}), (datetime, str)),  # PostgreSQL text refuses NUL
    (_raw_token({"s": "agents", "k": [_AFTER, "\ud800"]}), (datetime, str)),  # no UTF-8 for a lone surrogate
    (_raw_token({"s": "agents", "k": [_AFTER, "x" * 513]}), (datetime, str)),
    (_raw_token({"s": "agents", "k": [{"t": "0001-01-01T00:00:00+14:00"}, "a"]}), (datetime, str)),
    (_raw_token({"s": "agents", "k": [{"t": "9999-12-31T23:59:59-14:00"}, "a"]}), (datetime, str)),
    (_raw_token({"s": "agents", "k": [{"t": "2026-01-01T00:00:00+00:00" + " " * 99}, "a"]}),
     (datetime, str)),
    (_raw_token({"s": ["agents"], "k": ["a"]}), (str,)),
    (_raw_token({"s": None, "k": ["a"]}), (str,)),
    ("é" * 8, (str,)),
])
def test_hostile_tokens_are_invalid_argument_never_another_error(token: str, types: tuple[type, ...]) -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(token, scope="agents", types=types)
    assert caught.value.field == "page_token"


def test_keys_at_the_edges_of_what_is_accepted_still_decode() -> None:
    assert decode_page_token(_raw_token({"s": "agents", "k": [2**31 - 1]}), scope="agents", types=(int,)) \
        == (2**31 - 1,)
    assert decode_page_token(_raw_token({"s": "agents", "k": ["x" * 512]}), scope="agents", types=(str,)) \
        == ("x" * 512,)
    late = decode_page_token(_raw_token({"s": "agents", "k": [{"t": "9999-12-31T23:59:59+00:00"}]}),
                             scope="agents", types=(datetime,))
    assert late == (datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),)


def test_a_token_of_another_list_is_rejected() -> None:
    token = encode_page_token("sessions:smolt-aaaaaaaa", [WHEN, "s1"])
    with pytest.raises(InvalidArgument, match="another list"):
        decode_page_token(token, scope="sessions:smolt-bbbbbbbb", types=(datetime, str))


def test_next_page_walks_every_item_exactly_once() -> None:
    items = list(range(23, 0, -1))  # newest first, like a DESC query
    seen: list[int] = []
    token = ""
    while True:
        after = decode_page_token(token, scope="n", types=(int,))
        remaining = [item for item in items if after is None or item < after[0]]
        page, token = next_page(remaining[:6], 5, scope="n", key=lambda item: (item,))
        seen.extend(page)
        if not token:
            break
    assert seen == items


def test_next_page_has_no_token_on_the_last_page() -> None:
    assert next_page([1, 2], 5, scope="n", key=lambda item: (item,)) == ([1, 2], "")
    assert next_page([], 5, scope="n", key=lambda item: (item,)) == ([], "")


def test_naive_datetimes_cannot_be_put_into_tokens() -> None:
    with pytest.raises(ValueError):
        encode_page_token("agents", [datetime(2026, 1, 1)])
