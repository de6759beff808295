"""smoltbot.core.storage"""
