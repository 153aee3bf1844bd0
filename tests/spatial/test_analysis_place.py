import numpy as np
import pytest

from spatial.analysis import place_fields, place_metric, sparsity, spatial_information
from spatial.analysis.synthetic import bump_map, square_adjacency


def test_spatial_information_known_answers():
    for N in (16, 64, 121):
        m = np.zeros(N)
        m[3] = 2.5
        assert spatial_information(m) == pytest.approx(np.log2(N))
        assert spatial_information(np.full(N, 0.7)) == pytest.approx(0.0, abs=1e-12)
    # occupancy-weighted: one node with 1/4 of the time active -> log2(4) = 2
    m = np.array([1.0, 0.0, 0.0])
    assert spatial_information(m, occupancy=[10, 20, 10]) == pytest.approx(2.0)


def test_spatial_information_negative_terms_not_clamped():
    m = np.array([1.0, 2.0, 3.0, 4.0])
    q = m / m.mean()
    ref = np.mean(q * np.log2(q))      # includes the negative terms of q < 1
    assert spatial_information(m) == pytest.approx(ref)
    assert ref < np.mean(np.where(q > 1, q * np.log2(q), 0))


def test_sparsity_and_batch_and_nan():
    N = 50
    m = np.zeros((3, N))
    m[0, 7] = 1.0
    m[1] = 1.0
    m[2, :10] = 1.0
    m[2, 40:] = np.nan
    s = sparsity(m)
    # unit 2: 10 active of 40 valid nodes (NaN excluded, not counted as 0 -> not 10/50)
    np.testing.assert_allclose(s, [1 / N, 1.0, 0.25])
    info = spatial_information(m)
    np.testing.assert_allclose(info, [np.log2(N), 0.0, 2.0], atol=1e-12)


def test_negative_rates_raise():
    with pytest.raises(ValueError):
        spatial_information(np.array([1.0, -0.1]))
    with pytest.raises(ValueError):
        sparsity(np.array([1.0, -0.1]))
    with pytest.raises(ValueError):
        place_metric(np.array([[1.0, -0.1], [0.0, 0.0]]))


def test_place_metric_single_and_two_fields():
    n = 12
    one = bump_map(n, centre=(4, 5), sigma=1.0)
    assert place_metric(one) == pytest.approx(1.0)
    two = bump_map(n, centre=(2, 2), sigma=1.0) + 0.6 * bump_map(n, centre=(9, 9), sigma=1.0)
    labels, masses = place_fields(two)
    assert labels.max() == 2 and masses[0] > masses[1]
    pm = place_metric(two)
    assert pm == pytest.approx(masses[0] / masses.sum()) and 0.55 < pm < 0.7
    # same answer on the world graph as on the raster
    A = square_adjacency(n)
    assert place_metric(two.ravel(), adjacency=A) == pytest.approx(pm)
    np.testing.assert_allclose(place_metric(np.stack([one, two])), [1.0, pm])


def test_place_fields_threshold_and_connectivity():
    m = np.zeros((5, 5))
    m[1, 1] = 1.0
    m[2, 2] = 1.0          # diagonal neighbours: separate in a 4-connected world
    m[4, 4] = 0.15         # below 0.2 x peak
    labels, masses = place_fields(m)
    assert labels.max() == 2 and labels[4, 4] == 0
    m[1, 2] = 0.5
    labels, _ = place_fields(m)
    assert labels.max() == 1
    assert np.isnan(place_metric(np.zeros((4, 4))))
