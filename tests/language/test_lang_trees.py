"""Treebank readers: CoNLL-U, PTB brackets (nltk parses; files and the zip), spaCy Docs; bad input names file and
line."""
import hashlib
import json
import zipfile

import nltk
import pytest
import spacy
from spacy.tokens import Doc

from language.data import DataConfig, data_root
from language.trees import (ReadStats, TreebankError, check_acyclic, from_nltk, from_spacy, iter_brackets,
                            iter_conllu, read_brackets, read_conllu, read_ptb_zip, strip_function_tags)

CONLLU = """# sent_id = a
# text = I can't go.
1\tI\tI\tPRON\tPRP\t_\t4\tnsubj\t_\t_
2-3\tcan't\t_\t_\t_\t_\t_\t_\t_\t_
2\tca\tcan\tAUX\tMD\t_\t4\taux\t_\t_
3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t_\t_
4\tgo\tgo\tVERB\tVB\t_\t0\troot\t_\t_
4.1\tgone\tgo\tVERB\tVB\t_\t_\t_\t4:conj\t_
5\t.\t.\tPUNCT\t.\t_\t4\tpunct\t_\t_

1\tYes\tyes\tINTJ\tUH\t_\t0\troot\t_\t_
"""


def test_conllu_skips_multiword_ranges_and_empty_nodes(tmp_path):
    path = tmp_path / "a.conllu"
    path.write_text(CONLLU)
    trees, stats = read_conllu(path)
    assert [t.words for t in trees] == [["I", "ca", "n't", "go", "."], ["Yes"]]
    assert trees[0].parents == [-1, 4, 4, 4, 0, 4]
    assert trees[0].labels[1:] == ["nsubj", "aux", "advmod", "root", "punct"]
    assert trees[0].word_nodes == [1, 2, 3, 4, 5]
    assert (stats.sentences, stats.words, stats.multiword_ranges, stats.empty_nodes) == (2, 6, 1, 1)
    assert trees[0].source.endswith("a.conllu:1") and trees[1].source.endswith("a.conllu:11")
    assert trees[0].depths() == [0, 2, 2, 2, 1, 2]


@pytest.mark.parametrize("bad, message", [
    ("1\tI\tI\tPRON\tPRP\t_\t2\tnsubj\t_\n", "x.conllu:2: expected 10 tab-separated columns, got 9"),
    ("1\tI\tI\tPRON\tPRP\t_\tX\tnsubj\t_\t_\n", "x.conllu:2: HEAD 'X' is not a non-negative integer"),
    ("3\tI\tI\tPRON\tPRP\t_\t0\troot\t_\t_\n", "x.conllu:2: ID '3' out of sequence (expected 1)"),
    ("1\tI\tI\tPRON\tPRP\t_\t5\troot\t_\t_\n", "x.conllu:1: word 1 has HEAD 5 but the sentence has 1 words"),
    ("1\tI\tI\tPRON\tPRP\t_\t2\tnsubj\t_\t_\n2\tgo\tgo\tVERB\tVB\t_\t1\tx\t_\t_\n",
     "x.conllu:1: cycle in heads: 1 -> 2 -> 1"),
    ("1\tI\tI\tPRON\tPRP\t_\t1\troot\t_\t_\n", "x.conllu:1: word 1 is its own head"),
])
def test_conllu_errors_name_file_and_line(bad, message):
    lines = ("# comment\n" + bad if "expected 10" in message or "not a non-negative" in message
             or "out of sequence" in message else bad).splitlines(True)
    with pytest.raises(TreebankError) as err:
        list(iter_conllu(lines, "x.conllu"))
    assert message in str(err.value)


def test_conllu_skip_and_count_only_when_asked(tmp_path):
    text = CONLLU + "\n# only a comment\n\n1\tA\ta\tX\tX\t_\tQ\tdep\t_\t_\n\n1\tB\tb\tX\tX\t_\t0\troot\t_\t_\n"
    path = tmp_path / "b.conllu"
    path.write_text(text)
    with pytest.raises(TreebankError, match="empty sentence"):
        read_conllu(path)
    trees, stats = read_conllu(path, on_error="skip")
    assert [t.words for t in trees][-1] == ["B"]
    assert stats.skipped == 2 and len(stats.errors) == 2 and "b.conllu" in stats.errors[0]
    with pytest.raises(ValueError, match="on_error"):
        read_conllu(path, on_error="ignore")
    with pytest.raises(FileNotFoundError, match="TEMT_DATA"):
        read_conllu(tmp_path / "missing.conllu")


def test_check_acyclic_names_the_cycle():
    check_acyclic([-1, 0, 1, 1], "t")
    with pytest.raises(TreebankError, match="cycle in heads: 2 -> 3 -> 2"):
        check_acyclic([-1, 0, 3, 2], "t")


PTB = """( (S
    (NP-SBJ-1 (DT The) (NN dog) )
    (VP (VBD barked)
      (NP (-NONE- *-1) ))
    (. .) ))
( (S (NP-SBJ (PRP It)) (VP (VBD ran)) (. .)) )
"""


def test_brackets_strip_traces_function_tags_and_empty_constituents(tmp_path):
    path = tmp_path / "t.mrg"
    path.write_text(PTB)
    trees, stats = read_brackets(path)
    t = trees[0]
    assert t.words == ["The", "dog", "barked", "."]
    assert t.labels == ["ROOT", "S", "NP", "DT", "NN", "VP", "VBD", "."]
    assert t.parents == [-1, 0, 1, 2, 2, 1, 5, 1]
    assert t.word_nodes == [3, 4, 6, 7]
    assert (stats.traces, stats.empty_constituents, stats.sentences) == (1, 1, 2)
    assert trees[1].words == ["It", "ran", "."] and trees[1].source.endswith("t.mrg:6")
    assert strip_function_tags("NP-SBJ-1") == "NP" and strip_function_tags("NP=2") == "NP"
    assert strip_function_tags("-LRB-") == "-LRB-"


def test_brackets_one_tree_per_line_labelled_top():
    trees = list(iter_brackets(["(S (NP (PRP It)) (VP (VBD was)))\n", "(S (INTJ (UH Yes)))\n"]))
    assert trees[0].labels[:2] == ["ROOT", "S"] and trees[0].words == ["It", "was"]
    assert trees[1].source == "<text>:2"


@pytest.mark.parametrize("text, message", [
    ("(S (NP (DT a) (NN b))", "x:1: unbalanced brackets: 1 bracket(s) still open"),
    ("(S (NP (DT a)))\n)", "x:2: unbalanced brackets: ')' with nothing open"),
    ("(S (NP (-NONE- *T*)))", "x:1: empty sentence"),
    ("(S word (NP (DT a)))", "x:1: bare word 'word'"),
    ("(S (NN a))\n\n(S (NN b)\n(S (NN c))", "x:3: unbalanced brackets: 1 bracket(s) still open at the end"),
    ("(S (NN a))\nword) (S (NN b))", "x:2: text 'word' outside any bracket"),
    ("(S ((NN a)))", "x:1: a bracket without a label"),
    ("()", "x:1: empty brackets ()"),
])
def test_bracket_errors(text, message):
    with pytest.raises(TreebankError) as err:
        list(iter_brackets(text.splitlines(True), "x"))
    assert message in str(err.value)


def test_bracket_skip_counts_but_unbalanced_always_raises():
    stats = ReadStats()
    stats_trees = list(iter_brackets(["(S (NP (-NONE- *)))", "(S (NN ok))"], "x", on_error="skip", stats=stats))
    assert [t.words for t in stats_trees] == [["ok"]]
    assert (stats.sentences, stats.skipped, stats.traces) == (1, 1, 0) and stats.errors[0].startswith("x:1: empty")
    with pytest.raises(TreebankError, match="x:2: unbalanced brackets: '\\)' with nothing open"):
        list(iter_brackets(["(S (NN ok))", "(S (NN ok)))"], "x", on_error="skip"))


# Handcrafted PTB-style trees and their known conversions: (words, labels, parents, traces, empty constituents)
NLTK_CASES = [
    # wh-trace with an index: the (NP *T*-1) object goes, WHNP-1 keeps only its category
    ("( (SBAR (WHNP-1 (WP what)) (S (NP-SBJ (PRP she)) (VP (VBD saw) (NP (-NONE- *T*-1))))) )",
     ["what", "she", "saw"], ["ROOT", "SBAR", "WHNP", "WP", "S", "NP", "PRP", "VP", "VBD"],
     [-1, 0, 1, 2, 1, 4, 5, 4, 7], 1, 1),
    # empty nodes: a PRO subject and an SBAR of nothing but traces are dropped whole, the trace under it counted
    ("(S (NP-SBJ (-NONE- *PRO*)) (VP (TO to) (VP (VB go) (SBAR (-NONE- 0) (S (-NONE- *T*-2))))))",
     ["to", "go"], ["ROOT", "S", "VP", "TO", "VP", "VB"], [-1, 0, 1, 2, 2, 4], 3, 2),
    # unary chains are kept node by node, under a (ROOT ...) bracket that is the virtual ROOT
    ("(ROOT (S (NP (NP (NNP John))) (VP (VBD left))))",
     ["John", "left"], ["ROOT", "S", "NP", "NP", "NNP", "VP", "VBD"], [-1, 0, 1, 2, 3, 1, 5], 0, 0),
    ("(S (ADJP (JJ good)))", ["good"], ["ROOT", "S", "ADJP", "JJ"], [-1, 0, 1, 2], 0, 0),
    # function tags, indices and gapping (=) stripped; POS tags that start with '-' kept
    ("( (S (NP-SBJ=2 (PRP It)) (VP-TPC-1 (VBD ran)) (PP-LOC-CLR (IN at) (NP (-LRB- -LRB-) (NN home) (-RRB- -RRB-)))) )",
     ["It", "ran", "at", "-LRB-", "home", "-RRB-"],
     ["ROOT", "S", "NP", "PRP", "VP", "VBD", "PP", "IN", "NP", "-LRB-", "NN", "-RRB-"],
     [-1, 0, 1, 2, 1, 4, 1, 6, 6, 8, 8, 8], 0, 0),
]


@pytest.mark.parametrize("text, words, labels, parents, traces, empties", NLTK_CASES)
def test_nltk_trees_convert_to_known_answers(text, words, labels, parents, traces, empties):
    stats = ReadStats()
    by_text = list(iter_brackets(text.splitlines(True), "x", stats=stats))
    by_nltk = from_nltk(nltk.Tree.fromstring(text), "x:1", sub := ReadStats())
    for t in (by_text[0], by_nltk):
        assert (t.words, t.labels, t.parents, t.kind, t.source) == (words, labels, parents, "constituency", "x:1")
        assert t.word_nodes == [i for i, p in enumerate(t.parents) if i and i not in t.parents]
    assert len(by_text) == 1 and (stats.traces, stats.empty_constituents) == (sub.traces, sub.empty_constituents) \
        == (traces, empties)


def test_nltk_value_error_names_file_and_line(monkeypatch):
    if not hasattr(nltk.tree.tree, "MAX_TREE_DEPTH"):
        pytest.skip("this nltk has no depth limit (nltk < 3.10)")
    monkeypatch.setattr(nltk.tree.tree, "MAX_TREE_DEPTH", 3)
    lines = ["(S (NN a))\n", "(S\n", " (X (Y (NN b))))\n"]
    with pytest.raises(TreebankError, match="x:2: Tree nesting depth exceeds MAX_TREE_DEPTH"):
        list(iter_brackets(lines, "x"))
    stats = ReadStats()
    assert [t.words for t in iter_brackets(lines, "x", "skip", stats)] == [["a"]] and stats.skipped == 1


def _digest(trees) -> str:
    """sha256 of every tree's words, parents, labels, word nodes, kind and source (file member and line)."""
    rows = [[t.words, t.parents, t.labels, t.word_nodes, t.kind, t.source.rsplit("/", 1)[-1]] for t in trees]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def test_shared_treebanks_read_as_before_nltk():
    """Known answers measured with the hand-written bracket parser that nltk replaced: same trees, same counts."""
    root = data_root(DataConfig())
    if not (root / "ptb-sample-nltk" / "treebank.zip").is_file():
        pytest.skip(f"no shared data under {root}")
    trees, stats = read_ptb_zip(root / "ptb-sample-nltk" / "treebank.zip")
    assert (len(trees), stats.sentences, stats.words, sum(len(t.parents) for t in trees)) == (3914, 3914, 94084,
                                                                                                171459)
    assert (stats.traces, stats.empty_constituents, stats.skipped) == (6592, 4983, 0)
    assert _digest(trees) == "f7123eeb36f3b4898e5d8bc72814fc24065b4aa39c5ad2b935f01c58fd1809e0"
    for name, n, words, digest in [
            ("valid", 346, 5690, "aa0a3356af274ebfda60d0fb9d62b696c3e22bd9e83f871e06048a17dae68524"),
            ("test", 293, 6126, "22209f08bd626776417850208fa327e97674952a7849777ef12541110d10e38c")]:
        trees, stats = read_brackets(root / "tale-of-two-cities-trees" / f"{name}.txt")
        assert (len(trees), stats.words, _digest(trees)) == (n, words, digest)


def test_ptb_zip_reads_files_by_number(tmp_path):
    path = tmp_path / "treebank.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("treebank/combined/wsj_0001.mrg", PTB)
        z.writestr("treebank/combined/wsj_0002.mrg", "( (S (NP (NN Hi)) (. .)) )\n")
    trees, stats = read_ptb_zip(path, files=[2, 1])
    assert [t.words for t in trees] == [["Hi", "."], ["The", "dog", "barked", "."], ["It", "ran", "."]]
    assert "wsj_0002.mrg:1" in trees[0].source
    with pytest.raises(TreebankError, match="no member treebank/combined/wsj_0003.mrg"):
        read_ptb_zip(path, files=[3])


def test_spacy_doc_built_by_hand():
    nlp = spacy.blank("en")
    doc = Doc(nlp.vocab, words=["The", "dog", "barks", ".", "It", "runs"], heads=[1, 2, 2, 2, 5, 5],
              deps=["det", "nsubj", "ROOT", "punct", "nsubj", "ROOT"])
    trees = from_spacy(doc)
    assert [t.words for t in trees] == [["The", "dog", "barks", "."], ["It", "runs"]]
    assert trees[0].parents == [-1, 2, 3, 0, 3]
    assert trees[0].labels == ["ROOT", "det", "nsubj", "root", "punct"]
    assert trees[1].parents == [-1, 2, 0]


def test_spacy_doc_without_parse_is_an_error():
    nlp = spacy.blank("en")
    with pytest.raises(TreebankError, match="no dependency annotation"):
        from_spacy(nlp("no parser here"))
