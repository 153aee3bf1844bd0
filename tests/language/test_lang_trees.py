"""Treebank readers: CoNLL-U, PTB brackets (files and the zip), spaCy Docs; bad input names file and line."""
import zipfile

import pytest
import spacy
from spacy.tokens import Doc

from language.trees import (TreebankError, check_acyclic, from_spacy, iter_brackets, iter_conllu, read_brackets,
                            read_conllu, read_ptb_zip, strip_function_tags)

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
])
def test_bracket_errors(text, message):
    with pytest.raises(TreebankError) as err:
        list(iter_brackets(text.splitlines(True), "x"))
    assert message in str(err.value)


def test_bracket_skip_counts_but_unbalanced_always_raises():
    stats_trees = list(iter_brackets(["(S (NP (-NONE- *)))", "(S (NN ok))"], "x", on_error="skip"))
    assert [t.words for t in stats_trees] == [["ok"]]


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
