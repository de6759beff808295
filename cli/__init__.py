"""smoltbot.cli"""
