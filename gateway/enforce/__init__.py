"""The card's enforce and nudge modes at the gateway (docs/enforce.md).

`Enforcer` answers the relay's two questions per call (`note_request`, `response_filter`);
`CardCache` keeps each agent's card current from the Registry's watch stream; `anthropic`,
`openai_chat`, `openai_responses` and `gemini` judge and replace tool calls in their provider's
answers, whole or streamed (`formats` says which call gets which, `calls` holds what they
share); `nudges` carries notes to a session's next request, `followups` the outputs a continued
Responses answer owes for its stopped calls; `texts` holds the wording the client and the model
see.
"""

from .cards import CardCache, CardLookup
from .enforcer import Enforcer, ResponseFilter
from .metrics import EnforcementMetrics
from .nudges import Nudges

__all__ = ["CardCache", "CardLookup", "EnforcementMetrics", "Enforcer", "Nudges", "ResponseFilter"]
