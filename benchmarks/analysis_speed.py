"""Speed of the spatial analysis on the CPU (prints one JSON object).

Workload (defaults): 256 units on an 11 x 11 world, a 20,000-step uniform random
walk, synthetic activity (hexagonal and square grids, bands, noise, plus noise
per step); rate maps; G60, G90 and band score of every unit; and the same for
100 circular shifts per unit (25,600 shuffled maps). ``--full`` adds the
node-permutation null (100 per unit), the Fourier lattice class and the
complete grid-cell and band-cell rules.

Run from anywhere: ``python benchmarks/analysis_speed.py [--units 256] [--full]``.
Target (spec brief): at most 60 s on the project's 2-core CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import scipy  # noqa: E402

from spatial.analysis import (circular_shift_null, classify_band_cells,  # noqa: E402
                              classify_grid_cells, rate_maps, score_maps, square_coords)
from spatial.analysis.synthetic import (band_map, hex_grid_map, random_walk_square,  # noqa: E402
                                        square_grid_map)


def synthetic_activity(n, T, U, rng):
    nodes = random_walk_square(n, T, rng)
    maps = []
    for u in range(U):
        ph = rng.uniform(0, 6, 2)
        k = u % 4
        if k == 0:
            m = hex_grid_map(n, rng.uniform(3, 6), rng.uniform(0, 60), ph)
        elif k == 1:
            m = square_grid_map(n, rng.uniform(3, 5), rng.uniform(0, 90), ph)
        elif k == 2:
            m = band_map(n, rng.uniform(3, 6), rng.uniform(0, 180), ph, rectify=True)
        else:
            m = rng.standard_normal((n, n))
        maps.append(m.ravel())
    maps = np.array(maps)
    act = maps[:, nodes].T + 0.3 * rng.standard_normal((T, U))
    return act, nodes


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--side", type=int, default=11)
    ap.add_argument("--shuffles", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--full", action="store_true", help="also node-permutation null and cell rules")
    a = ap.parse_args(argv)
    rng = np.random.default_rng(a.seed)
    act, nodes = synthetic_activity(a.side, a.steps, a.units, rng)
    coords = square_coords(a.side)
    out = dict(units=a.units, steps=a.steps, world=f"{a.side}x{a.side}", shuffles=a.shuffles)

    t0 = time.perf_counter()
    maps, _ = rate_maps(act, nodes, a.side ** 2)
    t1 = time.perf_counter()
    obs = score_maps(maps, coords)
    t2 = time.perf_counter()
    sn = circular_shift_null(act, nodes, coords, n_shuffles=a.shuffles, rng=a.seed + 1,
                             observed=obs)
    t3 = time.perf_counter()
    out.update(rate_maps_s=round(t1 - t0, 3), observed_scores_s=round(t2 - t1, 3),
               shift_null_s=round(t3 - t2, 3), total_s=round(t3 - t0, 3),
               maps_scored=a.units * (a.shuffles + 1),
               maps_per_s=round(a.units * (a.shuffles + 1) / (t3 - t0), 1),
               frac_beating_shift_g60=float(sn.beats("g60").mean()))
    if a.full:
        t4 = time.perf_counter()
        res = classify_grid_cells(act, nodes, coords, n_perm=a.shuffles, rng=a.seed + 2,
                                  shift_null=sn)
        bands = classify_band_cells(act, nodes, coords, shift_null=sn, perm_null=res["perm_null"])
        t5 = time.perf_counter()
        kinds = np.array(["hex", "square", "band", "noise"])[np.arange(a.units) % 4]
        out.update(full_rules_s=round(t5 - t4, 3), total_with_rules_s=round(t5 - t0, 3),
                   grid_called={k: float(res["is_grid"][kinds == k].mean()) for k in kinds[:4]},
                   square_called={k: float(res["is_square_grid"][kinds == k].mean()) for k in kinds[:4]},
                   band_called={k: float(bands["is_band"][kinds == k].mean()) for k in kinds[:4]})
    out.update(python=platform.python_version(), numpy=np.__version__, scipy=scipy.__version__,
               cpus=os.cpu_count(), machine=platform.machine())
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
