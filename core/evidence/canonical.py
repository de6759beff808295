"""One canonical JSON form of a value, and a keyed digest (HMAC-SHA256) over it.

Two parties that parsed the same JSON must get the same bytes, whatever serialiser wrote it: keys
sorted, no whitespace, strings ASCII-escaped, and numbers in one spelling. JavaScript clients (Claude
Code) re-serialise what they parsed, so `1.0` comes back as `1`: an integral float is written as an
integer, any other float by its shortest round-trip form (`repr`), which is what JSON.stringify
prints for the same double. NaN and the infinities are not JSON; they get a spelling of their own
rather than an error.

Most values (no floats) are encoded by the C encoder, whose output is the same bytes; the others by
an encoder here that is iterative and streams into the HMAC, so a hostile nesting depth or a huge
value can neither overflow the stack nor build one giant string. A value that is not JSON (a Python object
that no parser produces) is encoded by its type name: deterministic, and never an exception.

`DigestMemo` remembers digests by exact content, so a block a client resends unchanged is not
encoded and digested again at every call (a history is resent whole at every call).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from typing import Any

__all__ = ["DigestMemo", "canonical_json", "keyed_digest"]

_CHUNK = 1 << 16
#: Containers and leaves walked to prove a value float-free before the regex fallback is used.
_WALK_BUDGET = 4096


def _number(value: float | Decimal) -> str:
    if isinstance(value, Decimal):
        if not value.is_finite():
            return '"!' + str(value) + '"'
        if value == value.to_integral_value():
            return str(int(value))
        return repr(float(value)) if float(value) == value else format(value.normalize(), "f")
    if math.isnan(value) or math.isinf(value):
        return '"!' + repr(value) + '"'
    if value.is_integer() and abs(value) < 2**63:
        return str(int(value))
    return repr(value)


def _pieces(value: Any) -> Iterator[str]:
    # An explicit stack instead of recursion: depth is the attacker's choice.
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _Literal):
            yield item.text
        elif item is None:
            yield "null"
        elif item is True:
            yield "true"
        elif item is False:
            yield "false"
        elif isinstance(item, str):
            yield json.dumps(item, ensure_ascii=True)
        elif isinstance(item, int):
            yield str(item)
        elif isinstance(item, float | Decimal):
            yield _number(item)
        elif isinstance(item, Mapping):
            keys = sorted(k for k in item if isinstance(k, str))
            later: list[Any] = [_Literal("}")]
            for position, key in enumerate(reversed(keys)):
                later.append(item[key])
                later.append(_Literal(("" if position == len(keys) - 1 else ",")
                                      + json.dumps(key, ensure_ascii=True) + ":"))
            if len(keys) != len(item):
                # Non-string keys cannot come from JSON; say they were there instead of dropping them.
                later.insert(1, _Literal(f',"!nonstring-keys":{len(item) - len(keys)}'))
            stack.extend(later)
            yield "{"
        elif isinstance(item, list | tuple):
            later = [_Literal("]")]
            for position, element in enumerate(reversed(item)):
                later.append(element)
                if position != len(item) - 1:
                    later.append(_Literal(","))
            stack.extend(later)
            yield "["
        else:
            yield json.dumps("!" + type(item).__name__)


class _Literal:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


#: A float token in C-encoded JSON (or something in a string that looks like one: then the slow path).
_FLOATISH = re.compile(r"[:,\[]-?[0-9]+[.eE]")


def _fast(value: Any) -> str | None:
    """The canonical form by the C encoder, when it is sure to equal the slow path's: no floats (their
    spelling differs), no exotic types, no depth the C encoder refuses. None otherwise."""
    plain = _plain(value)
    if plain is False:
        return None
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return None
    if plain is None and (isinstance(value, float) or _FLOATISH.search(text)):
        return None
    return text


def _plain(value: Any) -> bool | None:
    """True: only str keys, and str/int/bool/None leaves. False: not so. None: too big to walk."""
    stack = [value]
    budget = _WALK_BUDGET
    while stack:
        budget -= 1
        if budget < 0:
            return None
        item = stack.pop()
        if isinstance(item, str | bool | int) or item is None:
            continue
        if isinstance(item, dict):
            if not all(isinstance(k, str) for k in item):
                return False
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        else:
            return False
    return True


def canonical_json(value: Any) -> bytes:
    """The canonical bytes of `value` (for tests and for showing)."""
    fast = _fast(value)
    return (fast if fast is not None else "".join(_pieces(value))).encode("ascii")


def keyed_digest(key: bytes, value: Any, *, domain: str = "") -> bytes:
    """HMAC-SHA256 under `key` over `domain` and the canonical form of `value` (32 bytes).

    `domain` separates digests of different things (a turn, a block, a tool call) so that one can
    never stand for another.
    """
    mac = hmac.new(key, domain.encode("ascii", "replace") + b"\x00", hashlib.sha256)
    fast = _fast(value)
    if fast is not None:
        mac.update(fast.encode("ascii"))
        return mac.digest()
    buffer: list[str] = []
    size = 0
    for piece in _pieces(value):
        buffer.append(piece)
        size += len(piece)
        if size >= _CHUNK:
            mac.update("".join(buffer).encode("ascii"))
            buffer, size = [], 0
    mac.update("".join(buffer).encode("ascii"))
    return mac.digest()


#: Deeper or larger values are digested without being remembered.
_MEMO_DEPTH = 48
_MEMO_NODES = 4096


def content_key(value: Any) -> tuple[Any, int, bool] | None:
    """A hashable value that is equal for two values only when their canonical forms are equal;
    the characters of text it holds; and whether the value is plain (no bool or number leaves:
    then Python's `==` with it is exact too, a string equals only a string and None only None).
    None for a value not worth remembering (floats that are not finite, non-JSON types, depth or
    size past the bounds). The key is type-strict where Python's equality is not (`True == 1`,
    `1.0 == 1`): every non-string leaf carries its type. Mapping keys stay in their order: the
    same mapping with its keys reordered gets another key (a miss, the same canonical form and
    digest), which spares sorting the keys of every block at every call."""
    counts = [0, 0, 0]  # containers, characters, bool and number leaves

    def key(item: Any, depth: int) -> Any:
        kind = type(item)
        if kind is str:
            counts[1] += len(item)
            return item
        if item is None:
            return None
        if kind is bool:
            counts[2] += 1
            return ("b", item)
        if kind is int:
            counts[2] += 1
            return ("i", item)
        if kind is float:
            if not math.isfinite(item):
                raise _NotKeyable
            counts[2] += 1
            return ("f", item)  # equal floats have one canonical spelling (0.0 and -0.0: "0")
        counts[0] += 1
        if counts[0] > _MEMO_NODES or depth > _MEMO_DEPTH:
            raise _NotKeyable
        found: list[Any]
        if kind is dict:
            found = ["d"]  # then name, value, name, value...
            for name, element in item.items():
                if type(name) is not str:
                    raise _NotKeyable
                found.append(name)
                if type(element) is str:
                    counts[1] += len(element)
                    found.append(element)
                else:
                    found.append(key(element, depth + 1))
            return tuple(found)
        if kind is list:
            found = ["l"]
            for element in item:
                if type(element) is str:
                    counts[1] += len(element)
                    found.append(element)
                else:
                    found.append(key(element, depth + 1))
            return tuple(found)
        raise _NotKeyable

    try:
        found = key(value, 0)
    except _NotKeyable:
        return None
    return found, counts[1], not counts[2]


class _NotKeyable(Exception):
    pass


class DigestMemo:
    """What one session's last two calls computed from their content, by exact content: digests,
    and values derived from a block (`remembered`: the neutral parts a reader made of it).

    A value's digest is a function of the key, the domain and the value's canonical form only, so a
    remembered digest is the one `keyed_digest` would give: a hit or a miss changes the time, never
    the answer; a derived value must likewise depend on the content alone, and not be changed by
    whoever gets it. `next_call()` starts a call: what neither this call nor the previous one used
    is forgotten, so the memo holds about two requests' worth of content (`size`: its characters).
    """

    def __init__(self, key: bytes) -> None:
        self.key = key
        # (name, content key) -> (value, characters held); the previous call's, then this one's.
        self._current: dict[Any, tuple[Any, int]] = {}
        self._previous: dict[Any, tuple[Any, int]] = {}
        # (domain, id) -> (the object, its digest): a remembered part's body is the same object at
        # the next call, so its digest is found without walking it again (the object is held, so
        # its id cannot be reused meanwhile).
        self._objects: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._objects_before: dict[tuple[str, int], tuple[Any, Any]] = {}
        # (name, position) -> (value, what was built, plain, characters): what the call had where.
        self._positions: dict[tuple[str, int], tuple[Any, Any, bool, int]] = {}
        self._positions_before: dict[tuple[str, int], tuple[Any, Any, bool, int]] = {}
        self.size = 0
        self.hits = 0
        self.misses = 0

    def at(self, name: str, position: int, value: Any, build: Callable[[Any], Any]) -> Any:
        """`remembered(name, value, build)`, found sooner when the last call had a plain value equal
        to `value` at the same `position` (a resent history keeps its messages where they were):
        one `==`, in C, instead of a walk of the value."""
        before = self._positions_before.get((name, position))
        # The same object (a resent message reused by `RequestMemo`), or an equal plain value.
        if before is not None and (before[0] is value or (before[2] and before[0] == value)):
            self.hits += 1
            self._positions[(name, position)] = before
            return before[1]
        found = content_key(value)
        built = self._remembered(name, value, build, found)
        if found is not None:
            self._positions[(name, position)] = (value, built, found[2], found[1])
        return built

    def remembered(self, name: str, value: Any, build: Callable[[Any], Any]) -> Any:
        """`build(value)`, or what it gave for a value of the same content in this call or the last."""
        return self._remembered(name, value, build, content_key(value))

    def _remembered(self, name: str, value: Any, build: Callable[[Any], Any],
                    found: tuple[Any, int, bool] | None) -> Any:
        if found is None:
            self.misses += 1
            return build(value)
        memo_key = (name, found[0])
        entry = self._current.get(memo_key)
        if entry is None:
            entry = self._previous.get(memo_key)
            if entry is None:
                self.misses += 1
                entry = (build(value), found[1])
                self.size += found[1]
            else:
                self.hits += 1
            self._current[memo_key] = entry
        else:
            self.hits += 1
        return entry[0]

    def digest(self, value: Any, *, domain: str) -> bytes:
        """`keyed_digest(key, value, domain=domain)`, remembered."""
        identity = (domain, id(value))
        known = self._objects.get(identity) or self._objects_before.get(identity)
        if known is not None and known[0] is value:
            self.hits += 1
            digest: bytes = known[1]
        else:
            digest = self.remembered(domain, value, lambda v: keyed_digest(self.key, v, domain=domain))
        self._objects[identity] = (value, digest)
        return digest

    def of_object(self, name: str, value: Any, build: Callable[[Any], Any]) -> Any:
        """`build(value)`, or what it gave for this very object in this call or the last (a resent
        message `RequestMemo` reused, the parts read from it): one lookup instead of one per block.
        For values nobody changes, and a `build` that depends on the value alone."""
        identity = (name, id(value))
        known = self._objects.get(identity) or self._objects_before.get(identity)
        if known is not None and known[0] is value:
            self.hits += 1
            built = known[1]
        else:
            built = build(value)  # its own lookups count what it reads and digests: not a miss here
        self._objects[identity] = (value, built)
        return built

    def keep_positions(self, name: str, count: int) -> None:
        """Positions 0 to `count` - 1 of `name` hold for this call what they held for the last one
        (a caller that found those values otherwise, e.g. the same objects): a later call still
        finds them by their place."""
        before, now = self._positions_before, self._positions
        for position in range(count):
            entry = before.get((name, position))
            if entry is not None:
                now.setdefault((name, position), entry)

    def next_call(self) -> None:
        self._previous, self._current = self._current, {}
        self._objects_before, self._objects = self._objects, {}
        self._positions_before, self._positions = self._positions, {}
        self.size = (sum(size for _, size in self._previous.values())
                     + sum(entry[3] for entry in self._positions_before.values()))
