"""Length modes: fitting a face's audio clip to the video time it is placed on.

One rule for every door: the API validates and prices with ``plan``, and the engine
(``lipdub.sync``: CLI, Python and the service's workers) applies the same plan. The
video's length never changes (other faces and the original sound share its timeline),
so each mode fits the clip to its *window*, from the insert point to the video's end:

==========  =======================================  =====================================
mode        clip longer than the window              clip shorter than the window
==========  =======================================  =====================================
(absent)    refused (the contract's rule)             plays once, silence after
silence     refused (the contract's rule, spelled)    plays once, silence after
cut_off     cut at the video's end                    plays once, silence after
loop        cut at the video's end                    repeated to the video's end
bounce      cut at the video's end                    forwards, backwards, ... to the end
remap       time-stretched (pitch kept) to fit        time-stretched (pitch kept) to fit
==========  =======================================  =====================================

A clip running at most ``TOLERANCE_MS`` past the end is cut in every mode: containers
disagree by a few milliseconds about lengths (AAC priming, rounding) and refusing 15 ms
helps nobody. Any cut is reported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lipdub.errors import InputError

SYNC_MODES = ("cut_off", "loop", "bounce", "silence", "remap")
TOLERANCE_MS = 50.0
# remap beyond these factors makes speech unintelligible; refuse and say so.
MIN_STRETCH, MAX_STRETCH = 0.5, 2.0


@dataclass(frozen=True)
class Fit:
    """How one clip is placed: ``placed_ms`` of audio play from the insert point."""

    mode: str | None
    clip_ms: float  # the cropped clip as given
    window_ms: float  # insert point to the video's end
    placed_ms: float  # what plays on the video
    trimmed_ms: float  # audio dropped past the video's end
    repeats: float  # loop / bounce: how many times the clip plays (1 otherwise)
    stretch: float  # remap: placed / clip duration (1 otherwise)

    def note(self, who: str) -> str | None:
        """One sentence when the audio was changed, else None."""
        mode = f"sync_mode {self.mode}" if self.mode else "within the tolerance"
        if self.trimmed_ms > 0:
            return (
                f"{who}: {self.trimmed_ms:.0f} ms of audio past the video's end were cut "
                f"({mode}); {self.placed_ms:.0f} of {self.clip_ms:.0f} ms play."
            )
        if self.repeats > 1:
            return (
                f"{who}: the {self.clip_ms:.0f} ms clip plays {self.repeats:.2f} times "
                f"({mode}) to fill {self.placed_ms:.0f} ms up to the video's end."
            )
        if self.stretch != 1.0:
            return (
                f"{who}: the {self.clip_ms:.0f} ms clip was time-stretched x{self.stretch:.3f} "
                f"to {self.placed_ms:.0f} ms ({mode}) to end with the video."
            )
        return None

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def plan(
    clip_ms: float,
    insert_ms: float,
    video_ms: float,
    mode: str | None,
    *,
    where: str,
    option: str = "sync_mode",
) -> Fit:
    """Decide how a clip of ``clip_ms`` placed at ``insert_ms`` fits the video; InputError
    (naming ``where`` and the ``option`` that would help) when it cannot."""
    if mode is not None and mode not in SYNC_MODES:
        raise InputError(
            f"{where}: {option} {mode!r} is unknown: use one of {', '.join(SYNC_MODES)}."
        )
    window = video_ms - insert_ms
    if window <= 0:
        raise InputError(
            f"{where} inserts audio at {insert_ms:.0f} ms, at or past the video's end "
            f"({video_ms:.0f} ms): choose an insert point inside the video."
        )
    over = clip_ms - window
    if mode == "remap":
        stretch = window / clip_ms
        if not MIN_STRETCH <= stretch <= MAX_STRETCH:
            raise InputError(
                f"{where}: remap would stretch the {clip_ms:.0f} ms clip to {window:.0f} ms "
                f"(x{stretch:.2f}), beyond x{MIN_STRETCH:g}-x{MAX_STRETCH:g}: crop the audio "
                f"or use {option} cut_off or loop."
            )
        return Fit(mode, clip_ms, window, window, 0.0, 1.0, stretch)
    if over > TOLERANCE_MS and mode in (None, "silence"):
        raise InputError(
            f"{where} inserts {clip_ms:.0f} ms at {insert_ms:.0f} ms, {over:.0f} ms past the "
            f"video's end ({video_ms:.0f} ms): insert earlier, crop the audio, or set "
            f"{option} cut_off (cut at the end) or remap (stretch to fit)."
        )
    if over > 0:
        return Fit(mode, clip_ms, window, window, over, 1.0, 1.0)
    if mode in ("loop", "bounce"):
        return Fit(mode, clip_ms, window, window, 0.0, window / clip_ms, 1.0)
    return Fit(mode, clip_ms, window, clip_ms, 0.0, 1.0, 1.0)


def apply(samples: np.ndarray, sr: int, fit: Fit) -> np.ndarray:
    """The clip's samples (frames x channels, or mono) shaped as ``fit`` says."""
    x = np.asarray(samples, dtype=np.float32)
    n_out = int(round(fit.placed_ms * sr / 1000))
    if fit.stretch != 1.0:
        return time_stretch(x, sr, n_out)
    if fit.repeats > 1:
        unit = np.concatenate([x, x[::-1]]) if fit.mode == "bounce" else x
        reps = int(np.ceil(n_out / len(unit)))
        return np.concatenate([unit] * reps)[:n_out]
    return x[:n_out]


def time_stretch(x: np.ndarray, sr: int, n_out: int) -> np.ndarray:
    """WSOLA: overlap-add 40 ms windows taken where they best continue the previous one,
    so duration changes and pitch does not (a resample would change both)."""
    two_d = x.ndim == 2
    frames = x if two_d else x[:, None]
    n_in = len(frames)
    size = max(64, int(0.04 * sr)) // 2 * 2
    hop = size // 2
    tol = int(0.012 * sr)
    if n_in < size * 2 or n_out < size:
        idx = np.minimum((np.arange(n_out) * n_in / max(n_out, 1)).astype(int), n_in - 1)
        return frames[idx] if two_d else frames[idx, 0]
    mono = frames.mean(axis=1)
    # Alignment is judged on every 4th sample: plenty for speech, 16x less work.
    dec = 4
    win = np.hanning(size).astype(np.float32)[:, None]
    out = np.zeros((n_out + size, frames.shape[1]), np.float32)
    norm = np.zeros((n_out + size, 1), np.float32)
    rate = n_in / n_out
    prev = 0
    for k in range(n_out // hop + 1):
        nominal = min(int(round(k * hop * rate)), n_in - size)
        if k == 0:
            best = 0
        else:
            natural = prev + hop
            if natural + size > n_in:
                natural = n_in - size
            target = mono[natural : natural + size : dec]
            lo, hi = max(0, nominal - tol), min(n_in - size, nominal + tol)
            region = mono[lo : hi + size : dec]
            if len(region) >= len(target) and hi > lo:
                score = np.correlate(region, target, "valid")
                best = lo + int(np.argmax(score)) * dec
            else:
                best = nominal
        at = k * hop
        seg = frames[best : best + size]
        out[at : at + len(seg)] += seg * win[: len(seg)]
        norm[at : at + len(seg)] += win[: len(seg)]
        prev = best
    res: np.ndarray = out[:n_out] / np.maximum(norm[:n_out], 1e-3)
    return res if two_d else res[:, 0]
