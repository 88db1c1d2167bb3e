"""Rest posture of the dubbed mouth: opening over the quietest 30 % of the new audio's
frames, next to the source's own closed-mouth percentiles.

    .venv/bin/python -m bench.quality --no-speed   # writes bench/.cache/quality/*.curves.npz
    .venv/bin/python -m bench.rest_posture

Reads the per-frame curves that bench/quality.py saved (landmarks re-detected on the
output), so it measures the output, not the engine's targets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CURVES = Path(__file__).resolve().parent / ".cache" / "quality"


def main() -> None:
    files = sorted(CURVES.glob("*.curves.npz"))
    if not files:
        raise SystemExit("no curves: run bench/quality.py first")
    quiet_means = []
    print(f"{'clip':32} {'quiet30 out':>11} {'src p5':>7} {'src p15':>8}")
    for f in files:
        z = np.load(f)
        out, src, loud = z["out_open"], z["src_open"], z["loud_new"]
        quiet = loud <= np.nanpercentile(loud, 30)
        q = float(np.nanmean(out[quiet]))
        quiet_means.append(q)
        name = f.name.removesuffix(".curves.npz")
        print(f"{name:32} {q:11.3f} {np.nanpercentile(src, 5):7.3f} "
              f"{np.nanpercentile(src, 15):8.3f}")
    print(f"{'MEAN':32} {np.mean(quiet_means):11.3f}")


if __name__ == "__main__":
    main()
