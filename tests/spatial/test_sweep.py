"""Sweeps: a member trained in a population equals the same config trained alone by Trainer; a sweep writes
per-member runs and a summary, resumes exactly after a kill, refuses a changed sweep, and reports bad files."""
import json
import textwrap

import pytest
import torch

from spatial.analyse import load_trained
from spatial.cli import main
from spatial.config import SpatialConfig
from spatial.sweep import Member, PopulationTrainer, assign_groups, load_sweep, run_sweep, trains_alone
from spatial.train import TIMING_KEYS, Trainer
from temt_core.checkpoint import latest_checkpoint, load_checkpoint
from temt_core.config import ConfigError, load_config

TINY = ["model.pos_dim=16", "walks.sizes=[4, 5]", "walks.walk_length=[30, 60]", "train.chunk_length=20",
        "train.batch_size=4", "eval.steps=40", "eval.n_worlds=4", "train.steps=8"]
# members differ in seed and in energy weight, init std, learning rate, clip, loss steps, capacity and dedup
# threshold; de-duplication is on for all (init std 0: every move starts as a no-op, so positions repeat and
# duplicates are certain)
ARMS = [["train.seed=0", "model.w_reg_e=0.01", "model.transition_init_std=0.0", "train.lr_max=0.00094"],
        ["train.seed=1", "model.w_reg_e=0.1", "model.transition_init_std=0.3", "train.lr_max=0.003",
         "train.grad_clip=0.5", "train.loss_on=all"],
        ["train.seed=2", "model.w_reg_e=0.0", "model.transition_init_std=0.5", "train.lr_max=0.0005",
         "model.max_memories=15", "model.dedup_threshold=0.8", "train.lr_half_life=3.0"]]


def _steps_equal_alone(pop: PopulationTrainer, alone: list[Trainer], steps: int, tol: float) -> None:
    """Step the population and each member's Trainer `steps` times: every step's stats, then the weights and
    the carried memory counts, must agree."""
    for step in range(steps):
        stats = pop.train_step([w.next_chunk(20) for w in pop.walks])
        for p, t in enumerate(alone):
            s = t.train_step(t.walks.next_chunk(20))
            for k in ("loss", "x_pi", "reg_e", "reg_w", "grad_norm"):
                assert s[k] == pytest.approx(stats[p][k], rel=tol, abs=tol), (step, p, k)
            assert (s["correct"] == stats[p]["correct"]).all()
    for p, t in enumerate(alone):
        mine = pop.population.member_state_dict(p)
        for name, v in t.model.state_dict().items():
            torch.testing.assert_close(mine[name], v, rtol=tol, atol=tol)
        assert pop.population.member_state(pop.state, p, 4).count.tolist() == t.state.count.tolist()


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_member_equals_trainer_alone(tmp_path, dtype, tol):
    members = [Member(f"m{i}", {}, load_config(SpatialConfig, None, TINY + a)) for i, a in enumerate(ARMS)]
    assert len(assign_groups(members)) == 1
    pop = PopulationTrainer(members, tmp_path / "g", [tmp_path / m.name for m in members], dtype=dtype)
    alone = []
    for m in members:
        t = Trainer(m.config, tmp_path / f"alone-{m.name}", progress=False)
        if dtype == torch.float64:
            t.model.double()                   # same parameters (the optimizer holds them), now float64
        alone.append(t)
    _steps_equal_alone(pop, alone, 8, tol)
    assert alone[1].state.memory.valid.sum() > 0
    assert max(pop.population.member_state(pop.state, 2, 4).memory.valid.sum(1).tolist()) <= 15
    # duplicates were dropped: fewer memories than steps walked in the current worlds of member 0
    assert int(alone[0].state.count.sum()) < 4 * 8 * 20


SWEEP = """
base:
  model: {pos_dim: 16}
  walks: {sizes: [4, 5], walk_length: [30, 60]}
  train: {chunk_length: 20, batch_size: 4, steps: 10, log_every: 5, checkpoint_every: 5, keep_checkpoints: 2}
  eval: {every: 5, steps: 40, n_worlds: 4}
members:
  - {model.pos_dim: 16}
  - {model: {pos_dim: 12}, train.lr_max: 0.002}
grid:
  model.w_reg_e: [0.01, 0.1]
seeds: [0, 3]
"""


def _write(tmp_path, text, name="sweep.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _strip(path):
    return [{k: v for k, v in json.loads(l).items() if k not in TIMING_KEYS} for l in path.read_text().splitlines()]


def test_sweep_runs_groups_and_writes_members_and_summary(tmp_path):
    f = _write(tmp_path, SWEEP)
    members = load_sweep(f)
    assert len(members) == 8 and sorted({m.group for m in members}) == [0, 1]     # pos_dim 16 and 12
    out = tmp_path / "out"
    run_sweep(f, out, progress=False, dtype=torch.float64)                       # float64: exact comparisons
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["rows"]) == 8 * 2                                         # 8 members x evals at 5, 10
    assert len(summary["arms"]) == 4 and all(a["seeds"] == 2 for a in summary["arms"])
    assert (out / "summary.csv").read_text().count("\n") == 1 + 16
    assert "| arm | seeds |" in (out / "summary.md").read_text()
    for m in members:
        d = out / "members" / m.name
        assert json.loads((d / "run.json").read_text())["seed"] == m.config.train.seed
        log = _strip(d / "metrics.jsonl")
        assert [r["step"] for r in log if r["split"] == "train"] == [5, 10]
        model, config, step = load_trained(d)                                    # what `analyse` reads
        assert step == 10 and config == m.config
    # a member's run (training, logs, evaluations) equals the same config trained alone by Trainer
    m = members[5]
    alone = Trainer(m.config, tmp_path / "alone", progress=False)
    alone.model.double()
    alone.run()
    tensors = load_checkpoint(latest_checkpoint(out / "members" / m.name))[0]
    for name, v in alone.model.state_dict().items():
        torch.testing.assert_close(tensors[f"model.{name}"], v, rtol=1e-10, atol=1e-12)
    logs = [_strip(p / "metrics.jsonl") for p in (tmp_path / "alone", out / "members" / m.name)]
    assert [r.keys() for r in logs[0]] == [r.keys() for r in logs[1]]
    for a, b in zip(*logs):                  # train records (loss, parts, accuracies) and evaluations
        for k in a:
            if isinstance(a[k], float):
                assert a[k] == pytest.approx(b[k], rel=1e-9, nan_ok=True), k
            else:
                assert a[k] == b[k], k


def test_graph_step_members_equal_trainer_alone_and_resume_exactly(tmp_path):
    """Capturable members with train.graph=eager train as one population through PopulationGraphStep (what a GPU
    replays as a CUDA graph) and each equals the same config trained alone by Trainer (its GraphTrainStep and
    torch's Adam) in float64; a sweep stopped at its checkpoint and resumed for more steps ends with the weights
    of one run straight through."""
    graph = ["model.capturable=true", "model.max_memories=40", "train.graph=eager"]
    members = [Member(f"m{i}", {}, load_config(SpatialConfig, None, TINY + a + graph)) for i, a in enumerate(ARMS)
               if "model.max_memories=15" not in a]
    assert len(assign_groups(members)) == 1 and not trains_alone(members[0].config)
    pop = PopulationTrainer(members, tmp_path / "g", [tmp_path / m.name for m in members], dtype=torch.float64)
    assert pop.graph_step is not None and pop.population.capturable
    alone = []
    for m in members:
        t = Trainer(m.config, tmp_path / f"alone-{m.name}", progress=False)
        t.model.double()
        t.graph_step = type(t.graph_step)(t.model, t.optimizer, 4, 20, clip=m.config.train.grad_clip,
                                          use_graph=False)              # its buffers again, now in float64
        alone.append(t)
    _steps_equal_alone(pop, alone, 8, 1e-10)
    pop.group.close()
    # resume: 6 steps, then resumed to 10, against 10 straight through
    text = SWEEP.replace("model: {pos_dim: 16}\n", "model: {pos_dim: 16, capturable: true, max_memories: 40}\n").replace(
        "keep_checkpoints: 2}", "keep_checkpoints: 2, graph: eager}").replace("checkpoint_every: 5", "checkpoint_every: 3")
    f = _write(tmp_path, text.replace("steps: 10,", "steps: 6,"), "short.yaml")
    full = _write(tmp_path, text, "full.yaml")
    run_sweep(full, tmp_path / "straight", progress=False, dtype=torch.float64)
    run_sweep(f, tmp_path / "resumed", progress=False, dtype=torch.float64)
    run_sweep(full, tmp_path / "resumed", resume=True, progress=False, dtype=torch.float64)
    for m in load_sweep(full):
        a, b = (load_checkpoint(latest_checkpoint(tmp_path / run / "members" / m.name))[0]
                for run in ("straight", "resumed"))
        assert a.keys() == b.keys()
        for k, v in a.items():
            if k.startswith("model.") or k.startswith("state."):
                assert torch.equal(b[k], v), (m.name, k)


def test_landmark_members_train_alone_like_trainer(tmp_path):
    """Landmark models on a CPU train one by one with the plain Trainer (their population is exact but slower
    there), in the same member layout, next to a population group, and resume."""
    text = """
    base:
      model: {pos_dim: 16}
      walks: {sizes: [4, 5], walk_length: [30, 60]}
      train: {chunk_length: 20, batch_size: 4, steps: 6, log_every: 3, checkpoint_every: 3}
      eval: {every: 6, steps: 40, n_worlds: 4}
    grid: {model.landmark: [null, product]}
    seeds: [0, 1]
    """
    f = _write(tmp_path, text)
    members = load_sweep(f)
    groups = assign_groups(members)
    assert [sorted(m.config.model.landmark or "-" for m in g) for g in groups] == [["-", "-"], ["product", "product"]]
    out = tmp_path / "out"
    run_sweep(f, out, progress=False)
    m = next(m for m in members if m.config.model.landmark == "product" and m.config.train.seed == 1)
    alone = Trainer(m.config, tmp_path / "alone", progress=False)
    alone.run()
    tensors = load_checkpoint(latest_checkpoint(out / "members" / m.name))[0]
    for name, v in alone.model.state_dict().items():
        assert torch.equal(tensors[f"model.{name}"], v), name          # the same code path, so bit-identical
    rows = json.loads((out / "summary.json").read_text())["rows"]
    assert sorted(r["member"] for r in rows) == sorted(x.name for x in members)
    # resume: a finished sweep resumes to the same numbers without training again
    before = (out / "members" / m.name / "metrics.jsonl").read_text()
    run_sweep(f, out, resume=True, progress=False)
    assert (out / "members" / m.name / "metrics.jsonl").read_text() == before


def test_cli_sweep_and_no_overwrite(tmp_path, capsys):
    f = _write(tmp_path, SWEEP.replace("steps: 10,", "steps: 4,").replace("seeds: [0, 3]", "seeds: [1]"))
    assert main(["sweep", str(f), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert "4 members trained" in capsys.readouterr().out
    assert main(["sweep", str(f), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "already holds a sweep" in capsys.readouterr().err



@pytest.mark.parametrize("kind", ["ordinary", "capturable", "graph"])
def test_a_diverging_member_is_dropped_and_the_others_go_on(tmp_path, capsys, monkeypatch, kind):
    """A capturable population (with or without train.graph) checks nothing during its step; the member is dropped
    when its loss is read back after the step, and the others' steps stand."""
    text = SWEEP.replace("seeds: [0, 3]", "seeds: [1]").replace(
        "pos_dim: 16}\n  walks", "pos_dim: 16, bound: null, activation: linear}\n  walks")   # unbounded: it can
    if kind != "ordinary":
        text = text.replace("activation: linear}", "activation: linear, capturable: true, max_memories: 40}")
    if kind == "graph":
        text = text.replace("keep_checkpoints: 2}", "keep_checkpoints: 2, graph: eager}")
    f = _write(tmp_path, text)
    run_sweep(f, tmp_path / "calm", progress=False, dtype=torch.float64)
    original = PopulationTrainer.train_step

    def exploding(self, chunks):             # blow member m001's transitions up after the first checkpoint
        if self.step == 6 and self.members[1].name.startswith("m001"):
            with torch.no_grad():
                self.population.param("positions.U")[1].add_(1e30)
        return original(self, chunks)
    monkeypatch.setattr(PopulationTrainer, "train_step", exploding)
    run_sweep(f, tmp_path / "wild", progress=False, dtype=torch.float64)
    wild = tmp_path / "wild" / "members"
    info = json.loads((wild / "m001-pos_dim=16_w_reg_e=0.1_seed1" / "diverged.json").read_text())
    assert info["step"] == 7 and "became non-finite" in info["error"]
    assert not (wild / "m001-pos_dim=16_w_reg_e=0.1_seed1" / "metrics.json").exists()
    for m in load_sweep(f):                  # the others finished with the numbers they have without it
        if m.name.startswith("m001"):
            continue
        a, b = (load_checkpoint(latest_checkpoint(tmp_path / run / "members" / m.name))[0] for run in ("calm", "wild"))
        for k, v in a.items():
            if k.startswith("model."):
                torch.testing.assert_close(b[k], v, rtol=1e-10, atol=1e-12)
    summary = json.loads((tmp_path / "wild" / "summary.json").read_text())
    assert summary["diverged"] == {"m001-pos_dim=16_w_reg_e=0.1_seed1": 7}
    assert [a["seeds"] for a in summary["arms"]] == [1, 1, 1]          # the diverged arm is left out
    assert "m001-pos_dim=16_w_reg_e=0.1_seed1: step 7" in (tmp_path / "wild" / "summary.md").read_text()
    # resuming for more steps continues the survivors from the checkpoint that no longer holds the dropped member
    monkeypatch.setattr(PopulationTrainer, "train_step", original)
    longer = _write(tmp_path, f.read_text().replace("steps: 10,", "steps: 12,"), "longer.yaml")
    run_sweep(longer, tmp_path / "wild", resume=True, progress=False, dtype=torch.float64)
    for m in load_sweep(longer):
        done = wild / m.name / ("diverged.json" if m.name.startswith("m001") else "metrics.json")
        assert json.loads(done.read_text())["step"] == (7 if m.name.startswith("m001") else 12)
    # through the command line: exit 0, the dropped member named
    monkeypatch.setattr(PopulationTrainer, "train_step", exploding)
    assert main(["sweep", str(f), "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    assert "1 diverged and were dropped: m001-pos_dim=16_w_reg_e=0.1_seed1" in capsys.readouterr().out


@pytest.mark.parametrize("text,message", [
    ("grid: {model.w_reg_e: [0.1]}\nseed: [1]\n", r"sweep.yaml: unknown key 'seed' in the sweep file \(did you mean "
                                                  r"'seeds'\?\)"),
    ("grid: {model.w_reg: [0.1]}\n", r"sweep.yaml: grid: key 'model.w_reg' does not exist \(did you mean "
                                     r"'model.w_reg_[ew]'\?\); valid keys in 'model': model.n_actions"),
    ("grid: {modle.w_reg_e: [0.1]}\n", r"key 'modle.w_reg_e' does not exist"),
    ("grid: {}\n", r"grid is empty"),
    ("grid: {model.w_reg_e: []}\n", r"grid key 'model.w_reg_e' needs a non-empty list"),
    ("grid: {model.w_reg_e: 0.1}\n", r"grid key 'model.w_reg_e' needs a non-empty list"),
    ("grid: {model: [1]}\n", r"key 'model' is a config section"),
    ("members: []\n", r"members must be a non-empty list"),
    ("members: [{arm: A, model.w_g: 2.0}, {arm: A, model.w_g: 3.0}]\n", r"arm name 'A' is used twice"),
    ("members: [{arm: 'a b', model.w_g: 2.0}]\n", r"arm must be a name of letters"),
    ("members: [{model.w_g: 2.0}]\ngrid: {model.w_g: [1.0]}\n", r"'model.w_g' is set both by a member and by the grid"),
    ("grid: {model.activation: [relu, swish]}\n", r"activation must be one of"),
    ("grid: {train.seed: [1, 2]}\nseeds: [0]\n", r"train.seed is set both by seeds and by grid/members"),
    ("seeds: []\n", r"seeds must be a non-empty list of integers"),
    ("seeds: [1, 1]\n", r"seeds has repeated values"),
    ("base_config: nowhere.yaml\n", r"base_config 'nowhere.yaml' does not exist"),
    ("base: {model: {pos_dimm: 3}}\n", r"base: unknown config key 'model.pos_dimm'"),
    ("grid: {model.w_reg_e: [0.1, 0.1]}\n", r"have the same config"),
    ("- 1\n", r"the top level must be a mapping"),
    ("base: {model_kind: tem}\nseeds: [0]\n", r"model_kind='tem': sweeps train populations of TEM-t models"),
])
def test_bad_sweep_files_are_reported(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_sweep(_write(tmp_path, text))


def test_cli_reports_bad_sweep_files(tmp_path, capsys):
    f = _write(tmp_path, "grid: {model.w_reg: [0.1]}\n")
    assert main(["sweep", str(f), "--out", str(tmp_path / "o")]) == 2
    assert "key 'model.w_reg' does not exist" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["sweep", str(f), "--out", str(tmp_path / "o"), "model.pos_dim=3"]) == 2
    assert "sweep takes no key=value overrides" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_named_arms_name_members_and_summary_rows(tmp_path):
    f = _write(tmp_path, SWEEP.split("members:")[0] + "members:\n  - {arm: H3, model.w_g: 2.0}\n  - {model.w_g: 3.0}\n"
               "seeds: [0, 1]\n")
    names = [m.name for m in load_sweep(f)]
    assert names[:2] == ["H3-seed0", "H3-seed1"] and names[2].startswith("m002-w_g=3.0")
    from spatial.sweep_summary import _arm
    assert [_arm(m) for m in load_sweep(f)][::2] == ["H3", "model.w_g=3.0"]


def test_the_hexagon_screen_file_loads():
    members = load_sweep("configs/spatial/sweeps/hexagon-screen.yaml")
    # 15 pre-registered arms and H9 (amendment A2, docs/results/hexagon-search.md), seeds 0 and 1
    assert len(members) == 36 and {m.label for m in members} >= {"S0", "H3", "H9", "P+", "P2", "P3", "N0", "N1", "Q0"}


def test_example_sweep_file():
    members = load_sweep("configs/spatial/sweeps/quick-seeds.yaml")
    assert len(members) == 4 and {m.group for m in members} == {0}
    assert sorted((m.config.model.w_reg_e, m.config.train.seed) for m in members) == \
        [(0.01, 0), (0.01, 1), (0.1, 0), (0.1, 1)]


@pytest.mark.slow
def test_sweep_sharded_over_two_processes(tmp_path):
    """--processes 2 (accelerate launch with 2 CPU processes, gloo): each trains half of the members; rank 0's
    summary has all, and every member equals the one-process sweep's to float32 tolerance."""
    import subprocess
    import sys
    from pathlib import Path
    f = _write(tmp_path, SWEEP.replace("steps: 10,", "steps: 6,").replace("every: 5,", "every: 6,")
               .replace("seeds: [0, 3]", "seeds: [1]"))
    # `--processes 2` starts the two ranks through accelerate launch (spatial/sweep_launch.py)
    cmd = [sys.executable, "-m", "spatial", "sweep", str(f), "--out", str(tmp_path / "two"), "--quiet",
           "--processes", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "two" / "groups").iterdir()) == ["g0-r0", "g0-r1", "g1-r0", "g1-r1"]
    run_sweep(f, tmp_path / "one", progress=False)
    rows = [json.loads((tmp_path / run / "summary.json").read_text())["rows"] for run in ("two", "one")]
    assert [r["member"] for r in rows[0]] == [r["member"] for r in rows[1]] and len(rows[0]) == 4
    for m in load_sweep(f):
        a, b = (load_trained(tmp_path / run / "members" / m.name)[0] for run in ("two", "one"))
        for (k, v), (_, v2) in zip(a.state_dict().items(), b.state_dict().items()):
            torch.testing.assert_close(v, v2, rtol=1e-4, atol=1e-4)
    plan = json.loads((tmp_path / "two" / "plan.json").read_text())
    assert plan["processes"] == 2
    with pytest.raises(ConfigError, match=r"trained by 2 process\(es\); resume it with as many \(got 1\)"):
        run_sweep(f, tmp_path / "two", resume=True, progress=False)


def test_processes_option_starts_the_ranks_through_accelerate(tmp_path, monkeypatch):
    """--processes N runs `accelerate launch --multi_gpu --num_processes N -m spatial sweep ...` (the path the slow
    test above trains through) with the sweep's own arguments and a free port, and returns its exit status."""
    import spatial.sweep_launch
    f = _write(tmp_path, SWEEP)
    seen = []
    monkeypatch.setattr(spatial.sweep_launch, "_launch", lambda cmd: seen.append(cmd) or 7)
    assert main(["sweep", str(f), "--out", str(tmp_path / "s"), "--processes", "3", "--quiet"]) == 7
    (cmd,) = seen
    assert cmd[1:5] == ["launch", "--multi_gpu", "--num_processes", "3"]
    port = cmd[cmd.index("--main_process_port") + 1]
    assert port.isdigit() and int(port) > 0
    assert cmd[cmd.index("-m"):] == ["-m", "spatial", "sweep", str(f), "--out", str(tmp_path / "s"), "--quiet"]
    assert not (tmp_path / "s").exists()                 # the ranks write, not the parent
    # inside a launch (WORLD_SIZE set), --processes is not launched again
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert spatial.sweep_launch.under_launcher() == 3


def test_processes_option_refuses_before_starting_anything(tmp_path, monkeypatch, capsys):
    import spatial.sweep_launch
    f = _write(tmp_path, SWEEP)
    monkeypatch.setattr(spatial.sweep_launch, "_launch", lambda cmd: pytest.fail(f"launched {cmd}"))
    assert main(["sweep", str(f), "--out", str(tmp_path / "s"), "--processes", "0"]) == 2
    assert "--processes must be >= 1 (got 0)" in capsys.readouterr().err
    bad = _write(tmp_path, SWEEP.replace("grid:", "gird:"), name="bad.yaml")
    assert main(["sweep", str(bad), "--out", str(tmp_path / "s"), "--processes", "2"]) == 2
    assert "gird" in capsys.readouterr().err
    run_sweep(f, tmp_path / "done", progress=False)                       # trained by one process
    assert main(["sweep", str(f), "--out", str(tmp_path / "done"), "--processes", "2"]) == 2
    assert "already holds a sweep" in capsys.readouterr().err
    assert main(["sweep", str(f), "--out", str(tmp_path / "done"), "--processes", "2", "--resume"]) == 2
    assert "trained by 1 process(es); resume it with as many (got 2)" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")                                   # a launch of 2 asked for 3
    assert main(["sweep", str(f), "--out", str(tmp_path / "x"), "--processes", "3"]) == 2
    assert "inside a launch of 2 processes" in capsys.readouterr().err


def test_a_population_group_has_one_writer(tmp_path):
    from temt_core.rundir import RunDirError
    members = [Member("m0", {}, load_config(SpatialConfig, None, TINY))]
    first = PopulationTrainer(members, tmp_path / "g", [tmp_path / "m0"])
    with pytest.raises(RunDirError, match="being written by another process"):
        PopulationTrainer(members, tmp_path / "g", [tmp_path / "m0b"])
    first.group.close()
    PopulationTrainer(members, tmp_path / "g", [tmp_path / "m0c"]).group.close()


@pytest.mark.parametrize("setting,members,expect", [("auto", 1, False), ("auto", 2, True), (False, 2, False),
                                                     (True, 1, True)])
def test_keep_freed_memory_where_it_helps(tmp_path, monkeypatch, setting, members, expect):
    """train.keep_freed_memory='auto' turns glibc's buffer reuse on for populations of >= 2 members (where the
    measured gain is) and leaves a single model alone; true/false force it. The process-wide call is recorded,
    not made (it cannot be undone in the test process)."""
    import spatial.train
    calls = []
    monkeypatch.setattr(spatial.train, "keep_freed_memory", lambda: calls.append(1) or True)
    override = f"train.keep_freed_memory={str(setting).lower()}"
    group = [Member(f"m{i}", {}, load_config(SpatialConfig, None, TINY + [override, f"train.seed={i}"]))
             for i in range(members)]
    PopulationTrainer(group, tmp_path / "g", [tmp_path / m.name for m in group]).group.close()
    assert bool(calls) == expect
    calls.clear()
    Trainer(group[0].config, tmp_path / "alone", progress=False)
    assert bool(calls) == (setting is True)
