"""Cost from the shipped, dated price table: exact arithmetic per part (prompt caching by TTL, long
context tiers, batch), an unknown cost whenever the table cannot price a call, and the operator's
override file laid over the shipped table."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest

from smoltbot.core.pricing import CostTotal, PriceTableError, load_price_table, parse_price_table
from smoltbot.core.settings import load_settings
from smoltbot.core.usage import (
    TokenUsage,
    anthropic_usage,
    gemini_usage,
    openai_chat_usage,
    openai_responses_usage,
)


@pytest.fixture(scope="module")
def table():
    return load_price_table()


def test_every_shipped_entry_is_dated_and_sourced(table) -> None:
    assert len(table.entries) >= 15
    for entry in table.entries:
        assert isinstance(entry.checked, dt.date) and entry.checked <= dt.date.today()
        assert entry.source.startswith("https://"), entry
        assert entry.rates.input > 0 and entry.rates.output > entry.rates.input
        # Anthropic's pricing page rounds Haiku 3's cache prices ($0.30, $0.50, $0.03), as shipped.
        if entry.provider == "anthropic" and entry.model != "claude-3-haiku-20240307":
            # Anthropic's documented multipliers: 5m write 1.25x, 1h write 2x, hit 0.1x of input.
            for rates in (entry.rates, *(tier.rates for tier in entry.tiers)):
                assert rates.cache_write_5m == rates.input * Decimal("1.25")
                assert rates.cache_write_1h == rates.input * 2
                assert rates.cache_read == rates.input / 10


def test_anthropic_cost_prices_each_part_once_with_cache_writes_by_ttl(table) -> None:
    usage = anthropic_usage(
        {
            "input_tokens": 1000,
            "cache_read_input_tokens": 4000,
            "cache_creation_input_tokens": 5000,
            "cache_creation": {"ephemeral_5m_input_tokens": 2000, "ephemeral_1h_input_tokens": 3000},
            "output_tokens": 500,
        }
    )
    cost = table.cost(usage, "claude-sonnet-4-5-20250929")
    # 1000*3 + 4000*0.30 + 2000*3.75 + 3000*6 + 500*15 = 37,200 micro-dollars
    assert cost.usd == Decimal("0.0372")
    assert cost.parts == {
        "input": Decimal("0.003"),
        "cache_read": Decimal("0.0012"),
        "cache_write_5m": Decimal("0.0075"),
        "cache_write_1h": Decimal("0.018"),
        "output": Decimal("0.0075"),
    }
    assert cost.price is not None and cost.price.source.startswith("https://platform.claude.com/")


def test_a_documented_alias_prices_as_its_model_and_nothing_else_does(table) -> None:
    usage = anthropic_usage({"input_tokens": 100_000, "output_tokens": 0})
    assert table.cost(usage, "claude-sonnet-4-5").usd == Decimal("0.3")
    assert table.cost(usage, "claude-opus-4-5").usd == Decimal("0.5")
    # Not documented as the same model: unknown, never the nearest-looking entry.
    for model in (
        "claude-sonnet-4-5-20991231",
        "claude-sonnet",
        "sonnet",
        "CLAUDE-SONNET-4-5",
        "claude-opus-4-5-x",
    ):
        cost = table.cost(usage, model)
        assert cost.usd is None and "not in the price table" in cost.reason, model


def test_an_unknown_model_has_an_unknown_cost(table) -> None:
    cost = table.cost(openai_chat_usage({"prompt_tokens": 10, "completion_tokens": 10}), "gpt-9-imaginary")
    assert cost.usd is None and not cost.known
    assert cost.reason == "model not in the price table: openai/gpt-9-imaginary"


def test_openai_cached_input_has_its_own_rate(table) -> None:
    usage = openai_chat_usage(
        {"prompt_tokens": 2006, "completion_tokens": 300, "prompt_tokens_details": {"cached_tokens": 1920}}
    )
    # 86*2.50 + 1920*0.25 + 300*15 = 5195 micro-dollars
    assert table.cost(usage, "gpt-5.4").usd == Decimal("0.005195")


def test_gemini_forum_example_cost(table) -> None:
    usage = gemini_usage(
        {
            "promptTokenCount": 11500,
            "candidatesTokenCount": 1000,
            "totalTokenCount": 22500,
            "cachedContentTokenCount": 10000,
            "thoughtsTokenCount": 10000,
        }
    )
    # 1500*1.25 + 10000*0.125 + (1000 + 10000 thoughts)*10
    assert table.cost(usage, "gemini-2.5-pro").usd == Decimal("0.113125")
    assert table.cost(usage, "models/gemini-2.5-pro").usd == Decimal("0.113125")


def test_long_context_tier_applies_to_the_whole_call_above_the_threshold(table) -> None:
    at = anthropic_usage({"input_tokens": 100_000, "cache_read_input_tokens": 100_000, "output_tokens": 1000})
    above = anthropic_usage(
        {"input_tokens": 100_001, "cache_read_input_tokens": 100_000, "output_tokens": 1000}
    )
    assert table.cost(at, "claude-sonnet-4-5").usd == Decimal("0.3") + Decimal("0.03") + Decimal("0.015")
    assert (
        table.cost(above, "claude-sonnet-4-5").usd
        == (Decimal("100001") * 6 + Decimal("100000") * Decimal("0.60") + 1000 * Decimal("22.50")) / 1_000_000
    )
    gemini = gemini_usage({"promptTokenCount": 300_000, "candidatesTokenCount": 0})
    assert table.cost(gemini, "gemini-2.5-pro").usd == Decimal("0.75")


def test_a_prompt_above_the_largest_priced_size_has_an_unknown_cost(table) -> None:
    usage = openai_responses_usage({"input_tokens": 272_001, "output_tokens": 1})
    cost = table.cost(usage, "gpt-5.4")
    assert cost.usd is None and "272000" in cost.reason


def test_batch_is_discounted_and_other_conditions_are_unknown(table) -> None:
    base = {"input_tokens": 1_000_000, "output_tokens": 1_000_000}
    assert table.cost(anthropic_usage({**base, "service_tier": "batch"}), "claude-haiku-4-5").usd == Decimal(
        3
    )
    assert table.cost(anthropic_usage(base), "claude-haiku-4-5").usd == Decimal(6)
    for extra in (
        {"speed": "fast"},
        {"service_tier": "priority"},
        {"inference_geo": "us"},
        {"server_tool_use": {"web_search_requests": 2}},
    ):
        cost = table.cost(anthropic_usage({**base, **extra}), "claude-opus-4-6")
        assert cost.usd is None and "is not priced" in cost.reason, extra
    flex = openai_responses_usage({"input_tokens": 1, "output_tokens": 1}, service_tier="flex")
    assert table.cost(flex, "gpt-5.4").usd is None


def test_cache_writes_of_unknown_ttl_and_missing_counts_give_an_unknown_cost(table) -> None:
    unsplit = anthropic_usage({"input_tokens": 1, "cache_creation_input_tokens": 10, "output_tokens": 1})
    assert table.cost(unsplit, "claude-opus-4-6").reason == "cache writes of unknown TTL"
    no_output = anthropic_usage({"input_tokens": 1})
    assert table.cost(no_output, "claude-opus-4-6").reason == "the provider reported no output token count"
    junk = anthropic_usage({"input_tokens": "12", "output_tokens": 1})
    assert table.cost(junk, "claude-opus-4-6").usd is None


def test_a_part_the_model_has_no_price_for_is_unknown(table) -> None:
    # OpenAI charges no cache writes and the table has none: a usage claiming some is not priced.
    usage = TokenUsage(provider="openai", input=1, output=1, cache_write_5m=5)
    cost = table.cost(usage, "gpt-5.4")
    assert cost.usd is None and "cache_write_5m" in cost.reason


def test_costs_are_exact_decimals(table) -> None:
    usage = openai_chat_usage(
        {"prompt_tokens": 3, "completion_tokens": 0, "prompt_tokens_details": {"cached_tokens": 3}}
    )
    assert table.cost(usage, "gpt-5.4-nano").usd == Decimal("0.00000006")  # 3 x $0.02/MTok, no float


def test_cost_total_keeps_the_unknown_visible(table) -> None:
    known = table.cost(anthropic_usage({"input_tokens": 1000, "output_tokens": 100}), "claude-opus-4-6")
    unknown = table.cost(anthropic_usage({"input_tokens": 1, "output_tokens": 1}), "claude-next")
    total = CostTotal.of([known, unknown, unknown])
    assert total.known_usd == Decimal("0.0075") and total.known_calls == 1 and total.unknown_calls == 2
    assert total.describe() == "$0.0075 + 2 calls of unknown cost"
    assert total.as_dict()["unknown_reasons"] == {"model not in the price table: anthropic/claude-next": 2}
    assert not total.complete
    other = CostTotal.of([known])
    other.merge(total)
    assert other.describe() == "$0.0150 + 2 calls of unknown cost"


OVERRIDE = """
schema = 1
[[model]]
provider = "anthropic"
model = "claude-opus-4-6"
checked = 2026-11-30
source = "contract 2026-17 with Anthropic"
input = 4
output = 20
cache_read = 0.4
cache_write_5m = 5
cache_write_1h = 8

[[model]]
provider = "openai"
model = "gpt-internal"
aliases = ["gpt-internal-2026-11-01"]
checked = 2026-11-30
source = "https://example.test/prices"
input = 1
output = 2
"""


def test_the_operator_file_replaces_and_adds_entries(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(OVERRIDE)
    settings = load_settings(price_table_path=str(path), home=tmp_path)
    table = load_price_table(settings.price_table_path)
    usage = anthropic_usage({"input_tokens": 1_000_000, "output_tokens": 0})
    assert table.cost(usage, "claude-opus-4-6").usd == Decimal(4)
    assert table.lookup("anthropic", "claude-opus-4-6").source == "contract 2026-17 with Anthropic"
    assert table.cost(usage, "claude-opus-4-7").usd == Decimal(5)  # untouched shipped entry
    chat = openai_chat_usage({"prompt_tokens": 1_000_000, "completion_tokens": 1_000_000})
    assert table.cost(chat, "gpt-internal-2026-11-01").usd == Decimal(3)
    assert load_price_table("").cost(usage, "claude-opus-4-6").usd == Decimal(5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("schema = 2", "schema = 1"),
        ("schema = 1\nmodel = 3", "array of tables"),
        ("schema = 1\n[[model]]\nprovider = 'acme'\nmodel = 'x'", "provider must be one of"),
        (
            "schema = 1\n[[model]]\nprovider = 'openai'\nmodel = 'x'\nsource = 's'\ninput = 1\noutput = 2",
            "checked must be the date",
        ),
        (
            "schema = 1\n[[model]]\nprovider = 'openai'\nmodel = 'x'\nchecked = 2026-01-01\n"
            "input = 1\noutput = 2",
            "source must say",
        ),
        (
            "schema = 1\n[[model]]\nprovider = 'openai'\nmodel = 'x'\nchecked = 2026-01-01\n"
            "source = 's'\ninput = 1",
            "output (USD per million tokens) is required",
        ),
        (
            "schema = 1\n[[model]]\nprovider = 'openai'\nmodel = 'x'\nchecked = 2026-01-01\nsource = 's'\n"
            "input = -1\noutput = 2",
            "input must be a non-negative number",
        ),
        (
            "schema = 1\n[[model]]\nprovider = 'openai'\nmodel = 'x'\nchecked = 2026-01-01\nsource = 's'\n"
            "input = 1\noutput = 2\ncached = 1",
            "unknown field(s) ['cached']",
        ),
        (
            "schema = 1\n[[model]]\nprovider = 'openai'\nmodel = 'x'\nchecked = 2026-01-01\nsource = 's'\n"
            "input = 1\noutput = 2\nbatch_price_factor = 2",
            "batch_price_factor",
        ),
        (
            "schema = 1\n[[model]]\nprovider = 'openai'\nmodel = 'x'\nchecked = 2026-01-01\n"
            "source = 's'\ninput = 1\noutput = 2\n[[model]]\nprovider = 'openai'\nmodel = 'y'\n"
            "aliases = ['x']\nchecked = 2026-01-01\n"
            "source = 's'\ninput = 1\noutput = 2",
            "'x' is already the name of x",
        ),
        ("schema = 1\n[[model", "not valid TOML"),
    ],
)
def test_a_bad_price_file_is_refused_naming_the_file_and_what_to_fix(text, message) -> None:
    with pytest.raises(PriceTableError) as refused:
        parse_price_table(text, origin="/etc/smoltbot/prices.toml")
    assert "/etc/smoltbot/prices.toml" in str(refused.value)
    assert message in str(refused.value)


def test_an_unreadable_override_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PriceTableError, match="SMOLTBOT_PRICE_TABLE_PATH"):
        load_price_table(tmp_path / "missing.toml")
