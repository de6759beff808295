"""smoltbot.observer: the Observer service (exchanges in, traces, integrity and drift out).

`smoltbot.observer.server.build_server(settings)` / `serve(settings)` run it. Exchanges arrive
through `intake` into the `queue`; the `processor` leases them and turns each into traces
(`pipeline`, in `cpu_pool` worker processes or inline; `analyzers`), written back through the
queue; `drift_watch` feeds stored traces to the drift detector; `queries` serves the read side.
SQL runs only in the storage modules over `tables`: `queue`, `trace_store` and `drift_store`.
`servicer` only converts between protos and the domain.
"""

#: A namespace of modules: import from each module (smoltbot.observer.queue, ...).
__all__: list[str] = []
