"""The TEM vs TEM-t comparison (spatial/compare.py) and the time and memory fields it reads (spatial/train.py).

Tiny real runs (TEM-t seeds 0 and 1, TEM seed 0, a few dozen steps) are trained once for the module; the known-answer
tests copy a run directory and write its metrics.jsonl (or a config key) by hand."""
import json
import shutil
import statistics

import pytest
import yaml

from spatial.cli import main
from spatial.compare import (arm_summary, best_of_sweep, check_same_stream, criterion_step, load_arm, load_run,
                             ratios, write_comparison)
from spatial.config import SpatialConfig
from spatial.train import TIMING_KEYS, Trainer, build_model
from temt_core.checkpoint import load_checkpoint
from temt_core.config import ConfigError, load_config
from temt_core.rundir import RunDir

WALKS = ["walks.sizes=[4, 5]", "walks.walk_length=[40, 60]", "train.batch_size=4", "train.chunk_length=10",
         "eval.steps=30", "eval.n_worlds=2", "train.log_every=5", "eval.every=10"]
TEMT = ["model.pos_dim=16"]
TEM = ["model_kind=tem", "tem.g_modules=[6, 6]", "tem.g_memory=[2, 2]", "tem.f_initial=[0.9, 0.3]",
       "tem.c_star_hidden=20", "tem.transition_hidden=8"]


def _train(path, *extra, steps=20, **kw):
    cfg = load_config(SpatialConfig, None, WALKS + [f"train.steps={steps}", "train.checkpoint_every=10", *extra])
    return Trainer(cfg, path, progress=False, **kw).run()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    for name, extra in (("temt0", TEMT + ["train.seed=0"]), ("temt1", TEMT + ["train.seed=1"]),
                        ("tem0", TEM + ["train.seed=0"])):
        _train(root / name, *extra)
    return {name: root / name for name in ("temt0", "temt1", "tem0")}


def _copy(run, dst, rows=None, **config):
    """A copy of a run directory (no checkpoints), with metrics.jsonl replaced by `rows` and config keys (dotted, as
    section__key=value) changed."""
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns("checkpoints", "tb", "run.lock"))
    if rows is not None:
        (dst / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if config:
        data = yaml.safe_load((dst / "config.yaml").read_text())
        for key, value in config.items():
            section, name = key.split("__")
            data[section][name] = value
        (dst / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return dst


def _eval(step, acc, node=1.0, seconds=None, zero_shot=0.5, l200=None, edge=0.3):
    """An eval record with every key compare reads: acc at each length (acc_L200 = l200 or acc)."""
    row = {"step": step, "split": "eval", "acc_zero_shot": zero_shot, "acc": acc, "node_agent": node,
           "edge_agent": edge, "acc_L200": acc if l200 is None else l200, "node_agent_L200": node,
           "edge_agent_L200": 0.3, "acc_L500": acc, "node_agent_L500": node, "edge_agent_L500": 0.3,
           "peak_mem_mb": 123.0}
    if seconds is not None:
        row["train_seconds"] = seconds
    return row


def _train_row(step, seconds):
    return {"step": step, "split": "train", "loss": 1.0, "train_seconds": seconds, "peak_mem_mb": 120.0}


# -- the records --------------------------------------------------------------------------------------------------

def test_load_arm_reads_config_info_and_curves(runs):
    a, b = load_arm([runs["temt0"], runs["temt1"]])
    assert (a.seed, b.seed, a.kind) == (0, 1, "temt") and load_run(runs["tem0"]).kind == "tem"
    assert [r["step"] for r in a.train] == [5, 10, 15, 20] and list(a.steps()) == [10, 20]
    seconds = [r["train_seconds"] for r in a.train]
    assert all(s2 > s1 > 0 for s1, s2 in zip(seconds, seconds[1:])) and a.timed
    # an evaluation carries the training time up to its step: no training happens between the two records
    at = {r["step"]: r["train_seconds"] for r in a.train}
    assert all(e["train_seconds"] == at[e["step"]] for e in a.evals)
    assert all(10 < r["peak_mem_mb"] < 1e6 for r in a.train + a.evals)     # MiB of a Python process with torch
    assert a.ms_per_step() == pytest.approx(statistics.median(
        1000 * (s2 - s1) / 5 for s1, s2 in zip([0.0] + seconds, seconds)))
    assert a.info["parameters"] == build_model(load_config(SpatialConfig, None, WALKS + TEMT)).num_parameters()


def test_train_seconds_survive_a_resume_and_resume_stays_exact(tmp_path):
    _train(tmp_path / "straight", *TEMT)
    _train(tmp_path / "b", *TEMT, steps=10)
    _train(tmp_path / "b", *TEMT, steps=20, resume=True)
    log = RunDir(tmp_path / "b").read_log()
    seconds = [r["train_seconds"] for r in log if r["split"] == "train"]
    assert [r["step"] for r in log if r["split"] == "train"] == [5, 10, 15, 20]
    assert all(s2 > s1 for s1, s2 in zip(seconds, seconds[1:]))             # grows across the resume at step 10
    meta = load_checkpoint(tmp_path / "b" / "checkpoints" / "step-0000010")[1]
    assert meta["train_seconds"] == seconds[1] and meta["train_seconds_from_step"] == 0
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]  # noqa: E731
    assert strip(log) == strip(RunDir(tmp_path / "straight").read_log())   # train and eval records, exactly
    assert not any("train_seconds_from_step" in r for r in log)


def test_a_checkpoint_without_train_seconds_resumes_saying_so(tmp_path, monkeypatch):
    save = RunDir.save

    def old_save(self, step, tensors, meta, keep=2):          # a checkpoint written before timing existed
        return save(self, step, tensors, {k: v for k, v in meta.items() if not k.startswith("train_seconds")}, keep)
    monkeypatch.setattr(RunDir, "save", old_save)
    _train(tmp_path / "r", *TEMT, steps=10)
    monkeypatch.setattr(RunDir, "save", save)
    _train(tmp_path / "r", *TEMT, steps=20, resume=True)
    c = load_run(tmp_path / "r")
    assert [r.get("train_seconds_from_step") for r in c.train] == [None, None, 10, 10]
    assert not c.timed and criterion_step(c, None)[1] is None
    assert len(c.window_ms()) == 4 and all(ms > 0 for ms in c.window_ms())    # the count restarts at step 10
    # known answer: logged at 8, resumed from a step-10 checkpoint without seconds, logged at 15 (0.5 s since 10)
    rows = [_train_row(8, 0.8), {**_train_row(15, 0.5), "train_seconds_from_step": 10}]
    assert load_run(_copy(tmp_path / "r", tmp_path / "k", rows)).window_ms() == pytest.approx([100.0, 100.0])


# -- criterion, sweep, stream ---------------------------------------------------------------------------------------

def test_criterion_step_known_answer(runs, tmp_path):
    # node agent 1.0 on the whole walk (criterion 0.9), 0.5 on the first 200 steps (criterion 0.45)
    accs, l200 = [0.3, 0.6, 0.9, 0.95, 0.8], [0.1, 0.2, 0.3, 0.4, 0.46]
    rows = [_eval(100 * (i + 1), a, seconds=float(i + 1), l200=b) for i, (a, b) in enumerate(zip(accs, l200))]
    for r in rows:
        r["node_agent_L200"], r["acc_L500"] = 0.5, 0.5                      # L500 never reaches 0.9
    c = load_run(_copy(runs["temt0"], tmp_path / "c", rows))
    assert criterion_step(c, None) == (300, 3.0)                            # 0.9 >= 0.9 x 1.0: reached at equality
    assert criterion_step(c, 200) == (500, 5.0)
    assert criterion_step(c, 500) == (None, None)
    untimed = load_run(_copy(runs["temt0"], tmp_path / "u", [_eval(100, 0.95)]))
    assert criterion_step(untimed, None) == (100, None)                     # reached, but the log has no seconds
    nan = load_run(_copy(runs["temt0"], tmp_path / "n", [_eval(100, 0.95, node=None), _eval(200, 0.95)]))
    assert criterion_step(nan, None)[0] == 200
    rows[2].pop("acc_L500")
    with pytest.raises(ConfigError, match=r"metrics.jsonl: the evaluation at step 300 has no 'acc_L500'"):
        criterion_step(load_run(_copy(runs["temt0"], tmp_path / "m", rows)), 500)


def test_best_of_sweep_known_answer_and_tie_rule(runs, tmp_path):
    def run(name, lr, final, last=20):
        rows = [_eval(step, 0.5, zero_shot=final if step == last else 0.05) for step in range(10, last + 1, 10)]
        return _copy(runs["temt0"], tmp_path / name, rows, train__lr_max=lr)
    low = run("a", 1e-3, 0.4)
    tie_high, tie_low = run("b", 2e-3, 0.6), run("c", 5e-4, 0.6)
    stopped = run("d", 3e-3, 0.9, last=10)                    # best number, but it stopped at step 10: not a candidate
    broken = run("e", 4e-3, float("nan"))
    assert best_of_sweep([low, tie_high, tie_low, stopped, broken]) == tie_low
    assert best_of_sweep([tie_high, low]) == tie_high
    assert best_of_sweep([low]) == low
    other = _copy(runs["temt0"], tmp_path / "f", None, walks__sizes=[4, 6])
    with pytest.raises(ConfigError, match=r"sweep run .*f: walks.sizes=\[4, 6\] differs"):
        best_of_sweep([low, other])


def test_check_same_stream_names_the_arm_the_run_and_the_key(runs, tmp_path):
    temt, tem = load_arm([runs["temt0"], runs["temt1"]]), load_arm([runs["tem0"]])
    check_same_stream({"temt": temt[:1], "tem": tem})                       # TEM and TEM-t on one stream: fine
    sizes = load_run(_copy(runs["temt1"], tmp_path / "sizes", None, walks__sizes=[4, 6]))
    with pytest.raises(ConfigError, match=r"arm 'b', run .*sizes: walks.sizes=\[4, 6\] differs from arm 'a', run "
                                          r".*temt0 \(walks.sizes=\[4, 5\]\)"):
        check_same_stream({"a": temt[:1], "b": [sizes]})
    chunks = load_run(_copy(runs["tem0"], tmp_path / "chunks", None, train__chunk_length=5))
    with pytest.raises(ConfigError, match=r"arm 'tem', run .*chunks: train.chunk_length=5 differs"):
        check_same_stream({"temt": temt[:1], "tem": [chunks]})
    ev = load_run(_copy(runs["tem0"], tmp_path / "ev", None, eval__seed=7))
    with pytest.raises(ConfigError, match=r"eval.seed=7 differs"):
        check_same_stream({"temt": temt[:1], "tem": [ev]})
    with pytest.raises(ConfigError, match=r"arm 'tem' has train.seed \[0\] but arm 'temt' has \[0, 1\]"):
        check_same_stream({"temt": temt, "tem": tem})
    twice = load_run(_copy(runs["temt0"], tmp_path / "twice"))
    with pytest.raises(ConfigError, match=r"arm 'temt': runs .*temt0 and .*twice both have train.seed=0"):
        check_same_stream({"temt": [temt[0], twice]})
    empty = load_run(_copy(runs["temt0"], tmp_path / "empty", [_train_row(5, 0.1)]))
    with pytest.raises(ConfigError, match=r"arm 'x', run .*empty: metrics.jsonl has no evaluation records"):
        check_same_stream({"x": [empty]})


# -- ratios and the report ----------------------------------------------------------------------------------------

def _synthetic_arm(runs, tmp_path, name, source, reach, ms, steps=500, **config):
    """One run whose whole-walk accuracy reaches criterion at step `reach` (None: never), trained at `ms` ms/step,
    evaluated every 100 steps."""
    rows = []
    for step in range(100, steps + 1, 100):
        rows.append(_train_row(step, step * ms / 1000))
        rows.append(_eval(step, 0.95 if reach is not None and step >= reach else 0.5, seconds=step * ms / 1000))
    return _copy(runs[source], tmp_path / name, rows, **config)


def test_ratios_are_stated_as_measured(runs, tmp_path):
    tem = _synthetic_arm(runs, tmp_path, "tem", "tem0", reach=500, ms=100.0)
    temt = _synthetic_arm(runs, tmp_path, "temt", "temt0", reach=100, ms=5.0)
    never = _synthetic_arm(runs, tmp_path, "tem-never", "tem0", reach=None, ms=100.0)
    slow = _synthetic_arm(runs, tmp_path, "temt-never", "temt0", reach=None, ms=5.0)

    def ratio(tem_run, temt_run):
        tem_runs = tem_run if isinstance(tem_run, list) else [tem_run]
        s = {"tem": arm_summary("tem", load_arm(tem_runs)), "temt": arm_summary("temt", load_arm([temt_run]))}
        return ratios(s)[0]
    r = ratio(tem, temt)
    assert (r["arm"], r["against"]) == ("temt", "tem")
    assert r["steps"]["full"]["ratio"] == pytest.approx(5.0) and r["steps"]["full"]["bound"] == "exact"
    assert "5.0x fewer steps" in r["steps"]["full"]["text"] and r["steps"]["full"]["goal"] == "met"
    assert r["seconds"]["full"]["ratio"] == pytest.approx(50.0 / 0.5)
    assert r["time_per_step"]["ratio"] == pytest.approx(20.0) and r["time_per_step"]["goal"] == "met"
    r = ratio(never, temt)                                   # TEM never got there in 500 steps
    assert r["steps"]["full"]["bound"] == "at_least" and r["steps"]["full"]["ratio"] == pytest.approx(5.0)
    assert "never reached criterion within 500" in r["steps"]["full"]["text"] and "at least 5.0x" in \
        r["steps"]["full"]["text"]
    r = ratio(tem, slow)                                     # TEM-t never got there: a bound the other way
    assert r["steps"]["full"]["bound"] == "at_most" and r["steps"]["full"]["goal"] == "not met"
    r = ratio(never, slow)
    assert r["steps"]["full"]["ratio"] is None and "no ratio" in r["steps"]["full"]["text"]
    # one TEM seed at 300, one never within 500: TEM's mean is more than (300 + 500) / 2, so at least 4x
    half = _synthetic_arm(runs, tmp_path, "tem-half", "tem0", reach=300, ms=100.0, train__seed=1)
    r = ratio([half, never], temt)
    assert r["steps"]["full"]["bound"] == "at_least" and r["steps"]["full"]["ratio"] == pytest.approx(4.0)
    assert "reached it in only 1 of 2 seeds within 500" in r["steps"]["full"]["text"]
    assert r["steps"]["full"]["goal"] == "unknown"                         # >= 4x does not tell whether >= 5x
    report = write_comparison({"tem": [tem], "temt": [temt]}, tmp_path / "out").read_text()
    assert "temt reached criterion in 5.0x fewer steps than tem" in report and "20.0x less wall time" in report
    assert "of the edge agent" not in report                               # edge agent 0.3, criterion 0.9
    rows = [json.loads(line) for line in (temt / "metrics.jsonl").read_text().splitlines()]
    for name, run in (("tem-e", tem), ("temt-e", temt)):                    # an edge agent at 0.89 on the whole walk
        _copy(run, tmp_path / name, [{**r, "edge_agent": 0.89} for r in rows])
    report = write_comparison({"tem": [tmp_path / "tem-e"], "temt": [tmp_path / "temt-e"]}, tmp_path / "o2").read_text()
    assert "criterion (0.900) is within 0.02 of the edge agent (0.890)" in report


def test_write_comparison_writes_report_figures_and_json(runs, tmp_path):
    fast = _copy(runs["temt0"], tmp_path / "lr-fast", None, train__lr_max=5e-4)
    arms = {"tem": [runs["tem0"]], "temt": [runs["temt0"]]}
    path = write_comparison(arms, tmp_path / "out", sweeps={"temt": [runs["temt0"], fast]}, quick=True)
    out = tmp_path / "out"
    assert path == out / "report.md"
    for name in ("curves.png", "curves_by_length.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads((out / "comparison.json").read_text())
    assert set(result["arms"]) == {"tem", "temt"} and result["reference_arm"] == "tem"
    tem_ms, temt_ms = (load_run(runs[n]).ms_per_step() for n in ("tem0", "temt0"))
    assert result["ratios"][0]["time_per_step"]["ratio"] == pytest.approx(tem_ms / temt_ms)
    assert result["lengths"] == {"L200": 30, "L500": 30, "full": 30}       # eval walks of 30 steps: lengths clipped
    report = path.read_text()
    info = json.loads((runs["temt0"] / "run.json").read_text())
    for text in ("**Quick mode**", "**temt against tem**", "| arm | model | seeds |", "| arm | walk length |",
                 "## Learning-rate sweeps", "![zero-shot accuracy", info["commit"], str(runs["temt0"] / "config.yaml"),
                 "L=30 (whole walk)"):
        assert text in report, text
    assert "L=200" not in report                             # a length clipped to the walk is not shown twice
    chosen = [r for r in result["sweeps"]["temt"] if r["chosen"]]
    assert len(chosen) == 1 and chosen[0]["path"] == str(best_of_sweep([runs["temt0"], fast]))


def test_cli_compare_and_its_errors(runs, tmp_path, capsys):
    out = tmp_path / "out"
    arm = lambda name, *keys: f"{name}=" + ",".join(str(runs[k]) for k in keys)   # noqa: E731
    assert main(["compare", "--arm", arm("tem", "tem0"), "--arm", arm("temt", "temt0"), "--out", str(out)]) == 0
    assert "comparison written in" in capsys.readouterr().out and (out / "report.md").is_file()
    before = (out / "report.md").read_text()
    chunks = _copy(runs["tem0"], tmp_path / "chunks", None, train__chunk_length=5)
    bad = {"given twice": ["--arm", arm("temt", "temt0"), "--arm", arm("temt", "temt1")],
           "is not a run directory": ["--arm", f"temt={tmp_path / 'nothing'}"],
           "expected NAME=RUN_DIR": ["--arm", "temt"],
           "train.chunk_length=5 differs": ["--arm", arm("temt", "temt0"), "--arm", f"tem={chunks}"],
           "is given twice (arm 'a' and arm 'b')": ["--arm", arm("a", "temt0"), "--arm", arm("b", "temt0")],
           "mixes model_kind tem and temt": ["--arm", arm("x", "temt1", "tem0")],
           "takes no key=value": ["--arm", arm("temt", "temt0"), "train.steps=3"]}
    for message, args in bad.items():
        fresh = tmp_path / "fresh"
        assert main(["compare", *args, "--out", str(fresh)]) == 2, message
        assert message in capsys.readouterr().err and not fresh.exists(), message
    assert main(["compare", "--arm", arm("temt", "temt0"), "--out", str(runs["temt1"])]) == 2
    assert "is a run directory" in capsys.readouterr().err
    assert main(["compare", "--arm", arm("temt", "temt0"), "--arm", f"tem={chunks}", "--out", str(out)]) == 2
    assert (out / "report.md").read_text() == before                       # a failed check leaves the report alone
