"""What building one call's record costs: a `Capture` made, filled and turned into the encoded
`IngestRequest` the spool keeps, as the gateway does after each call (`Capture.to_exchange`,
`encode_ingest_request`), measured in this process alone (no server, no sockets).

    python bench/record_cost.py [--records 2000] [--rounds 21] [--baseline REV]

Two calls: the small non-streamed call of `bench/gateway_latency.py` (its request and the static
reply, the headers wrk and nginx send) and a streamed reply of the same size in Anthropic's
events. With `--baseline`, the `gateway/capture.py` of that git revision is measured beside the
working tree's, the two alternating round by round (median of the rounds), and the records of
both are compared byte for byte.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from gateway_latency import BODY, CREDENTIAL, STATIC_REPLY

from smoltbot.core.outcomes import ExchangeOutcome
from smoltbot.gateway import capture as current
from smoltbot.gateway.shipper import encode_ingest_request

ROOT = Path(__file__).resolve().parent.parent
REQUEST_HEADERS = [("Host", "127.0.0.1:8080"), ("content-type", "application/json"),
                   ("x-api-key", CREDENTIAL), ("anthropic-version", "2023-06-01"),
                   ("Content-Length", str(len(BODY)))]
RESPONSE_HEADERS = [("Server", "nginx/1.22.1"), ("Date", "Thu, 03 Dec 2026 17:00:00 GMT"),
                    ("Content-Type", "application/json"), ("Content-Length", str(len(STATIC_REPLY))),
                    ("Connection", "keep-alive"), ("request-id", "req_bench_static")]
STREAM = b"".join(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode() for kind, data in [
    ("message_start", {"type": "message_start", "message": {
        "id": "msg_01Bench", "type": "message", "role": "assistant", "model": "claude-opus-4-7",
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 14, "output_tokens": 1}}}),
    ("content_block_start", {"type": "content_block_start", "index": 0,
                             "content_block": {"type": "text", "text": ""}}),
    *[("content_block_delta", {"type": "content_block_delta", "index": 0,
                               "delta": {"type": "text_delta", "text": word}})
      for word in ("Hello ", "there, ", "how ", "are ", "you?")],
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                       "usage": {"output_tokens": 9}}),
    ("message_stop", {"type": "message_stop"}),
])


def load_baseline(revision: str, scratch: Path) -> ModuleType:
    """The baseline's capture.py as a module of its own (its relative imports made absolute)."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{revision}:gateway/capture.py"],
                            check=True, capture_output=True, text=True).stdout
    path = scratch / "capture_baseline.py"
    path.write_text(source.replace("\nfrom .", "\nfrom smoltbot.gateway."))
    spec = importlib.util.spec_from_file_location("capture_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def make(module: ModuleType, streamed: bool, index: int) -> Any:
    capture = module.Capture(agent_hash="a" * 64, session_hint="", method="POST", path="/v1/messages",
                             query="", request_headers=REQUEST_HEADERS, request_body=BODY.encode(),
                             started_ns=1_764_780_000_000_000_000 + index, credential=CREDENTIAL)
    capture.exchange_id = f"{index:032x}"
    capture.agent_id, capture.session_id = "agent-bench", "ses-bench"
    capture.status = 200
    capture.streamed = streamed
    if streamed:
        capture.response_headers = [("Content-Type", "text/event-stream"), ("request-id", "req_bench_stream")]
        capture.add_chunk(STREAM)
    else:
        capture.response_headers = RESPONSE_HEADERS
        capture.add_chunk(STATIC_REPLY.encode())
    capture.first_byte_ns = capture.started_ns + 300_000
    capture.finish(ExchangeOutcome.COMPLETE)
    capture.ended_ns = capture.started_ns + 400_000
    return capture


def build_all(module: ModuleType, streamed: bool, count: int) -> tuple[float, list[bytes]]:
    """µs per record: the capture made and filled, the record built and encoded. The first 100
    records are kept (to compare), the others dropped as the gateway drops them once spooled."""
    kept = []
    start = time.thread_time()  # CPU time: other work on the machine moves it far less than wall time
    for index in range(count):
        record = encode_ingest_request(make(module, streamed, index).to_exchange("gateway:bench"))
        if index < 100:
            kept.append(record)
    return (time.thread_time() - start) * 1e6 / count, kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=2000, help="records per round and call")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--baseline", default="",
                        help="a git revision whose gateway/capture.py to measure too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="smoltbot-record-cost-") as scratch:
        modules = {"working tree": current}
        if args.baseline:
            modules[f"baseline ({args.baseline})"] = load_baseline(args.baseline, Path(scratch))
        times: dict[tuple[str, bool], list[float]] = {}
        same = True
        for _ in range(args.rounds):
            for streamed in (False, True):
                built = {}
                for name, module in modules.items():
                    micros, built[name] = build_all(module, streamed, args.records)
                    times.setdefault((name, streamed), []).append(micros)
                same = same and len({tuple(records) for records in built.values()}) == 1
    print(f"`python bench/record_cost.py --records {args.records} --rounds {args.rounds}"
          f"{f' --baseline {args.baseline}' if args.baseline else ''}` ({time.strftime('%Y-%m-%d')}, "
          f"Python {sys.version.split()[0]}); CPU µs per record, median of the rounds:\n")
    print("| call | " + " | ".join(modules) + (" | ratio |" if args.baseline else ""))
    print("|---|" + "---:|" * (len(modules) + (1 if args.baseline else 0)))
    for streamed in (False, True):
        medians = [statistics.median(times[(name, streamed)]) for name in modules]
        ratio = f" | x{medians[0] / medians[1]:.2f}" if args.baseline else ""
        print(f"| {'streamed' if streamed else 'non-streamed'} | "
              + " | ".join(f"{value:.1f}" for value in medians) + ratio + " |")
    if args.baseline:
        print(f"\nRecords byte for byte the same as the baseline's: {'yes' if same else 'NO'}.")


if __name__ == "__main__":
    main()
