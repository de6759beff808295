"""smoltbot.api"""
