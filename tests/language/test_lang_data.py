"""Word vocabulary (tokenizers), datasets, batching and the data-root setting, on a synthetic treebank."""
import pytest
import torch

from language.actions import NEXT, ActionConfig
from language.data import (BOS, EOS, UNK, DataConfig, TokenBatchSampler, branch_indices, build_word_vocab, collate,
                           data_root, encode_words, load_corpus, make_loader, prepare)
from language.trees import Tree


def _tree(words):
    n = len(words)
    return Tree(words, [-1] + [0] + [1] * (n - 1), ["ROOT"] * (n + 1), list(range(1, n + 1)))


def test_word_vocab_unk_below_min_freq():
    trees = [_tree(["a", "b", "a"]), _tree(["b", "c", "New York"]), _tree(["New York"])]
    tok = build_word_vocab(trees, min_freq=2)
    vocab = tok.get_vocab()
    assert {"a", "b", "New York"} <= set(vocab) and "c" not in vocab
    ids = encode_words(tok, ["a", "c", "New York", "zzz"])
    assert ids[0] == tok.token_to_id(BOS) and ids[-1] == tok.token_to_id(EOS)
    assert ids[2] == ids[4] == tok.token_to_id(UNK) and ids[3] == vocab["New York"]      # a space inside a word
    assert build_word_vocab(trees, min_freq=1).token_to_id("c") is not None


def test_prepare_builds_vocab_from_train_only_and_encodes(toy_root, tmp_path):
    cfg = DataConfig(root=str(toy_root), actions=ActionConfig(max_up=2, max_down=2))
    data = prepare(cfg)
    assert len(data.splits["train"]) == 240 and len(data.splits["dev"]) == 40
    row = data.splits["dev"][0]
    n = row["n_words"]
    assert len(row["ids"]) == n + 2 and len(row["actions"]) == n + 1 and len(row["tok_nodes"]) == n + 2
    assert row["actions"][-1] == data.actions.index["<end>"] and row["ids"][0] == 2 and row["ids"][-1] == 3
    data.save_vocab(tmp_path)
    again = prepare(cfg, splits=("dev",), vocab_dir=tmp_path)
    assert again.splits["dev"]["ids"] == data.splits["dev"]["ids"]
    assert again.actions.names == data.actions.names


def test_transforms_next_and_shuffled(toy_root):
    base = DataConfig(root=str(toy_root))
    gold = prepare(base, splits=("dev",))
    nxt = prepare(DataConfig(root=str(toy_root), transform="next"), splits=("dev",))
    assert nxt.actions.names[-1] == NEXT and len(nxt.actions) == 3
    assert all(set(a) == {nxt.actions.index[NEXT]} for a in nxt.splits["dev"]["actions"])
    sh = prepare(DataConfig(root=str(toy_root), transform="shuffled"), shuffle_seed=1, splits=("dev",))
    g, s = gold.splits["dev"]["actions"], sh.splits["dev"]["actions"]
    assert all(sorted(x) == sorted(y) and x[-1] == y[-1] for x, y in zip(g, s))
    assert sum(x != y for x, y in zip(g, s)) > 10
    with pytest.raises(ValueError, match="transform must be"):
        DataConfig(transform="reverse")


def test_limits_and_length_filter(toy_root):
    trees, stats = load_corpus(DataConfig(root=str(toy_root), train_limit=10, max_words=4))
    assert len(trees["train"]) == 10 and all(len(t) <= 4 for s in trees.values() for t in s)
    assert stats["train"].sentences == 240


def test_data_root_override(monkeypatch, tmp_path):
    monkeypatch.setenv("TEMT_DATA", str(tmp_path))
    assert data_root(DataConfig()) == tmp_path
    assert data_root(DataConfig(root="/elsewhere")).as_posix() == "/elsewhere"
    monkeypatch.delenv("TEMT_DATA")
    assert data_root(DataConfig()).as_posix().endswith("shared/data")
    with pytest.raises(FileNotFoundError, match="data.root=PATH or TEMT_DATA"):
        load_corpus(DataConfig(root=str(tmp_path / "nothing")))


def test_collate_pads_and_masks():
    rows = [{"ids": [2, 5, 3], "actions": [4, 1], "index": 0, "tree_parents": [-1, 0], "tree_actions": [0, 7],
             "tree_branch": [0, 0], "tok_nodes": [0, 1, 0]},
            {"ids": [2, 5, 6, 7, 3], "actions": [4, 5, 6, 1], "index": 1, "tree_parents": [-1, 0, 1, 1],
             "tree_actions": [0, 7, 8, 9], "tree_branch": [0, 0, 0, 1], "tok_nodes": [0, 1, 2, 3, 0]}]
    b = collate(rows)
    assert b["ids"].tolist() == [[2, 5, 3, 0, 0], [2, 5, 6, 7, 3]]
    assert b["mask"].tolist() == [[True, True, False, False], [True] * 4]
    assert b["tree_parents"][0].tolist() == [-1, 0, -1, -1]
    assert branch_indices([-1, 0, 1, 1, 0, 1]) == [0, 0, 0, 1, 1, 2]


def test_token_batch_sampler_budget_cover_and_epochs():
    lengths = [3, 9, 4, 12, 5, 5, 7, 2, 11, 6] * 7
    s = TokenBatchSampler(lengths, max_tokens=30, shuffle=True, seed=1)
    batches = s.batches()
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(max(lengths[i] for i in b) * len(b) <= 30 for b in batches)
    again = TokenBatchSampler(lengths, 30, True, 1).batches()
    assert again == batches
    s.use_epoch(1)
    assert s.batches() != batches
    with pytest.raises(ValueError, match="smaller than the longest sentence"):
        TokenBatchSampler([50], max_tokens=20)


def test_loader_yields_tensors(toy_root):
    data = prepare(DataConfig(root=str(toy_root)), splits=("dev",))
    batches = list(make_loader(data.splits["dev"], 64, shuffle=False))
    assert sum(len(b["index"]) for b in batches) == 40
    assert all(b["ids"].numel() <= 64 and b["ids"].dtype == torch.long for b in batches)
