"""smoltbot.registry: the Registry service (agents, sessions, alignment cards).

`smoltbot.registry.server.build_server(settings)` / `serve(settings)` run it; the domain
modules `agents`, `sessions` and `cards` hold the rules, `store` the tables and queries,
`servicer` only converts between protos and the domain.
"""

#: A namespace of modules: import from each module (smoltbot.registry.agents, ...).
__all__: list[str] = []
