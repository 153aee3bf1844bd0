import numpy as np

from spatial.analysis import (circular_shift_null, classify_band_cells, classify_grid_cells,
                              hex_coords, lowpass_noise_maps, node_permutation_null,
                              noise_reference, null_summary, rate_maps, square_coords)
from spatial.analysis.nulls import _permute_valid, active_units
from spatial.analysis.synthetic import (band_map, hex_grid_map, ramp_map, random_walk_graph,
                                        random_walk_square, square_grid_map)

N_SIDE = 10


def _walk(T=4000, seed=0):
    return random_walk_square(N_SIDE, T, np.random.default_rng(seed))


def test_null_summary_pvalues():
    null = np.arange(100, dtype=float)[:, None] * np.ones((1, 3))
    obs = np.array([200.0, 50.0, np.nan])
    p95, p = null_summary(obs, null)
    np.testing.assert_allclose(p95[:2], np.percentile(np.arange(100), 95))
    assert p[0] == 1 / 101 and p[1] == 51 / 101 and np.isnan(p[2])


def test_grid_map_beats_shift_null_and_shifts_are_large():
    rng = np.random.default_rng(1)
    nodes = _walk()
    coords = square_coords(N_SIDE)
    maps = np.array([hex_grid_map(N_SIDE, s, o, rng.uniform(0, 5, 2)).ravel()
                     for s, o in ((3.5, 0), (4.5, 20), (5.5, 40))])
    act = maps[:, nodes].T + 0.3 * rng.standard_normal((nodes.size, 3))
    res = circular_shift_null(act, nodes, coords, n_shuffles=60, rng=2, band=False)
    assert res.beats("g60").all()
    assert np.all(res.pvalue["g60"] <= 1 / 61 + 1e-12)
    s = res.extra["shifts"]
    assert s.min() >= N_SIDE ** 2 and s.max() <= nodes.size - N_SIDE ** 2


def test_shift_null_false_positive_rate_iid_activity():
    """Activity with no spatial tuning: the unit beats its null ~5 % of the time."""
    rng = np.random.default_rng(3)
    nodes = _walk(3000, seed=4)
    U = 200
    act = rng.standard_normal((nodes.size, U))
    res = circular_shift_null(act, nodes, square_coords(N_SIDE), n_shuffles=100, rng=5)
    fpr60 = res.beats("g60").mean()
    fpr90 = res.beats("g90").mean()
    fprb = res.beats("band").mean()
    for f in (fpr60, fpr90, fprb):
        assert 0.005 <= f <= 0.1, (fpr60, fpr90, fprb)
    # p-values roughly uniform
    assert 0.35 < np.nanmean(res.pvalue["g60"]) < 0.65


def test_node_permutation_null_false_positive_rate_iid_maps():
    rng = np.random.default_rng(6)
    maps = rng.standard_normal((200, N_SIDE * N_SIDE))
    maps[:, ::17] = np.nan
    res = node_permutation_null(maps, square_coords(N_SIDE), n_perm=100, rng=7, band=False)
    f = res.beats("g60").mean()
    assert 0.005 <= f <= 0.1
    grid = np.array([hex_grid_map(N_SIDE, 4.0, o).ravel() for o in (0, 15, 30)])
    assert node_permutation_null(grid, square_coords(N_SIDE), n_perm=50, rng=8).beats("g60").all()


def test_permute_valid_keeps_mask_and_values():
    rng = np.random.default_rng(9)
    m = rng.standard_normal((4, 30))
    m[:, [1, 5, 9]] = np.nan
    m[2, 20] = np.nan
    p = _permute_valid(m, rng)
    np.testing.assert_array_equal(np.isnan(p), np.isnan(m))
    for a, b in zip(m, p):
        np.testing.assert_allclose(np.sort(a[np.isfinite(a)]), np.sort(b[np.isfinite(b)]))
    assert not np.allclose(np.nan_to_num(p), np.nan_to_num(m))


def test_classifiers_full_rule():
    rng = np.random.default_rng(10)
    n = 11
    nodes = random_walk_square(n, 5000, rng)
    maps = []
    kinds = []
    for i in range(6):
        ph = rng.uniform(0, 5, 2)
        maps += [hex_grid_map(n, 3.5 + 0.4 * i, 10 * i, ph), square_grid_map(n, 3.5 + 0.3 * i, 12 * i, ph),
                 band_map(n, 3.5 + 0.4 * i, 30 * i, ph, rectify=True), ramp_map(n, 60 * i),
                 np.indices((n, n)).sum(0) % 2 * 1.0, np.zeros((n, n))]
        kinds += ["hex", "square", "band", "ramp", "checker", "dead"]
    kinds = np.array(kinds)
    maps = np.array([m.ravel() for m in maps])
    act = maps[:, nodes].T + 0.2 * rng.standard_normal((nodes.size, len(maps)))
    act[:, kinds == "dead"] = 0.0
    res = classify_grid_cells(act, nodes, square_coords(n), n_shuffles=50, n_perm=50, rng=11)
    assert res["is_grid"][kinds == "hex"].all()
    assert not res["is_grid"][kinds != "hex"].any()
    assert res["is_square_grid"][kinds == "square"].all()
    assert not res["is_square_grid"][kinds != "square"].any()
    # ramps carry the low-k Fourier signature, whatever their scores against the nulls
    assert (res["lattice"][kinds == "ramp"] == "ramp").all()
    assert not res["active"][kinds == "dead"].any() and res["active"][kinds == "hex"].all()
    bands = classify_band_cells(act, nodes, square_coords(n), shift_null=res["shift_null"],
                                perm_null=res["perm_null"])
    assert bands["is_band"][kinds == "band"].all()
    assert not bands["is_band"][np.isin(kinds, ["hex", "square", "ramp", "dead"])].any()


def test_lowpass_noise_reference_and_hex_world():
    c = square_coords(N_SIDE)
    m0 = lowpass_noise_maps(c, 50, sigma=0.0, rng=1)
    m2 = lowpass_noise_maps(c, 50, sigma=1.5, rng=1)
    assert (m0 >= 0).all() and (m2 >= 0).all()
    # smoothing raises neighbour correlation
    g = m2.reshape(50, N_SIDE, N_SIDE)
    r = np.corrcoef(g[:, :, :-1].ravel(), g[:, :, 1:].ravel())[0, 1]
    assert r > 0.5
    ref = noise_reference(c, n_maps=60, sigma=1.0, rng=2)
    assert ref["g60"].shape == (60,) and np.isfinite(ref["g60_p95"])
    hc = hex_coords(4)
    mh = lowpass_noise_maps(hc, 10, sigma=1.0, rng=3, mask=np.arange(61) % 7 != 0)
    assert np.isnan(mh[:, ::7]).all() and np.isfinite(mh[:, 1]).all()


def test_hex_world_pipeline():
    rng = np.random.default_rng(12)
    c = hex_coords(5)
    A = (np.abs(np.hypot(*(c[:, None] - c[None]).transpose(2, 0, 1)) - 1) < 1e-9)
    nodes = random_walk_graph(A, 3000, rng)
    maps = np.array([hex_grid_map(coords=c, spacing=4.0, orientation=o, phase=rng.uniform(0, 4, 2))
                     for o in (0, 20)])
    act = maps[:, nodes].T + 0.2 * rng.standard_normal((nodes.size, 2))
    m, _ = rate_maps(act, nodes, len(c))
    res = classify_grid_cells(act, nodes, c, n_shuffles=30, n_perm=30, rng=13)
    assert res["is_grid"].all()
    assert active_units(m).all()


def test_task_world_objects_are_accepted():
    """Duck-typed task worlds (transitions, coords with y up, kind, shape) map onto rasters."""
    from types import SimpleNamespace

    from spatial.analysis import as_geometry, score_maps
    h, w = 6, 8
    rows, cols = np.divmod(np.arange(h * w), w)
    T = np.full((h * w, 5), -1)
    T[:, 0] = np.arange(h * w)
    T[cols < w - 1, 2] = np.arange(h * w)[cols < w - 1] + 1
    tw = SimpleNamespace(transitions=T, coords=np.stack([cols, -rows], 1).astype(float),
                         kind="square", shape=(h, w))
    W = as_geometry(tw)
    assert W.kind == "square" and W.shape == (h, w)
    assert W.adjacency[0, 1] and W.adjacency[1, 0] and not W.adjacency[0, w]
    m = np.arange(h * w, dtype=float)
    np.testing.assert_array_equal(W.grid(m), m.reshape(h, w))
    band = band_map(8, 4.0, 0.0)[:h, :w].ravel()        # wave along the columns (x)
    assert score_maps(band, tw)["orientation"][0] < 5
