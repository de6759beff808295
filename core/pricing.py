"""What a model call cost, from a dated price table that ships with smoltbot (core/prices.toml).

Cost is exact: prices are Decimals per million tokens, read from TOML without passing through a
float, and a cost is a Decimal in US dollars. A cost is only given when every priced part of the
usage has a price in force for it; anything else (a model not in the table, a price condition the
entry does not price, a prompt above the largest priced size, a cache write of unknown TTL) is an
unknown cost with its reason, never a guess.

The operator can add or replace entries with a TOML file of the same shape
(`SMOLTBOT_PRICE_TABLE_PATH`): an entry there replaces the shipped one of the same provider and
model id, aliases included.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from smoltbot.core.usage import TokenUsage

__all__ = [
    "Cost",
    "CostTotal",
    "ModelPrice",
    "PriceTable",
    "PriceTableError",
    "Rates",
    "Tier",
    "cost_of",
    "load_price_table",
    "parse_price_table",
]

_MILLION = Decimal(1_000_000)
#: The parts of a usage and the rate each is billed at.
_RATE_OF_PART = {
    "input": "input",
    "cache_read": "cache_read",
    "cache_write_5m": "cache_write_5m",
    "cache_write_1h": "cache_write_1h",
    "output": "output",
}
_RATE_NAMES = ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h")
_PROVIDERS = frozenset({"anthropic", "openai", "gemini"})


class PriceTableError(ValueError):
    """A price table file that cannot be used; the message names the file, the entry and the fix."""


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per million tokens of each part; None where the provider has no such price."""

    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None
    cache_write_5m: Decimal | None = None
    cache_write_1h: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Tier:
    """Rates for prompts larger than `above_prompt_tokens` (long-context pricing)."""

    above_prompt_tokens: int
    rates: Rates


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """One model's prices as published by its provider, with when and where they were checked."""

    provider: str
    model: str
    aliases: tuple[str, ...]
    rates: Rates
    checked: dt.date
    source: str
    tiers: tuple[Tier, ...] = ()
    #: Fraction of every part's price paid for batch calls (0.5 = 50% off); None: not priced.
    batch_price_factor: Decimal | None = None
    #: Prompts above this size have a price the table does not know (cost unknown). None: no limit.
    max_prompt_tokens: int | None = None
    note: str = ""

    def rates_for(self, prompt_tokens: int) -> Rates:
        chosen = self.rates
        for tier in sorted(self.tiers, key=lambda t: t.above_prompt_tokens):
            if prompt_tokens > tier.above_prompt_tokens:
                chosen = tier.rates
        return chosen


@dataclass(frozen=True, slots=True)
class Cost:
    """The cost of one call: `usd` exact, or None with the `reason` it is unknown."""

    usd: Decimal | None
    reason: str = ""
    #: The entry the cost came from (its checked date and source go with the figure).
    price: ModelPrice | None = None
    #: USD per usage part, for showing where the money went.
    parts: Mapping[str, Decimal] = field(default_factory=dict)

    @property
    def known(self) -> bool:
        return self.usd is not None


@dataclass(slots=True)
class CostTotal:
    """A roll-up of costs where the unknown stays visible: "$X for N calls + M calls of unknown cost"."""

    known_usd: Decimal = Decimal(0)
    known_calls: int = 0
    unknown_calls: int = 0
    #: Why costs were unknown, with how many calls each.
    unknown_reasons: dict[str, int] = field(default_factory=dict)

    def add(self, cost: Cost) -> None:
        if cost.usd is None:
            self.unknown_calls += 1
            self.unknown_reasons[cost.reason] = self.unknown_reasons.get(cost.reason, 0) + 1
        else:
            self.known_usd += cost.usd
            self.known_calls += 1

    def merge(self, other: CostTotal) -> None:
        self.known_usd += other.known_usd
        self.known_calls += other.known_calls
        self.unknown_calls += other.unknown_calls
        for reason, count in other.unknown_reasons.items():
            self.unknown_reasons[reason] = self.unknown_reasons.get(reason, 0) + count

    @classmethod
    def of(cls, costs: Iterable[Cost]) -> CostTotal:
        total = cls()
        for cost in costs:
            total.add(cost)
        return total

    @property
    def complete(self) -> bool:
        return self.unknown_calls == 0

    def describe(self) -> str:
        text = f"${self.known_usd:f}"
        if self.unknown_calls:
            calls = "call" if self.unknown_calls == 1 else "calls"
            text += f" + {self.unknown_calls} {calls} of unknown cost"
        return text

    def as_dict(self) -> dict[str, Any]:
        # A string keeps the Decimal exact through JSON.
        return {
            "known_usd": f"{self.known_usd:f}",
            "known_calls": self.known_calls,
            "unknown_calls": self.unknown_calls,
            "unknown_reasons": dict(sorted(self.unknown_reasons.items())),
        }


class PriceTable:
    """Model prices by provider and model id (or a documented alias of it)."""

    def __init__(self, entries: Iterable[ModelPrice]) -> None:
        self._entries: dict[tuple[str, str], ModelPrice] = {}
        self._names: dict[tuple[str, str], ModelPrice] = {}
        for entry in entries:
            self._entries[(entry.provider, entry.model)] = entry
        for entry in self._entries.values():
            for name in (entry.model, *entry.aliases):
                self._names[(entry.provider, name)] = entry

    @property
    def entries(self) -> tuple[ModelPrice, ...]:
        return tuple(self._entries.values())

    def overlaid(self, other: PriceTable) -> PriceTable:
        """This table with `other`'s entries replacing those of the same provider and model id."""
        merged = dict(self._entries)
        for key, entry in other._entries.items():
            merged[key] = entry
        return PriceTable(merged.values())

    def lookup(self, provider: str, model: str) -> ModelPrice | None:
        return self._names.get((provider, _model_name(provider, model)))

    def cost(self, usage: TokenUsage, model: str, *, provider: str | None = None) -> Cost:
        """The cost of `usage` on `model` (provider defaults to the usage's)."""
        provider = provider or usage.provider
        price = self.lookup(provider, model)
        if price is None:
            return Cost(None, f"model not in the price table: {provider}/{_shown(model)}")
        return cost_of(usage, price)


def cost_of(usage: TokenUsage, price: ModelPrice) -> Cost:
    """The exact cost of `usage` at `price`, or why it cannot be known."""
    if usage.input is None or usage.output is None:
        missing = "input" if usage.input is None else "output"
        return Cost(None, f"the provider reported no {missing} token count", price)
    factor = Decimal(1)
    for condition in sorted(usage.conditions):
        if condition == "batch" and price.batch_price_factor is not None:
            factor = price.batch_price_factor
            continue
        return Cost(None, f"{condition} is not priced for {price.provider}/{price.model}", price)
    if usage.cache_write_unknown_ttl:
        return Cost(None, "cache writes of unknown TTL", price)
    prompt = usage.prompt_tokens or 0
    if price.max_prompt_tokens is not None and prompt > price.max_prompt_tokens:
        return Cost(None, f"no price for prompts above {price.max_prompt_tokens} tokens", price)
    rates = price.rates_for(prompt)
    parts: dict[str, Decimal] = {}
    for part, rate_name in _RATE_OF_PART.items():
        tokens = getattr(usage, part)
        if not tokens:
            continue
        rate: Decimal | None = getattr(rates, rate_name)
        if rate is None:
            return Cost(None, f"{part} tokens are not priced for {price.provider}/{price.model}", price)
        parts[part] = tokens * rate * factor / _MILLION
    return Cost(sum(parts.values(), Decimal(0)), "", price, parts)


# -- loading -------------------------------------------------------------------------------------


def load_price_table(override_path: str | Path | None = None) -> PriceTable:
    """The shipped table, with the operator's file (if any) laid over it."""
    shipped = resources.files("smoltbot.core").joinpath("prices.toml").read_text(encoding="utf-8")
    table = parse_price_table(shipped, origin="core/prices.toml")
    if override_path:
        path = Path(override_path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PriceTableError(
                f"price table {path}: cannot be read ({exc}); fix SMOLTBOT_PRICE_TABLE_PATH") from exc
        table = table.overlaid(parse_price_table(text, origin=str(path)))
    return table


def parse_price_table(text: str, *, origin: str) -> PriceTable:
    """Parses and validates a price table; every problem names the file and the entry."""
    try:
        # parse_float=Decimal: "0.30" stays 0.30, not 0.299999...
        data = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        raise PriceTableError(f"price table {origin}: not valid TOML ({exc})") from exc
    if data.get("schema") != 1:
        raise PriceTableError(f"price table {origin}: needs `schema = 1` at the top")
    models = data.get("model", [])
    if not isinstance(models, list):
        raise PriceTableError(f"price table {origin}: `model` must be an array of tables ([[model]])")
    entries: list[ModelPrice] = []
    seen: dict[tuple[str, str], str] = {}
    for index, raw in enumerate(models):
        where = f"price table {origin}, [[model]] #{index + 1}"
        entry = _entry(raw, where)
        where = f"price table {origin}, {entry.provider}/{entry.model}"
        for name in (entry.model, *entry.aliases):
            key = (entry.provider, name)
            if key in seen:
                raise PriceTableError(f"{where}: {name!r} is already the name of {seen[key]}")
            seen[key] = entry.model
        entries.append(entry)
    return PriceTable(entries)


def _entry(raw: Any, where: str) -> ModelPrice:
    if not isinstance(raw, dict):
        raise PriceTableError(f"{where}: must be a table")
    known = {"provider", "model", "aliases", "checked", "source", "note", "batch_price_factor",
             "max_prompt_tokens", "tier", *_RATE_NAMES}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise PriceTableError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(known)}")
    provider = raw.get("provider")
    model = raw.get("model")
    if provider not in _PROVIDERS:
        raise PriceTableError(f"{where}: provider must be one of {sorted(_PROVIDERS)}, not {provider!r}")
    if not isinstance(model, str) or not model:
        raise PriceTableError(f"{where}: model must be a non-empty string (the provider's model id)")
    where = f"{where} ({provider}/{model})"
    aliases = raw.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
        raise PriceTableError(f"{where}: aliases must be a list of model ids")
    checked = raw.get("checked")
    if not isinstance(checked, dt.date) or isinstance(checked, dt.datetime):
        raise PriceTableError(
            f"{where}: checked must be the date the prices were checked (checked = 2026-12-02)")
    source = raw.get("source")
    if not isinstance(source, str) or not source.strip():
        raise PriceTableError(f"{where}: source must say where the prices come from (a URL or a contract)")
    note = raw.get("note", "")
    if not isinstance(note, str):
        raise PriceTableError(f"{where}: note must be a string")
    factor = raw.get("batch_price_factor")
    if factor is not None and (not isinstance(factor, Decimal | int) or not 0 < factor <= 1):
        raise PriceTableError(f"{where}: batch_price_factor must be a number in (0, 1], e.g. 0.5")
    limit = raw.get("max_prompt_tokens")
    if limit is not None and (type(limit) is not int or limit <= 0):
        raise PriceTableError(f"{where}: max_prompt_tokens must be a positive integer")
    tiers_raw = raw.get("tier", [])
    if not isinstance(tiers_raw, list):
        raise PriceTableError(f"{where}: tier must be an array of tables ([[model.tier]])")
    tiers = []
    for tier_raw in tiers_raw:
        if not isinstance(tier_raw, dict):
            raise PriceTableError(f"{where}: each [[model.tier]] must be a table")
        above = tier_raw.get("above_prompt_tokens")
        if type(above) is not int or above <= 0:
            raise PriceTableError(f"{where}: [[model.tier]] needs above_prompt_tokens, a positive integer")
        extra = sorted(set(tier_raw) - {"above_prompt_tokens", *_RATE_NAMES})
        if extra:
            raise PriceTableError(f"{where}: [[model.tier]] has unknown field(s) {extra}")
        tiers.append(Tier(above, _rates(tier_raw, f"{where}, tier above {above}")))
    return ModelPrice(
        provider=provider,
        model=model,
        aliases=tuple(aliases),
        rates=_rates(raw, where),
        checked=checked,
        source=source.strip(),
        tiers=tuple(tiers),
        batch_price_factor=Decimal(factor) if factor is not None else None,
        max_prompt_tokens=limit,
        note=note,
    )


def _rates(raw: Mapping[str, Any], where: str) -> Rates:
    input_rate = _rate(raw, "input", where)
    output_rate = _rate(raw, "output", where)
    if input_rate is None or output_rate is None:
        missing = "input" if input_rate is None else "output"
        raise PriceTableError(f"{where}: {missing} (USD per million tokens) is required")
    return Rates(
        input=input_rate,
        output=output_rate,
        cache_read=_rate(raw, "cache_read", where),
        cache_write_5m=_rate(raw, "cache_write_5m", where),
        cache_write_1h=_rate(raw, "cache_write_1h", where),
    )


def _rate(raw: Mapping[str, Any], name: str, where: str) -> Decimal | None:
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Decimal | int) or value < 0:
        raise PriceTableError(f"{where}: {name} must be a non-negative number of USD per million tokens")
    return Decimal(value)


def _model_name(provider: str, model: str) -> str:
    model = model.strip()
    if provider == "gemini" and model.startswith("models/"):
        # The resource name (`models/gemini-2.5-flash`) and the model id name the same model.
        model = model[len("models/"):]
    return model


def _shown(model: str) -> str:
    return model if len(model) <= 80 else model[:77] + "..."
