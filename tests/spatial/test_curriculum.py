"""The walk-length curriculum: lengths move from curriculum_start to walk_length, resume exactly, stay out of eval."""
import numpy as np
import pytest

from spatial.walks import RESET, WalkConfig, WalkStream


def _resets(chunk):
    return np.argwhere(chunk["actions"] == RESET)


def test_lengths_move_linearly_then_stay():
    cfg = WalkConfig(sizes=(5,), walk_length=(50, 50), curriculum_chunks=10, curriculum_start=(5, 5))
    s = WalkStream(cfg, batch_size=2, seed=0)
    assert s.walk_lengths() == (5, 5)
    first = s.next_chunk(12)                           # worlds started at chunk 0 last 5 steps
    steps = [t for b, t in _resets(first) if b == 0]
    assert steps[:3] == [0, 5, 10]
    for _ in range(4):
        s.next_chunk(12)
    assert s.walk_lengths() == (28, 28)                # 5 + 0.5 * 45, rounded
    for _ in range(10):
        s.next_chunk(12)
    assert s.walk_lengths() == (50, 50)
    off = WalkStream(WalkConfig(sizes=(5,), walk_length=(50, 50)), batch_size=2, seed=0)
    assert off.walk_lengths() == (50, 50)


def test_resume_continues_the_curriculum_exactly():
    cfg = WalkConfig(sizes=(5, 6), walk_length=(40, 80), curriculum_chunks=6, curriculum_start=(4, 8))
    a = WalkStream(cfg, batch_size=3, seed=1)
    for _ in range(3):
        a.next_chunk(10)
    b = WalkStream(cfg, batch_size=3, seed=99)
    b.load_state_dict(a.state_dict())
    for _ in range(8):
        ca, cb = a.next_chunk(10), b.next_chunk(10)
        for k in ca:
            assert np.array_equal(ca[k], cb[k]), k


def test_old_walk_states_load_without_a_curriculum_only():
    state = WalkStream(WalkConfig(sizes=(5,)), batch_size=2, seed=0).state_dict()
    del state["arrays"]["chunks_done"]                 # as saved before the curriculum existed
    WalkStream(WalkConfig(sizes=(5,)), batch_size=2).load_state_dict(state)
    with pytest.raises(ValueError, match="cannot resume a curriculum"):
        WalkStream(WalkConfig(sizes=(5,), curriculum_chunks=5), batch_size=2).load_state_dict(state)


def test_bad_curriculum_settings_are_named():
    with pytest.raises(ValueError, match="curriculum_start must be"):
        WalkConfig(curriculum_start=(10, 5))
    with pytest.raises(ValueError, match="curriculum_chunks must be >= 0"):
        WalkConfig(curriculum_chunks=-1)


def test_shuffled_actions_control_permutes_moves_only():
    cfg = WalkConfig(sizes=(6,), walk_length=(30, 30))
    true = WalkStream(cfg, batch_size=3, seed=5)
    shuffled = WalkStream(WalkConfig(sizes=(6,), walk_length=(30, 30), shuffle_actions=True), batch_size=3, seed=5)
    a, b = true.next_chunk(40), shuffled.next_chunk(40)
    assert np.array_equal(a["nodes"], b["nodes"]) and np.array_equal(a["x"], b["x"])     # the walk is the same
    assert np.array_equal(a["actions"] == RESET, b["actions"] == RESET)                   # resets stay put
    for row_a, row_b in zip(a["actions"], b["actions"]):
        assert sorted(row_a) == sorted(row_b)                                             # the same moves ...
    assert not np.array_equal(a["actions"], b["actions"])                                 # ... in another order
