"""Shipping spans over OTLP without ever holding up or failing the tracing that produced them.

Configured by the standard variables, read by the OpenTelemetry SDK's own exporters:
`OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL` (`http/protobuf`, the default, or `grpc`; read here, as
the SDK leaves the choice of class to its caller), `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`,
`..._HEADERS`, `..._TIMEOUT` (seconds, as the Python SDK reads it), `..._COMPRESSION` and the TLS
certificate variables. `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` shape the resource.

`SpanShipper.submit` only puts spans on a bounded queue (never blocks, never raises); one daemon
thread exports them in batches. A span that finds the queue full, or whose batch the endpoint did
not take (after the SDK exporter's own retries within its timeout), is dropped and counted in
`stats` (for /metrics): export is a copy of records that are already stored, so dropping is
visible and loses nothing of the record itself. An endpoint that goes down is logged once, with
the SDK's reason, and once more when it is back; the SDK exporters' own per-batch lines from our
worker thread are folded into that one line instead of repeating on every batch.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import environ

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = [
    "PROTOCOLS",
    "ExportStats",
    "SpanShipper",
    "build_span_exporter",
    "otlp_protocol",
    "resource_from_environment",
]

logger = logging.getLogger(__name__)

PROTOCOLS = ("http/protobuf", "grpc")
#: The SDK exporter modules that log each failed batch (several lines per batch while retrying).
_SDK_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http._common",
    "opentelemetry.exporter.otlp.common.http",
)
_MAX_REASON = 300


def otlp_protocol(env: Mapping[str, str] | None = None) -> str:
    """The OTLP protocol for traces from the standard variables; ValueError naming the fix."""
    env = environ if env is None else env
    value = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
             or "http/protobuf").strip().lower()
    if value not in PROTOCOLS:
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={value!r} is not supported: use one of "
                         f"{', '.join(PROTOCOLS)} (http/json is not)")
    return value


def build_span_exporter(protocol: str | None = None) -> SpanExporter:
    """The SDK's OTLP span exporter for the protocol; it reads endpoint, headers, timeout itself."""
    protocol = protocol or otlp_protocol()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

        return Grpc()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

        return Http()
    raise ValueError(f"unsupported OTLP protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")


def resource_from_environment(service_name: str = "smoltbot-observer") -> Resource:
    """The resource of our spans: service.name unless OTEL_SERVICE_NAME says otherwise."""
    # Resource.create lets explicit attributes win over OTEL_SERVICE_NAME, so the variable is read here.
    return Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME") or service_name})


@dataclass(frozen=True, slots=True)
class ExportStats:
    """Counters since start: spans submitted, exported, and dropped (queue full / export failed)."""

    submitted: int
    exported: int
    dropped_queue_full: int
    dropped_export_failed: int
    queued: int
    endpoint_down: bool

    @property
    def dropped(self) -> int:
        return self.dropped_queue_full + self.dropped_export_failed


class _FoldSdkLines(logging.Filter):
    """Keeps the SDK exporters' failure lines emitted on our worker thread out of the log, and
    remembers the last one as the reason shown in our own single line."""

    def __init__(self, shipper: SpanShipper) -> None:
        super().__init__()
        self._shipper = shipper

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread != self._shipper._worker.ident or record.levelno < logging.WARNING:
            return True
        self._shipper._last_reason = record.getMessage()[:_MAX_REASON]
        return False


class SpanShipper:
    """A bounded queue of spans and one thread exporting them through a `SpanExporter`."""

    def __init__(self, exporter: SpanExporter, *, max_queue: int = 2048, max_batch: int = 256,
                 description: str = "OTLP") -> None:
        if max_queue < 1 or max_batch < 1:
            raise ValueError("max_queue and max_batch must be at least 1")
        self._exporter = exporter
        self._description = description
        self._queue: queue.Queue[ReadableSpan] = queue.Queue(maxsize=max_queue)
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._submitted = self._exported = self._dropped_full = self._dropped_failed = 0
        self._in_flight = 0
        self._down = False
        self._last_reason = ""
        self._stopping = threading.Event()
        self._worker = threading.Thread(target=self._run, name="otlp-span-export", daemon=True)
        self._filter = _FoldSdkLines(self)
        for name in _SDK_LOGGERS:
            logging.getLogger(name).addFilter(self._filter)
        self._worker.start()

    @classmethod
    def from_environment(cls, *, max_queue: int = 2048, max_batch: int = 256) -> SpanShipper:
        """A shipper over the SDK exporter the standard OTEL_EXPORTER_OTLP_* variables describe."""
        protocol = otlp_protocol()
        target = (environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                  or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "the default endpoint")
        return cls(build_span_exporter(protocol), max_queue=max_queue, max_batch=max_batch,
                   description=f"OTLP {protocol} to {target}")

    def submit(self, spans: Sequence[ReadableSpan]) -> int:
        """Queues spans for export without waiting; returns how many were taken (the rest are
        counted as dropped). Never raises."""
        taken = 0
        for span in spans:
            if self._stopping.is_set():
                break
            try:
                self._queue.put_nowait(span)
                taken += 1
            except queue.Full:
                break
        with self._lock:
            self._submitted += len(spans)
            self._dropped_full += len(spans) - taken
        return taken

    @property
    def stats(self) -> ExportStats:
        with self._lock:
            return ExportStats(self._submitted, self._exported, self._dropped_full, self._dropped_failed,
                               self._queue.qsize() + self._in_flight, self._down)

    def flush(self, timeout: float = 10.0) -> bool:
        """Waits until every queued span was exported or dropped; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._queue.empty() and self._in_flight == 0:
                    return True
            time.sleep(0.01)
        return False

    def close(self, timeout: float = 10.0) -> None:
        """Exports what is queued (within timeout), then stops the thread and the exporter."""
        self.flush(timeout)
        self._stopping.set()
        self._worker.join(timeout)
        self._exporter.shutdown()
        for name in _SDK_LOGGERS:
            logging.getLogger(name).removeFilter(self._filter)

    def _take_batch(self) -> list[ReadableSpan]:
        try:
            first = self._queue.get(timeout=0.1)
        except queue.Empty:
            return []
        batch = [first]
        while len(batch) < self._max_batch:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        with self._lock:
            self._in_flight = len(batch)
        return batch

    def _run(self) -> None:
        while not (self._stopping.is_set() and self._queue.empty()):
            batch = self._take_batch()
            if not batch:
                continue
            try:
                ok = self._exporter.export(batch) is SpanExportResult.SUCCESS
            except Exception as error:  # noqa: BLE001 - an exporter bug must not end the thread
                self._last_reason = f"{type(error).__name__}: {error}"[:_MAX_REASON]
                ok = False
            self._settle(len(batch), ok)

    def _settle(self, count: int, ok: bool) -> None:
        with self._lock:
            self._in_flight = 0
            if ok:
                self._exported += count
            else:
                self._dropped_failed += count
            went_down, came_back = (not ok and not self._down), (ok and self._down)
            self._down = not ok
        if went_down:
            logger.warning("%s is not taking spans (%s): spans are dropped and counted until it "
                           "recovers; the stored traces are not affected", self._description,
                           self._last_reason or "export failed")
        elif came_back:
            logger.info("%s takes spans again", self._description)
