"""Task workers: claim under a lease, run the engine in a child process, record the end.

Layer: above ``context``, ``callbacks``, ``ops``, ``store`` and ``storage``; below the API
and the CLI. What the rest of the service may use is exported here (``Worker``, the
``EngineRunner`` interface and ``JobFailed``); ``slots`` (the claim loop, heartbeat and
janitor), ``attempt`` (one run's inputs and outputs), ``runner``, ``warm``, ``zygote`` and
``child`` (the engine's fork server and process) and ``protocol`` (what they say to each
other) are internals the API must not import.

The exports load lazily: the engine's fork server imports ``worker.zygote``,
``worker.child`` and ``worker.protocol`` and must not carry the database and HTTP
libraries into every task's process.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lipdub.service.worker.runner import EngineRunner, JobFailed
    from lipdub.service.worker.slots import Worker

__all__ = ["EngineRunner", "JobFailed", "Worker"]
_HOME = {"EngineRunner": "runner", "JobFailed": "runner", "Worker": "slots"}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
