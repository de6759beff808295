"""A credential's Scrubber is built once for the calls of the same key (building one encodes the
key six ways: a sizeable part of a small record's build, issue 16), and scrubs as a new one does."""

from __future__ import annotations

from smoltbot.gateway.scrub import REDACTED, Scrubber, scrubber_for


def test_the_same_key_gets_the_same_scrubber_and_another_key_its_own() -> None:
    key = "sk-ant-api03-" + "a1/b2+c3" * 6
    assert scrubber_for(key) is scrubber_for(key)
    other = scrubber_for(key + "x")
    assert other is not scrubber_for(key)
    text = f'{{"note": "{key}"}} and %s' % key.replace("/", "%2F").replace("+", "%2B")
    assert scrubber_for(key).text(text) == Scrubber(key).text(text)
    assert key not in scrubber_for(key).text(text) and REDACTED in scrubber_for(key).text(text)
