"""smoltbot.gateway"""
