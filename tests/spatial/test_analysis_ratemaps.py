import numpy as np
import pytest

from spatial.analysis import hex_coords, rate_maps, square_coords, to_grid
from spatial.analysis.ratemaps import visit_weights


def test_second_half_rule_and_nan_for_unvisited():
    # node 0 visited 1x, node 1 visited 2x, node 2 visited 3x, node 3 visited 4x, node 4 never
    nodes = np.array([0, 1, 2, 3, 1, 2, 3, 2, 3, 3])
    act = np.arange(10, dtype=float)[:, None] * np.array([[1.0, -2.0]])
    maps, occ = rate_maps(act, nodes, 5)
    assert maps.shape == (2, 5)
    np.testing.assert_array_equal(occ, [1, 2, 3, 4, 0])
    # kept visits: node0 {t0}; node1 {t4}; node2 {t5, t7}; node3 {t6, t8... last 2 of 4 = t8, t9}
    expected = np.array([0.0, 4.0, 6.0, 8.5, np.nan])
    np.testing.assert_allclose(maps[0], expected)
    np.testing.assert_allclose(maps[1], -2 * expected)
    assert np.isnan(maps[:, 4]).all()


def test_all_visits_mode_and_weights():
    nodes = np.array([0, 0, 0, 1])
    act = np.array([1.0, 2.0, 6.0, 5.0])
    m_all, _ = rate_maps(act, nodes, 2, second_half=False)
    m_half, _ = rate_maps(act, nodes, 2, second_half=True)
    np.testing.assert_allclose(m_all, [3.0, 5.0])
    np.testing.assert_allclose(m_half, [4.0, 5.0])
    np.testing.assert_array_equal(visit_weights(nodes, 2), [0, 1, 1, 1])


def test_rate_maps_input_checks():
    with pytest.raises(ValueError):
        rate_maps(np.zeros((5, 2)), np.zeros(4, dtype=int), 3)
    with pytest.raises(ValueError):
        rate_maps(np.zeros((3, 1)), np.array([0, 1, 7]), 3)


def test_to_grid_roundtrip_and_holes():
    c = square_coords(3, 4)
    vals = np.arange(12.0)
    g = to_grid(vals, c)
    assert g.shape == (3, 4)
    np.testing.assert_array_equal(g.ravel(), vals)
    # drop one node: its cell is NaN
    g2 = to_grid(np.stack([vals[:-1], -vals[:-1]]), c[:-1], shape=(3, 4))
    assert g2.shape == (2, 3, 4) and np.isnan(g2[:, 2, 3]).all()
    with pytest.raises(ValueError):
        to_grid(vals[:61], hex_coords(4))


def test_hex_coords_counts_and_spacing():
    for R, N in ((4, 61), (5, 91), (6, 127)):
        c = hex_coords(R)
        assert c.shape == (N, 2)
        d = np.hypot(*(c[:, None] - c[None]).transpose(2, 0, 1))
        np.fill_diagonal(d, np.inf)
        np.testing.assert_allclose(d.min(axis=1), 1.0)
