"""The triple-conjunction demo (claim C8, spatial/conjunctions.py) end to end at a tiny size, its second stimulus
stream, and its refusal to overwrite."""
import json

import numpy as np
import pytest

from spatial.conjunctions import (ConjunctionsConfig, SecondStimuli, main, naive_tem_cells, run_conjunctions,
                                  two_hot_width)
from spatial.walks import WalkConfig, WalkStream
from temt_core.config import ConfigError

TINY = ConjunctionsConfig(sizes=(3,), pos_dim=16, batch_size=4, chunk_length=20, walk_length=(40, 60),
                          eval_worlds=4, eval_steps=40)


def test_demo_runs_end_to_end_and_writes_its_section(tmp_path):
    result = run_conjunctions(tmp_path / "c8", steps=3, seed=1, config=TINY)
    plain, two, twin = result["plain"], result["two_streams"], result["same_positions"]
    assert (plain["feature_neurons"], two["feature_neurons"], twin["feature_neurons"]) == (45, 90, 45)
    for row in (plain, two, twin):
        assert len(row["memory_neurons"]) == 4 and all(1 <= n <= 40 for n in row["memory_neurons"])
        assert 0 <= row["stream_1"]["acc_revisit"] <= 1 and row["stream_1"]["n_revisit"] > 0
    assert "stream_2" in two and "stream_2" not in plain and "stream_2" not in twin
    assert result["naive_tem"] == {"g_memory": 40, "n_x_c": 10, "n_x2_c": 10, "one_stream": 400, "two_streams": 4000}
    saved = json.loads((tmp_path / "c8" / "conjunctions.json").read_text())
    assert saved["two_streams"]["memory_neurons"] == two["memory_neurons"]
    md = (tmp_path / "c8" / "conjunctions.md").read_text()
    assert md.startswith("## Triple conjunctions (C8)")
    assert "| TEM-t, two streams | 90 |" in md and "40 x 10 x 10 = 4000" in md


def test_existing_outputs_are_kept(tmp_path, capsys):
    out = tmp_path / "c8"
    out.mkdir()
    (out / "conjunctions.md").write_text("earlier result")
    with pytest.raises(FileExistsError, match="conjunctions.md"):
        run_conjunctions(out, steps=1, config=TINY)
    assert main(["--out", str(out), "--steps", "1"]) == 2
    assert "already holds conjunctions.md" in capsys.readouterr().err
    assert (out / "conjunctions.md").read_text() == "earlier result" and not (out / "conjunctions.json").exists()
    assert main(["--out", str(out), "--steps", "0"]) == 2
    assert "steps must be >= 1" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="eval_steps must be >= 1"):
        ConjunctionsConfig(eval_steps=0)


def test_second_stimuli_are_fixed_per_node_and_world_and_leave_the_walks_alone():
    """Stream 2 is a function of (slot, world, node), the same however the walk is cut, and drawing it does not
    change the walks or stream 1 (its generator is its own)."""
    cfg = WalkConfig(sizes=(3, 4), walk_length=(15, 25))
    walks, bare = WalkStream(cfg, 3, seed=5), WalkStream(cfg, 3, seed=5)
    second = SecondStimuli(walks, 45, seed=5)
    chunks = [walks.next_chunk(n) for n in (7, 30, 13)]
    x2 = np.concatenate([second.of(c) for c in chunks], 1)
    bare_chunks = [bare.next_chunk(n) for n in (7, 30, 13)]
    cat = lambda k, cs=chunks: np.concatenate([c[k] for c in cs], 1)
    for key in ("x", "nodes", "actions", "world"):
        assert np.array_equal(cat(key), cat(key, bare_chunks)), key
    whole = {k: cat(k, bare_chunks) for k in ("world", "nodes", "world_index")}     # the same walk, one cut
    assert np.array_equal(x2, SecondStimuli(bare, 45, seed=5).of(whole))
    world, nodes = cat("world"), cat("nodes")
    for b in range(3):
        for w in np.unique(world[b]):
            for n in np.unique(nodes[b][world[b] == w]):
                assert len(set(x2[b][(world[b] == w) & (nodes[b] == n)])) == 1
    assert not np.array_equal(x2, cat("x"))


def test_naive_tem_count_uses_tems_two_hot_code():
    assert two_hot_width(45) == 10 and two_hot_width(46) == 11 and two_hot_width(1) == 2
    assert naive_tem_cells(45, 20)["two_streams"] == 40 * 10 * 7
