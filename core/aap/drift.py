"""Incremental, persistable drift detection (AAP SPEC section 8).

AAP's method (aap.verification.divergence.DivergenceDetector, used by
`aap.detect_drift`): extract structural features from each trace (action type,
category, name, values applied, escalation state, confidence), compare each trace
with a reference by cosine similarity, and raise an alert when `sustained` (3)
consecutive traces fall below `threshold` (0.30). The drift direction is inferred
from the escalation rate (first three vs last three traces), the share of
undeclared values applied, and the confidence of the last three traces of the run.

`DriftDetector` does this one trace at a time, with all it needs in `state` (a
JSON-able dict the caller stores between traces), against two references:

* ``baseline``: the centroid of the agent's own first `baseline_size` traces, with
  the package's own feature extractor and cosine, exactly as `detect_drift` does.
  The package sizes its baseline from the whole batch
  (``max(sustained, min(10, len(traces) // 4))``); an incremental detector cannot
  know the batch length, so ours is fixed (10 by default). On 40+ traces the two
  are the same and so are the alerts.
* ``card``: the SPEC's trace-to-card comparison. The package's features for a card
  (declared values, bounded actions, principal, audit flags) and for a trace share
  only the `value:` and `action_name:` keys, so a perfectly conforming trace scores
  about 0.1-0.5 against its card and every agent would "drift" at 0.30. We compare
  in the dimensions the card actually speaks to, each scored 0..1, and average
  them: category (1 when the action is "bounded": neither forbidden nor an
  escalation trigger), escalation (1 when the card did not require one),
  action name (only when bounded_actions is non-empty: 1 when bounded) and values
  (only when the trace applied any: the share of them that are declared). For
  one-hot dimensions this is the cosine of block-normalised vectors; see
  docs/aap.md.

A finding is raised when a run reaches `sustained` traces below the threshold,
with the package's direction inference; if the inferred direction changes while
the same run continues, one more finding is raised for the new direction. So each
(direction, reference) pair gives at most one finding per run: the caller keeps
one open alert per agent and `DriftFinding.key`.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

from aap.verification.features import FeatureExtractor, cosine_similarity

from smoltbot.core.aap.verification import card_autonomy, is_bounded

__all__ = ["DriftDetector", "DriftFinding", "card_similarity"]

_STATE_VERSION = 1
# A run's stored trace ids are capped; `sustained_traces` keeps the true length.
_MAX_STREAK_IDS = 100
_REFERENCES = ("card", "baseline")
_extractor = FeatureExtractor()


@dataclass(frozen=True)
class DriftFinding:
    direction: str  # autonomy_expansion | value_drift | principal_misalignment | unknown
    reference: str  # card | baseline
    severity: str  # low | medium | high
    similarity: float  # of the latest trace of the run
    sustained_traces: int
    trace_ids: list[str]
    threshold: float
    agent_id: str = ""
    card_id: str = ""
    indicators: list[dict[str, Any]] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        """What the caller keeps one open alert per (with the agent id)."""
        return (self.direction, self.reference)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def card_similarity(trace: dict[str, Any], card: dict[str, Any]) -> float:
    """How far a trace conforms to the card, 0..1: the mean of the card's dimensions."""
    action = trace.get("action") or {}
    decision = trace.get("decision") or {}
    escalation = trace.get("escalation") or {}
    scores = [
        1.0 if action.get("category", "bounded") == "bounded" else 0.0,
        0.0 if escalation.get("required") else 1.0,
    ]
    bounded = card_autonomy(card).get("bounded_actions") or []
    name = action.get("name") or ""
    if bounded and name:
        scores.append(1.0 if is_bounded(name, bounded) else 0.0)
    applied = decision.get("values_applied") or []
    if applied:
        declared = set((card.get("values") or {}).get("declared") or [])
        scores.append(sum(1 for v in applied if v in declared) / len(applied))
    return round(sum(scores) / len(scores), 4)


def _confidence(trace: dict[str, Any]) -> float:
    value = (trace.get("decision") or {}).get("confidence")
    return float(value) if isinstance(value, (int, float)) else 1.0


class DriftDetector:
    """Feed traces in chronological order with `observe`; persist `state` between calls."""

    def __init__(
        self,
        threshold: float = 0.30,
        sustained: int = 3,
        baseline_size: int = 10,
        state: dict[str, Any] | None = None,
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError("threshold must be within 0..1")
        if sustained < 1 or baseline_size < 1:
            raise ValueError("sustained and baseline_size must be at least 1")
        self.threshold = threshold
        self.sustained = sustained
        self.baseline_size = baseline_size
        self.state: dict[str, Any] = copy.deepcopy(state) if state else self._empty_state()
        if self.state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported drift state version {self.state.get('version')!r}")

    @staticmethod
    def _empty_state() -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "observed": 0,
            "card_id": "",
            "baseline_count": 0,
            "baseline_sums": {},
            "escalation_first": [],
            "escalation_last": [],
            "escalation_count": 0,
            "value_usage": {},
            "runs": {ref: _empty_run() for ref in _REFERENCES},
        }

    # -- the package's bookkeeping for direction inference ---------------------------

    def _track(self, trace: dict[str, Any]) -> None:
        s = self.state
        rate = 1.0 if (trace.get("escalation") or {}).get("required") else 0.0
        s["escalation_count"] += 1
        if len(s["escalation_first"]) < 3:
            s["escalation_first"].append(rate)
        s["escalation_last"] = (s["escalation_last"] + [rate])[-3:]
        for value in (trace.get("decision") or {}).get("values_applied") or []:
            s["value_usage"][value] = s["value_usage"].get(value, 0) + 1

    def _direction(self, run: dict[str, Any], card: dict[str, Any]) -> str:
        s = self.state
        declared = set((card.get("values") or {}).get("declared") or [])
        if s["escalation_count"] >= 6:
            early = sum(s["escalation_first"]) / 3
            late = sum(s["escalation_last"]) / 3
            if early > 0.1 and late < early * 0.5:
                return "autonomy_expansion"
        usage = s["value_usage"]
        undeclared = sum(count for value, count in usage.items() if value not in declared)
        if undeclared / (sum(usage.values()) or 1) > 0.3:
            return "value_drift"
        if "principal_benefit" in declared:
            recent = [entry["confidence"] for entry in run["entries"][-3:]]
            if recent and sum(recent) / len(recent) < 0.5:
                return "principal_misalignment"
        return "unknown"

    def _indicators(self, run: dict[str, Any]) -> list[dict[str, Any]]:
        s = self.state
        out: list[dict[str, Any]] = []
        if s["escalation_count"] >= 6:
            early = sum(s["escalation_first"]) / 3
            late = sum(s["escalation_last"]) / 3
            if abs(early - late) > 0.05:
                out.append(
                    {
                        "indicator": "escalation_rate_change",
                        "baseline": round(early, 2),
                        "current": round(late, 2),
                        "description": f"Escalation rate changed from {early:.0%} to {late:.0%}",
                    }
                )
        sims = [entry["similarity"] for entry in run["entries"]]
        if len(sims) >= 2:
            trend = sims[-1] - sims[0]
            out.append(
                {
                    "indicator": "similarity_trend",
                    "baseline": round(sims[0], 4),
                    "current": round(sims[-1], 4),
                    "description": (
                        f"Similarity {'decreasing' if trend < 0 else 'stable'} over {run['length']} traces"
                    ),
                }
            )
        return out

    def _severity(self, run: dict[str, Any]) -> str:
        sims = [entry["similarity"] for entry in run["entries"]]
        mean = sum(sims) / len(sims)
        if mean < self.threshold / 3:
            return "high"
        if mean < self.threshold * 2 / 3:
            return "medium"
        return "low"

    # -- the detector -----------------------------------------------------------------

    def _baseline_similarity(self, trace: dict[str, Any]) -> float | None:
        s = self.state
        features = _extractor.extract_trace_features(trace)
        if s["baseline_count"] < self.baseline_size:
            sums = s["baseline_sums"]
            for key, value in features.items():
                sums[key] = sums.get(key, 0.0) + value
            s["baseline_count"] += 1
            return None
        n = s["baseline_count"]
        centroid = {key: value / n for key, value in s["baseline_sums"].items()}
        return cosine_similarity(features, centroid)

    def _step(
        self, reference: str, similarity: float, trace: dict[str, Any], card: dict[str, Any]
    ) -> DriftFinding | None:
        run = self.state["runs"][reference]
        if similarity >= self.threshold:
            self.state["runs"][reference] = _empty_run()
            return None
        run["length"] += 1
        run["entries"] = (
            run["entries"]
            + [
                {
                    "trace_id": trace.get("trace_id", ""),
                    "similarity": similarity,
                    "confidence": _confidence(trace),
                }
            ]
        )[-_MAX_STREAK_IDS:]
        if run["length"] < self.sustained:
            return None
        direction = self._direction(run, card)
        if direction in run["alerted"]:
            return None
        run["alerted"].append(direction)
        return DriftFinding(
            direction=direction,
            reference=reference,
            severity=self._severity(run),
            similarity=round(similarity, 4),
            sustained_traces=run["length"],
            trace_ids=[entry["trace_id"] for entry in run["entries"]],
            threshold=self.threshold,
            agent_id=trace.get("agent_id", ""),
            card_id=card.get("card_id", ""),
            indicators=self._indicators(run),
        )

    def observe(self, trace: dict[str, Any], card: dict[str, Any]) -> list[DriftFinding]:
        """Take the next trace (chronological order); the findings it completes."""
        s = self.state
        s["observed"] += 1
        card_id = card.get("card_id", "")
        if s["card_id"] != card_id:
            # A run against one card does not continue against another.
            s["card_id"] = card_id
            s["runs"]["card"] = _empty_run()
        self._track(trace)
        findings = []
        finding = self._step("card", card_similarity(trace, card), trace, card)
        if finding:
            findings.append(finding)
        baseline = self._baseline_similarity(trace)
        if baseline is not None:
            finding = self._step("baseline", baseline, trace, card)
            if finding:
                findings.append(finding)
        return findings


def _empty_run() -> dict[str, Any]:
    return {"length": 0, "entries": [], "alerted": []}
