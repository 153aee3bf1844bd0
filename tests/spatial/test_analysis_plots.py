import numpy as np

from spatial.analysis import grid_at_place, hex_coords, pair_structure, square_coords
from spatial.analysis.synthetic import bump_map, hex_grid_map, noise_map
from spatial.plots import plot_hex_map, plot_rate_maps, plot_remapping, plot_score_histogram


def test_plot_rate_maps_sorted_with_sacs_and_grey_nan(tmp_path):
    rng = np.random.default_rng(0)
    maps = np.stack([noise_map(8, rng), hex_grid_map(8, 4.0), bump_map(8)])
    maps[0, 2, 3] = np.nan
    scores = np.array([0.1, 1.4, np.nan])
    fig, axs = plot_rate_maps(maps, scores=scores, ncols=4)
    titles = [a.get_title() for a in axs if a.get_title() and a.get_title() != "SAC"]
    assert titles[0].startswith("#1") and titles[1].startswith("#0") and titles[2].startswith("#2")
    assert sum(a.get_title() == "SAC" for a in axs) == 3
    img = axs[2].images[0]                    # unit 0's map (second in order)
    arr = img.get_array()
    assert np.ma.getmaskarray(arr)[2, 3] and np.ma.getmaskarray(arr).sum() == 1
    np.testing.assert_allclose(img.get_cmap().get_bad()[:3], 0.6)
    fig.savefig(tmp_path / "maps.png")
    assert (tmp_path / "maps.png").stat().st_size > 1000


def test_plot_score_histogram_threshold():
    rng = np.random.default_rng(1)
    null = rng.standard_normal((100, 20))
    fig, ax = plot_score_histogram(rng.standard_normal(20) + 2, null, fixed_thresholds=(0.3,))
    xs = [ln.get_xdata()[0] for ln in ax.lines]
    assert np.isclose(xs[0], np.percentile(null, 95)) and np.isclose(xs[1], 0.3)


def test_plot_remapping_and_hex(tmp_path):
    rng = np.random.default_rng(2)
    n = 10
    g1 = np.array([hex_grid_map(n, 4.0, 0, rng.uniform(0, 4, 2)).ravel() for _ in range(8)])
    g2 = np.roll(g1, 1, axis=1)
    pl = np.array([bump_map(n, centre=rng.uniform(2, 7, 2), sigma=1).ravel() for _ in range(5)])
    pair = pair_structure(g1, g2, n_perm=20)
    gap = grid_at_place(pl, pl, g1, g2, square_coords(n), n_perm=20)
    fig, axs = plot_remapping(g1, g2, n_units=4, pair=pair, gap=gap, coords=square_coords(n))
    assert len(axs) == 2 * 4 + 2
    assert axs[-1].collections and axs[-2].collections
    fig.savefig(tmp_path / "remap.png")
    c = hex_coords(4)
    v = hex_grid_map(coords=c, spacing=4.0)
    v[5] = np.nan
    fig, ax = plot_hex_map(v, c, colorbar=True)
    pc = ax.collections[0]
    assert len(pc.get_paths()) == 61 and np.ma.getmaskarray(pc.get_array())[5]
