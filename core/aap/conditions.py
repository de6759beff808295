"""The card condition language: escalation-trigger conditions, parsed without eval.

Grammar (case-insensitive keywords)::

    expr       := or_expr
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | primary
    primary    := "(" expr ")" | "contains" "(" ref "," literal ")" | operand [op operand]
    op         := "==" | "!=" | ">" | ">=" | "<" | "<=" | "in" | "contains"
    operand    := ref | literal | "[" literal ("," literal)* "]"
    literal    := "string" | 'string' | number | true | false | null
    ref        := identifier ("." identifier)*

A lone ref is a boolean flag (true when the value it names is truthy).

How a ref is resolved against a trace:

* `action_type`, `action_name`, `action_category` name `action.type|name|category`.
* A path whose first segment is a trace field (`action`, `decision`, `escalation`,
  `context`, ...) is read from the trace root; `parameters.x`, `metadata.x`,
  `environment.x` and `target.x` are shorthands for `action.parameters.x`,
  `context.metadata.x`, `context.environment.x` and `action.target.x`.
* Any other name is looked up, in this order, in `action.parameters`,
  `context.metadata` and `context` itself. A comparison matches when ANY of the
  places holding the name satisfies it. The aap package reads only the first of
  context / metadata / parameters that holds the name; matching on any of them is a
  superset of that, and an agent cannot hide a tool parameter behind a metadata key
  of the same name.

Comparisons against a field that is absent are false (so `not x > 1` is true when x
is missing), exactly as in the aap package. A numeric literal compares numerically
and coerces the observed value with `float()` (numeric strings and booleans
included), again as aap does. `contains` is substring containment for strings and
membership for lists (keys for objects); `in` is the reverse. `matches` (regex) is
deliberately not supported: a card author's regex would run over agent-controlled
text, a denial-of-service risk.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_CONDITION_LENGTH", "MAX_CONDITION_TERMS", "MISSING", "Condition", "parse"]

MAX_CONDITION_LENGTH = 2000
#: Comparisons, flags and list items in one condition: what one evaluation walks, at most.
MAX_CONDITION_TERMS = 100
_MAX_DEPTH = 50


class _Missing:
    """A ref that names nothing in the trace (distinct from a JSON null)."""

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<op>==|!=|>=|<=|>|<|&&|\|\||!)
  | (?P<punct>[()\[\],])
  | (?P<ref>[A-Za-z_][A-Za-z0-9_\-]*(?:\.[A-Za-z_0-9][A-Za-z0-9_\-]*)*)
    """,
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "contains", "true", "false", "null", "none", "matches"}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'"}

_TRACE_ROOTS = {
    "trace_id",
    "agent_id",
    "card_id",
    "timestamp",
    "action",
    "decision",
    "escalation",
    "context",
}
_SHORTHANDS = {
    "action_type": ("action", "type"),
    "action_name": ("action", "name"),
    "action_category": ("action", "category"),
    "parameters": ("action", "parameters"),
    "target": ("action", "target"),
    "metadata": ("context", "metadata"),
    "environment": ("context", "environment"),
}


@dataclass(frozen=True)
class _Token:
    kind: str  # number | string | op | punct | ref | kw | end
    text: str
    pos: int
    value: Any = None


def _unescape(body: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            out.append(_ESCAPES.get(body[i + 1], body[i + 1]))
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            raise ValueError(f"unexpected character {text[pos]!r} at position {pos}")
        kind = m.lastgroup or ""
        tok = m.group()
        if kind == "number":
            value: Any = float(tok)
            tokens.append(_Token("number", tok, pos, value))
        elif kind == "string":
            tokens.append(_Token("string", tok, pos, _unescape(tok[1:-1])))
        elif kind == "ref":
            low = tok.lower()
            if low in _KEYWORDS:
                tokens.append(_Token("kw", low, pos))
            else:
                tokens.append(_Token("ref", tok, pos))
        elif kind == "op":
            # C-style spellings are accepted as aliases of the keywords.
            alias = {"&&": "and", "||": "or", "!": "not"}.get(tok)
            tokens.append(_Token("kw", alias, pos) if alias else _Token("op", tok, pos))
        elif kind == "punct":
            tokens.append(_Token("punct", tok, pos))
        pos = m.end()
    tokens.append(_Token("end", "", len(text)))
    return tokens


# --- AST -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ref:
    path: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class _Lit:
    value: Any


@dataclass(frozen=True)
class _List:
    values: tuple[Any, ...]


@dataclass(frozen=True)
class _Compare:
    left: _Ref | _Lit | _List
    op: str
    right: _Ref | _Lit | _List


@dataclass(frozen=True)
class _Flag:
    ref: _Ref


@dataclass(frozen=True)
class _Not:
    inner: Any


@dataclass(frozen=True)
class _BoolOp:
    op: str  # and | or
    parts: tuple[Any, ...]


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0
        self.terms = 0

    def count(self, terms: int) -> None:
        self.terms += terms
        if self.terms > MAX_CONDITION_TERMS:
            raise ValueError(f"a condition may hold at most {MAX_CONDITION_TERMS} comparisons and list items "
                             "(MAX_CONDITION_TERMS); split it into several triggers")

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def next(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def error(self, tok: _Token, what: str) -> ValueError:
        found = "end of condition" if tok.kind == "end" else repr(tok.text)
        return ValueError(f"{what}, found {found} at position {tok.pos}")

    def parse(self) -> Any:
        node = self.or_expr()
        tok = self.peek()
        if tok.kind != "end":
            raise self.error(tok, "expected 'and', 'or' or the end of the condition")
        return node

    def or_expr(self) -> Any:
        parts = [self.and_expr()]
        while self.peek().kind == "kw" and self.peek().text == "or":
            self.next()
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else _BoolOp("or", tuple(parts))

    def and_expr(self) -> Any:
        parts = [self.not_expr()]
        while self.peek().kind == "kw" and self.peek().text == "and":
            self.next()
            parts.append(self.not_expr())
        return parts[0] if len(parts) == 1 else _BoolOp("and", tuple(parts))

    def not_expr(self) -> Any:
        if self.peek().kind == "kw" and self.peek().text == "not":
            self.next()
            return _Not(self.nested(self.not_expr))
        return self.primary()

    def nested(self, fn: Any) -> Any:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise ValueError(f"condition nests deeper than {_MAX_DEPTH} levels")
        try:
            return fn()
        finally:
            self.depth -= 1

    def primary(self) -> Any:
        tok = self.peek()
        if tok.kind == "punct" and tok.text == "(":
            self.next()
            node = self.nested(self.or_expr)
            close = self.next()
            if close.kind != "punct" or close.text != ")":
                raise self.error(close, "expected ')'")
            return node
        if tok.kind == "kw" and tok.text == "contains" and self.tokens[self.i + 1].text == "(":
            # SPEC 4.6 function form: contains(field, value)
            self.next()
            self.next()
            ref = self.next()
            if ref.kind != "ref":
                raise self.error(ref, "expected a field name as the first argument of contains()")
            comma = self.next()
            if comma.text != ",":
                raise self.error(comma, "expected ',' in contains()")
            value = self.operand()
            close = self.next()
            if close.text != ")":
                raise self.error(close, "expected ')' closing contains()")
            self.count(1 + (len(value.values) if isinstance(value, _List) else 0))
            return _Compare(_ref(ref.text), "contains", value)
        if tok.kind == "kw" and tok.text == "matches":
            raise ValueError("'matches' (regular expressions) is not supported; use 'contains' or '=='")
        left = self.operand()
        op = self.peek()
        if op.kind == "op" or (op.kind == "kw" and op.text in ("in", "contains")):
            self.next()
            right = self.operand()
            if isinstance(left, _Lit) and isinstance(right, _Lit):
                raise self.error(op, "a comparison needs at least one field name")
            self.count(1 + sum(len(side.values) for side in (left, right) if isinstance(side, _List)))
            return _Compare(left, op.text, right)
        if op.kind == "kw" and op.text == "matches":
            raise ValueError("'matches' (regular expressions) is not supported; use 'contains' or '=='")
        if not isinstance(left, _Ref):
            raise self.error(op, "expected a comparison operator after a literal")
        self.count(1)
        return _Flag(left)

    def operand(self) -> _Ref | _Lit | _List:
        tok = self.next()
        if tok.kind == "ref":
            return _ref(tok.text)
        if tok.kind in ("number", "string"):
            return _Lit(tok.value)
        if tok.kind == "kw" and tok.text in ("true", "false", "null", "none"):
            return _Lit({"true": True, "false": False}.get(tok.text))
        if tok.kind == "punct" and tok.text == "[":
            values: list[Any] = []
            if self.peek().text == "]":
                self.next()
                return _List(())
            while True:
                item = self.operand()
                if not isinstance(item, _Lit):
                    raise self.error(tok, "list items must be literals")
                values.append(item.value)
                sep = self.next()
                if sep.text == "]":
                    return _List(tuple(values))
                if sep.text != ",":
                    raise self.error(sep, "expected ',' or ']' in list")
        raise self.error(tok, "expected a field name, a literal or a list")


def _ref(text: str) -> _Ref:
    parts = tuple(text.split("."))
    if any(not p for p in parts):
        raise ValueError(f"invalid field name {text!r}")
    return _Ref(parts, text)


# --- evaluation ------------------------------------------------------------------


def _walk(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if isinstance(obj, dict) and key in obj:
            obj = obj[key]
        elif isinstance(obj, list) and key.isdigit() and int(key) < len(obj):
            obj = obj[int(key)]
        else:
            return MISSING
    return obj


def _candidates(ref: _Ref, trace: dict[str, Any]) -> list[Any]:
    """Every value the ref names in the trace, most specific first; [] when none."""
    head, rest = ref.path[0], ref.path[1:]
    if head in _SHORTHANDS:
        value = _walk(trace, _SHORTHANDS[head] + rest)
        return [] if value is MISSING else [value]
    if head in _TRACE_ROOTS:
        value = _walk(trace, ref.path)
        return [] if value is MISSING else [value]
    action = trace.get("action") or {}
    context = trace.get("context") or {}
    found = []
    for source in (action.get("parameters"), context.get("metadata"), context):
        if isinstance(source, dict):
            value = _walk(source, ref.path)
            if value is not MISSING:
                found.append(value)
    return found


def _as_number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _equal(actual: Any, expected: Any) -> bool:
    if isinstance(expected, float) and not isinstance(expected, bool):
        number = _as_number(actual)
        return number is not None and number == expected
    if isinstance(actual, bool) or isinstance(expected, bool):
        return isinstance(actual, bool) and isinstance(expected, bool) and actual == expected
    return bool(actual == expected)


def _contains(container: Any, item: Any) -> bool:
    if isinstance(container, str):
        return isinstance(item, str) and item in container
    if isinstance(container, list):
        return any(_equal(element, item) for element in container)
    if isinstance(container, dict):
        return isinstance(item, str) and item in container
    return False


def _compare(actual: Any, op: str, expected: Any) -> bool:
    if op == "==":
        return _equal(actual, expected)
    if op == "!=":
        return not _equal(actual, expected)
    if op == "contains":
        return _contains(actual, expected)
    if op == "in":
        if isinstance(expected, list):
            if isinstance(actual, list):
                return any(_contains(expected, a) for a in actual)
            return _contains(expected, actual)
        return _contains(expected, actual)
    left, right = _as_number(actual), _as_number(expected)
    if left is None or right is None:
        if isinstance(actual, str) and isinstance(expected, str):
            left_s, right_s = actual, expected
            return {
                ">": left_s > right_s,
                ">=": left_s >= right_s,
                "<": left_s < right_s,
                "<=": left_s <= right_s,
            }[op]
        return False
    return {">": left > right, ">=": left >= right, "<": left < right, "<=": left <= right}[op]


class _Evaluation:
    """Evaluates an AST against one trace, remembering what each ref observed."""

    def __init__(self, trace: dict[str, Any]) -> None:
        self.trace = trace
        self.observed: dict[str, Any] = {}

    def _operand_values(self, node: Any) -> list[Any]:
        if isinstance(node, _Ref):
            values = _candidates(node, self.trace)
            if node.text not in self.observed or self.observed[node.text] is MISSING:
                self.observed[node.text] = values[0] if values else MISSING
            return values
        if isinstance(node, _List):
            return [list(node.values)]
        return [node.value]

    def eval(self, node: Any) -> bool:
        if isinstance(node, _BoolOp):
            # Every part is evaluated (no short-circuit) so value_observed is complete.
            results = [self.eval(part) for part in node.parts]
            return all(results) if node.op == "and" else any(results)
        if isinstance(node, _Not):
            return not self.eval(node.inner)
        if isinstance(node, _Flag):
            values = self._operand_values(node.ref)
            for value in values:
                if value:
                    self.observed[node.ref.text] = value
                    return True
            return False
        left_values = self._operand_values(node.left)
        right_values = self._operand_values(node.right)
        for left in left_values:
            for right in right_values:
                if _compare(left, node.op, right):
                    # Report the value that made the condition match.
                    if isinstance(node.left, _Ref):
                        self.observed[node.left.text] = left
                    if isinstance(node.right, _Ref):
                        self.observed[node.right.text] = right
                    return True
        return False


class Condition:
    """A parsed condition; `evaluate(trace)` -> (matched, value_observed).

    value_observed is the value the condition's one field held (the value that made
    it match, when it matched), a {field: value} dict when it names several fields,
    and None when the fields are absent.
    """

    def __init__(self, text: str, tree: Any, terms: int = 0) -> None:
        self.text = text
        self._tree = tree
        #: Comparisons, flags and list items: the work of one evaluation.
        self.terms = terms

    def __repr__(self) -> str:
        return f"Condition({self.text!r})"

    def refs(self) -> list[str]:
        out: list[str] = []

        def visit(node: Any) -> None:
            if isinstance(node, _Ref):
                if node.text not in out:
                    out.append(node.text)
            elif isinstance(node, _Flag):
                visit(node.ref)
            elif isinstance(node, _Not):
                visit(node.inner)
            elif isinstance(node, _BoolOp):
                for part in node.parts:
                    visit(part)
            elif isinstance(node, _Compare):
                visit(node.left)
                visit(node.right)

        visit(self._tree)
        return out

    def evaluate(self, trace: dict[str, Any]) -> tuple[bool, Any]:
        run = _Evaluation(trace)
        matched = run.eval(self._tree)
        observed = {k: (None if v is MISSING else v) for k, v in run.observed.items()}
        if len(observed) == 1:
            return matched, next(iter(observed.values()))
        if all(v is None for v in observed.values()):
            return matched, None
        return matched, observed


def parse(text: str) -> Condition:
    """Parse a condition; ValueError with a clear message when it cannot be parsed."""
    if not isinstance(text, str):
        raise TypeError("a condition must be a string")
    if not text.strip():
        raise ValueError("a condition must not be empty")
    if len(text) > MAX_CONDITION_LENGTH:
        raise ValueError(f"a condition must be at most {MAX_CONDITION_LENGTH} characters "
                         "(MAX_CONDITION_LENGTH)")
    try:
        parser = _Parser(text)
        tree = parser.parse()
    except ValueError as exc:
        shown = text if len(text) <= 80 else text[:80] + "…"
        raise ValueError(f"cannot parse condition {shown!r}: {exc}") from None
    return Condition(text, tree, parser.terms)
