"""Agreement minimal pairs (language/minimal_pairs.py): the builder's known answers and skips, scoring equal to
score_dataset's NLLs, <unk> and conditional refusals, the CLI's pairs.json, the study hook and the report section."""
import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest

from lang_toydata import tiny_overrides
from language import minimal_pairs as mp
from language.cli import main

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "ud-english-ewt"
V3S = "Mood=Ind|Number=Sing|Person=3|Tense=Pres|VerbForm=Fin"
V3P = "Mood=Ind|Number=Plur|Person=3|Tense=Pres|VerbForm=Fin"


def conllu(*sentences) -> str:
    """Sentences of (form, lemma, upos, xpos, feats, head, deprel) rows, or raw lines (str: multiword ranges)."""
    out = []
    for s, rows in enumerate(sentences):
        out.append(f"# sent_id = s{s}")
        k = 0
        for r in rows:
            if isinstance(r, str):
                out.append(r)
                continue
            k += 1
            out.append("\t".join([str(k), *map(str, r), "_", "_"]))
        out.append("")
    return "\n".join(out) + "\n"


DT = ("the", "the", "DET", "DT", "Definite=Def|PronType=Art")
PUNCT = (".", ".", "PUNCT", ".", "_")

KEYS = [(*DT, 2, "det"), ("keys", "key", "NOUN", "NNS", "Number=Plur", 7, "nsubj"), ("to", "to", "ADP", "IN", "_", 5,
        "case"), (*DT, 5, "det"), ("cabinet", "cabinet", "NOUN", "NN", "Number=Sing", 2, "nmod"),
        ("are", "be", "AUX", "VBP", V3P, 7, "cop"), ("old", "old", "ADJ", "JJ", "Degree=Pos", 0, "root"),
        (*PUNCT, 7, "punct")]
SHE_WALKS = [("She", "she", "PRON", "PRP", "Case=Nom|Gender=Fem|Number=Sing|Person=3|PronType=Prs", 2, "nsubj"),
             ("walks", "walk", "VERB", "VBZ", V3S, 0, "root"), (*PUNCT, 2, "punct")]
DOES_HE = [("Does", "do", "AUX", "VBZ", V3S, 3, "aux"),
           ("he", "he", "PRON", "PRP", "Case=Nom|Gender=Masc|Number=Sing|Person=3|PronType=Prs", 3, "nsubj"),
           ("know", "know", "VERB", "VB", "VerbForm=Inf", 0, "root"), ("?", "?", "PUNCT", ".", "_", 3, "punct")]
SKIPPED = {  # reason -> a sentence that must give no pair for that reason
    "1st/2nd person subject": [("I", "I", "PRON", "PRP", "Case=Nom|Number=Sing|Person=1|PronType=Prs", 2, "nsubj"),
                               ("am", "be", "AUX", "VBP", "Mood=Ind|Number=Sing|Person=1|Tense=Pres|VerbForm=Fin", 3,
                                "cop"), ("old", "old", "ADJ", "JJ", "_", 0, "root")],
    "coordinated subject": [("John", "John", "PROPN", "NNP", "Number=Sing", 4, "nsubj"),
                            ("and", "and", "CCONJ", "CC", "_", 3, "cc"),
                            ("Mary", "Mary", "PROPN", "NNP", "Number=Sing", 1, "conj"),
                            ("are", "be", "AUX", "VBP", V3P, 5, "cop"), ("old", "old", "ADJ", "JJ", "_", 0, "root")],
    "no present (or be past) finite verb": [
        ("She", "she", "PRON", "PRP", "Number=Sing|Person=3|PronType=Prs", 2, "nsubj"),
        ("walked", "walk", "VERB", "VBD", "Mood=Ind|Number=Sing|Person=3|Tense=Past|VerbForm=Fin", 0, "root")],
    "flipped form not in the train lexicon": [("It", "it", "PRON", "PRP", "Number=Sing|Person=3|PronType=Prs", 2,
                                               "nsubj"), ("jumps", "jump", "VERB", "VBZ", V3S, 0, "root")],
    "flipped form ambiguous in the train lexicon": [("It", "it", "PRON", "PRP", "Number=Sing|Person=3|PronType=Prs",
                                                     2, "nsubj"), ("runs", "run", "VERB", "VBZ", V3S, 0, "root")],
    "verb does not agree in the treebank": [(*DT, 2, "det"), ("team", "team", "NOUN", "NN", "Number=Sing", 4,
                                             "nsubj"), ("are", "be", "AUX", "VBP", V3P, 4, "cop"),
                                            ("good", "good", "ADJ", "JJ", "_", 0, "root")],
    "subject number unmarked": [("Who", "who", "PRON", "WP", "PronType=Int", 2, "nsubj"),
                                ("knows", "know", "VERB", "VBZ", V3S, 0, "root")],
}
MULTIWORD = ["1-2\tdoesn't\t_\t_\t_\t_\t_\t_\t_\t_",
             ("does", "do", "AUX", "VBZ", V3S, 3, "aux"), ("n't", "not", "PART", "RB", "_", 3, "advmod"),
             ("work", "work", "VERB", "VB", "VerbForm=Inf", 0, "root")]
LEXICON = [[("They", "they", "PRON", "PRP", "Number=Plur|Person=3", 2, "nsubj"), ("walk", "walk", "VERB", "VBP", V3P,
            0, "root")],
           [("They", "they", "PRON", "PRP", "Number=Plur|Person=3", 2, "nsubj"), ("run", "run", "VERB", "VBP", V3P,
            0, "root")],
           [("They", "they", "PRON", "PRP", "Number=Plur|Person=3", 2, "nsubj"), ("rnu", "run", "VERB", "VBP", V3P,
            0, "root")],
           [("They", "they", "PRON", "PRP", "Number=Plur|Person=3", 2, "nsubj"), ("jmup", "jump", "VERB", "VBP",
            V3P + "|Typo=Yes", 0, "root")]]          # a typo is not a form: 'jump' has no VBP form in the lexicon


def test_builder_gives_exactly_the_expected_pairs_and_counts_every_skip(tmp_path):
    test, train = tmp_path / "test.conllu", tmp_path / "train.conllu"
    test.write_text(conllu(KEYS, SHE_WALKS, MULTIWORD, DOES_HE, *SKIPPED.values()))
    train.write_text(conllu(*LEXICON))
    pairs, stats = mp.build_pairs(test, mp.read_lexicon(train))
    got = [(p.words[p.index], p.good, p.bad, p.category, p.attractor, p.subject, p.number, p.index) for p in pairs]
    assert got == [("are", "are", "is", "be", True, 1, "Plur", 5),          # 'cabinet' (Sing) intervenes
                   ("walks", "walks", "walk", "lexical", False, 0, "Sing", 1),
                   ("Does", "Does", "Do", "have/do", False, 1, "Sing", 0)]   # the aux of a non-finite head; case kept
    assert pairs[0].words == ["the", "keys", "to", "the", "cabinet", "are", "old", "."]
    assert pairs[0].bad_words() == ["the", "keys", "to", "the", "cabinet", "is", "old", "."]
    assert pairs[0].id == f"{test}:7" and pairs[0].sentence == f"{test}:1"         # the verb's line, the sentence's
    assert pairs[0].heads == [2, 7, 5, 5, 2, 7, 0, 7] and pairs[0].deprels[1] == "nsubj"
    assert stats.skipped_sentences == {"multiword token": 1}
    assert dict(stats.skipped) == {reason: 1 for reason in SKIPPED}
    assert stats.pairs == 3 and stats.subjects == 3 + len(SKIPPED)
    assert dict(stats.categories) == {"be": 1, "lexical": 1, "have/do": 1, "attractor": 1}
    # the frequency baseline: right only where the grammatical form is the commoner one (here: rarer, or tied)
    base = mp.frequency_baseline(pairs, {"are": 1, "is": 5, "walks": 1, "walk": 3, "does": 2, "do": 2})
    assert base["scored"] == 3 and base["accuracy"] == pytest.approx(0 / 3)
    assert base["by_category"]["lexical"] == {"n": 1, "correct": 0, "accuracy": 0.0}
    base = mp.frequency_baseline(pairs, {"are": 6, "is": 5, "walks": 4, "walk": 3, "does": 3, "do": 2})
    assert base["accuracy"] == 1.0 and base["by_category"]["attractor"]["n"] == 1


def test_the_pair_keeps_the_tree_the_project_reader_builds(tmp_path):
    from language.trees import read_conllu
    test = tmp_path / "t.conllu"
    test.write_text(conllu(KEYS))
    (pair,), _ = mp.build_pairs(test, {})
    good, bad = mp.pair_trees(pair)
    (tree,), _ = read_conllu(test)
    assert (good.words, good.parents, good.labels, good.word_nodes) == (tree.words, tree.parents, tree.labels,
                                                                      tree.word_nodes)
    assert (bad.parents, bad.labels) == (tree.parents, tree.labels)
    assert [i for i, (a, b) in enumerate(zip(good.words, bad.words)) if a != b] == [pair.index]


def test_bad_feats_name_the_file_and_line(tmp_path):
    from language.trees import TreebankError
    bad = tmp_path / "bad.conllu"
    bad.write_text("1\tdogs\tdog\tNOUN\tNNS\tNumberPlur\t0\troot\t_\t_\n")
    with pytest.raises(TreebankError, match=f"{bad}:1: FEATS 'NumberPlur'"):
        mp.build_pairs(bad, {})


# ----------------------------------------------------------------------------------------------------------------
# a toy treebank with agreement (UD EWT file names, so the default file is its test split) and two tiny runs

SING = {"dog": "dogs", "cat": "cats", "bird": "birds"}
LEX = {"see": ("sees", "see"), "like": ("likes", "like")}


def agreement_sentence(rng: random.Random) -> list:
    number = rng.choice(["Sing", "Plur"])
    noun = rng.choice(list(SING))
    subj = ("the", "the", "DET", "DT", "_", 2, "det"), \
        (noun if number == "Sing" else SING[noun], noun, "NOUN", "NN" if number == "Sing" else "NNS",
         f"Number={number}", None, "nsubj")
    feats = V3S if number == "Sing" else V3P
    xpos = "VBZ" if number == "Sing" else "VBP"
    if rng.random() < 0.4:                                   # the dog is big .
        rows = [subj[0], subj[1][:5] + (4, "nsubj"), ("is" if number == "Sing" else "are", "be", "AUX", xpos, feats,
                4, "cop"), (rng.choice(["big", "small"]), "big", "ADJ", "JJ", "_", 0, "root"), (*PUNCT, 4, "punct")]
    else:                                                    # the dog sees the cat .
        lemma = rng.choice(list(LEX))
        obj = rng.choice(list(SING))
        rows = [subj[0], subj[1][:5] + (3, "nsubj"), (LEX[lemma][number == "Plur"], lemma, "VERB", xpos, feats, 0,
                "root"), ("the", "the", "DET", "DT", "_", 5, "det"), (obj, obj, "NOUN", "NN", "Number=Sing", 3, "obj"),
                (*PUNCT, 3, "punct")]
    return rows


@pytest.fixture(scope="module")
def agreement_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("agreement")
    d = root / "ud-english-ewt"
    d.mkdir()
    rng = random.Random(0)
    for split, n in (("train", 200), ("dev", 30), ("test", 30)):
        (d / f"en_ewt-ud-{split}.conllu").write_text(conllu(*(agreement_sentence(rng) for _ in range(n))))
    return root


@pytest.fixture(scope="module")
def runs(agreement_root, tmp_path_factory):
    """A sinusoidal (exact) and a grammar (beam) run, two training steps each: the scoring path, not accuracy."""
    from temt_core.config import load_config
    from language.train import LanguageConfig, train
    out = {}
    for pos, structure in (("sinusoidal", "none"), ("grammar", "joint")):
        run = tmp_path_factory.mktemp("runs") / pos
        cfg = load_config(LanguageConfig, None, tiny_overrides(agreement_root, **{
            "train.steps": 2, "train.eval_every": 2, "model.pos": pos, "model.structure": structure}))
        train(cfg, run)
        out[pos] = run
    return out


def _loaded(run):
    from language.actions import ActionVocab
    from language.data import load_word_vocab
    from language.train import load_run_config, load_trained
    return (load_trained(run), load_run_config(run), load_word_vocab(run / "words.json"),
            ActionVocab.load(run / "actions.json"), ActionVocab.load(run / "tree_labels.json"))


@pytest.mark.parametrize("pos", ["sinusoidal", "grammar"])
def test_pair_scores_are_score_datasets_nlls(runs, agreement_root, pos):
    from language.data import encode_split
    from language.scoring import score_dataset
    model, cfg, words, actions, tree_vocab = _loaded(runs[pos])
    d = agreement_root / "ud-english-ewt"
    pairs, stats = mp.build_pairs(d / "en_ewt-ud-test.conllu", mp.read_lexicon(d / "en_ewt-ud-train.conllu"))
    assert stats.pairs == 30 and not stats.skipped                 # every toy sentence is one pair
    res = mp.score_pairs(model, cfg, words, actions, tree_vocab, pairs, K=3, log=lambda *_: None)
    # the same sentences scored on their own: grammatical ones, then the flipped ones, as two separate datasets
    one = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, beams=(3,), beam_until=0.0))
    nll = {}
    for side in (0, 1):
        ds = encode_split([mp.pair_trees(p)[side] for p in pairs], words, actions, cfg.data.actions, tree_vocab,
                          cfg.data.transform, cfg.train.seed)
        r = score_dataset(model, one, ds, actions, "cpu", log=lambda *_: None)
        nll[side] = np.array(r["beam"]["3"] if pos == "grammar" else r["word_nll"])
    assert res["metric"] == ("beam" if pos == "grammar" else "exact") and res["scored"] == 30
    np.testing.assert_allclose([r["nll_good"] for r in res["pairs"]], nll[0], rtol=1e-5)
    np.testing.assert_allclose([r["nll_bad"] for r in res["pairs"]], nll[1], rtol=1e-5)
    assert [r["correct"] for r in res["pairs"]] == list(nll[0] < nll[1])
    assert res["correct"] == int(np.sum(nll[0] < nll[1]))
    # the direction: swapping the two forms of every pair flips every verdict (no ties here)
    swapped = [dataclasses.replace(p, words=p.bad_words(), good=p.bad, bad=p.good) for p in pairs]
    rev = mp.score_pairs(model, cfg, words, actions, tree_vocab, swapped, K=3, log=lambda *_: None)
    assert res["ties"] == 0 and [not r["correct"] for r in rev["pairs"]] == [r["correct"] for r in res["pairs"]]


def test_unk_forms_are_skipped_and_counted(runs, agreement_root, tmp_path):
    from language.data import load_word_vocab
    words = load_word_vocab(runs["sinusoidal"] / "words.json")
    assert words.token_to_id("zebras") is None
    test = tmp_path / "t.conllu"
    plural = [("the", "the", "DET", "DT", "_", 2, "det"), ("zebras", "zebra", "NOUN", "NNS", "Number=Plur", 4, "nsubj"),
              ("are", "be", "AUX", "VBP", V3P, 4, "cop"), ("big", "big", "ADJ", "JJ", "_", 0, "root")]
    gallops = [("the", "the", "DET", "DT", "_", 2, "det"), ("dog", "dog", "NOUN", "NN", "Number=Sing", 3, "nsubj"),
               ("gallops", "gallop", "VERB", "VBZ", V3S, 0, "root")]
    test.write_text(conllu(plural, gallops, *(agreement_sentence(random.Random(s)) for s in range(3))))
    lexicon = tmp_path / "lex.conllu"
    lexicon.write_text((agreement_root / "ud-english-ewt" / "en_ewt-ud-train.conllu").read_text() + conllu(
        [("they", "they", "PRON", "PRP", "Number=Plur|Person=3", 2, "nsubj"),
         ("gallop", "gallop", "VERB", "VBP", V3P, 0, "root")]))
    pairs, _ = mp.build_pairs(test, mp.read_lexicon(lexicon))
    assert len(pairs) == 5
    kept, skipped = mp.select(pairs, words, max_words=0, limit=0)
    # 'gallops' / 'gallop' are <unk>; 'zebras' is too, but only the verb's forms decide (are / is are known)
    assert skipped == {"<unk> verb form": 1} and len(kept) == 4 and kept[0].good == "are"
    kept, skipped = mp.select(pairs, words, max_words=4, limit=1)
    assert skipped == {"<unk> verb form": 1, "longer than data.max_words": 3} and kept[0].words[1] == "zebras"
    kept, skipped = mp.select(pairs, words, max_words=0, limit=2)
    assert skipped == {"<unk> verb form": 1, "over the limit": 2} and len(kept) == 2
    res = mp.score_run(runs["sinusoidal"], file=test, lexicon=lexicon, log=lambda *_: None)
    assert res["skipped"] == {"<unk> verb form": 1} and res["scored"] == 4
    assert (runs["sinusoidal"] / "files" / "t.conllu.pairs.json").is_file()


def test_conditional_arms_are_refused_and_every_lm_arm_has_a_metric():
    from temt_core.config import ConfigError
    from language.arms import ARMS, metric_kind
    from language.study import arm_config
    from language.train import LanguageConfig
    for arm in ARMS.values():
        cfg = arm_config(LanguageConfig(), arm, 0)
        if arm.table == "conditional":
            with pytest.raises(ConfigError, match="conditional diagnostic, not a language model"):
                mp.pairs_metric(cfg, arm.name)
        else:
            assert mp.pairs_metric(cfg) == {"exact": "exact", "joint": "beam"}[metric_kind(arm)], arm.name


def test_cli_writes_pairs_json_once_and_refuses_the_train_split(runs, agreement_root, capsys):
    assert main(["pairs", str(runs["sinusoidal"]), str(runs["grammar"]), "--limit", "10", "--beam", "2"]) == 0
    out = capsys.readouterr().out
    assert "30 agreement pairs built; chance 50%" in out and "beam 2" in out and "exact" in out
    res = json.loads((runs["grammar"] / "pairs.json").read_text())
    assert res["scored"] == 10 and res["K"] == 2 and res["skipped"] == {"over the limit": 20}
    assert res["by_category"]["be"]["n"] + res["by_category"]["lexical"]["n"] == 10
    assert main(["pairs", str(runs["sinusoidal"])]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["pairs", str(runs["sinusoidal"]), "--force", "--limit", "0"]) == 0
    assert json.loads((runs["sinusoidal"] / "pairs.json").read_text())["scored"] == 30
    train = agreement_root / "ud-english-ewt" / "en_ewt-ud-train.conllu"
    assert main(["pairs", str(runs["sinusoidal"]), "--file", str(train)]) == 2
    assert "the training split" in capsys.readouterr().err


@pytest.mark.slow                                          # three small studies: about 11 s on a loaded 2-core CPU
def test_study_scores_pairs_once_unless_turned_off(agreement_root, tmp_path, monkeypatch):
    from temt_core.config import load_config
    import language.study as study
    from language.train import LanguageConfig
    over = tiny_overrides(agreement_root, **{"train.steps": 2, "train.eval_every": 2, "eval.beams": [1]})
    out = tmp_path / "s"
    base = load_config(LanguageConfig, None, over + ["eval.pairs=0"])
    study.run_study(base, out, ["sinusoidal", "grammar_tree"], [0], tmp_path / "r.md", log=lambda *_: None)
    assert not (out / "sinusoidal" / "seed0" / "pairs.json").exists()
    assert "## Agreement minimal pairs" not in (tmp_path / "r.md").read_text()      # runs without pairs.json
    calls = []
    real = study._score_pairs
    monkeypatch.setattr(study, "_score_pairs", lambda *a, **k: (calls.append(a[0]), real(*a, **k)))
    base = load_config(LanguageConfig, None, over + ["eval.pairs=12", "eval.pairs_beam=2"])
    for _ in range(2):
        study.run_study(base, out, ["sinusoidal", "grammar_tree"], [0], tmp_path / "r.md", log=lambda *_: None)
    assert calls == [out / "sinusoidal" / "seed0"]             # once, and never for the conditional arm
    assert json.loads((out / "sinusoidal" / "seed0" / "pairs.json").read_text())["scored"] == 12
    text = (tmp_path / "r.md").read_text()
    assert "## Agreement minimal pairs" in text and "| sinusoidal | exact | 12 |" in text
    assert "| grammar_tree |" not in text.split("## Agreement minimal pairs")[1].split("\n## ")[0]


# ----------------------------------------------------------------------------------------------------------------
# the report

def _pairs_json(correct: list[bool], metric="exact") -> dict:
    rows = [{"id": f"f:{i}", "category": "be" if i % 2 else "lexical", "attractor": i % 3 == 0, "good": "is",
             "bad": "are", "nll_good": 1.0, "nll_bad": 2.0, "correct": c} for i, c in enumerate(correct)]
    return {"metric": metric, "K": 20 if metric == "beam" else None, "action_top": 4 if metric == "beam" else None,
            "scored": len(rows), "accuracy": float(np.mean(correct)), "by_category": mp.by_category(rows),
            "file": "x/en_ewt-ud-test.conllu", "built": {"pairs": 50}, "skipped": {"<unk> verb form": 10},
            "frequency_baseline": mp.frequency_baseline([], {}) | {"scored": 40, "accuracy": 0.6}, "pairs": rows}


def _results() -> dict:
    """A study's results (as report.collect gives them) with a grammar and a sinusoidal arm, no pairs."""
    nll = np.random.default_rng(0).uniform(5, 15, size=40)

    def arm(kind, v):
        key = "exact" if kind == "exact" else "best"
        ppl = {key: {"mean": 10.0, "sd": 0.5, "seeds": [10.0]}}
        if kind == "joint":
            ppl["joint"] = ppl["conditional"] = {"mean": 11.0, "sd": 0.5, "seeds": [11.0]}
        return {"what": kind, "kind": kind, "params": 1000, "ppl": ppl, "sentence_nll_mean": {key: v.tolist()},
                "n_tokens": [5] * len(v), "train": {}, "curves": {}, "unseen_actions": [0], "overflow_actions": [0],
                "actions_total": [0]}
    return {"seeds": [0], "arms": {"grammar": arm("joint", nll), "sinusoidal": arm("exact", nll + 1.0)}}


def test_report_section_renders_with_and_without_pairs(tmp_path):
    import language.report as report
    from language.train import EvalConfig, LanguageConfig
    cfg = LanguageConfig(eval=EvalConfig(beams=(1,), bootstrap=200))
    res = _results()
    text = report.write_report(res, cfg, tmp_path / "old.md", tmp_path).read_text()
    assert "Agreement minimal pairs" not in text                 # old runs: no pairs.json, no section, no error
    good = [True] * 40
    res["arms"]["grammar"]["pairs"] = report.pairs_summary({0: _pairs_json(good, "beam"), 1: _pairs_json(good,
                                                                                                          "beam")})
    res["arms"]["sinusoidal"]["pairs"] = report.pairs_summary({0: _pairs_json([i % 2 == 0 for i in range(40)])})
    text = report.write_report(res, cfg, tmp_path / "new.md", tmp_path).read_text()
    section = text.split("## Agreement minimal pairs")[1].split("\n## ")[0]
    assert ("| grammar | beam K=20, top 4 actions | 40 | 100.0 ± 0.0 | 100.0 ± 0.0 (20) | - (0) | 100.0 ± 0.0 (20) "
            "| 100.0 ± 0.0 (14) |") in section
    # sinusoidal is right on the even ids: every lexical pair, no be pair, 7 of the 14 attractor pairs
    assert ("| sinusoidal | exact | 40 | 50.0 ± 0.0 | 0.0 ± 0.0 (20) | - (0) | 100.0 ± 0.0 (20) "
            "| 50.0 ± 0.0 (14) |") in section
    assert "| *train frequency* | no model: the form more frequent in the training split | 40 | 60.0 | - (0) |" \
        in section
    assert "difference +50.0 points" in section and "Chance: 50.0" in section and "approximation" in section
    assert text.index("## Agreement minimal pairs") < text.index("## Leak and sanity checks")


def test_pairs_bootstrap_known_answers():
    from language.report import pairs_bootstrap
    rng = np.random.default_rng(1)
    a = rng.random((3, 200)) < 0.7
    same = pairs_bootstrap(a, a, n_boot=300)
    assert same["diff"] == 0 and same["p_a_not_better"] > 0.3 and same["diff_ci95"][0] < 0 < same["diff_ci95"][1]
    always = pairs_bootstrap(np.ones((2, 50)), np.zeros((3, 50)), n_boot=100)
    assert always["diff"] == 1 and always["diff_ci95"] == [1.0, 1.0] and always["p_a_not_better"] == 0
    b = rng.random((3, 200)) < 0.4
    c = pairs_bootstrap(a, b, n_boot=500)
    assert c["diff"] == pytest.approx(a.mean() - b.mean()) and c["diff_ci95"][0] > 0 and c["p_a_not_better"] < 0.01
    with pytest.raises(ValueError, match="same pairs"):
        pairs_bootstrap(a, b[:, :10])


@pytest.mark.skipif(not (DATA / "en_ewt-ud-test.conllu").is_file(), reason="UD EWT not in ../shared/data")
def test_ud_ewt_test_split_gives_a_few_hundred_pairs(capsys):
    lexicon = mp.read_lexicon(DATA / "en_ewt-ud-train.conllu")
    pairs, stats = mp.build_pairs(DATA / "en_ewt-ud-test.conllu", lexicon)
    with capsys.disabled():
        print(f"\nUD EWT test: {stats.pairs} pairs {dict(stats.categories)}; skipped {dict(stats.skipped)}; "
              f"sentences skipped {dict(stats.skipped_sentences)}")
    assert 300 <= stats.pairs <= 1500
    assert all(stats.categories[c] >= 10 for c in mp.CATEGORIES)
    assert all(p.good != p.bad and p.words[p.index] == p.good for p in pairs)
    assert len({p.id for p in pairs}) == len(pairs)
    flips = {(p.good.lower(), p.bad.lower()) for p in pairs if p.category == "be"}
    assert flips <= {("is", "are"), ("are", "is"), ("was", "were"), ("were", "was"), ("'s", "'re"), ("'re", "'s"),
                     ("’s", "’re"), ("’re", "’s")}
