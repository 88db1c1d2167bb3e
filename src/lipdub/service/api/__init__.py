"""The HTTP API: ``create_app(settings)`` and the routers it mounts, one per area.

Layer: above the worker (it starts the embedded one and tells it of new and cancelled
tasks through ``lipdub.service.worker.Worker`` only, never the worker's internals),
``context``, ``callbacks``, ``ops``, ``store`` and ``storage``. Routes are in
``tasks`` (create), ``queries`` (query, list, cancel, usage), ``files`` (uploads and
``/media``), ``operations`` (``/healthz``, ``/metrics``) and ``console``; ``deps`` holds
the FastAPI dependencies they share (the API key, the context, reads).
"""

from lipdub.service.api.app import create_app

__all__ = ["create_app"]
