"""smoltbot.core.storage.migrations"""
