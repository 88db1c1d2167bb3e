"""Upstream engines: lipdub's tasks run on someone else's cloud (Kling's official API).

Layer: beside ``callbacks`` and ``ops``, below ``context`` and the worker; it imports
nothing of the service. ``kling`` is the HTTP client (JWT signing, the four calls, the
envelope), ``failures`` maps Kling's error codes to lipdub's failCodes, ``backoff``
retries what Kling says is worth retrying. The engine that uses them (records, storage,
the task's progress) is ``worker.upstream_engine``.
"""

from lipdub.service.upstream.backoff import Cancelled, GaveUp, with_backoff
from lipdub.service.upstream.failures import Failure, failure_for, task_failure
from lipdub.service.upstream.kling import KlingClient, KlingError, KlingUnreachable

__all__ = [
    "Cancelled",
    "Failure",
    "GaveUp",
    "KlingClient",
    "KlingError",
    "KlingUnreachable",
    "failure_for",
    "task_failure",
    "with_backoff",
]
