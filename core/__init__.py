"""Code every smoltbot service shares: settings, identity hashing, errors, storage, AAP logic."""

#: A namespace of modules: import from each module (smoltbot.core.ids, smoltbot.core.errors, ...).
__all__: list[str] = []
