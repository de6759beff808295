"""smoltbot.core.aap: AAP domain logic, proto-free (dicts in, dicts out).

Cards (`normalize_card`, `default_card`), the trigger condition language (`parse`),
verification (`verify_trace`, `apply_escalation`), drift (`DriftDetector`) and secret
redaction (`redact`, `redact_text`). How these relate to the `aap` package:
docs/aap.md.
"""

from smoltbot.core.aap.cards import CARD_VERSION, default_card, new_card_id, normalize_card
from smoltbot.core.aap.conditions import Condition, parse
from smoltbot.core.aap.drift import DriftDetector, DriftFinding, card_similarity
from smoltbot.core.aap.redaction import is_secret_key, redact, redact_text
from smoltbot.core.aap.verification import SEVERITY, apply_escalation, verify_trace

__all__ = [
    "CARD_VERSION",
    "SEVERITY",
    "Condition",
    "DriftDetector",
    "DriftFinding",
    "apply_escalation",
    "card_similarity",
    "default_card",
    "is_secret_key",
    "new_card_id",
    "normalize_card",
    "parse",
    "redact",
    "redact_text",
    "verify_trace",
]
