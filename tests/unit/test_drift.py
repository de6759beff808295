"""Drift: one finding per (direction, reference) run, none on stable behaviour, and the same
alerts as aap.detect_drift on the same traces."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import aap
import pytest

from smoltbot.core.aap.cards import default_card
from smoltbot.core.aap.drift import DriftDetector, card_similarity

T0 = datetime(2026, 3, 1, tzinfo=UTC)

CARD = {
    "card_version": "unified/2026-04-26",
    "card_id": "ac-1",
    "agent_id": "agent-1",
    "issued_at": "2026-01-01T00:00:00Z",
    "principal": {"type": "unspecified", "relationship": "delegated_authority"},
    "values": {"declared": ["principal_benefit", "transparency"]},
    "autonomy": {
        "bounded_actions": ["read_file", "search", "pay", "transfer"],
        "escalation_triggers": [
            {"condition": 'action_name == "delete_file"', "action": "escalate", "reason": "r"}
        ],
    },
    "audit": {"retention_days": 90, "queryable": True, "query_endpoint": "https://example.com/traces"},
}


def trace(
    i,
    name="read_file",
    action_type="execute",
    category="bounded",
    values=("transparency",),
    required=False,
    confidence=0.8,
    card_id="ac-1",
):
    return {
        "trace_id": f"tr-{i:03d}",
        "agent_id": "agent-1",
        "card_id": card_id,
        "timestamp": (T0 + timedelta(minutes=i)).isoformat().replace("+00:00", "Z"),
        "action": {"type": action_type, "name": name, "category": category},
        "decision": {
            "alternatives_considered": [{"option_id": "taken", "description": name}],
            "selected": "taken",
            "selection_reasoning": "r",
            "values_applied": list(values),
            "confidence": confidence,
        },
        "escalation": {"evaluated": True, "required": required, "reason": "r"},
    }


def normal(i):
    return trace(i)


def misaligned(i):
    # Escalation-trigger actions, undeclared value, low confidence: far from both references.
    return trace(
        i,
        name="delete_file",
        action_type="recommend",
        category="escalation_trigger",
        values=("speed",),
        required=True,
        confidence=0.2,
    )


def value_drifting(i):
    return trace(
        i,
        name="scrape",
        action_type="recommend",
        category="escalation_trigger",
        values=("speed", "greed", "reach"),
        required=True,
    )


def escalating(i):
    return trace(i, name="pay", action_type="escalate", category="escalation_trigger", required=True)


def autonomous(i):
    return trace(i, name="transfer", values=(), confidence=0.9)


def sequence(*parts):
    out = []
    for make, count in parts:
        out.extend(make(len(out)) for _ in range(count))
    return out


SEQUENCES = {
    "principal_misalignment": sequence((normal, 30), (misaligned, 5), (normal, 10)),
    # The package counts value usage over every trace so far: drift early.
    "value_drift": sequence((normal, 10), (value_drifting, 4), (normal, 26)),
    "autonomy_expansion": sequence((escalating, 30), (autonomous, 4), (escalating, 10)),
    "two_runs": sequence((normal, 30), (misaligned, 3), (normal, 5), (misaligned, 3), (normal, 5)),
}


def run(traces, card=CARD, **kwargs):
    detector = DriftDetector(**kwargs)
    findings = []
    for t in traces:
        findings.extend(detector.observe(t, card))
    return findings, detector


def package_alerts(traces, card=CARD):
    return [(a.analysis.drift_direction.value, a.trace_ids) for a in aap.detect_drift(card, traces)]


def first_of_each_run(findings, reference, sustained=3):
    return [
        (f.direction, f.trace_ids)
        for f in findings
        if f.reference == reference and f.sustained_traces == sustained
    ]


@pytest.mark.parametrize("direction", ["principal_misalignment", "value_drift", "autonomy_expansion"])
def test_a_drifting_sequence_raises_one_finding_per_direction_and_reference(direction):
    findings, _ = run(SEQUENCES[direction])
    keys = [f.key for f in findings]
    assert len(keys) == len(set(keys))
    assert (direction, "baseline") in keys
    baseline = next(f for f in findings if f.reference == "baseline")
    assert baseline.sustained_traces == 3 and len(baseline.trace_ids) == 3
    assert baseline.similarity < 0.30 and baseline.severity in ("low", "medium", "high")
    assert baseline.card_id == "ac-1" and baseline.agent_id == "agent-1"


@pytest.mark.parametrize("name", sorted(SEQUENCES))
def test_same_alerts_as_the_package_on_40_or_more_traces(name):
    traces = SEQUENCES[name]
    assert len(traces) >= 40  # the package's baseline is then 10 traces, like ours
    findings, _ = run(traces)
    assert first_of_each_run(findings, "baseline") == package_alerts(traces)


def test_shorter_batches_agree_when_the_baseline_size_matches_the_packages():
    # The package sizes its baseline from the batch: max(3, min(10, len // 4)).
    traces = sequence((normal, 12), (misaligned, 4), (normal, 4))
    package_baseline = max(3, min(10, len(traces) // 4))
    findings, _ = run(traces, baseline_size=package_baseline)
    assert package_alerts(traces) != []
    assert first_of_each_run(findings, "baseline") == package_alerts(traces)


def test_the_card_reference_catches_what_the_card_forbids():
    findings, _ = run(SEQUENCES["principal_misalignment"])
    card_finding = next(f for f in findings if f.reference == "card")
    assert card_finding.trace_ids == ["tr-030", "tr-031", "tr-032"]
    assert card_finding.similarity == 0.0 and card_finding.severity == "high"


def test_card_drift_is_found_before_any_baseline_exists():
    findings, _ = run(sequence((misaligned, 3)))
    assert [(f.reference, f.trace_ids) for f in findings] == [("card", ["tr-000", "tr-001", "tr-002"])]


def test_stable_behaviour_raises_nothing():
    assert run(sequence((normal, 60)))[0] == []
    assert run(sequence((escalating, 60)))[0] == []
    assert package_alerts(sequence((normal, 60))) == []


def test_the_default_card_raises_nothing_on_ordinary_traffic():
    card = default_card("agent-1", card_id="ac-d", issued_at=T0, query_endpoint="http://x")
    traces = []
    for i in range(60):
        # A mix of tools, replies, with and without visible values.
        name = ("bash", "read_file", "respond", "web_search")[i % 4]
        values = (("honesty",), (), ("transparency", "harm_prevention"))[i % 3]
        traces.append(
            trace(
                i,
                name=name,
                action_type="recommend" if name == "respond" else "execute",
                values=values,
                card_id="ac-d",
            )
        )
    assert run(traces, card=card)[0] == []


def test_every_run_raises_its_own_finding():
    findings, _ = run(SEQUENCES["two_runs"])
    baseline = [f.trace_ids for f in findings if f.reference == "baseline"]
    assert baseline == [["tr-030", "tr-031", "tr-032"], ["tr-038", "tr-039", "tr-040"]]


def test_a_long_run_never_repeats_a_key():
    findings, _ = run(sequence((normal, 20), (misaligned, 40)))
    per_reference = {}
    for f in findings:
        per_reference.setdefault(f.reference, []).append(f.direction)
    for directions in per_reference.values():
        assert len(directions) == len(set(directions))
    # The run grew into value drift (undeclared values pile up): a second direction.
    assert ("value_drift", "baseline") in [f.key for f in findings]


def test_state_is_json_and_resuming_from_it_changes_nothing():
    traces = SEQUENCES["two_runs"]
    continuous, _ = run(traces)
    state = None
    resumed = []
    for t in traces:
        detector = DriftDetector(state=json.loads(json.dumps(state)) if state else None)
        resumed.extend(detector.observe(t, CARD))
        state = detector.state
    assert [f.to_dict() for f in resumed] == [f.to_dict() for f in continuous]


def test_a_new_card_starts_a_new_card_run():
    other = {**CARD, "card_id": "ac-2"}
    detector = DriftDetector()
    findings = []
    for i, t in enumerate(sequence((misaligned, 4))):
        findings.extend(detector.observe(t, CARD if i < 2 else other))
    assert [f.reference for f in findings] == []


def test_card_similarity_scores_the_cards_dimensions():
    assert card_similarity(normal(0), CARD) == 1.0
    assert card_similarity(misaligned(0), CARD) == 0.0
    assert card_similarity(trace(0, name="send_email"), CARD) == 0.75  # unbounded name only
    half_declared = trace(0, values=("transparency", "speed"))
    assert card_similarity(half_declared, CARD) == pytest.approx(0.875)


def test_invalid_settings_and_state_are_rejected():
    with pytest.raises(ValueError):
        DriftDetector(threshold=1.5)
    with pytest.raises(ValueError):
        DriftDetector(sustained=0)
    with pytest.raises(ValueError):
        DriftDetector(state={"version": 99})
