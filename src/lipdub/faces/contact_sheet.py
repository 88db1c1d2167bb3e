"""A picture of an identify result: every face's thumbnail with its id and segments."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from lipdub.faces.session import Session

_TILE = 220
_LABEL = 64


def _fmt(ms: int) -> str:
    return f"{ms / 1000:.1f}s"


def contact_sheet(session: Session, out: str | Path, columns: int = 4) -> Path:
    """Draw the thumbnails in a grid, each captioned with face_id and visible segments."""
    if session.directory is None:
        raise ValueError("save the session before drawing its contact sheet")
    n = len(session.faces)
    cols = max(1, min(columns, n))
    rows = (n + cols - 1) // cols
    sheet = np.full((rows * (_TILE + _LABEL), cols * _TILE, 3), 245, np.uint8)
    for i, face in enumerate(session.faces):
        r, c = divmod(i, cols)
        y, x = r * (_TILE + _LABEL), c * _TILE
        img = cv2.imread(str(session.thumbnail_path(face)))
        if img is not None:
            h, w = img.shape[:2]
            s = (_TILE - 8) / max(h, w)
            img = cv2.resize(img, (int(w * s), int(h * s)), interpolation=cv2.INTER_AREA)
            oy = y + 4 + (_TILE - 8 - img.shape[0]) // 2
            ox = x + 4 + (_TILE - 8 - img.shape[1]) // 2
            sheet[oy : oy + img.shape[0], ox : ox + img.shape[1]] = img
        cv2.putText(sheet, face.face_id, (x + 8, y + _TILE + 22), cv2.FONT_HERSHEY_SIMPLEX,
                    0.65, (20, 20, 20), 2, cv2.LINE_AA)
        segs = ", ".join(f"{_fmt(a)}-{_fmt(b)}" for a, b in face.segments[:3])
        if len(face.segments) > 3:
            segs += f" +{len(face.segments) - 3}"
        cv2.putText(sheet, segs, (x + 8, y + _TILE + 48), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                    (60, 60, 60), 1, cv2.LINE_AA)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), sheet):
        raise ValueError(f"could not write {path}: use a .jpg or .png name")
    return path
