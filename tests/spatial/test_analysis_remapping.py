import numpy as np

from spatial.analysis import (cell_correlations, correlation_matrix, grid_at_place, pair_structure,
                              population_vector_correlation, square_coords)
from spatial.analysis.synthetic import bump_map, hex_grid_map

N = 12


def _grid_pop(rng, shift=(0.0, 0.0), rot=0.0, redraw=False, U=40):
    ph = np.random.default_rng(0).uniform(0, 8, (U, 2))
    sp = np.where(np.arange(U) % 2 == 0, 3.5, 5.0)
    ori = np.where(sp > 4, 10.0, 25.0)
    if redraw:
        ph, ori = rng.uniform(0, 8, (U, 2)), rng.uniform(0, 60, U)
    return np.array([hex_grid_map(N, s, o + rot, p + np.asarray(shift)).ravel()
                     for s, o, p in zip(sp, ori, ph)])


def test_cell_and_pv_correlations():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((5, 30))
    b = 2 * a + 1
    b[0] = -a[0]
    b[:, 3] = np.nan
    np.testing.assert_allclose(cell_correlations(a, b), [-1, 1, 1, 1, 1])
    mean, per = population_vector_correlation(a, a)
    assert mean == 1.0 and np.isnan(per).sum() == 0
    C = correlation_matrix(np.stack([a[0], a[0] * 3, -a[0]]))
    np.testing.assert_allclose(C, [[1, 1, -1], [1, 1, -1], [-1, -1, 1]], atol=1e-12)


def test_pair_structure_kept_for_shifted_grids_not_for_redraw():
    rng = np.random.default_rng(2)
    w1 = _grid_pop(rng)
    shifted = pair_structure(w1, _grid_pop(rng, shift=(1.7, -2.3)), n_perm=200, rng=3)
    assert shifted["r"] > 0.8 and shifted["r"] > shifted["p95"] and shifted["pvalue"] < 0.01
    rotated = pair_structure(w1, _grid_pop(rng, shift=(1.7, -2.3), rot=15.0), n_perm=200, rng=3)
    assert rotated["r"] > rotated["p95"]
    redrawn = pair_structure(w1, _grid_pop(rng, redraw=True), n_perm=200, rng=4)
    assert abs(redrawn["r"]) < 0.15 and redrawn["pvalue"] > 0.05


def test_grid_at_place_aligned_vs_random():
    rng = np.random.default_rng(5)
    c = square_coords(N)
    g1 = _grid_pop(rng)
    d = np.array([2, 3])                                   # (row, col) shift
    g2 = _grid_pop(rng, shift=(d[1], d[0]))                # phase is (x, y) = (col, row)
    pk = rng.integers(1, N - 4, (30, 2))

    def bumps(rcs):
        return np.array([bump_map(N, centre=(rc[1], rc[0]), sigma=1.0).ravel() for rc in rcs])

    aligned = grid_at_place(bumps(pk), bumps(pk + d), g1, g2, c, n_perm=2000, rng=6)
    assert aligned["r"] > 0.9 and aligned["pvalue"] < 0.01 and len(aligned["kept"]) == 30
    rand = grid_at_place(bumps(pk), bumps(rng.integers(1, N - 1, (30, 2))), g1, g2, c,
                         n_perm=2000, rng=7)
    assert abs(rand["r"]) < 0.2 and rand["pvalue"] > 0.05
    # the fast permutation null equals the direct computation
    X, Y = rand["x"], rand["y"]
    p = np.random.default_rng(8).permutation(X.shape[1])
    direct = np.corrcoef(X.ravel(), Y[:, p].ravel())[0, 1]
    M = X.T @ Y
    fast = (M[np.arange(len(p)), p].sum() / X.size - X.mean() * Y.mean()) / (X.std() * Y.std())
    assert abs(direct - fast) < 1e-10


def test_grid_at_place_drops_border_peaks():
    c = square_coords(N)
    g = _grid_pop(np.random.default_rng(9), U=6)
    place = np.array([bump_map(N, centre=(0, 5), sigma=1.0).ravel(),
                      bump_map(N, centre=(5, 5), sigma=1.0).ravel(),
                      bump_map(N, centre=(6, 4), sigma=1.0).ravel()])
    res = grid_at_place(place, place, g, g, c, n_perm=10)
    np.testing.assert_array_equal(res["kept"], [1, 2])
