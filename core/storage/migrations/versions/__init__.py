"""smoltbot.core.storage.migrations.versions"""
