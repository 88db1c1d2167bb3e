"""Edit regions of a decoded yuv420p picture in RGB without converting the whole picture.

A lip-sync changes a few percent of each frame. Converting the whole picture to RGB and
back costs more than rendering the face at 1080p and dominates at 4K (a 4K RGB frame is
25 MB); so only the face's window is converted, edited, and written back, and only the
pixels the edit changed are replaced: everything else stays the decoder's exact bytes.

The conversion is OpenCV's BT.601 limited-range I420 <-> RGB, the same both ways (and
within a level or two of libswscale's); a pixel the edit did not change is not written
back at all, and a changed 2x2 block gets the chroma of its mean colour. The bank and the
render see the same colours because both use it. A full-range (JPEG-level) picture is
scaled to video levels for the conversion and back, so its extremes are not clipped.
"""

from __future__ import annotations

import av
import cv2
import numpy as np

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive), in picture pixels


def editable(frame: av.VideoFrame, rotation: int) -> bool:
    """Can this frame be edited in place of its planes? 8-bit 4:2:0, upright, with even
    sides (every frame the decoder hands on: media/decode.py); anything else takes the
    full-RGB path."""
    return (frame.format.name == "yuv420p" and rotation == 0
            and frame.width % 2 == 0 and frame.height % 2 == 0)


# Full range <-> video levels: luma 0..255 <-> 16..235, chroma 0..255 <-> 16..240 (128
# stays 128), as alpha * x + beta.
_Y_TO_VIDEO = (219 / 255, 16.0)
_C_TO_VIDEO = (224 / 255, 128 - 128 * 224 / 255)
_Y_TO_FULL = (255 / 219, -16 * 255 / 219)
_C_TO_FULL = (255 / 224, 128 - 128 * 255 / 224)


def _levels(x: np.ndarray, ab: tuple[float, float]) -> np.ndarray:
    y = np.rint(x.astype(np.float32) * ab[0] + ab[1])
    return np.clip(y, 0, 255, out=y).astype(np.uint8)


def _plane(frame: av.VideoFrame, i: int, h: int, w: int) -> np.ndarray:
    p = frame.planes[i]
    return np.frombuffer(memoryview(p), np.uint8).reshape(-1, p.line_size)[:h, :w]


def align(box: Box, width: int, height: int) -> Box:
    """``box`` grown to even corners (4:2:0 chroma covers 2x2 pixels) inside the picture."""
    x0, y0, x1, y1 = box
    x0, y0 = max(0, x0 - x0 % 2), max(0, y0 - y0 % 2)
    x1, y1 = min(width, x1 + x1 % 2), min(height, y1 + y1 % 2)
    return x0, y0, max(x1, x0), max(y1, y0)


# OpenCV's RGB -> I420 chroma rows (BT.601, video levels; its fixed-point coefficients
# over 2^20, and the +128 offset): applied to whole pixels with cv2.transform, they give
# the chroma cv2.cvtColor(..., COLOR_RGB2YUV_I420) gives, within one level (the two round
# exact halves differently: a few dozen samples in a million colours).
_RGB2UV = np.array([[-155188, -305135, 460324, 128 << 20],
                    [460324, -385875, -74448, 128 << 20]], np.float64) / (1 << 20)


class YuvPicture:
    """One yuv420p frame's planes. Reads come straight from the decoder's frame; the first
    write makes the frame writable, which copies its planes only when the decoder still
    holds them (a reference for the frames after it: writing there would corrupt those),
    and every later read and write uses the writable planes, so faces whose windows
    overlap see each other's edits."""

    def __init__(self, frame: av.VideoFrame) -> None:
        self.width, self.height = frame.width, frame.height
        self._frame = frame
        self._full = frame.color_range == 2
        self._changed = False
        self._planes = self._views(frame)

    def _views(self, frame: av.VideoFrame) -> list[np.ndarray]:
        h, w = self.height, self.width
        return [_plane(frame, 0, h, w), _plane(frame, 1, h // 2, w // 2),
                _plane(frame, 2, h // 2, w // 2)]

    @property
    def changed(self) -> bool:
        return self._changed

    def window(self, box: Box) -> Box:
        return align(box, self.width, self.height)

    def rgb(self, box: Box) -> np.ndarray:
        """The RGB pixels of an aligned ``box`` (a new array)."""
        x0, y0, x1, y1 = box
        y, u, v = self._planes
        h, w = y1 - y0, x1 - x0
        flat = np.empty(h * w * 3 // 2, np.uint8)
        flat[: h * w].reshape(h, w)[:] = y[y0:y1, x0:x1]
        q = h * w // 4
        flat[h * w : h * w + q].reshape(h // 2, w // 2)[:] = u[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2]
        flat[h * w + q :].reshape(h // 2, w // 2)[:] = v[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2]
        if self._full:
            flat[: h * w] = _levels(flat[: h * w], _Y_TO_VIDEO).ravel()
            flat[h * w :] = _levels(flat[h * w :], _C_TO_VIDEO).ravel()
        return np.asarray(cv2.cvtColor(flat.reshape(h * 3 // 2, w), cv2.COLOR_YUV2RGB_I420))

    def _writable(self) -> list[np.ndarray]:
        if not self._changed:
            # Views of the old buffers must not outlive this: the frame may drop them.
            self._planes = []
            self._frame.make_writable()
            self._planes = self._views(self._frame)
            self._changed = True
        return self._planes

    def put(self, box: Box, rgb: np.ndarray, before: np.ndarray,
            region: Box | None = None) -> None:
        """Write back the pixels of ``rgb`` (the window ``box``) that differ from
        ``before`` (what :meth:`rgb` gave), looking only inside ``region`` (window pixels)
        when the caller knows where it drew; a chroma sample is replaced when any of its
        four pixels changed."""
        wx0, wy0, wx1, wy1 = box
        rx0, ry0, rx1, ry1 = align(region or (0, 0, wx1 - wx0, wy1 - wy0),
                                   wx1 - wx0, wy1 - wy0)
        if rx1 <= rx0 or ry1 <= ry0:
            return
        new = np.ascontiguousarray(rgb[ry0:ry1, rx0:rx1])
        h, w = new.shape[:2]
        # Changed pixels: any of three bytes differs. The byte-wise comparison is 0 or 255
        # a channel, and its grey value is > 0 exactly when one channel is 255 (the
        # smallest weight, blue's 0.114, still gives 29). OpenCV calls both: the NumPy
        # version was a third of the write-back.
        ne = cv2.compare(new, before[ry0:ry1, rx0:rx1], cv2.CMP_NE)
        diff = cv2.cvtColor(ne, cv2.COLOR_RGB2GRAY)
        if not cv2.countNonZero(diff):
            return
        y, u, v = self._writable()
        x0, y0, x1, y1 = wx0 + rx0, wy0 + ry0, wx0 + rx1, wy0 + ry1
        luma = np.asarray(cv2.cvtColor(new, cv2.COLOR_RGB2YUV_I420))[:h]
        if self._full:
            luma = _levels(luma, _Y_TO_FULL)
        cv2.copyTo(luma, diff, y[y0:y1, x0:x1])  # in place, where diff > 0
        # OpenCV's I420 conversion takes each chroma sample from the top-left pixel of its
        # 2x2 block; a blend's soft edge needs the block's mean (chroma is linear in RGB:
        # the mean colour's chroma is the mean chroma).
        mean = cv2.resize(new, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        cu, cv = cv2.split(cv2.transform(mean, _RGB2UV))
        if self._full:
            cu, cv = _levels(cu, _C_TO_FULL), _levels(cv, _C_TO_FULL)
        cdiff = cv2.resize(diff, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        cv2.copyTo(cu, cdiff, u[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2])
        cv2.copyTo(cv, cdiff, v[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2])

    def frame(self) -> av.VideoFrame:
        """The picture as a frame for the encoder."""
        return self._frame


__all__ = ["Box", "YuvPicture", "align", "editable"]
