import numpy as np

from spatial.analysis import autocorrelogram, autocorrelogram_points, square_coords
from spatial.analysis.synthetic import hex_grid_map


def brute_sac(m, min_pairs=4):
    H, W = m.shape
    out = np.full((2 * H - 1, 2 * W - 1), np.nan)
    for dr in range(-(H - 1), H):
        for dc in range(-(W - 1), W):
            a, b = [], []
            for r in range(H):
                for c in range(W):
                    r2, c2 = r + dr, c + dc
                    if 0 <= r2 < H and 0 <= c2 < W and np.isfinite(m[r, c]) and np.isfinite(m[r2, c2]):
                        a.append(m[r, c])
                        b.append(m[r2, c2])
            if len(a) >= min_pairs and np.std(a) > 1e-12 and np.std(b) > 1e-12:
                out[dr + H - 1, dc + W - 1] = np.corrcoef(a, b)[0, 1]
    return out


def holey_map(rng, n=9):
    m = hex_grid_map(n, 4.0, 10.0, (1.0, 2.0)) + 0.2 * rng.standard_normal((n, n))
    m[rng.random((n, n)) < 0.2] = np.nan
    return m


def test_sac_matches_bruteforce_with_nan_holes():
    rng = np.random.default_rng(0)
    m = holey_map(rng)
    assert np.isnan(m).sum() > 5
    sac = autocorrelogram(m)
    ref = brute_sac(m)
    assert sac.shape == (17, 17)
    np.testing.assert_array_equal(np.isnan(sac), np.isnan(ref))
    np.testing.assert_allclose(sac[np.isfinite(ref)], ref[np.isfinite(ref)], atol=1e-9)


def test_sac_centre_symmetry_and_differs_from_zero_filled():
    rng = np.random.default_rng(1)
    m = holey_map(rng)
    sac = autocorrelogram(m)
    assert sac[8, 8] == 1.0
    np.testing.assert_allclose(sac, sac[::-1, ::-1], atol=1e-12, equal_nan=True)
    zero = autocorrelogram(np.nan_to_num(m))
    both = np.isfinite(sac) & np.isfinite(zero)
    assert np.max(np.abs(sac[both] - zero[both])) > 0.1


def test_sac_batch_constant_and_min_pairs():
    rng = np.random.default_rng(2)
    maps = np.stack([holey_map(rng), np.full((9, 9), 3.0), holey_map(rng)])
    sac = autocorrelogram(maps)
    assert sac.shape == (3, 17, 17)
    assert np.isnan(sac[1]).all()
    np.testing.assert_allclose(sac[2], autocorrelogram(maps[2]), equal_nan=True)
    _, counts = autocorrelogram(maps[0], return_counts=True)
    assert np.all(np.isnan(sac[0][counts < 4]))
    strict = autocorrelogram(maps[0], min_pairs_frac=0.2)
    assert np.isnan(strict).sum() > np.isnan(sac[0]).sum()


def test_point_sac_equals_grid_sac_on_square_world():
    rng = np.random.default_rng(3)
    n = 8
    m = holey_map(rng, n)
    valid = np.isfinite(m).ravel()
    rc = square_coords(n)
    xy = rc[:, ::-1].astype(float)          # (x=col, y=row)
    ps = autocorrelogram_points(m.ravel()[valid], xy[valid])
    sac = autocorrelogram(m)
    M = (ps.raster.shape[0] - 1) // 2
    assert M == n - 1
    np.testing.assert_allclose(ps.raster, sac, atol=1e-9, equal_nan=True)
