"""dlib's face models, loaded by path from the `face-recognition-models` package.

The package's ``__init__`` imports ``pkg_resources`` (gone from recent setuptools), so we
only ask importlib where it lives and never import it. Models load once per process;
HOG detectors, which threads must not share, as many as are in use at once.
"""

from __future__ import annotations

import importlib.util
import pickle
import threading
from collections.abc import Iterator
from contextlib import contextmanager
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


_idle_detectors: list[Any] = []
_idle_lock = threading.Lock()


@lru_cache(maxsize=1)
def _detector_bytes() -> bytes:
    # dlib builds its detector from an embedded text form (0.3 s); a pickled copy loads
    # in 2 ms, so each further detector is made from this.
    return pickle.dumps(dlib.get_frontal_face_detector())


@contextmanager
def hog_detector() -> Iterator[Any]:
    """dlib's HOG face detector, for the calling thread alone until the block ends.

    A detector keeps scratch buffers: two threads running one at once crash the process
    (a segfault, seen with identify's detection threads). Each block gets one that no
    other thread is using; they are made on demand and kept, so a process holds as many
    as it ever ran at the same time.
    """
    with _idle_lock:
        det = _idle_detectors.pop() if _idle_detectors else None
    if det is None:
        det = pickle.loads(_detector_bytes())  # noqa: S301  (our own bytes, made above)
    try:
        yield det
    finally:
        with _idle_lock:
            _idle_detectors.append(det)


_idle_cascades: list[Any] = []


@contextmanager
def haar_cascade() -> Iterator[Any]:
    """OpenCV's frontal-face Haar cascade (shipped with OpenCV), for the calling thread
    alone until the block ends (a cascade keeps scratch buffers too). It proposes the
    faces too small for the HOG search of a whole frame; HOG checks each proposal."""
    with _idle_lock:
        c = _idle_cascades.pop() if _idle_cascades else None
    if c is None:
        import cv2

        path = cv2.data.haarcascades + "haarcascade_frontalface_alt2.xml"  # type: ignore[attr-defined]
        c = cv2.CascadeClassifier(path)
        if c.empty():
            raise LipdubError("OpenCV's Haar face cascade is missing: reinstall opencv.")
    try:
        yield c
    finally:
        with _idle_lock:
            _idle_cascades.append(c)


_idle_mmods: list[Any] = []


@contextmanager
def mmod_detector() -> Iterator[Any]:
    """dlib's CNN face detector (MMOD, from face-recognition-models), for the calling
    thread alone until the block ends. It finds faces turned to three-quarter and
    profile, which the HOG detector (frontal and slightly turned filters) misses, at
    5 us a pixel: it only ever searches a face's surroundings scaled to ~100 px, or a
    whole frame reduced to 320 px, never a frame at the HOG's size (bench/identify.py)."""
    with _idle_lock:
        m = _idle_mmods.pop() if _idle_mmods else None
    if m is None:
        m = dlib.cnn_face_detection_model_v1(str(models_dir() / "mmod_human_face_detector.dat"))
    try:
        yield m
    finally:
        with _idle_lock:
            _idle_mmods.append(m)


def preload() -> None:
    """Load every model now, as a service does before its first task."""
    landmark_predictor()
    face_encoder()
    _detector_bytes()


@lru_cache(maxsize=1)
def landmark_predictor() -> Any:
    return dlib.shape_predictor(str(models_dir() / "shape_predictor_68_face_landmarks.dat"))


@lru_cache(maxsize=1)
def face_encoder() -> Any:
    return dlib.face_recognition_model_v1(
        str(models_dir() / "dlib_face_recognition_resnet_model_v1.dat")
    )
