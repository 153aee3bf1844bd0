"""Open-vocabulary (subword) language models: byte-level BPE / unigram pieces, CONTINUE inside words, scores per word.

- encoding: pieces decode back to the words, never <unk>; one action per piece + END, CONTINUE exactly at the
  continuation pieces and the tree moves elsewhere; a piece's node is its word's; events = words + 1;
- word mode is the encoding it always was;
- the canonical beam (CONTINUE the only candidate inside a word, never a candidate at a first piece) equals the
  restricted enumeration once it keeps everything, keeps only canonical hypotheses, is non-increasing in K, and
  exact <= beam <= joint for a trained model; later pieces never change earlier log-probabilities;
- a tiny BPE run learns, reloads from its run directory with the same scores, scores a file with no OOV, and
  exports a tokenizer that transformers reads.
"""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lang_toydata import tiny_overrides
from language.actions import CONTINUE, END, ActionConfig, action_names, continuation_flags, expand_for_subwords
from language.data import (BOS, EOS, UNK, DataConfig, build_subword_vocab, build_word_vocab, collate, encode_pieces,
                           encode_words, load_corpus, prepare, vocab_kind)
from language.evaluate import beam_marginal, exact_marginal, ppl, score_loader
from language.model import LanguageModel, ModelConfig
from language.trees import Tree
from temt_core.checkpoint import CheckpointError
from temt_core.config import ConfigError, load_config

ACFG = ActionConfig(max_up=2, max_down=2)
HELD_OUT = ["Zürich", "naïve", "日本語", "New York", "🙂", "dogs", "unseenword", "e-mail", "«»"]


def _sub(toy_root, kind="bpe", size=270, **kw):
    return DataConfig(root=str(toy_root), actions=ACFG, vocab=kind, vocab_size=size, **kw)


@pytest.fixture(scope="module")
def toy_trees(toy_root):
    return load_corpus(DataConfig(root=str(toy_root), actions=ACFG))[0]


# ----------------------------------------------------------------------------------------------------------------
# vocabulary and encoding

@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_pieces_decode_back_to_the_words_and_never_unk(toy_trees, kind):
    tok = build_subword_vocab(toy_trees["train"], kind, 270)
    assert vocab_kind(tok) == kind
    assert [tok.token_to_id(s) for s in ("<pad>", UNK, BOS, EOS)] == [0, 1, 2, 3]       # the ids of today
    words = [w for t in toy_trees["test"] for w in t.words] + HELD_OUT
    ids, pieces = encode_pieces(tok, words)
    assert ids[0] == 2 and ids[-1] == 3 and len(ids) == sum(pieces) + 2
    assert tok.token_to_id(UNK) not in ids                                                 # byte-level: no <unk>
    at = 1
    for w, k in zip(words, pieces):
        assert tok.decode(ids[at:at + k]) == w                                            # pieces never cross words
        at += k
    assert max(pieces[-len(HELD_OUT):]) > 1 and min(pieces) >= 1      # unseen words split; every word has a piece


def test_unigram_vocabulary_is_reproducible(toy_trees):
    """tokenizers' unigram trainer alone is not (scores differ in the last digits, ties in another order)."""
    a = build_subword_vocab(toy_trees["train"], "unigram", 280).to_str()
    assert all(build_subword_vocab(toy_trees["train"], "unigram", 280).to_str() == a for _ in range(3))


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_rows_one_action_per_piece_continue_inside_words(toy_root, toy_trees, kind):
    word = prepare(DataConfig(root=str(toy_root), actions=ACFG), splits=("dev",))
    sub = prepare(_sub(toy_root, kind, 262), splits=("dev",))           # 6 merges: most words have several pieces
    cont = sub.actions.index[CONTINUE]
    assert CONTINUE not in word.actions.index and sub.actions.names[:3] == ["<overflow>", END, CONTINUE]
    n_cont = 0
    for t, w, s in zip(sub.trees["dev"], word.splits["dev"], sub.splits["dev"]):
        k = s["pieces"]
        assert len(k) == s["n_words"] == len(t.words) == w["n_words"]
        assert len(s["ids"]) == sum(k) + 2 and len(s["actions"]) == len(s["ids"]) - 1 == len(s["tok_nodes"]) - 1
        flags = continuation_flags(k)
        assert [a == cont for a in s["actions"]] == flags                   # CONTINUE exactly at continuations
        moves = [a for a, f in zip(s["actions"], flags) if not f]
        assert sub.actions.decode(moves) == word.actions.decode(w["actions"])          # the tree moves, in order
        nodes = [n for n, f in zip(s["tok_nodes"][1:-1], flags) if not f]
        assert nodes == w["tok_nodes"][1:-1]                                # a first piece sits at its word's node
        assert all(s["tok_nodes"][i + 1] == s["tok_nodes"][i] for i, f in enumerate(flags[:-1]) if f)
        assert s["tree_parents"] == w["tree_parents"] and s["tree_actions"] == w["tree_actions"]
        n_cont += sum(flags)
    assert n_cont > 100                                                     # the check has teeth


def test_event_counts_are_words_plus_one_in_both_modes(toy_root):
    for cfg in (DataConfig(root=str(toy_root), actions=ACFG), _sub(toy_root, "bpe", 262), _sub(toy_root, "unigram")):
        data = prepare(cfg, splits=("dev",))
        rows = data.splits["dev"].to_list()
        batch = collate(rows)
        assert batch["n_events"].tolist() == [r["n_words"] + 1 for r in rows]
        torch.manual_seed(0)
        model = LanguageModel(ModelConfig(vocab_size=data.words.get_vocab_size(), d_model=16, n_head=2, n_layer=2,
                                          d_ff=16, dropout=0.0))
        scores = score_loader(model, [batch])
        assert scores["n_tokens"].tolist() == [r["n_words"] + 1 for r in rows]
        pieces = sum(len(r["ids"]) - 1 for r in rows)
        assert (pieces > sum(scores["n_tokens"])) == (cfg.vocab != "word")   # subword: more pieces than events


def test_word_mode_is_the_encoding_it_was(toy_root, toy_trees):
    """data.vocab=word (the default) gives exactly the rows of the word-level encoding, with no new column."""
    assert DataConfig().vocab == "word"
    data = prepare(DataConfig(root=str(toy_root), actions=ACFG), splits=("dev",))
    words = build_word_vocab(toy_trees["train"], 2)
    assert data.words.to_str() == words.to_str()
    ds = data.splits["dev"]
    assert ds.column_names == ["ids", "actions", "n_words", "index", "tree_parents", "tree_actions", "tree_branch",
                               "tok_nodes"]
    for i, (t, r) in enumerate(zip(toy_trees["dev"], ds)):
        assert r["ids"] == encode_words(words, t.words)
        assert r["actions"] == [data.actions.index[a] for a in action_names(t, ACFG)]
        assert r["tok_nodes"] == [0] + list(t.word_nodes) + [0] and r["n_words"] == len(t.words) and r["index"] == i
    assert CONTINUE not in data.actions.index


def test_shuffled_and_next_keep_continue_where_the_pieces_are(toy_root):
    gold = prepare(_sub(toy_root, "bpe", 262), splits=("dev",))
    sh = prepare(_sub(toy_root, "bpe", 262, transform="shuffled"), shuffle_seed=1, splits=("dev",))
    nxt = prepare(_sub(toy_root, "bpe", 262, transform="next"), splits=("dev",))
    cont = gold.actions.index[CONTINUE]
    assert CONTINUE not in nxt.actions.index                  # one action, even between pieces (no free boundaries)
    for g, s, x in zip(gold.splits["dev"], sh.splits["dev"], nxt.splits["dev"]):
        assert [a == cont for a in s["actions"]] == continuation_flags(g["pieces"])
        assert sorted(s["actions"]) == sorted(g["actions"]) and len(set(x["actions"])) == 1
        assert len(x["actions"]) == len(g["actions"])
    assert sum(g != s for g, s in zip(gold.splits["dev"]["actions"], sh.splits["dev"]["actions"])) > 10


def test_bad_vocab_settings_are_errors_naming_the_key(toy_root, tmp_path):
    with pytest.raises(ConfigError, match="data.vocab must be one of word, bpe, unigram"):
        load_config(__import__("language.train", fromlist=["LanguageConfig"]).LanguageConfig, None,
                    ["data.vocab=bytes"])
    with pytest.raises(ValueError, match="data.vocab_size must be >= 260"):
        DataConfig(vocab="bpe", vocab_size=100)
    word = prepare(DataConfig(root=str(toy_root), actions=ACFG), splits=())
    word.save_vocab(tmp_path)
    with pytest.raises(CheckpointError, match="words.json is a word vocabulary, but data.vocab=bpe"):
        prepare(_sub(toy_root), splits=("dev",), vocab_dir=tmp_path)


# ----------------------------------------------------------------------------------------------------------------
# the canonical beam

NAMES = ["<overflow>", END, CONTINUE, "u0d1", "u1d0"]
CONT = NAMES.index(CONTINUE)
# (ids, pieces per word): BOS pieces EOS; the model's vocabulary is 12
SUBWORD_SENTENCES = [([2, 5, 6, 3], [2]), ([2, 5, 6, 7, 3], [1, 2]), ([2, 7, 8, 9, 4, 3], [3, 1]),
                     ([2, 4, 10, 11, 5, 6, 3], [2, 1, 2])]


def tiny(pos, structure, seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(pos=pos, structure=structure, vocab_size=12, n_actions=len(NAMES), action_names=NAMES,
                      d_model=32, n_layer=2, n_head=4, n_pos_head=2, d_ff=64, pos_dim=8, dropout=0.0,
                      pos_init_std=1.0, max_len=32)
    return LanguageModel(cfg).eval()


def _flags():
    return [continuation_flags(k) for _, k in SUBWORD_SENTENCES]


@pytest.mark.parametrize("pos, structure", [("grammar", "joint"), ("shiv_quirk", "joint"), ("sinusoidal", "tokens")])
def test_canonical_beam_equals_canonical_enumeration_and_is_monotone(pos, structure):
    model = tiny(pos, structure)
    sents, flags = [s for s, _ in SUBWORD_SENTENCES], _flags()
    exact = [exact_marginal(model, s, continuation=f) for s, f in zip(sents, flags)]    # 4^(words + 1) each
    everything = [exact_marginal(model, s) for s in sents]                              # 5^(pieces + 1)
    beams = {K: beam_marginal(model, sents, K, continuation=flags) for K in (1, 5, 20, 4 ** 4)}
    for k1, k2 in zip(list(beams)[:-1], list(beams)[1:]):
        assert all(a <= b + 1e-4 for a, b in zip(beams[k1], beams[k2]))                  # non-increasing ppl in K
    assert all(b <= e + 1e-4 for b, e in zip(beams[1], exact))
    assert beams[4 ** 4] == pytest.approx(exact, abs=1e-4)                             # keeps everything: exact
    assert beams[1][-1] < exact[-1] - 1e-3                                             # and pruning prunes
    assert all(e < a - 1e-3 for e, a in zip(exact, everything))       # a strict subset of all action sequences
    top = beam_marginal(model, sents, 5, action_top=2, continuation=flags)             # the cheaper bound
    assert all(t <= e + 1e-4 for t, e in zip(top, exact)) and top.sum() <= beams[5].sum() + 1e-4


def test_beam_keeps_only_canonical_hypotheses():
    """Every action prefix the beam carries has CONTINUE exactly at the continuation pieces, even for a model
    that strongly prefers another action there (the unrestricted beam would take it)."""
    model = tiny("grammar", "joint")
    with torch.no_grad():
        model.act_head.bias[NAMES.index("u0d1")] += 8.0                     # CONTINUE is unlikely everywhere
    seen = []
    step = model.step

    def recording(ids, actions, *a, **kw):
        seen.append(actions.clone())
        return step(ids, actions, *a, **kw)

    model.step = recording
    for action_top in (0, 2):
        seen.clear()
        for (s, k), f in zip(SUBWORD_SENTENCES, _flags()):
            beam_marginal(model, [s], 20, action_top=action_top, continuation=[f])
            for acts in seen:
                want = torch.tensor(f[: acts.shape[1]])
                assert torch.equal(acts == CONT, want.expand_as(acts)), (s, acts)
            seen.clear()
    model.step = step
    free = beam_marginal(model, [SUBWORD_SENTENCES[2][0]], 20)                         # unrestricted: higher
    canon = beam_marginal(model, [SUBWORD_SENTENCES[2][0]], 20, continuation=[_flags()[2]])
    assert canon[0] < free[0] - 1.0


def test_proposals_with_the_canonical_beam_are_counted_once():
    model = tiny("grammar", "joint")
    sents, flags = [s for s, _ in SUBWORD_SENTENCES], _flags()
    props = [expand_for_subwords([3] * len(k) + [1], k, fill=CONT) for _, k in SUBWORD_SENTENCES]
    exact = [exact_marginal(model, s, continuation=f) for s, f in zip(sents, flags)]
    with_p = beam_marginal(model, sents, 1, proposals=props, continuation=flags)
    beam = beam_marginal(model, sents, 1, continuation=flags)
    assert all(b - 1e-5 <= p <= e + 1e-4 for b, p, e in zip(beam, with_p, exact))
    complete = beam_marginal(model, sents, 4 ** 4, proposals=props, continuation=flags)
    assert complete == pytest.approx(exact, abs=1e-4)                        # a proposal the beam holds: once


def test_continuation_flags_are_checked():
    model = tiny("grammar", "joint")
    with pytest.raises(ValueError, match="continuation flags 0: 2 for a sentence of 3"):
        beam_marginal(model, [[2, 5, 6, 3]], 1, continuation=[[False, True]])
    with pytest.raises(ValueError, match="END, into EOS"):
        beam_marginal(model, [[2, 5, 6, 3]], 1, continuation=[[False, False, True]])
    word_model = LanguageModel(ModelConfig(pos="grammar", structure="joint", vocab_size=12, n_actions=3,
                                           action_names=NAMES[:2] + ["u0d1"], d_model=16, n_head=2, n_pos_head=1,
                                           d_ff=16, pos_dim=4))
    with pytest.raises(ValueError, match="include <continue>"):
        beam_marginal(word_model, [[2, 5, 6, 3]], 1, continuation=[[False, True, False]])


def _structured_subword_batch(g, B=64):
    """Words of 1 or 2 pieces; a word's first-piece move is u0d1 after an even piece, u1d0 after an odd one."""
    ids, acts = [], []
    for _ in range(B):
        pieces = torch.randint(1, 3, (3,), generator=g).tolist()
        toks = torch.randint(4, 8, (sum(pieces),), generator=g).tolist()
        body = [3] + [3 if toks[i - 1] % 2 == 0 else 4 for i in range(1, len(toks) + 1)] + [1]
        a = expand_for_subwords([3] + [body[sum(pieces[:w])] for w in range(1, len(pieces))] + [1], pieces, fill=CONT)
        ids.append(([2] + toks + [3], pieces))
        acts.append(a)
    return ids, acts


@pytest.mark.slow
def test_trained_subword_model_exact_le_beam_le_joint():
    model = tiny("grammar", "joint", seed=1).train()
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        rows, acts = _structured_subword_batch(g, B=32)
        batch = collate([{"ids": r, "actions": a, "n_words": len(k), "index": 0, "tree_parents": [-1],
                          "tree_actions": [0], "tree_branch": [0], "tok_nodes": [0] * len(r)}
                         for (r, k), a in zip(rows, acts)])
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    rows, gold = _structured_subword_batch(torch.Generator().manual_seed(5), B=4)
    flags = [continuation_flags(k) for _, k in rows]
    with torch.no_grad():
        joint = torch.tensor([-float((o.word_nll + o.action_nll)[0]) for o in
                              (model(torch.tensor([r]), torch.tensor([a])) for (r, _), a in zip(rows, gold))])
    exact = torch.tensor([exact_marginal(model, r, continuation=f) for (r, _), f in zip(rows, flags)])
    prev = None
    for K in (1, 5, 20):
        b = torch.tensor(beam_marginal(model, [r for r, _ in rows], K, continuation=flags))
        assert torch.all(b <= exact + 1e-4) and torch.all(b >= joint - 1e-4)
        if prev is not None:
            assert torch.all(b >= prev - 1e-4)
        prev = b
    n = sum(len(k) + 1 for _, k in rows)                                    # per word, not per piece
    ppl_of = lambda lp: math.exp(-float(lp.sum()) / n)                      # noqa: E731
    assert ppl_of(exact) <= ppl_of(prev) * (1 + 1e-6) and ppl_of(prev) <= ppl_of(joint) * (1 + 1e-6)
    assert ppl_of(joint) > ppl_of(exact) * (1 + 1e-4)                       # the gold path is not all the mass


def test_later_pieces_never_change_earlier_log_probabilities():
    model = tiny("grammar", "joint")
    ids = torch.tensor([[2, 4, 10, 11, 5, 6, 7, 3]])
    acts = torch.tensor([expand_for_subwords([3, 4, 3, 1], [2, 1, 3], fill=CONT)])
    logits, hb = model.logits(ids[:, :-1], acts)
    w_lp, a_lp = F.log_softmax(logits, -1), F.log_softmax(model.act_head(model.ln_a(hb)), -1)
    for t in range(1, 6):
        other_ids, other_acts = ids.clone(), acts.clone()
        other_ids[0, t + 1:-1] = 9                                           # other later pieces ...
        other_acts[0, t + 1:-1] = 3                                          # ... and other word boundaries
        logits2, hb2 = model.logits(other_ids[:, :-1], other_acts)
        assert torch.allclose(F.log_softmax(logits2, -1)[:, : t + 1], w_lp[:, : t + 1], atol=1e-5)
        assert torch.allclose(F.log_softmax(model.act_head(model.ln_a(hb2)), -1)[:, : t + 1], a_lp[:, : t + 1],
                              atol=1e-5)
        assert not torch.allclose(F.log_softmax(logits2, -1)[:, t + 1:], w_lp[:, t + 1:], atol=1e-5)   # teeth


# ----------------------------------------------------------------------------------------------------------------
# a tiny BPE run, end to end

@pytest.fixture(scope="module")
def bpe_run(toy_root, tmp_path_factory):
    from language.train import LanguageConfig, train
    run = tmp_path_factory.mktemp("bpe") / "g"
    cfg = load_config(LanguageConfig, None, tiny_overrides(toy_root, **{
        "data.vocab": "bpe", "data.vocab_size": 270, "model.pos": "grammar", "model.structure": "joint",
        "train.eval_every": 10, "eval.action_top": 3}))
    return run, train(cfg, run)


@pytest.mark.slow
def test_tiny_bpe_training_learns(bpe_run):
    run, summary = bpe_run
    curve = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in curve] == [10, 20, 30, 40]
    assert curve[-1]["dev"] < 0.2 * curve[0]["dev"] and summary["best_dev"] == min(r["dev"] for r in curve)
    assert vocab_kind(__import__("language.data", fromlist=["x"]).load_word_vocab(run / "words.json")) == "bpe"


@pytest.mark.slow
def test_reload_reproduces_the_scores_and_a_file_scores_without_oov(bpe_run, toy_root, capsys):
    from language.cli import main
    from language.study import evaluate_run
    run, summary = bpe_run
    res = evaluate_run(run, "dev", log=lambda *_: None)
    n, w, a = (np.array(res[k]) for k in ("n_tokens", "word_nll", "action_nll"))
    assert ppl(w + a, n) == pytest.approx(summary["best_dev"], rel=1e-5)   # the dev number training kept
    data = prepare(load_config(__import__("language.train", fromlist=["x"]).LanguageConfig,
                               run / "config.yaml").data, splits=("dev",), vocab_dir=run)
    assert n.tolist() == [k + 1 for k in data.splits["dev"]["n_words"]]
    assert (res["vocab"], res["unk_events"], res["unk_rate"]) == ("bpe", 0, 0.0) and res["events"] == n.sum()
    assert set(res["beam"]) == {"1", "5"} and ppl(np.array(res["beam"]["5"]), n) <= ppl(w + a, n) * 1.05
    gold = evaluate_run(run, "dev", force=True, log=lambda *_: None, overrides=["eval.proposals=gold",
                                                                                   "eval.beams=[1]"])
    assert np.all(np.array(gold["beam"]["1"]) <= w + a + 1e-4)       # the gold (canonical) path is a candidate
    assert np.any(np.array(gold["beam"]["1"]) < np.array(res["beam"]["1"]) - 1e-4)       # and it tightens K = 1
    dev_file = toy_root / "ud-english-ewt" / "en_ewt-ud-dev.conllu"               # the same sentences, as a file
    assert main(["evaluate", str(run), "--file", str(dev_file)]) == 0
    assert "  0.00  best bound" in capsys.readouterr().out                          # OOV 0.00 %
    f = json.loads((run / "files" / "en_ewt-ud-dev.conllu.json").read_text())
    assert f["oov_words"] == 0 and f["oov_rate"] == 0.0 and f["words"] == int(n.sum() - len(n))
    assert f["beam"] == res["beam"] and f["word_nll"] == pytest.approx(res["word_nll"], abs=1e-5)


@pytest.mark.slow
def test_export_of_a_bpe_run_writes_a_working_tokenizer(bpe_run, tmp_path):
    from transformers import AutoTokenizer

    from language import hf
    from language.data import load_word_vocab
    run, _ = bpe_run
    out = hf.export_run(run, tmp_path / "hf")
    tok = AutoTokenizer.from_pretrained(out)
    assert (tok.bos_token, tok.eos_token, tok.pad_token_id, tok.unk_token) == (BOS, EOS, 0, UNK)
    words = ["the", "dog", "sees", "Zürich"]
    ids = tok(words, is_split_into_words=True, add_special_tokens=False)["input_ids"]
    own, pieces = encode_pieces(load_word_vocab(run / "words.json"), words)
    assert ids == own[1:-1] and tok.unk_token_id not in ids and pieces[-1] > 1    # the run's own pieces
    assert tok.decode(ids[-pieces[-1]:]) == "Zürich"
    assert hf.AutoModelForCausalLM.from_pretrained(out).config.vocab_size == len(tok)


def test_empty_word_is_a_clear_error(toy_trees):
    tok = build_subword_vocab(toy_trees["train"], "bpe", 270)
    with pytest.raises(Exception, match="word 2 .''. encodes to no subword piece"):
        encode_pieces(tok, ["the", "", "dog"])
    t = Tree(["the", "dog"], [-1, 2, 0], ["ROOT", "det", "root"], [1, 2])
    assert expand_for_subwords(action_names(t, ACFG), encode_pieces(tok, t.words)[1])[-1] == END
