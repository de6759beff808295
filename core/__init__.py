"""Code every smoltbot service shares: settings, identity hashing, errors, storage, AAP logic."""
