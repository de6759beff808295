"""smoltbot.registry"""
