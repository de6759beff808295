"""What the evidence checks (history integrity, provenance, say/do) cost the observer, same run.

    python bench/evidence_cost.py [--sessions 4] [--turns 40] [--rounds 5] [--file-kb 8] [--baseline REV]
                                  [--api anthropic|chat|responses|gemini]

The observer's per-exchange CPU work is `pipeline.compute` (decode, extract, analyse, build and
verify the traces, serialise), run in its worker processes. This runs it on Claude Code-shaped
sessions: each call resends the whole history (thinking + text + a tool call per turn, tool results
holding `--file-kb` of file content), so call n carries n turns. Each round computes every call of
every session three times, interleaved: without the checks (`Job.evidence` None); with them and
nothing kept between calls (`SessionMemos(max_sessions=0)`: every call digests its whole history
and builds the session's ledger from all its rows, as before the worker kept anything, and as a
call does whose session the worker has not seen); and with them as the worker runs them (a
session's digests and ledger kept from its previous call, `observer/evidence_store.py`). Each run's
sessions are new to the worker.

Printed per variant: exchanges/s and ms each (the median of the rounds), the throughput ratio
against no checks and the time added per exchange; for scale, one `json.loads` of the average
request body (the checks parse the request once; extraction never parses the history); and the
evidence stage's own time (`pipeline.add_evidence`, timed inside `compute`) by the call's place in
its session, which shows whether it is a constant or grows with the history. Times are the
process's CPU time (`time.process_time`): other processes' load does not count in them.

`--api` gives the sessions another wire shape with the same content per turn (OpenAI Chat
Completions, OpenAI Responses resending its input items as Codex does with `store: false`, Gemini
generateContent), read by their history readers (`core/evidence/readers.py`).

`--baseline REV` (a git revision, a source checkout or a `smoltbot` package tree) measures that
code in the same run: each round runs in a child process per tree, the two trees alternating
(the baseline's packages first on its PYTHONPATH), and the figures are printed per tree with the
ratios of this code's over the baseline's.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import timestamp_pb2

from smoltbot.core.evidence.exchange import ledger_key
from smoltbot.observer import evidence_store, pipeline
from smoltbot.observer.evidence_store import EvidenceJob, LedgerRow, SessionMemos
from smoltbot.observer.pipeline import Job, compute
from smoltbot.v1 import exchange_pb2

CARD = {"card_id": "ac-bench", "agent_id": "smolt-bench", "integrity_mode": "observe",
        "values": {"declared": ["transparency"]}, "autonomy": {"bounded_actions": []}}
SYSTEM = "You are Claude Code.\n<env>\nWorking directory: /home/dev/shop\n</env>"


def _stamp(at: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(at)
    return stamp


def _reply(session: int, n: int) -> dict[str, Any]:
    return {"id": f"msg_{session}_{n}", "type": "message", "role": "assistant", "model": "claude-opus-4-7",
            "content": [
                {"type": "thinking", "thinking": f"Turn {n}: read the next file and check the tests. " * 6,
                 "signature": "EqQBCkYIBxgCKkA" + "x" * 200},
                {"type": "text", "text": f"I'll look at src/module_{n}.py next."},
                {"type": "tool_use", "id": f"toolu_{session:02d}{n:04d}", "name": "Bash",
                 "input": {"command": f"sed -n 1,200p src/module_{n}.py && pytest -q tests/test_{n}.py"}}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 1000 + n, "output_tokens": 120}}


def _thinking(n: int) -> str:
    return f"Turn {n}: read the next file and check the tests. " * 6


def _command(n: int) -> str:
    return f"sed -n 1,200p src/module_{n}.py && pytest -q tests/test_{n}.py"


def _other_api(api: str, session: int, n: int, content: str) -> tuple[dict[str, Any], list[Any]]:
    """Another API's reply at turn n (the same thinking, text and shell command as `_reply`), and
    what its client appends to the history after it (the turn, then the command's output)."""
    call_id, text = f"call_{session:02d}{n:04d}", f"I'll look at src/module_{n}.py next."
    if api == "chat":
        message = {"role": "assistant", "content": text, "refusal": None, "tool_calls": [
            {"id": call_id, "type": "function",
             "function": {"name": "shell", "arguments": json.dumps({"command": _command(n)})}}]}
        reply = {"id": f"chatcmpl-{session}-{n}", "object": "chat.completion", "model": "gpt-4.1",
                 "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
                 "usage": {"prompt_tokens": 1000 + n, "completion_tokens": 120, "total_tokens": 1120 + n}}
        return reply, [message, {"role": "tool", "tool_call_id": call_id, "content": content}]
    if api == "responses":
        output = [{"type": "reasoning", "id": f"rs_{n}", "encrypted_content": "gAAAAB" + "x" * 200,
                   "summary": [{"type": "summary_text", "text": _thinking(n)}]},
                  {"type": "message", "id": f"msg_{n}", "role": "assistant", "status": "completed",
                   "content": [{"type": "output_text", "text": text, "annotations": []}]},
                  {"type": "function_call", "id": f"fc_{n}", "call_id": call_id, "name": "exec_command",
                   "arguments": json.dumps({"cmd": _command(n)}), "status": "completed"}]
        reply = {"id": f"resp_{session}_{n}", "object": "response", "status": "completed", "model": "gpt-5",
                 "output": output,
                 "usage": {"input_tokens": 1000 + n, "output_tokens": 120, "total_tokens": 1120 + n}}
        return reply, [*output, {"type": "function_call_output", "call_id": call_id, "output": content}]
    turn = {"role": "model", "parts": [
        {"text": _thinking(n), "thought": True}, {"text": text},
        {"functionCall": {"name": "run_shell_command", "args": {"command": _command(n)}},
         "thoughtSignature": "Cq0B" + "x" * 200}]}
    reply = {"candidates": [{"content": turn, "finishReason": "STOP"}], "modelVersion": "gemini-2.5-flash",
             "usageMetadata": {"promptTokenCount": 1000 + n, "candidatesTokenCount": 120}}
    return reply, [turn, {"role": "user", "parts": [
        {"functionResponse": {"name": "run_shell_command", "response": {"output": content}}}]}]


#: Per `--api`: the provider, the call's path, and the request around the history.
_APIS: dict[str, tuple[str, str, Callable[[list[Any]], dict[str, Any]]]] = {
    "anthropic": ("anthropic", "/v1/messages", lambda history: {
        "model": "claude-opus-4-7", "max_tokens": 8192, "system": SYSTEM, "messages": history,
        "tools": [{"name": "Bash", "input_schema": {"type": "object"}}]}),
    "chat": ("openai", "/v1/chat/completions", lambda history: {
        "model": "gpt-4.1", "messages": [{"role": "system", "content": SYSTEM}, *history]}),
    "responses": ("openai", "/v1/responses", lambda history: {
        "model": "gpt-5", "instructions": SYSTEM, "input": history, "store": False,
        "include": ["reasoning.encrypted_content"]}),
    "gemini": ("gemini", "/v1beta/models/gemini-2.5-flash:generateContent", lambda history: {
        "systemInstruction": {"parts": [{"text": SYSTEM}]}, "contents": history}),
}


def sessions(count: int, turns: int, file_kb: int,
             api: str = "anthropic") -> list[list[exchange_pb2.Exchange]]:
    """Per session, its calls: call n resends n earlier turns and their results."""
    start = datetime.now(UTC) - timedelta(hours=1)
    line = "def handler(event):\n    return process(event)  # " + "x" * 60 + "\n"
    content = line * (file_kb * 1024 // 100)
    made = []
    for session in range(count):
        provider, path, wrap = _APIS[api]
        first = "Fix the failing tests in the shop."
        messages: list[Any] = [{"role": "user", "parts": [{"text": first}]} if api == "gemini"
                               else {"role": "user", "content": first}]
        calls = []
        for n in range(turns):
            reply = _reply(session, n)
            appended: list[Any] = []
            if api != "anthropic":
                reply, appended = _other_api(api, session, n, content)
            ended = start + timedelta(seconds=10 * n + 5)
            request = wrap(messages)
            calls.append(exchange_pb2.Exchange(
                exchange_id=f"{session:04d}{n:028d}", agent_hash="h" * 64, agent_id="smolt-bench",
                session_id=f"s{session}", provider=provider,
                request=exchange_pb2.CapturedRequest(method="POST", path=path,
                                                     body=json.dumps(request).encode()),
                response=exchange_pb2.CapturedResponse(status=200, body=json.dumps(reply).encode()),
                timings=exchange_pb2.ExchangeTimings(started_at=_stamp(ended - timedelta(seconds=4)),
                                                     ended_at=_stamp(ended)),
                outcome=exchange_pb2.EXCHANGE_OUTCOME_COMPLETE))
            if api != "anthropic":
                messages = [*messages, *appended]
                continue
            result = {"type": "tool_result", "tool_use_id": f"toolu_{session:02d}{n:04d}", "content": content}
            messages = [*messages, {"role": "assistant", "content": reply["content"]},
                        {"role": "user", "content": [result]}]
        made.append(calls)
    return made


_runs = itertools.count()
#: The process's CPU time, not the wall clock: on a shared machine the wall clock counts the time
#: other processes held the cores, which moved the figures by 2x and more between runs.
_clock = time.process_time


#: Seconds of the evidence stage (`pipeline.add_evidence`) of the call being computed.
_stage: list[float] = []
_add_evidence = pipeline.add_evidence


def _timed_add_evidence(*args: Any, **kwargs: Any) -> None:
    began = _clock()
    _add_evidence(*args, **kwargs)
    _stage.append(_clock() - began)


pipeline.add_evidence = _timed_add_evidence  # compute() looks it up at each call


def run(made: list[list[exchange_pb2.Exchange]], key: bytes | None, *, keep: bool = True,
        by_call: list[list[float]] | None = None) -> float:
    """Seconds to compute every call (with the checks when `key` is given; `keep`: the worker keeps
    what it may of a session between its calls). Each run's sessions are new to the worker.
    `by_call[n]` gets the seconds of the evidence stage of each session's call n."""
    evidence_store.SESSION_MEMOS = SessionMemos() if keep else SessionMemos(max_sessions=0)
    elapsed = 0.0
    observed = datetime.now(UTC)
    run_id = next(_runs)
    for calls in made:
        rows: list[LedgerRow] = []
        for position, exchange in enumerate(calls):
            started = exchange.timings.started_at.ToDatetime(tzinfo=UTC)
            session = f"{exchange.session_id}-run{run_id}"
            evidence = EvidenceJob(key, session, started, tuple(rows)) if key else None
            job = Job(exchange_id=exchange.exchange_id, agent_id="smolt-bench",
                      session_id=exchange.session_id, card=CARD, payload=exchange.SerializeToString(),
                      store_reasoning="redacted", observed_at=observed, evidence=evidence)
            _stage.clear()
            began = _clock()
            result = compute(job)
            elapsed += _clock() - began
            if by_call is not None:
                by_call[position].append(sum(_stage))
            assert not result.step, result.error
            if key:
                row = result.evidence_row
                assert row is not None and row.status == "intact", row
                rows.append(LedgerRow(row.exchange_id, row.started_at, row.ledger_json))
    return elapsed


NAMES = ("without the checks", "checks, nothing kept", "checks, as the worker runs them")


def measure(made: list[list[exchange_pb2.Exchange]], rounds: int, turns: int) -> dict[str, Any]:
    """The rounds' CPU seconds per variant, and the evidence stage's seconds by call position."""
    key = ledger_key(b"bench-secret")
    variants: dict[str, list[float]] = {name: [] for name in NAMES}
    by_call: dict[str, list[list[float]]] = {name: [[] for _ in range(turns)] for name in NAMES}
    run(made, None), run(made, key, keep=False), run(made, key)  # warm up
    for _ in range(rounds):
        variants[NAMES[0]].append(run(made, None))
        variants[NAMES[1]].append(run(made, key, keep=False, by_call=by_call[NAMES[1]]))
        variants[NAMES[2]].append(run(made, key, by_call=by_call[NAMES[2]]))
    bodies = [e.request.body for calls in made for e in calls]
    began = _clock()
    for body in bodies:
        json.loads(body)
    parse = (_clock() - began) / len(bodies)
    return {"variants": variants, "by_call": by_call, "parse": parse,
            "size": sum(len(b) for b in bodies) / len(bodies)}


def report(figures: dict[str, Any], count: int, turns: int, sessions: int, rounds: int) -> None:
    variants, by_call, parse = figures["variants"], figures["by_call"], figures["parse"]
    print(f"{count} exchanges ({sessions} sessions x {turns} calls, average request "
          f"{figures['size'] / 1024:.0f} KiB), {rounds} rounds")
    # The median, and the best round: on a shared machine another process's burst only ever adds
    # time, so the best round is the steadier figure of what the code itself costs.
    for label, pick in (("median", statistics.median), ("best", min)):
        print(f"  {label} of the rounds:")
        base = pick(variants[NAMES[0]])
        for name in NAMES:
            took = pick(variants[name])
            line = f"    {name + ':':34} {count / took:8.1f} exchanges/s ({took / count * 1e3:.2f} ms each)"
            if name != NAMES[0]:
                line += (f", ratio {base / took:.3f}, added {(took - base) / count * 1e3:.2f} ms"
                         f" = {(took - base) / count / parse:.1f}x one json.loads")
            print(line)
    print(f"  one json.loads of the request: {parse * 1e3:.2f} ms")
    # Whether the added time is a constant or grows with the history: call n resends n turns.
    positions = sorted({0, turns // 4, turns // 2, 3 * turns // 4, turns - 1})
    print("  the evidence stage (pipeline.add_evidence) by the call's place in its session, ms "
          "(median / best of the rounds):")
    print("    call (turns resent):".ljust(38) + "".join(f"{n:>14}" for n in positions))
    for name in NAMES[1:]:
        stage = [(statistics.median(by_call[name][n]), min(by_call[name][n])) for n in positions]
        print(f"    {name}:".ljust(38) + "".join(f"{m * 1e3:8.2f} /{b * 1e3:5.2f}" for m, b in stage))


def against(args: argparse.Namespace) -> None:
    """This code and the baseline's, one child process per tree and round, alternating."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from observer_throughput import baseline_tree  # the same link tree the observer benchmark uses

    scratch = tempfile.mkdtemp(prefix="smoltbot-evidence-baseline-")
    tree = baseline_tree(args.baseline, __import__("pathlib").Path(scratch))
    merged: dict[str, dict[str, Any]] = {}
    for round_ in range(args.rounds):
        for name in (("baseline", "this") if round_ % 2 == 0 else ("this", "baseline")):
            environment = dict(os.environ)
            if name == "baseline":
                environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree),
                                                                          environment.get("PYTHONPATH")]))
            child = subprocess.run(
                [sys.executable, __file__, "--sessions", str(args.sessions), "--turns", str(args.turns),
                 "--rounds", "1", "--file-kb", str(args.file_kb), "--json",
                 *(["--api", args.api] if args.api != "anthropic" else [])],
                env=environment, check=True, capture_output=True, text=True)
            figures = json.loads(child.stdout)
            if name not in merged:
                merged[name] = figures
                continue
            for variant, times in figures["variants"].items():
                merged[name]["variants"][variant] += times
            for variant, calls in figures["by_call"].items():
                for n, times in enumerate(calls):
                    merged[name]["by_call"][variant][n] += times
    count = args.sessions * args.turns
    for name in ("baseline", "this"):
        print(f"== {name}" + (f" ({args.baseline})" if name == "baseline" else " (the installed code)"))
        report(merged[name], count, args.turns, args.sessions, args.rounds)
    print(f"== this / baseline, medians of {args.rounds} alternating rounds (CPU time):")
    for name in NAMES:
        this, base = (statistics.median(merged[t]["variants"][name]) for t in ("this", "baseline"))
        print(f"    {name + ':':34} time x{this / base:.3f}")
    for name in NAMES[1:]:
        ratio = [statistics.median(merged[t]["variants"][NAMES[0]]) / statistics.median(
            merged[t]["variants"][name]) for t in ("baseline", "this")]
        print(f"    {name + ':':34} throughput ratio against no checks {ratio[0]:.3f} -> {ratio[1]:.3f}")
    last = args.turns - 1
    for name in NAMES[1:]:
        this, base = (statistics.median(merged[t]["by_call"][name][last]) for t in ("this", "baseline"))
        print(f"    {name + ':':34} evidence stage at call {last}: {base * 1e3:.2f} -> {this * 1e3:.2f} ms "
              f"(x{this / base:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--turns", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--file-kb", type=int, default=8)
    parser.add_argument("--baseline", default="", help="a git revision or tree to measure against")
    parser.add_argument("--api", choices=sorted(_APIS), default="anthropic",
                        help="the sessions' wire shape (a baseline from before a reader existed has none)")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # a child's figures
    args = parser.parse_args()
    if args.baseline:
        against(args)
        return
    made = sessions(args.sessions, args.turns, args.file_kb, args.api)
    figures = measure(made, args.rounds, args.turns)
    if args.json:
        print(json.dumps(figures))
        return
    report(figures, sum(len(calls) for calls in made), args.turns, args.sessions, args.rounds)


if __name__ == "__main__":
    main()
