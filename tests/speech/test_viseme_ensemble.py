"""A viseme ensemble is several MLPs merged into one (tools/train_visemes.py ``merged``):
the merged network must give exactly the softmax of its members' mean logits, or the
mean of their softmaxes, or the ensemble that was validated is not the one that ships."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from lipdub.speech import visemes as V

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from train_visemes import merged  # noqa: E402


def member(rng: np.random.Generator, mean: np.ndarray, scale: np.ndarray) -> V.VisemeModel:
    sizes = (V.N_FEATURES, 24, 12, len(V.CLASSES))
    layers = [(rng.normal(0, 0.2, (a, b)).astype(np.float32),
               rng.normal(0, 0.2, b).astype(np.float32))
              for a, b in zip(sizes, sizes[1:], strict=False)]
    return V.VisemeModel(mean, scale, layers)


def ensemble(seed: int) -> tuple[list[V.VisemeModel], np.ndarray]:
    """Three members of one input normalisation, and 200 feature rows to read."""
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=V.N_FEATURES).astype(np.float32)
    scale = rng.uniform(0.5, 2.0, V.N_FEATURES).astype(np.float32)
    members = [member(rng, mean, scale) for _ in range(3)]
    return members, rng.normal(size=(200, V.N_FEATURES)).astype(np.float32)


def test_merged_models_give_the_mean_of_their_logits(tmp_path: Path) -> None:
    members, x = ensemble(0)
    z = np.mean([m.logits(x) for m in members], axis=0)
    want = np.exp(z - z.max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    path = tmp_path / "merged.npz"
    merged(members).save(str(path))  # through the shipped file format (float16 weights)
    got = V.read_model(str(path)).posteriors(x)
    assert np.abs(got - want).max() < 5e-3
    # Not a single member's answer: the merge really averages.
    single = members[0].posteriors(x)
    assert np.abs(single - want).max() > 0.05


def test_merged_by_posteriors_gives_the_mean_of_their_softmaxes(tmp_path: Path) -> None:
    members, x = ensemble(2)
    want = np.mean([m.posteriors(x) for m in members], axis=0)
    path = tmp_path / "heads.npz"
    merged(members, "posteriors").save(str(path))
    model = V.read_model(str(path))
    assert model.heads == 3
    got = model.posteriors(x)
    assert np.abs(got - want).max() < 5e-3
    assert np.allclose(got.sum(1), 1.0, atol=1e-5)
    # Not the mean of logits: the two merges differ where members disagree.
    by_logits = merged(members).posteriors(x)
    assert np.abs(by_logits - want).max() > 0.02


def test_a_file_whose_last_layer_does_not_match_its_heads_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    mean = np.zeros(V.N_FEATURES, np.float32)
    one = member(rng, mean, np.ones(V.N_FEATURES, np.float32))
    bad = V.VisemeModel(one.mean, one.scale, one.layers, heads=2)
    bad.save(str(tmp_path / "bad.npz"))
    with pytest.raises(RuntimeError, match="heads"):
        V.read_model(str(tmp_path / "bad.npz"))


def test_members_of_another_normalisation_are_refused() -> None:
    rng = np.random.default_rng(1)
    a = member(rng, np.zeros(V.N_FEATURES, np.float32), np.ones(V.N_FEATURES, np.float32))
    b = member(rng, np.ones(V.N_FEATURES, np.float32), np.ones(V.N_FEATURES, np.float32))
    with pytest.raises(ValueError):
        merged([a, b])
