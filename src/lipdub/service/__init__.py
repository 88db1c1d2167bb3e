"""The HTTP service around the engine: an API, a durable queue, workers, callbacks.

Read the sub-packages top down; each may import only those below it (checked by
import-linter in ``make lint``, see ``[tool.importlinter]`` in pyproject.toml)::

    cli/        the ``lipdub serve|worker|keys|credits|account|db`` commands
    api/        FastAPI app factory, routers per area, upload and body limits, OpenAPI
    worker/     claiming, heartbeats, the engine child process and its typed protocol,
                the upstream engine (Kling's cloud) beside it
    context.py  what every part is built from: settings, store, storage, URL policy, disk
    callbacks/  callback bodies (the wire format) and the sender
    ops/        health, metrics, disk watermark, fleet checks
    upstream/   Kling's official API as a client: JWT, calls, error mapping, back-off
    store/      all SQL behind the one ``Store`` facade; tables, migrations
    retry.py    retrying transient database and storage errors, logging an outage once
    storage/    media storage: the interface, local directory, S3
    models.py   the two task models the contract names

The service sits above the engine packages (``render`` → ``speech`` → ``faces`` →
``media``) and reaches them only through ``lipdub.identify``/``lipdub.sync`` in the
worker's child process and the media helpers that check requests (fetch, probe); or
not at all, when an account's tasks run on Kling's cloud (docs/kling-engine.md).
"""
