"""The C6 pipeline (spatial.compare_run) with a stand-in for `spatial train`: which runs it trains, which learning
rate it chooses, that the seed runs use it, and that a second call after a finished one trains nothing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from spatial import compare, compare_run


def _fake_trainer(calls: list, score):
    """Stands for run_logged(cmd, log): records cmd, writes what a finished run leaves (metrics.json + LATEST)
    with a final zero-shot accuracy score(lr_max)."""
    def run(cmd, log):
        calls.append(cmd)
        if cmd[3] == "train":
            out = Path(cmd[cmd.index("--out") + 1] if "--out" in cmd else cmd[cmd.index("--resume") + 1])
            keys = dict(c.split("=", 1) for c in cmd if "=" in c)
            out.mkdir(parents=True, exist_ok=True)
            (out / "LATEST").write_text("checkpoints/step-x\n")
            (out / "metrics.json").write_text(json.dumps({"step": int(keys["train.steps"]),
                                                          "acc_zero_shot": score(float(keys["train.lr_max"]))}))
        return 0
    return run


def test_sweep_chooses_each_arms_rate_and_seeds_use_it(tmp_path, monkeypatch):
    calls, written = [], {}
    monkeypatch.setattr(compare, "best_of_sweep",
                        lambda runs: max(runs, key=lambda p: json.loads((p / "metrics.json").read_text())
                                         ["acc_zero_shot"]))
    monkeypatch.setattr(compare, "write_comparison",
                        lambda arms, out, sweeps=None, title="", quick=False: written.update(arms=arms, sweeps=sweeps)
                        or out / "report.md")
    best = {"tem": 2.0, "temt-landmark": 0.5, "temt-best": 1.0}          # the factor of DEFAULT_LR that wins
    score = lambda arm: (lambda lr: -abs(lr - compare_run.DEFAULT_LR * best[arm]))   # noqa: E731
    arm_of = lambda cmd: Path(cmd[cmd.index("--config") + 1]).stem                # noqa: E731
    run = lambda cmd, log: _fake_trainer(calls, score(arm_of(cmd)))(cmd, log)          # noqa: E731
    compare_run.run_comparison(tmp_path / "c", quick=True, jobs=1, arms=["temt-landmark", "temt-best"], run=run)
    chosen = json.loads((tmp_path / "c" / "chosen_lr.json").read_text())
    assert chosen == {a: pytest.approx(compare_run.DEFAULT_LR * best[a]) for a in ("temt-landmark", "temt-best")}
    train = [c for c in calls if c[3] == "train"]
    # quick: the sweep runs as long as the seed runs, so the chosen sweep run is seed 0 and is not trained again
    assert compare_run.QUICK["sweep_steps"] == compare_run.QUICK["steps"]
    assert len(train) == 2 * len(compare_run.LR_FACTORS) + 2 * (compare_run.SEEDS - 1)
    seeds = [c for c in train if "/sweep/" not in c[c.index("--out") + 1]]
    assert sorted(Path(c[c.index("--out") + 1]).name for c in seeds) == ["seed1", "seed1", "seed2", "seed2"]
    for c in seeds:                                      # every seed run at its arm's chosen rate, quick settings
        arm = Path(c[c.index("--out") + 1]).parent.name
        assert f"train.lr_max={chosen[arm]}" in c and "train.chunk_length=25" in c
        assert c[c.index("--config") + 1] == compare_run.ARMS[arm]
    assert sorted(written["arms"]) == ["temt-best", "temt-landmark"]
    chosen_run = f"temt-best-{compare_run.lr_tag(chosen['temt-best'])}"
    assert [p.name for p in written["arms"]["temt-best"]] == [chosen_run, "seed1", "seed2"]
    assert written["arms"]["temt-best"][0].parent.name == "sweep"
    assert len(written["sweeps"]["temt-best"]) == len(compare_run.LR_FACTORS)
    calls.clear()                                        # everything finished: a second call trains nothing
    compare_run.run_comparison(tmp_path / "c", quick=True, jobs=1, arms=["temt-landmark", "temt-best"], run=run)
    assert not [c for c in calls if c[3] == "train"]


def test_interrupted_run_resumes_and_unknown_arm_is_refused(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    assert "--overwrite" in compare_run.train_command(run, "cfg.yaml", ["a=1"], ["train.device=cpu"], 10)
    (run / "LATEST").write_text("checkpoints/step-0000005\n")      # a checkpoint, no final evaluation: resume
    cmd = compare_run.train_command(run, "cfg.yaml", ["a=1"], ["train.device=cpu"], 10)
    assert cmd[cmd.index("--resume") + 1] == str(run) and "a=1" not in cmd and "train.device=cpu" in cmd
    (run / "metrics.json").write_text(json.dumps({"step": 10}))
    assert compare_run.train_command(run, "cfg.yaml", [], [], 10) is None
    assert compare_run.train_command(run, "cfg.yaml", [], [], 20)[3:5] == ["train", "--quiet"]   # longer: resume
    with pytest.raises(ValueError, match="unknown comparison arm 'temt'"):
        compare_run.run_comparison(tmp_path / "c", quick=True, arms=["temt"], run=lambda c, l: 0)


def test_arm_configs_share_the_walk_stream():
    """Every arm's YAML leaves walks, batch, chunking and evaluation at SpatialConfig's defaults, so the same seed
    gives the same walks to every arm (spatial.compare.check_same_stream checks the runs themselves)."""
    from spatial.config import SpatialConfig
    from temt_core.config import load_config
    configs = {arm: load_config(SpatialConfig, path) for arm, path in compare_run.ARMS.items()}
    for arm, cfg in configs.items():
        assert cfg.walks == SpatialConfig().walks and cfg.eval == SpatialConfig().eval, arm
        assert (cfg.train.batch_size, cfg.train.chunk_length) == (16, 75), arm
    assert configs["tem"].model_kind == "tem" and configs["temt-landmark"].model.landmark == "stimulus"


def test_tem_representations_are_appended_with_a_working_link(tmp_path):
    run = tmp_path / "c" / "sweep" / "tem-lr0.00047"
    (run / "analysis").mkdir(parents=True)
    (run / "analysis" / "metrics.json").write_text(json.dumps({"mean_over_worlds": {
        "frac_grid_of_active": 0.125, "frac_square_of_active": 0.0, "active_units": 30, "frac_band_of_active": 0.25,
        "memory_place_metric_median": 0.9, "memory_frac_single_field": None}}))
    report = tmp_path / "c" / "report.md"
    report.write_text("# TEM vs TEM-t\n\nbody\n")
    compare_run._append_representations(report, run)
    text = report.read_text()
    assert text.startswith("# TEM vs TEM-t\n\nbody\n\n## TEM's representations")
    assert "hexagonal grid cells 0.125" in text and "band cells 0.250" in text and "single-field fraction n/a" in text
    link = text.split("](")[1].split(")")[0]
    assert (report.parent / link).parent == run / "analysis"
