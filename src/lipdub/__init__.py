"""lipdub: identify faces in a video, then re-render chosen mouths to speak new audio.

The public verbs are :func:`identify` and :func:`sync`; everything else is reachable from
the submodules. Imports are lazy so that ``import lipdub`` stays cheap for the service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lipdub.errors import InputError, LimitError, LipdubError, MediaError, NoFacesError

if TYPE_CHECKING:
    from lipdub.client import AsyncClient, Client, TaskFailed, verify_webhook
    from lipdub.faces.identify import identify
    from lipdub.faces.session import Face, Session, VideoInfo
    from lipdub.render.sync import FaceAudio, SyncResult, sync

__all__ = [
    "AsyncClient",
    "Client",
    "Face",
    "FaceAudio",
    "InputError",
    "LimitError",
    "LipdubError",
    "MediaError",
    "NoFacesError",
    "Session",
    "SyncResult",
    "TaskFailed",
    "VideoInfo",
    "identify",
    "sync",
    "verify_webhook",
]

_LAZY = {
    "identify": "lipdub.faces.identify",
    "Session": "lipdub.faces.session",
    "Face": "lipdub.faces.session",
    "VideoInfo": "lipdub.faces.session",
    "sync": "lipdub.render.sync",
    "FaceAudio": "lipdub.render.sync",
    "SyncResult": "lipdub.render.sync",
    "Client": "lipdub.client",
    "AsyncClient": "lipdub.client",
    "TaskFailed": "lipdub.client",
    "verify_webhook": "lipdub.client",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lipdub' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
