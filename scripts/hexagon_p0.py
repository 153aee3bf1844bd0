"""The hexagon search's control of the analysis alone (amendment A1 of docs/results/hexagon-search.md): hand-built
hexagonal, square and band codes on the walks every hex arm is analysed on, classified by exactly the search's rule.

    python scripts/hexagon_p0.py [--out docs/results/hexagon-search/P0]     # prints a table, writes metrics.json

No model is trained: the positions are put in. 64 units in 4 modules of 16 (H3's sizes); a module shares a field
spacing and an orientation, a unit has a random phase; its activity at a step is its map at the walk's node plus
independent Gaussian noise (0.3 x the unit's map standard deviation). If P0 (hexagonal) does not reach the search's
15% the pipeline cannot see hexagons here; P0-square and P0-band must stay below 5% hexagonal.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from spatial.analyse import AnalysisConfig, classify_cells  # noqa: E402
from spatial.analysis.synthetic import band_map, hex_grid_map, square_grid_map  # noqa: E402
from spatial.rollout import _walk_stream  # noqa: E402
from spatial.walks import WalkConfig  # noqa: E402
from spatial.worlds import config_world  # noqa: E402

SPACINGS = (4.0, 5.5, 7.5, 10.0)     # field-to-field distance per module, in nodes (radius-10 world: 21 across)
UNITS_PER_MODULE = 16
NOISE = 0.3                          # per-step noise sd, in units of the unit's map sd
CODES = {"P0": hex_grid_map, "P0-square": square_grid_map,
         # a band of the same module: one plane wave, wavelength that of the module's hexagonal grid's waves
         "P0-band": lambda coords, spacing, orientation, phase: band_map(
             coords=coords, wavelength=spacing * np.sqrt(3) / 2, orientation=orientation, phase=phase, rectify=True)}


def codes(kind: str, coords: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(U, N) node maps of one population: 4 modules x 16 units."""
    maps = []
    for m, spacing in enumerate(SPACINGS):
        orientation = 15.0 * m + 7.0
        for _ in range(UNITS_PER_MODULE):
            phase = rng.uniform(0, spacing, 2)
            maps.append(CODES[kind](coords=coords, spacing=spacing, orientation=orientation, phase=phase))
    return np.asarray(maps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="docs/results/hexagon-search/P0")
    p.add_argument("--shuffles", type=int, default=100, help="circular shifts (the search: 100)")
    p.add_argument("--perms", type=int, default=100, help="node permutations (the search: 100)")
    args = p.parse_args()
    cfg = AnalysisConfig(sizes=(10, 10), steps=16550, n_shuffles=args.shuffles, n_perm=args.perms)
    walks = WalkConfig(kind="hex", sizes=(9, 10, 11))      # the hex arms' walks (the worlds are fixed below)
    worlds = [config_world("hex", s, f"analysis.sizes[{i}]") for i, s in enumerate(cfg.sizes)]
    stream = _walk_stream(walks, len(worlds), cfg.steps, cfg.seed, worlds)
    nodes = stream.next_chunk(cfg.steps)["nodes"]                              # (worlds, steps)
    result = {"amendment": "A1", "config": {"spacings": SPACINGS, "units_per_module": UNITS_PER_MODULE,
                                            "noise_sd_rel": NOISE, "sizes": cfg.sizes, "steps": cfg.steps,
                                            "seed": cfg.seed, "shuffles": cfg.n_shuffles, "perms": cfg.n_perm},
              "codes": {}}
    for kind in CODES:
        per_world = []
        for b, world in enumerate(worlds):
            t0 = time.time()
            rng = np.random.default_rng(cfg.seed + b)
            maps = codes(kind, np.asarray(world.coords, dtype=float), rng)     # (U, N)
            walk = nodes[b]
            act = maps[:, walk].T                                               # (T, U)
            act = act + NOISE * maps.std(1) * rng.standard_normal(act.shape)
            _, _, cells = classify_cells(act, walk, world, cfg, b)
            per_world.append({"world": world.name, **cells})
            print(f"{kind} world {b}: hex {cells['frac_grid_of_active']:.1%}, square "
                  f"{cells['frac_square_of_active']:.1%}, band {cells['frac_band_of_active']:.1%} of "
                  f"{cells['active_units']} active ({time.time() - t0:.0f} s)", flush=True)
        mean = {k: float(np.mean([w[k] for w in per_world])) for k in per_world[0]
                if isinstance(per_world[0][k], (int, float))}
        result["codes"][kind] = {"worlds": per_world, "mean_over_worlds": mean}
    hx = {k: v["mean_over_worlds"]["frac_grid_of_active"] for k, v in result["codes"].items()}
    passed = hx["P0"] >= 0.15 and hx["P0-square"] < 0.05 and hx["P0-band"] < 0.05
    result["reading"] = ("the pipeline sees hexagonal cells when they are there (explanation (b) of P+'s failure)"
                         if passed else "P0 failed: " + ("the pipeline does not find the hexagonal cells put in "
                                                         "(explanation (a))" if hx["P0"] < 0.15 else
                                                         "a sister code is counted hexagonal: the rule is too lax"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=1))
    print("| code | hex grid | square grid | band |\n|---|---|---|---|")
    for k, v in result["codes"].items():
        m = v["mean_over_worlds"]
        print(f"| {k} | {m['frac_grid_of_active']:.1%} | {m['frac_square_of_active']:.1%} | "
              f"{m['frac_band_of_active']:.1%} |")
    print(result["reading"])


if __name__ == "__main__":
    main()
