"""Content-decoding of captured bodies, bounded: what the observer reads is the identity form.

Every encoding a client can ask for is decoded (gzip, deflate, br, zstd, identity, and stacked
ones such as "gzip, br", undone last-applied first), into at most `limit` bytes: a small body
that expands to gigabytes (a decompression bomb) costs `limit` bytes of memory and the time to
produce them, no more. What cannot be decoded (an unknown or corrupt encoding) raises
`UndecodableBody`, and the caller records the bytes as sent.

`StreamDecoder` decodes incrementally (a streamed response, chunk by chunk); `decode_body` is
the one-shot form over a whole body.
"""

from __future__ import annotations

import zlib
from typing import Protocol

import brotli  # type: ignore[import-untyped]  # no stubs published
import zstandard

__all__ = ["StreamDecoder", "UndecodableBody", "decode_body", "encoding_tokens"]

#: Output produced per step of a decoder, so a bomb is stopped soon after the limit.
_STEP = 256 * 1024


class UndecodableBody(ValueError):
    """The body's content-encoding is unknown, or its bytes are not valid for it."""


class _Full(Exception):
    """Raised by a sink that has taken all it may."""


def encoding_tokens(header: str) -> list[str]:
    """The codings of a Content-Encoding value in the order they were applied, identity dropped."""
    tokens = [token.strip().lower() for token in header.split(",")]
    return [token for token in tokens if token and token != "identity"]


class _Layer(Protocol):
    full: bool

    def feed(self, data: bytes, cap: int) -> bytes: ...

    def finish(self) -> None: ...


class _Zlib:
    """gzip (several members too) and deflate (zlib-wrapped, or raw as some servers send it)."""

    def __init__(self, wbits: int, *, raw_fallback: bool = False) -> None:
        self._wbits = wbits
        self._raw_fallback = raw_fallback
        self._decoder = zlib.decompressobj(wbits)
        self._started = False
        self.full = False

    def feed(self, data: bytes, cap: int) -> bytes:
        out: list[bytes] = []
        produced = 0
        try:
            while data and not self.full:
                if self._decoder.eof:  # the previous member is whole; another one follows
                    if not data.strip(b"\x00"):  # padding some servers append
                        break
                    self._decoder = zlib.decompressobj(self._wbits)
                chunk = self._decoder.decompress(data, min(_STEP, cap - produced + 1))
                self._started = True
                out.append(chunk)
                produced += len(chunk)
                if produced > cap:
                    self.full = True
                    break
                data = self._decoder.unused_data if self._decoder.eof else self._decoder.unconsumed_tail
        except zlib.error as error:
            if self._raw_fallback and not self._started:
                self._raw_fallback = False
                self._wbits = -zlib.MAX_WBITS
                self._decoder = zlib.decompressobj(self._wbits)
                return self.feed(data, cap)
            kind = "gzip" if self._wbits > zlib.MAX_WBITS else "deflate"
            raise UndecodableBody(f"not valid {kind} data: {error}") from None
        return b"".join(out)

    def finish(self) -> None:
        if not self.full and self._started and not self._decoder.eof:
            raise UndecodableBody("compressed data ends before its end marker")


class _Brotli:
    def __init__(self) -> None:
        self._decoder = brotli.Decompressor()
        self.full = False

    def feed(self, data: bytes, cap: int) -> bytes:
        out: list[bytes] = []
        produced = 0
        try:
            while True:
                # A step that filled its whole limit may have more to give, even from no new input.
                step = min(_STEP, cap - produced + 1)
                chunk = self._decoder.process(data, output_buffer_limit=step)
                data = b""
                out.append(chunk)
                produced += len(chunk)
                if produced > cap:
                    self.full = True
                    break
                if len(chunk) < step and self._decoder.can_accept_more_data():
                    break
        except brotli.error as error:
            raise UndecodableBody(f"not valid br data: {error}") from None
        return b"".join(out)

    def finish(self) -> None:
        if not self.full and not self._decoder.is_finished():
            raise UndecodableBody("br data ends before its end marker")


class _Sink:
    __slots__ = ("cap", "chunks", "size")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.cap = 0

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        self.size += len(data)
        if self.size > self.cap:
            raise _Full
        return len(data)


class _Zstd:
    """zstd through a writer, the one zstandard API whose output is bounded as it is produced."""

    def __init__(self) -> None:
        self._sink = _Sink()
        # A file-like sink (only `write` is called); zstandard's stubs ask for a whole IO[bytes].
        self._writer = zstandard.ZstdDecompressor().stream_writer(
            self._sink, write_size=_STEP, closefd=False)  # type: ignore[arg-type]
        self.full = False

    def feed(self, data: bytes, cap: int) -> bytes:
        sink = self._sink
        sink.chunks, sink.size, sink.cap = [], 0, cap
        try:
            self._writer.write(data)
        except _Full:
            self.full = True
        except zstandard.ZstdError as error:
            raise UndecodableBody(f"not valid zstd data: {error}") from None
        return b"".join(sink.chunks)

    def finish(self) -> None:
        return None


def _layer(token: str) -> _Layer:
    if token in ("gzip", "x-gzip"):
        return _Zlib(16 + zlib.MAX_WBITS)
    if token == "deflate":
        return _Zlib(zlib.MAX_WBITS, raw_fallback=True)
    if token == "br":
        return _Brotli()
    if token == "zstd":
        return _Zstd()
    raise UndecodableBody(f"content-encoding {token!r} is not one the gateway can decode")


class StreamDecoder:
    """Decodes a body fed in pieces; the output stops at `limit` bytes (then `truncated`)."""

    def __init__(self, content_encoding: str, limit: int) -> None:
        # Undone in the reverse order they were applied.
        self._layers = [_layer(token) for token in reversed(encoding_tokens(content_encoding))]
        self.limit = limit
        self.produced = 0
        self.truncated = False

    def feed(self, data: bytes) -> bytes:
        """The next decoded bytes (possibly none); b"" once the limit is reached."""
        if self.truncated:
            return b""
        room = self.limit - self.produced
        for layer in self._layers:
            if not data:
                return b""
            data = layer.feed(data, room)
            if layer.full:
                self.truncated = True
        if len(data) > room:
            data = data[:room]
            self.truncated = True
        self.produced += len(data)
        return data

    def finish(self) -> None:
        """Raises `UndecodableBody` when the body ended in the middle of an encoding's data."""
        if not self.truncated:
            for layer in self._layers:
                layer.finish()


def decode_body(body: bytes, content_encoding: str, limit: int) -> tuple[bytes, bool]:
    """`body` decoded, cut at `limit` bytes, and whether it was cut. Raises `UndecodableBody`."""
    decoder = StreamDecoder(content_encoding, limit)
    out = decoder.feed(body)
    decoder.finish()
    return out, decoder.truncated
