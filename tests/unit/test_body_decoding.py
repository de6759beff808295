"""Bounded content-decoding for capture: every encoding a client can ask for, stacked ones,
decompression bombs, corrupt and unknown encodings."""

from __future__ import annotations

import gzip
import os
import zlib

import brotli
import pytest
import zstandard

from smoltbot.gateway.body_decoding import StreamDecoder, UndecodableBody, decode_body

BODY = os.urandom(20_000).hex().encode() * 3
ENCODERS = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": zstandard.ZstdCompressor().compress,
}


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_each_encoding_decodes_whole_and_stops_at_the_limit(name: str) -> None:
    encoded = ENCODERS[name](BODY)
    assert decode_body(encoded, name, len(BODY)) == (BODY, False)
    assert decode_body(encoded, name, 1000) == (BODY[:1000], True)


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_a_bomb_costs_the_limit_not_its_expanded_size(name: str) -> None:
    zeros = bytes(64 * 1024 * 1024)
    fast = {"gzip": lambda d: gzip.compress(d, 1), "deflate": lambda d: zlib.compress(d, 1),
            "br": lambda d: brotli.compress(d, quality=0), "zstd": zstandard.ZstdCompressor(level=1).compress}
    bomb = fast[name](zeros)
    out, truncated = decode_body(bomb, name, 1024 * 1024)
    assert truncated and len(out) == 1024 * 1024


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_a_stream_fed_in_small_pieces_decodes_whole(name: str) -> None:
    # Highly compressible: one small input piece can expand past a decoder's output step.
    data = b"event: content_block_delta\ndata: {}\n\n" * 200_000
    encoded = ENCODERS[name](data)
    decoder = StreamDecoder(name, len(data))
    out = b"".join(decoder.feed(encoded[i:i + 97]) for i in range(0, len(encoded), 97))
    decoder.finish()
    assert out == data and not decoder.truncated


def test_stacked_encodings_are_undone_last_applied_first() -> None:
    encoded = brotli.compress(gzip.compress(BODY))
    assert decode_body(encoded, "gzip, br", len(BODY)) == (BODY, False)
    assert decode_body(zlib.compress(encoded), "gzip, br, deflate", len(BODY)) == (BODY, False)


def test_raw_deflate_and_several_gzip_members_decode() -> None:
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert decode_body(raw.compress(BODY) + raw.flush(), "deflate", len(BODY)) == (BODY, False)
    assert decode_body(gzip.compress(b"ab") + gzip.compress(b"cd"), "x-gzip", 10) == (b"abcd", False)


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_corrupt_data_is_undecodable(name: str) -> None:
    with pytest.raises(UndecodableBody):
        decode_body(b"this is not compressed at all, not even a little", name, 1000)


@pytest.mark.parametrize("name", ["gzip", "deflate", "br"])
def test_data_cut_short_is_undecodable(name: str) -> None:
    with pytest.raises(UndecodableBody, match="ends before"):
        decode_body(ENCODERS[name](BODY)[:-20], name, len(BODY))


def test_an_unknown_encoding_is_undecodable_and_named() -> None:
    with pytest.raises(UndecodableBody, match="x-martian"):
        decode_body(BODY, "x-martian", 10)
    assert decode_body(BODY, "identity", len(BODY)) == (BODY, False)
