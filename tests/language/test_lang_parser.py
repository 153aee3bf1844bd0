"""A UD-label dependency parser trained offline with spaCy's own training (language/parser.py), then used on raw
text: it learns the toy grammar, and its parses become the project's trees with the treebank's own labels."""
import json
import random

import pytest

from lang_toydata import tiny_overrides, toy_sentence
from language.cli import main
from language.trees import from_spacy, load_spacy
from temt_core.config import ConfigError

TOY_LABELS = {"det", "amod", "nsubj", "root", "obj", "punct"}


@pytest.mark.slow
def test_parser_trains_offline_and_parses_raw_text_with_ud_labels(toy_root, tmp_path, capsys):
    ewt = toy_root / "ud-english-ewt"
    out = tmp_path / "parser"
    assert main(["parser", "--out", str(out), "--train", str(ewt / "en_ewt-ud-train.conllu"), "--dev",
                 str(ewt / "en_ewt-ud-dev.conllu"), "--steps", "60"]) == 0
    assert "saved" in capsys.readouterr().out
    meta = json.loads((out / "model-best" / "meta.json").read_text())
    assert meta["performance"]["dep_uas"] > 0.9                 # the toy grammar is learnt (0.2 untrained)
    nlp = load_spacy(str(out / "model-best"))
    (tree,) = from_spacy(nlp("the big dog sees a cat ."))
    assert tree.words == ["the", "big", "dog", "sees", "a", "cat", "."]
    assert set(tree.labels[1:]) <= TOY_LABELS and tree.labels[tree.parents.index(0)] == "root"
    assert main(["parser", "--out", str(out), "--train", str(ewt / "en_ewt-ud-train.conllu"), "--dev",
                 str(ewt / "en_ewt-ud-dev.conllu")]) == 2
    assert "exists: choose another --out" in capsys.readouterr().err
    # raw text end to end: a model trained on text parsed on the fly, then a raw file scored
    raw = tmp_path / "raw"
    raw.mkdir()
    rng = random.Random(1)
    for split, n in (("train", 120), ("dev", 20), ("test", 20)):
        (raw / f"{split}.txt").write_text("\n".join(" ".join(toy_sentence(rng)[0]) for _ in range(n)) + "\n")
    overrides = tiny_overrides(raw, **{"data.corpus": "raw", "data.parser": str(out / "model-best"),
                                       "model.pos": "grammar", "model.structure": "joint", "train.steps": 10,
                                       "train.eval_every": 10, "eval.beams": [1]})
    assert main(["train", "--out", str(tmp_path / "lm")] + overrides) == 0
    saved = json.loads((tmp_path / "lm" / "actions.json").read_text())["names"]
    assert any(n.endswith(":nsubj") or "nsubj" in n for n in saved) or len(saved) > 3   # actions from the parses
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "lm"), "--file", str(raw / "test.txt")]) == 0
    assert "test.txt: 20 sentences" in capsys.readouterr().out
    res = json.loads((tmp_path / "lm" / "files" / "test.txt.json").read_text())
    assert res["format"] == "text" and res["metric"] == "best bound" and res["oov_rate"] == 0
    # the parser's parses as proposals: a bound at least as tight as the beam's alone, sentence by sentence
    assert main(["evaluate", str(tmp_path / "lm"), "--file", str(raw / "test.txt"), "--set",
                 "eval.proposals=parser"]) == 0
    with_parses = json.loads((tmp_path / "lm" / "files" / "test.txt.json").read_text())
    assert with_parses["proposals"] == "parser"
    assert all(p <= b + 1e-5 for p, b in zip(with_parses["beam"]["1"], res["beam"]["1"]))
    # the cheap form on a scored split: the parses' own bound added to test.json, the beams untouched
    assert main(["evaluate", str(tmp_path / "lm")]) == 0
    before = json.loads((tmp_path / "lm" / "test.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "lm"), "--proposal-bound", "--parser", str(out / "model-best")]) == 0
    assert "best bound" in capsys.readouterr().out
    after = json.loads((tmp_path / "lm" / "test.json").read_text())
    assert after["beam"] == before["beam"] and after["proposal_source"].startswith("parser")
    assert len(after["proposal_nll"]) == len(before["word_nll"]) and None not in after["proposal_nll"]
    assert main(["evaluate", str(tmp_path / "lm"), "--proposal-bound"]) == 2            # no --parser: named
    assert "--proposal-bound needs --parser" in capsys.readouterr().err


def test_parser_input_errors_are_named(tmp_path):
    from language.parser import build_parser
    with pytest.raises(ConfigError, match="parser --train: .*nope.conllu does not exist"):
        build_parser(tmp_path / "p", tmp_path / "nope.conllu", tmp_path / "nope.conllu")
    (tmp_path / "empty.conllu").write_text("")
    with pytest.raises(ConfigError, match="empty.conllu: no sentences to train a parser on"):
        build_parser(tmp_path / "p", tmp_path / "empty.conllu", tmp_path / "empty.conllu", steps=5)


def _untrained_parser(toy_root):
    """A spaCy parser initialised on the toy treebank's labels but not trained: its parses are arbitrary, which is
    when a pipeline is most likely to split a line into sentences of its own."""
    import spacy
    from spacy.training import Example
    from spacy.training.converters import conllu_to_docs
    nlp = spacy.blank("en")
    nlp.add_pipe("parser")
    text = (toy_root / "ud-english-ewt" / "en_ewt-ud-train.conllu").read_text()
    docs = list(conllu_to_docs(text, n_sents=1, no_print=True))[:50]
    nlp.initialize(lambda: [Example(nlp.make_doc(d.text), d) for d in docs])
    return nlp


def test_raw_tokens_format_keeps_the_words_and_one_sentence_per_line(toy_root, tmp_path):
    from language.data import DataConfig, read_text
    nlp = _untrained_parser(toy_root)
    lines = ["the dog sees a cat . the cat eats", "U.S. e-mail do n't ( x ) !", "a"]
    path = tmp_path / "t.txt"
    path.write_text(lines[0] + "\n\n  " + lines[1] + "  \n" + lines[2] + "\n")
    trees, stats = read_text(path, nlp, "tokens")
    assert [t.words for t in trees] == [line.split() for line in lines]          # spaCy's tokenizer bypassed
    assert stats.sentences == 3 and stats.words == sum(len(line.split()) for line in lines)
    assert all(t.parents.count(0) == 1 for t in trees)                            # one root per line
    text_words = [w for t in read_text(path, nlp, "text")[0] for w in t.words]    # the default re-tokenises:
    assert "e-mail" not in text_words and ["e", "-", "mail"] == text_words[10:13]  # spaCy splits the hyphen
    with pytest.raises(ValueError, match="raw_format must be one of text, tokens"):
        read_text(path, nlp, "words")
    with pytest.raises(ValueError, match="raw_format must be one of text, tokens, got 'Tokens'"):
        DataConfig(corpus="raw", parser="p", raw_format="Tokens")
