"""An upstream that is slow, drops connections or answers 429/529/500, and a client that
aborts mid-stream: the gateway relays exactly what happened (the SDK raises the same
exception, with the same status, body and retry headers, as it does calling the upstream
directly), and the traces record the failed outcome honestly."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import anthropic
import httpx
import pytest

from tests.reliability.harness import MODEL, Stack, new_credential, record_figures, wait_until

pytestmark = pytest.mark.timeout(120)

#: (scenario, streamed) -> (outcome the trace must record, HTTP status it must record).
FAULTS: dict[tuple[str, bool], tuple[str, int]] = {
    ("error_429", False): ("upstream_error", 429),
    ("error_429", True): ("upstream_error", 429),
    ("error_529", False): ("upstream_error", 529),
    ("error_529", True): ("upstream_error", 529),
    ("error_500", False): ("upstream_error", 500),
    ("error_500", True): ("upstream_error", 500),
    ("mid_stream_error", True): ("mid_stream_error", 200),
    # The message was whole (stop_reason arrived, no block open), only the message_stop frame
    # is missing: the SDK returns the message, and the gateway judges it complete, as Claude
    # Code does.
    ("no_message_stop", True): ("complete", 200),
    ("drop", True): ("upstream_dropped", 200),
    ("drop", False): ("upstream_dropped", 200),  # upstream said 200, then cut the body
}


async def sdk_call(base_url: str, credential: str, *, stream: bool, headers: dict[str, str],
                   prompt: str = "Say hello.", timeout: float = 30.0) -> dict[str, Any]:
    """What the official SDK makes of one call: the message, or the exception and what it carries."""
    client = anthropic.AsyncAnthropic(base_url=base_url, api_key=credential, max_retries=0, timeout=timeout)
    kwargs: dict[str, Any] = {"model": MODEL, "max_tokens": 256, "extra_headers": headers,
                              "messages": [{"role": "user", "content": prompt}]}
    try:
        if stream:
            async with client.messages.stream(**kwargs) as events:
                message = await events.get_final_message()
        else:
            message = await client.messages.create(**kwargs)
        return {"ok": True, "stop_reason": message.stop_reason, "blocks": [b.type for b in message.content]}
    except anthropic.APIStatusError as error:
        body = dict(error.body) if isinstance(error.body, dict) else error.body
        if isinstance(body, dict):
            body.pop("request_id", None)  # unique per upstream request, as upstream
        return {"error": type(error).__name__, "status": error.status_code, "body": body,
                "retry_after": error.response.headers.get("retry-after"),
                "should_retry": error.response.headers.get("x-should-retry"),
                "has_request_id": bool(error.response.headers.get("request-id"))}
    except Exception as error:  # noqa: BLE001 - connection errors surface as they are
        return {"error": type(error).__name__}
    finally:
        await client.close()


async def _exchange_of(stack: Stack, credential: str) -> dict[str, Any]:
    """The one trace of the one exchange a fresh credential made."""
    agent_id = await asyncio.to_thread(stack.resolve_agent, credential)
    traces = await asyncio.to_thread(stack.wait_for_exchanges, agent_id, 1, 30)
    assert len({t["observation"]["exchange_id"] for t in traces}) == 1, traces
    return traces[0]


async def test_upstream_errors_and_drops_are_relayed_as_they_happened_and_traced_as_failures(
        shared_stack: Stack) -> None:
    standin = shared_stack.upstream.base_url  # type: ignore[attr-defined]
    cases = list(FAULTS)
    credentials = {case: new_credential(f"{case[0]}-{int(case[1])}") for case in cases}

    async def both(case: tuple[str, bool]) -> tuple[dict[str, Any], dict[str, Any]]:
        scenario, stream = case
        headers = {"x-standin-scenario": scenario}
        return await asyncio.gather(
            sdk_call(standin, "sk-ant-direct-0123456789", stream=stream, headers=headers),
            sdk_call(shared_stack.anthropic_base_url, credentials[case], stream=stream, headers=headers),
        )

    outcomes = dict(zip(cases, await asyncio.gather(*(both(case) for case in cases)), strict=True))
    for case, (direct, proxied) in outcomes.items():
        if case == ("drop", False):
            # A plain response cut mid-body: the gateway buffers small bodies, so it cannot
            # pass the half body on; it answers 502 in the API's error shape instead, which
            # the SDK retries just as it retries the connection error it gets directly.
            assert direct == {"error": "APIConnectionError"}
            assert proxied["error"] == "InternalServerError" and proxied["status"] == 502
            assert proxied["body"]["type"] == "error" and proxied["body"]["error"]["type"] == "api_error"
            continue
        assert proxied == direct, f"{case}: through the gateway {proxied}, direct {direct}"
    assert outcomes[("error_429", False)][1]["error"] == "RateLimitError"
    assert outcomes[("error_429", False)][1]["retry_after"] == "1"
    assert outcomes[("error_529", True)][1]["error"] == "OverloadedError"
    assert outcomes[("error_500", False)][1]["should_retry"] == "true"

    recorded = {}
    for case, (outcome, status) in FAULTS.items():
        trace = await _exchange_of(shared_stack, credentials[case])
        observation = trace["observation"]
        recorded[f"{case[0]}{'/stream' if case[1] else ''}"] = observation["outcome"]
        assert (observation["outcome"], observation["http_status"]) == (outcome, status), (case, observation)
        assert observation["streamed"] == (case[1] and case[0].startswith(("mid", "no_", "drop"))), (
            case,
            observation,
        )
        assert trace["action"]["type"] != "execute"
    assert recorded
    record_figures(
        "upstream_faults", cases=len(FAULTS), relayed_like_direct=len(FAULTS) - 1, traced_outcomes=recorded
    )


async def test_a_slow_upstream_stream_is_relayed_event_by_event_as_it_comes(shared_stack: Stack) -> None:
    credential = new_credential("slow")
    body = {
        "model": MODEL,
        "max_tokens": 64,
        "stream": True,
        "messages": [{"role": "user", "content": "Slowly."}],
    }
    arrivals: list[float] = []
    async with httpx.AsyncClient(timeout=60) as client:
        started = time.monotonic()
        async with client.stream(
            "POST",
            shared_stack.anthropic_base_url + "/v1/messages",
            json=body,
            headers={"x-api-key": credential, "x-standin-delay-ms": "1000", "x-standin-scenario": "text"},
        ) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    arrivals.append(time.monotonic() - started)
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert len(arrivals) == 10 and arrivals[-1] >= 8.5, arrivals
    # Each event reached the client about when upstream sent it (event n at ~n seconds): a
    # relay that held events back would deliver the early ones late, all at the end.
    late = [(n, round(at, 2)) for n, at in enumerate(arrivals) if at > n * 1.0 + 1.5]
    assert not late, f"events held back: {late} (arrivals {arrivals})"
    trace = await _exchange_of(shared_stack, credential)
    assert trace["observation"]["outcome"] == "complete" and trace["observation"]["streamed"]
    record_figures(
        "upstream_slow_stream",
        events=len(arrivals),
        upstream_gap_ms=1000,
        min_gap_s=round(min(gaps), 2),
        max_gap_s=round(max(gaps), 2),
        total_s=round(arrivals[-1], 1),
    )


async def test_a_slow_upstream_answer_reaches_a_patient_client_and_an_impatient_one_is_traced_as_aborted(
        shared_stack: Stack) -> None:
    patient, impatient = new_credential("patient"), new_credential("impatient")
    # A call the upstream never answered is traced only for a credential it has accepted before
    # (an agent exists only for accepted credentials, processor.py): the impatient client's first
    # call is answered, and traced, before it gives up on a slow one.
    assert (await sdk_call(shared_stack.anthropic_base_url, impatient, stream=False, headers={}))["ok"]
    await _exchange_of(shared_stack, impatient)
    slow = {"x-standin-scenario": "text,slow", "x-standin-delay-ms": "2500"}
    started = time.monotonic()
    waited, gave_up = await asyncio.gather(
        sdk_call(shared_stack.anthropic_base_url, patient, stream=False, headers=slow),
        sdk_call(shared_stack.anthropic_base_url, impatient, stream=True, headers=slow, timeout=1.0),
    )
    assert waited["ok"] and time.monotonic() - started >= 2.5
    assert gave_up == {"error": "APITimeoutError"}
    assert (await _exchange_of(shared_stack, patient))["observation"]["outcome"] == "complete"
    agent_id = await asyncio.to_thread(shared_stack.resolve_agent, impatient)
    traces = await asyncio.to_thread(shared_stack.wait_for_exchanges, agent_id, 2, 30)
    aborted = next(t["observation"] for t in traces if t["observation"]["outcome"] != "complete")
    assert aborted["outcome"] == "client_abort", aborted
    assert aborted["http_status"] == 0


async def test_a_client_abort_mid_stream_cancels_the_upstream_request_and_is_traced_as_client_abort(
        shared_stack: Stack) -> None:
    standin = shared_stack.upstream  # type: ignore[attr-defined]
    credential = new_credential("abort")
    before = standin.disconnects
    client = anthropic.AsyncAnthropic(
        base_url=shared_stack.anthropic_base_url, api_key=credential, max_retries=0
    )
    seen = []
    try:
        async with client.messages.stream(
                model=MODEL, max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024},
                messages=[{"role": "user", "content": "Think at length."}],
                extra_headers={"x-standin-scenario": "thinking", "x-standin-delay-ms": "300"}) as stream:
            async for event in stream:
                seen.append(event.type)
                if len(seen) == 3:
                    break  # leaving the block closes the connection: the client went away
    finally:
        await client.close()
    aborted_at = time.monotonic()
    # The upstream saw its client (the gateway) go away, rather than streaming on to nobody.
    await asyncio.to_thread(
        wait_until, lambda: standin.disconnects > before, 10, "the stand-in to see a disconnect"
    )
    cancelled_after = time.monotonic() - aborted_at
    trace = await _exchange_of(shared_stack, credential)
    observation = trace["observation"]
    assert observation["outcome"] == "client_abort", observation
    assert "client went away" in observation["outcome_detail"]
    assert observation["streamed"]
    # The gateway serves the next call as usual.
    after = await sdk_call(shared_stack.anthropic_base_url, credential, stream=True, headers={})
    assert after["ok"], after
    record_figures(
        "client_abort",
        events_read=len(seen),
        upstream_cancelled_within_s=round(cancelled_after, 2),
        traced_outcome=observation["outcome"],
    )

