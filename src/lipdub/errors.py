"""One exception hierarchy for the library, the CLI and the service.

Every message is one sentence that says what was wrong and, where it helps, what to do:
the service copies it verbatim into a task's ``failMsg`` and the CLI prints it alone.
"""

from __future__ import annotations


class LipdubError(Exception):
    """Base of every error lipdub raises on purpose."""


class InputError(LipdubError):
    """The caller's input (a file, a parameter) is unusable; retrying will not help."""


class MediaError(InputError):
    """A media file cannot be probed or decoded (empty, truncated, not media, no stream)."""


class NoFacesError(InputError):
    """Face identification found nobody to lip-sync."""

    def __init__(self, message: str = "Face detection failed: no faces found",
                 detail: str = "") -> None:
        super().__init__(message)
        # What was searched for and what was found but cannot be lip-synced (the
        # smallest face size searched, faces too small or seen too briefly, with spans).
        self.detail = detail


class LimitError(InputError):
    """An input is over a size or duration limit."""
