"""Tree paths to actions: (up, down) for dependencies, close/open for constituents, caps, labels, vocabulary."""
import pytest

from temt_core.checkpoint import CheckpointError

from language.actions import (CONTINUE, END, OVERFLOW, ActionConfig, ActionVocab, action_names, expand_for_subwords,
                              pair_coverage, path_moves, shuffle_actions, tree_action_names)
from language.trees import Tree, iter_brackets


def dep_tree(heads, labels=None, words=None):
    n = len(heads)
    labels = labels or ["dep"] * n
    words = words or [f"w{i}" for i in range(1, n + 1)]
    return Tree(words, [-1] + list(heads), ["ROOT"] + list(labels), list(range(1, n + 1)), "dependency", "t")


def test_dependency_paths_by_hand():
    # The big dog barked loudly .   (The->dog, big->dog, dog->barked, barked root, loudly->barked, .->barked)
    t = dep_tree([3, 3, 4, 0, 4, 4], ["det", "amod", "nsubj", "root", "advmod", "punct"])
    moves = [(u, d) for u, d, _ in path_moves(t)]
    assert moves == [(0, 3), (1, 1), (1, 0), (1, 0), (0, 1), (1, 1)]
    assert action_names(t, ActionConfig()) == ["u0d3", "u1d1", "u1d0", "u1d0", "u0d1", "u1d1", END]
    assert action_names(t, ActionConfig(labels=True))[:3] == ["u0d3:det", "u1d1:amod", "u1d0:nsubj"]


def test_non_projective_tree_paths():
    # w1 -> w3, w2 -> w4 (crossing arcs), w4 -> w3, w3 root
    t = dep_tree([3, 4, 0, 3])
    assert [(u, d) for u, d, _ in path_moves(t)] == [(0, 2), (1, 2), (2, 0), (0, 1)]


def test_caps_give_overflow_and_subtypes():
    deep = dep_tree([2, 3, 4, 5, 6, 0], ["nmod:poss"] * 5 + ["root"])       # a chain 6 deep
    names = action_names(deep, ActionConfig(max_up=4, max_down=4))
    assert names[0] == OVERFLOW                                          # ROOT -> w1 is 6 steps down
    assert names[1:6] == ["u1d0"] * 5 and names[-1] == END
    assert action_names(deep, ActionConfig(max_down=6))[0] == "u0d6"
    lab = action_names(deep, ActionConfig(max_down=6, labels=True))
    assert lab[0] == "u0d6:nmod" and action_names(deep, ActionConfig(max_down=6, labels=True,
                                                                        label_subtypes=True))[0] == "u0d6:nmod:poss"
    with pytest.raises(ValueError, match="max_up must be >= 1"):
        ActionConfig(max_up=0)


def test_constituency_close_open():
    t = next(iter_brackets(["(S (NP (DT The) (NN dog)) (VP (VBD barked) (PP (IN at) (NP (PRP me)))))"]))
    assert action_names(t, ActionConfig()) == ["c0o2", "c0o0", "c1o1", "c0o1", "c0o1", END]
    assert action_names(t, ActionConfig(labels=True))[:4] == ["c0o2:S,NP", "c0o0", "c1o1:VP", "c0o1:PP"]


def test_vocab_build_encode_unseen_and_roundtrip(tmp_path):
    v = ActionVocab.build([["u1d0", "u0d1", END], ["u1d0", "rare", END]], min_count=2)
    assert v.names[:2] == [OVERFLOW, END] and v.names[2] == "u1d0" and "rare" not in v.index
    assert v.encode(["u1d0", "u9d9", "rare", END]) == [2, 0, 0, 1]
    assert v.unseen == {"u9d9": 1, "rare": 1} and v.overflow_total == 2
    assert "2 action(s) unseen in training" in v.warning()
    v.save(tmp_path / "a.json")
    w = ActionVocab.load(tmp_path / "a.json")
    assert w.names == v.names and w.meta["min_count"] == 2
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(CheckpointError, match="bad.json: not an action vocabulary"):
        ActionVocab.load(tmp_path / "bad.json")


def test_subwords_continue_and_shuffle():
    assert expand_for_subwords(["u0d1", "u1d0", END], [2, 1]) == ["u0d1", CONTINUE, "u1d0", END]
    assert expand_for_subwords(["a", "b", "c", END], [1, 3, 1]) == ["a", "b", CONTINUE, CONTINUE, "c", END]
    with pytest.raises(ValueError, match="expected 3 actions"):
        expand_for_subwords(["a", END], [1, 1])
    ids = [5, 6, 7, 8, 9, 1]
    s = shuffle_actions(ids, seed=3)
    assert s[-1] == 1 and sorted(s) == sorted(ids) and s == shuffle_actions(ids, seed=3)
    assert any(shuffle_actions(ids, seed=k) != ids for k in range(5))


def test_hand_built_cycle_is_an_error_not_a_hang():
    from language.trees import TreebankError
    with pytest.raises(TreebankError, match="cycle in heads"):
        path_moves(dep_tree([2, 1, 0]))


def test_tree_action_names_and_coverage():
    t = dep_tree([2, 0, 2], ["nmod:poss", "root", "punct"])
    assert tree_action_names(t, ActionConfig()) == ["ROOT", "nmod", "root", "punct"]
    cov = pair_coverage([t], 1, 1)
    assert cov["moves"] == 3 and cov["distinct_pairs"] == 3 and cov["covered"] == pytest.approx(2 / 3)
