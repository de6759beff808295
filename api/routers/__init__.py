"""smoltbot.api.routers"""
