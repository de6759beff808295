"""A batch built from spooled single-exchange requests is the IngestRequest(exchanges=...) the
observer parses, byte for byte the same exchanges, without parsing them on the way."""

from __future__ import annotations

from smoltbot.gateway.shipper import encode_batch, encode_ingest_request
from smoltbot.v1 import exchange_pb2
from smoltbot.v1 import observer_service_pb2 as pb


def test_a_batch_of_encoded_requests_parses_as_their_exchanges_in_order() -> None:
    exchanges = [exchange_pb2.Exchange(exchange_id=f"{n:032x}", agent_hash="ab" * 16,
                                       outcome_detail="x" * size)
                 for n, size in enumerate((0, 1, 127, 128, 70_000))]  # varint lengths of 1 to 3 bytes
    batch = pb.IngestRequest.FromString(encode_batch([encode_ingest_request(e) for e in exchanges]))
    assert not batch.HasField("exchange")
    assert list(batch.exchanges) == exchanges
    assert pb.IngestRequest(exchanges=exchanges).SerializeToString() == encode_batch(
        [encode_ingest_request(e) for e in exchanges])
