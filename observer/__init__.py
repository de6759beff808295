"""smoltbot.observer"""
