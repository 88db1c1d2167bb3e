"""Shared test fixtures: where the real media lives, and small media the tests make."""

from __future__ import annotations

from pathlib import Path

import pytest

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"


def media(name: str) -> Path:
    path = MEDIA / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: CI needs ../shared/media beside the repo")
    return path


@pytest.fixture(scope="session")
def media_dir() -> Path:
    return MEDIA
