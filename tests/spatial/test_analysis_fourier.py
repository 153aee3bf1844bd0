import numpy as np
import pytest

from spatial.analysis import band_score, band_score_points, classify_lattice, fourier_peaks, hex_coords
from spatial.analysis.synthetic import (band_map, bump_map, hex_grid_map, noise_map, ramp_map,
                                        square_grid_map)


@pytest.mark.parametrize("n", [8, 12, 16, 20])
def test_ideal_band_score_and_wavelength(n):
    rng = np.random.default_rng(n)
    B, err = [], []
    for wl in (3.0, 3.7, 4.4, 5.1):
        for o in (0.0, 17.0, 45.0, 110.0):
            b, w, ori = band_score(band_map(n, wl, o, rng.uniform(0, 6, 2)))
            B.append(b)
            err.append(abs(w / wl - 1))
            assert min(abs(ori - o), 180 - abs(ori - o)) < 3.0
    assert 0.78 <= np.mean(B) <= 0.86                      # spec: about 0.82
    assert np.median(err) < 0.01                           # wavelength to about 1 %
    if n >= 16:
        assert np.max(err) < 0.015


@pytest.mark.parametrize("n", [8, 10, 12])
def test_lattice_band_scores(n):
    rng = np.random.default_rng(50 + n)
    hx = [band_score(hex_grid_map(n, s, rng.uniform(0, 60), rng.uniform(0, 6, 2)))[0]
          for s in (3, 4, 5, 6)]
    sq = [band_score(square_grid_map(n, s, rng.uniform(0, 90), rng.uniform(0, 6, 2)))[0]
          for s in (3, 4, 5)]
    assert 0.22 <= np.mean(hx) <= 0.32       # spec: 0.24-0.30
    assert 0.29 <= np.mean(sq) <= 0.39       # spec: 0.31-0.37


@pytest.mark.parametrize("n", [8, 10, 12])
def test_noise_and_bump_band_scores(n):
    rng = np.random.default_rng(70 + n)
    B = band_score(noise_map(n, rng, size=100))[0]
    assert 0.07 <= np.mean(B) <= 0.18        # spec: 0.08-0.17
    b, wl, _ = band_score(bump_map(n))
    assert 0.42 <= b <= 0.55                 # spec: 0.47
    assert wl > 0.7 * n                      # rejected by the band-cell wavelength rule


def test_band_score_invariances_and_nan():
    rng = np.random.default_rng(3)
    m = band_map(12, 4.2, 30.0, (1, 2)) + 0.1 * rng.standard_normal((12, 12))
    m[rng.random((12, 12)) < 0.1] = np.nan
    b = band_score(m)
    b2 = band_score(3 * m - 5)
    np.testing.assert_allclose(b, b2, atol=1e-9)
    assert np.isnan(band_score(np.ones((10, 10)))[0])
    batch = band_score(np.stack([m, m]))
    np.testing.assert_allclose(batch[0], [b[0], b[0]])


def test_classify_lattice_synthetic():
    rng = np.random.default_rng(4)
    for n in (10, 12, 16):
        for _ in range(4):
            ph = rng.uniform(0, 6, 2)
            assert classify_lattice(hex_grid_map(n, rng.uniform(3, 5.5), rng.uniform(0, 60), ph)) == "hex"
            assert classify_lattice(square_grid_map(n, rng.uniform(3, 5), rng.uniform(0, 90), ph)) == "square"
            assert classify_lattice(band_map(n, rng.uniform(3, 5), rng.uniform(0, 180), ph, rectify=True)) == "band"
        assert classify_lattice(ramp_map(n, 30.0)) == "ramp"
        assert classify_lattice(bump_map(n)) == "ramp"
    labs = classify_lattice(noise_map(12, rng, size=100))
    assert np.mean(labs == "hex") < 0.1 and np.mean(labs == "none") > 0.6
    assert classify_lattice(np.zeros((8, 8))) == "none"


def test_fourier_peaks_angles():
    p = fourier_peaks(hex_grid_map(16, 4.0, 10.0))
    assert p["count"] == 3
    ang = np.sort(p["angles"])
    np.testing.assert_allclose(ang, [10, 70, 130], atol=4)
    np.testing.assert_allclose(p["wavelengths"], 4.0 * np.sqrt(3) / 2, rtol=0.08)
    q = fourier_peaks(square_grid_map(16, 4.0, 0.0))
    assert q["count"] == 2 and abs(abs(q["angles"][0] - q["angles"][1]) - 90) < 4


def test_points_band_score_on_hex_world():
    c = hex_coords(6)
    b, wl, ori = band_score_points(band_map(coords=c, wavelength=4.0, orientation=25.0), c)
    assert b > 0.7 and abs(wl - 4.0) < 0.15 and abs(ori - 25.0) < 3
    bh = band_score_points(hex_grid_map(coords=c, spacing=4.0), c)[0]
    assert bh < 0.4
