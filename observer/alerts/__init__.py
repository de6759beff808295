"""Alerts and webhooks (docs/alerts.md): an agent's owner subscribes a URL to its events, the
feed finds those events in what the observer stored and queues them in a durable outbox, and
the sender delivers them, signed, with an idempotency key, retried with backoff.

Modules: `events` (kinds, bodies, keys), `destinations` (URL rules, SSRF guard), `signing`,
`store` (the SQL), `feed`, `sender`, `worker` (their loops and metrics), `subscriptions`
(the domain calls), `servicer` (AlertService).
"""

#: A namespace of modules: import from each one (smoltbot.observer.alerts.worker, ...).
__all__: list[str] = []
