"""dlib's face models, loaded by path from the `face-recognition-models` package.

The package's ``__init__`` imports ``pkg_resources`` (gone from recent setuptools), so we
only ask importlib where it lives and never import it. Models load once per process.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any

import dlib

from lipdub.errors import LipdubError


def models_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise LipdubError(
            "The face-recognition-models package is missing: reinstall lipdub's dependencies."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


@lru_cache(maxsize=1)
def hog_detector() -> Any:
    return dlib.get_frontal_face_detector()


@lru_cache(maxsize=1)
def landmark_predictor() -> Any:
    return dlib.shape_predictor(str(models_dir() / "shape_predictor_68_face_landmarks.dat"))


@lru_cache(maxsize=1)
def face_encoder() -> Any:
    return dlib.face_recognition_model_v1(
        str(models_dir() / "dlib_face_recognition_resnet_model_v1.dat")
    )
