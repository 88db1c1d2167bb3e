"""Shared test support, the one place for where the real media lives.

``MEDIA`` is ``../shared/media`` beside the repository, or ``$LIPDUB_TEST_MEDIA``. Media
the tests make themselves is in ``tests/mediagen.py``; real servers, receivers and the
media server of the service tests in ``tests/service/helpers.py``, their fixtures in
``tests/service/conftest.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MEDIA = Path(os.environ.get("LIPDUB_TEST_MEDIA", REPO.parent / "shared" / "media"))


def media(name: str) -> Path:
    path = MEDIA / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: CI needs ../shared/media beside the repo")
    return path


@pytest.fixture(scope="session")
def media_dir() -> Path:
    return MEDIA
