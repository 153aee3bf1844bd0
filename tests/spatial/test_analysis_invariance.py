import numpy as np
import pytest

from spatial.analysis import hex_coords, square_coords, translation_invariance
from spatial.analysis.synthetic import band_map, hex_grid_map, positions, ramp_map

N = 12


def test_grid_and_band_codes_beat_ramps_and_corners():
    rng = np.random.default_rng(0)
    c = square_coords(N)
    ph = rng.uniform(0, 8, (40, 2))
    grid = np.array([hex_grid_map(N, 4.5, 7.0, p).ravel() for p in ph]).T
    band = np.array([band_map(N, 4.5, o, p, rectify=True).ravel()
                     for o, p in zip(rng.uniform(0, 180, 40), ph)]).T
    ramp = np.array([ramp_map(N, a).ravel() for a in rng.uniform(0, 360, 40)]).T
    x, y = positions(N)
    corner = np.array([np.maximum(0, 1 - 1.5 * np.hypot(x - cx, y - cy) / N).ravel()
                       for cx, cy in [(0, 0), (0, N - 1), (N - 1, 0), (N - 1, N - 1)] * 10]).T
    rand = rng.standard_normal((N * N, 40))
    s = {k: translation_invariance(v, c)["score"]
         for k, v in dict(grid=grid, band=band, ramp=ramp, corner=corner, rand=rand).items()}
    assert s["grid"] > 0.8 and s["band"] > 0.7
    assert s["ramp"] < 0.45 and s["corner"] < 0.55
    assert s["rand"] < 0.05


def test_exactly_invariant_code_scores_one_and_nan_nodes_dropped():
    c = hex_coords(5)
    k = np.array([[0.9, 0.3], [-0.2, 1.1], [0.5, -0.7]])
    # cos/sin of plane waves: similarity is an exact function of displacement
    e = np.concatenate([np.cos(c @ k.T), np.sin(c @ k.T)], axis=1)
    r = translation_invariance(e, c, center=False)
    assert r["score"] == pytest.approx(1.0, abs=1e-9)
    e2 = e.copy()
    e2[3, 0] = np.nan
    assert translation_invariance(e2, c, center=False)["score"] == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(ValueError):
        translation_invariance(e, c, similarity="bogus")
