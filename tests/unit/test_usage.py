"""Token usage from each provider's own usage object: every token in exactly one part, prompt caching
included, "not reported" kept apart from 0, and hostile values never turned into counts.

The examples are the providers' documented ones (sources in core/usage.py's docstring); where a
provider reports its own total, the normalised parts must add up to exactly that total: a part
counted twice, or dropped, fails here."""

from __future__ import annotations

import pytest

from smoltbot.core.usage import (
    API_ANTHROPIC_MESSAGES,
    API_GEMINI,
    API_OPENAI_CHAT,
    API_OPENAI_RESPONSES,
    TokenUsage,
    UsageTotals,
    anthropic_usage,
    gemini_usage,
    openai_chat_usage,
    openai_responses_usage,
    usage_from_response,
)

# Anthropic: recorded real response (anthropic-wire.md §2).
ANTHROPIC_RECORDED = {
    "input_tokens": 3182,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
    "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
    "output_tokens": 237,
    "service_tier": "standard",
    "inference_geo": "not_available",
    "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
}
# Anthropic with prompt caching, both TTLs: "Total input tokens in a request is the summation of
# input_tokens, cache_creation_input_tokens, and cache_read_input_tokens".
ANTHROPIC_CACHED = {
    "input_tokens": 21,
    "cache_creation_input_tokens": 3000,
    "cache_read_input_tokens": 188086,
    "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
    "output_tokens": 393,
    "output_tokens_details": {"thinking_tokens": 120},
}
# OpenAI prompt-caching guide (quoted in openai/openai-python#2544): cached tokens are part of prompt.
OPENAI_CHAT_CACHED = {
    "prompt_tokens": 2006,
    "completion_tokens": 300,
    "total_tokens": 2306,
    "prompt_tokens_details": {"cached_tokens": 1920},
    "completion_tokens_details": {"reasoning_tokens": 0},
}
# docs.x.ai prompt-caching usage-and-pricing (the OpenAI-compatible shapes), Chat and Responses.
XAI_CHAT = {
    "prompt_tokens": 125,
    "completion_tokens": 48,
    "total_tokens": 173,
    "prompt_tokens_details": {"text_tokens": 125, "audio_tokens": 0, "image_tokens": 0, "cached_tokens": 98},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
RESPONSES = {
    "input_tokens": 125,
    "output_tokens": 48,
    "total_tokens": 173,
    "input_tokens_details": {"cached_tokens": 98},
    "output_tokens_details": {"reasoning_tokens": 0},
}
RESPONSES_REASONING = {
    "input_tokens": 328,
    "output_tokens": 1460,
    "total_tokens": 1788,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens_details": {"reasoning_tokens": 1344},
}
# Gemini 2.5 Pro reply quoted on Google's developer forum (discuss.ai.google.dev ... /107349).
GEMINI_CACHED_THINKING = {
    "promptTokenCount": 11500,
    "candidatesTokenCount": 1000,
    "totalTokenCount": 22500,
    "cachedContentTokenCount": 10000,
    "thoughtsTokenCount": 10000,
}


def test_anthropic_recorded_reply() -> None:
    usage = anthropic_usage(ANTHROPIC_RECORDED)
    assert (usage.input, usage.cache_read, usage.cache_write_5m, usage.cache_write_1h) == (3182, 0, 0, 0)
    assert usage.cache_write_unknown_ttl is None
    assert usage.output == 237 and usage.reasoning is None
    assert usage.conditions == frozenset() and usage.notes == ()
    assert usage.total == 3182 + 237


def test_anthropic_input_tokens_exclude_cache_reads_and_writes_which_are_split_by_ttl() -> None:
    usage = anthropic_usage(ANTHROPIC_CACHED)
    assert usage.input == 21
    assert usage.cache_read == 188086
    assert (usage.cache_write_5m, usage.cache_write_1h, usage.cache_write_unknown_ttl) == (1000, 2000, None)
    assert usage.cache_write == 3000
    # The documented total input: the sum of the three, each once.
    assert usage.prompt_tokens == 21 + 3000 + 188086
    assert usage.output == 393 and usage.reasoning == 120
    assert usage.total == 21 + 3000 + 188086 + 393


def test_anthropic_cache_writes_without_a_ttl_split_are_kept_as_unknown_ttl() -> None:
    usage = anthropic_usage({"input_tokens": 5, "cache_creation_input_tokens": 700, "output_tokens": 1})
    assert usage.cache_write_unknown_ttl == 700
    assert usage.cache_write_5m is None and usage.cache_write_1h is None
    assert usage.prompt_tokens == 705


def test_anthropic_split_smaller_than_the_total_leaves_the_rest_of_unknown_ttl_and_a_note() -> None:
    usage = anthropic_usage(
        {
            "input_tokens": 1,
            "output_tokens": 1,
            "cache_creation_input_tokens": 100,
            "cache_creation": {"ephemeral_5m_input_tokens": 60, "ephemeral_1h_input_tokens": 10},
        }
    )
    assert (usage.cache_write_5m, usage.cache_write_1h, usage.cache_write_unknown_ttl) == (60, 10, 30)
    assert usage.cache_write == 100
    assert usage.notes and "100" in usage.notes[0]


def test_anthropic_stream_final_usage_from_message_delta() -> None:
    # The wire guide's stream: message_delta carries the cumulative usage of the message.
    usage = anthropic_usage(
        {
            "input_tokens": 135,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 10,
        }
    )
    assert (usage.input, usage.output, usage.cache_read, usage.cache_write) == (135, 10, 0, 0)


def test_anthropic_price_conditions_are_recorded() -> None:
    usage = anthropic_usage(
        {
            "input_tokens": 1,
            "output_tokens": 1,
            "service_tier": "priority",
            "speed": "fast",
            "inference_geo": "us",
            "server_tool_use": {"web_search_requests": 3, "web_fetch_requests": 0},
        }
    )
    assert usage.conditions == {
        "service_tier:priority",
        "speed:fast",
        "inference_geo:us",
        "web_search_requests:3",
    }
    assert anthropic_usage({"input_tokens": 1, "output_tokens": 1, "service_tier": "batch"}).conditions == {
        "batch"
    }


def test_openai_chat_prompt_tokens_include_cached_tokens() -> None:
    usage = openai_chat_usage(OPENAI_CHAT_CACHED)
    assert (usage.input, usage.cache_read, usage.output, usage.reasoning) == (86, 1920, 300, 0)
    assert usage.cache_write is None  # OpenAI reports (and charges) no cache writes
    assert usage.total == OPENAI_CHAT_CACHED["total_tokens"]


def test_openai_chat_reasoning_is_part_of_completion_tokens() -> None:
    usage = openai_chat_usage(
        {
            "prompt_tokens": 20,
            "completion_tokens": 500,
            "total_tokens": 520,
            "completion_tokens_details": {"reasoning_tokens": 448},
        }
    )
    assert usage.output == 500 and usage.reasoning == 448
    assert usage.total == 520


@pytest.mark.parametrize(
    ("parse", "usage"), [(openai_chat_usage, XAI_CHAT), (openai_responses_usage, RESPONSES)]
)
def test_openai_documented_cached_example(parse, usage) -> None:
    normalised = parse(usage)
    assert (normalised.input, normalised.cache_read, normalised.output) == (27, 98, 48)
    assert normalised.total == 173


def test_openai_responses_reasoning_and_service_tier() -> None:
    usage = openai_responses_usage(RESPONSES_REASONING, service_tier="flex")
    assert (usage.input, usage.cache_read, usage.output, usage.reasoning) == (328, 0, 1460, 1344)
    assert usage.total == 1788
    assert usage.conditions == {"service_tier:flex"}
    assert openai_responses_usage(RESPONSES, service_tier="default").conditions == frozenset()


def test_openai_audio_tokens_are_a_price_condition() -> None:
    usage = openai_chat_usage(
        {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "prompt_tokens_details": {"audio_tokens": 4},
            "completion_tokens_details": {"audio_tokens": 2},
        }
    )
    assert usage.conditions == {"audio_input", "audio_output"}


def test_gemini_prompt_includes_cached_content_and_thoughts_are_output() -> None:
    usage = gemini_usage(GEMINI_CACHED_THINKING)
    assert (usage.input, usage.cache_read, usage.output, usage.reasoning) == (1500, 10000, 11000, 10000)
    assert usage.total == GEMINI_CACHED_THINKING["totalTokenCount"]


def test_gemini_tool_use_prompt_tokens_are_input_counted_once() -> None:
    meta = {
        "promptTokenCount": 100,
        "toolUsePromptTokenCount": 50,
        "candidatesTokenCount": 10,
        "totalTokenCount": 160,
    }
    usage = gemini_usage(meta)
    assert usage.input == 150 and usage.cache_read is None and usage.output == 10
    assert usage.total == 160


def test_gemini_audio_modality_is_a_price_condition() -> None:
    meta = {
        "promptTokenCount": 10,
        "candidatesTokenCount": 1,
        "promptTokensDetails": [
            {"modality": "TEXT", "tokenCount": 4},
            {"modality": "AUDIO", "tokenCount": 6},
        ],
    }
    assert gemini_usage(meta).conditions == {"audio_input"}


def test_not_reported_is_not_zero() -> None:
    bare = anthropic_usage({"input_tokens": 10, "output_tokens": 2})
    assert bare.cache_read is None and bare.cache_write is None
    zero = anthropic_usage({"input_tokens": 10, "output_tokens": 2, "cache_read_input_tokens": 0})
    assert zero.cache_read == 0
    nothing = usage_from_response(API_ANTHROPIC_MESSAGES, {"id": "msg_1", "content": []})
    assert nothing.provider == "anthropic" and not nothing.reported and nothing.total is None


@pytest.mark.parametrize(
    ("api", "response", "total"),
    [
        (API_ANTHROPIC_MESSAGES, {"usage": ANTHROPIC_CACHED}, 21 + 3000 + 188086 + 393),
        (API_OPENAI_CHAT, {"usage": OPENAI_CHAT_CACHED, "service_tier": "default"}, 2306),
        (API_OPENAI_RESPONSES, {"usage": RESPONSES_REASONING}, 1788),
        (API_GEMINI, {"usageMetadata": GEMINI_CACHED_THINKING}, 22500),
    ],
)
def test_usage_from_a_final_response(api, response, total) -> None:
    usage = usage_from_response(api, response)
    assert usage.total == total


@pytest.mark.parametrize(
    "bad",
    [
        True,
        12.0,
        "12",
        -1,
        2**53,
        10**5000,
        None,
        [],
        {"n": 1},
    ],
    ids=["bool", "float", "string", "negative", "2**53", "5000-digit", "null", "list", "object"],
)
def test_a_count_that_is_not_a_believable_integer_is_not_reported(bad) -> None:
    usage = anthropic_usage({"input_tokens": bad, "output_tokens": 3})
    assert usage.input is None and usage.output == 3
    if bad is not None:
        assert len(usage.notes) == 1 and "input_tokens" in usage.notes[0]
        assert len(usage.notes[0]) < 200


def test_inconsistent_cached_counts_leave_input_unknown_with_a_note() -> None:
    chat = openai_chat_usage(
        {"prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 11}}
    )
    assert chat.input is None and chat.cache_read == 11 and chat.notes
    gemini = gemini_usage({"promptTokenCount": 5, "cachedContentTokenCount": 9, "candidatesTokenCount": 1})
    assert gemini.input is None and gemini.notes


@pytest.mark.parametrize("junk", [None, "usage", 5, [1, 2], {"input_tokens": {"deep": [1]}}, {1: 2}])
def test_junk_usage_objects_never_raise(junk) -> None:
    for parse in (anthropic_usage, openai_chat_usage, openai_responses_usage, gemini_usage):
        usage = parse(junk)
        assert isinstance(usage, TokenUsage)
    for api in (API_ANTHROPIC_MESSAGES, API_OPENAI_CHAT, API_OPENAI_RESPONSES, API_GEMINI, "nope"):
        assert isinstance(usage_from_response(api, {"usage": junk, "usageMetadata": junk}), TokenUsage)
        assert isinstance(usage_from_response(api, junk), TokenUsage)


def test_dict_round_trip_keeps_not_reported() -> None:
    usage = anthropic_usage({**ANTHROPIC_CACHED, "speed": "fast"})
    again = TokenUsage.from_dict(usage.as_dict())
    assert again == usage
    bare = openai_chat_usage({"prompt_tokens": 1, "completion_tokens": 1})
    assert TokenUsage.from_dict(bare.as_dict()).cache_write_5m is None


def test_totals_sum_known_parts_and_count_the_calls_that_did_not_report_them() -> None:
    totals = UsageTotals.of(
        [
            anthropic_usage(ANTHROPIC_CACHED),
            openai_chat_usage(OPENAI_CHAT_CACHED),
            gemini_usage({"promptTokenCount": 7}),  # no output reported
        ]
    )
    assert totals.calls == 3
    assert totals.input == 21 + 86 + 7
    assert totals.cache_read == 188086 + 1920
    assert totals.cache_write == 3000
    assert totals.output == 393 + 300
    assert totals.calls_without["output"] == 1
    assert totals.calls_without["cache_write_5m"] == 2
    assert not totals.complete
    other = UsageTotals.of([anthropic_usage(ANTHROPIC_RECORDED)])
    totals.merge(other)
    assert totals.calls == 4 and totals.input == 21 + 86 + 7 + 3182
    assert totals.as_dict()["calls_without"]["output"] == 1
