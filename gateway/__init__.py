"""smoltbot.gateway: the transparent proxy agents point ANTHROPIC_BASE_URL at.

It relays every call to the upstream API untouched, rebuilds each exchange (streams
included) and ships it to the observer through a durable spool.
"""

from .app import RunningGateway, build_app, serve, start_gateway

__all__ = ["RunningGateway", "build_app", "serve", "start_gateway"]
