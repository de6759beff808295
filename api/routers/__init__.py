"""smoltbot.api.routers"""

__all__: list[str] = []
