"""smoltbot.cli"""

__all__: list[str] = []
