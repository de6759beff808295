"""smoltbot.core.aap"""
