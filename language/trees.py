"""Treebank readers: CoNLL-U (dependencies), PTB brackets (constituents, parsed by nltk) and spaCy `Doc`s, all to
one `Tree`.

    trees, stats = read_conllu("../shared/data/ud-english-ewt/en_ewt-ud-dev.conllu")
    trees, stats = read_brackets("../shared/data/tale-of-two-cities-trees/valid.txt")
    trees, stats = read_ptb_zip("../shared/data/ptb-sample-nltk/treebank.zip", files=range(160, 180))
    trees = from_spacy(nlp("Raw text, parsed by any installed spaCy pipeline."))
    tree = from_nltk(nltk.Tree.fromstring("( (S (NP-SBJ (PRP It)) (VP (VBD ran))) )"))

One representation for both kinds of tree: nodes 0..N-1 with node 0 a virtual ROOT (parent -1), a parent and a
label per node, and the node of every word in order. Dependencies: node i is word i (label = DEPREL, parent =
HEAD). Constituents: node 0 is the outer bracket, internal nodes are constituents (label NP, VP, ...), words are
leaves whose label is their POS tag (the preterminal is folded into the leaf). Actions between consecutive words
are tree paths in this one structure (language/actions.py), so both kinds share the code.

Bad input (data README): CoNLL-U multiword-token ranges (`1-2`) and empty nodes (`8.1`) are skipped and counted;
PTB `-NONE-` traces are removed, function tags and indices stripped (`NP-SBJ-1` -> `NP`), constituents left empty
dropped. Malformed lines, bad HEADs, cycles, unbalanced brackets and empty sentences raise `TreebankError` naming
file and line; with `on_error="skip"` the sentence is skipped and counted in `ReadStats.skipped` instead.
Non-projective dependency trees are fine (the path between two words does not need projectivity).
"""
from __future__ import annotations

import bisect
import functools
import io
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

ROOT_LABEL = "ROOT"


class TreebankError(ValueError):
    """Malformed treebank input; the message starts with 'file:line:'."""


@dataclass
class Tree:
    """A sentence with its tree. parents[0] == -1 (the virtual ROOT); every other parent is a node index."""
    words: list[str]
    parents: list[int]
    labels: list[str]
    word_nodes: list[int]
    kind: str = "dependency"               # 'dependency' | 'constituency'
    source: str = ""                       # 'file:line' of the sentence's first line

    def __len__(self) -> int:
        return len(self.words)

    def depths(self) -> list[int]:
        """Depth of every node (ROOT 0). Raises TreebankError on a cycle (readers check on construction; a Tree
        built by hand may not have been)."""
        depth = [-1] * len(self.parents)
        depth[0] = 0
        for node in range(len(self.parents)):
            chain = []
            while depth[node] < 0:
                chain.append(node)
                node = self.parents[node]
                if node < 0 or len(chain) > len(self.parents):
                    check_acyclic(self.parents, self.source or "tree")
                    raise TreebankError(f"{self.source or 'tree'}: node {chain[0]} does not reach the ROOT")
            d = depth[node]
            for n in reversed(chain):
                d += 1
                depth[n] = d
        return depth


@dataclass
class ReadStats:
    """What a reader did besides returning trees (skips are counted, never silent)."""
    sentences: int = 0
    words: int = 0
    skipped: int = 0                       # sentences skipped with on_error='skip'
    errors: list[str] = field(default_factory=list)    # the first few skip reasons
    multiword_ranges: int = 0              # CoNLL-U `1-2` lines skipped (their syntactic words are kept)
    empty_nodes: int = 0                   # CoNLL-U `8.1` lines skipped
    traces: int = 0                        # PTB -NONE- leaves removed
    empty_constituents: int = 0            # PTB constituents dropped once their traces were gone

    def add(self, other: "ReadStats") -> "ReadStats":
        for name in ("sentences", "words", "skipped", "multiword_ranges", "empty_nodes", "traces",
                     "empty_constituents"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors.extend(other.errors[: max(0, 20 - len(self.errors))])
        return self


def _skip_or_raise(err: TreebankError, on_error: str, stats: ReadStats) -> None:
    """on_error='raise': re-raise; 'skip': count the sentence and keep the first 20 messages."""
    if on_error == "raise":
        raise err
    stats.skipped += 1
    if len(stats.errors) < 20:
        stats.errors.append(str(err))


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


def check_acyclic(parents: list[int], where: str) -> None:
    """Raise TreebankError if a parent chain does not end at node 0, naming the cycle (in node ids)."""
    state = [0] * len(parents)            # 0 unseen, 1 on the current chain, 2 known to reach the root
    state[0] = 2
    for start in range(1, len(parents)):
        chain, node = [], start
        while state[node] == 0:
            state[node] = 1
            chain.append(node)
            node = parents[node]
            if node < 0:
                raise TreebankError(f"{where}: node {chain[-1]} has no parent (only the ROOT may)")
        if state[node] == 1:
            cycle = chain[chain.index(node):] + [node]
            raise TreebankError(f"{where}: cycle in heads: {' -> '.join(map(str, cycle))}")
        for n in chain:
            state[n] = 2


# ----------------------------------------------------------------------------------------------------------------
# CoNLL-U

def _conllu_sentence(rows: list[tuple[int, list[str]]], where: str, stats: ReadStats) -> Tree:
    words, heads, deprels = [], [], []
    for lineno, cols in rows:
        at = f"{where.rsplit(':', 1)[0]}:{lineno}"
        if len(cols) != 10:
            raise TreebankError(f"{at}: expected 10 tab-separated columns, got {len(cols)}")
        tid = cols[0]
        if "-" in tid:
            stats.multiword_ranges += 1
            continue
        if "." in tid:
            stats.empty_nodes += 1
            continue
        if not tid.isdigit() or int(tid) != len(words) + 1:
            raise TreebankError(f"{at}: ID {tid!r} out of sequence (expected {len(words) + 1})")
        if not cols[6].isdigit():
            raise TreebankError(f"{at}: HEAD {cols[6]!r} is not a non-negative integer")
        words.append(cols[1])
        heads.append(int(cols[6]))
        deprels.append(cols[7])
    if not words:
        raise TreebankError(f"{where}: empty sentence (no word lines)")
    n = len(words)
    for i, h in enumerate(heads):
        if h > n:
            raise TreebankError(f"{where}: word {i + 1} has HEAD {h} but the sentence has {n} words")
        if h == i + 1:
            raise TreebankError(f"{where}: word {i + 1} is its own head")
    parents = [-1] + heads
    check_acyclic(parents, where)
    return Tree(words, parents, [ROOT_LABEL] + deprels, list(range(1, n + 1)), "dependency", where)


def iter_conllu(lines: Iterable[str], name: str = "<text>", on_error: str = "raise",
                stats: ReadStats | None = None) -> Iterator[Tree]:
    """Yield one Tree per sentence of CoNLL-U text (an iterable of lines)."""
    _check_on_error(on_error)
    stats = stats if stats is not None else ReadStats()
    rows: list[tuple[int, list[str]]] = []
    start = None
    lineno = 0

    def flush():
        sub = ReadStats()
        try:
            tree = _conllu_sentence(rows, f"{name}:{start}", sub)
        except TreebankError as err:
            _skip_or_raise(err, on_error, stats)
            return None
        stats.add(sub)
        stats.sentences += 1
        stats.words += len(tree)
        return tree

    for lineno, line in enumerate(lines, 1):
        line = line.rstrip("\n").rstrip("\r")
        if not line.strip():
            if start is not None:
                tree = flush()
                if tree is not None:
                    yield tree
            rows, start = [], None
            continue
        if start is None:
            start = lineno
        if line.startswith("#"):
            continue
        rows.append((lineno, line.split("\t")))
    if start is not None:
        tree = flush()
        if tree is not None:
            yield tree


def decode_utf8(data: bytes, name: str) -> str:
    """UTF-8 bytes to text; bytes that are not UTF-8 raise TreebankError naming the file, line and column."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line, line_start = data.count(b"\n", 0, err.start) + 1, data.rfind(b"\n", 0, err.start) + 1
        raise TreebankError(f"{name}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x} at column "
                            f"{err.start - line_start + 1}); treebank files must be UTF-8 (re-encode it, e.g. "
                            "with iconv)") from None


def _read_file(path, kind: str, iterate, on_error: str, limit: int | None) -> tuple[list[Tree], ReadStats]:
    """Trees from one file through `iterate` (iter_conllu or iter_brackets), the first `limit` if given."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{kind} file {str(path)!r} does not exist (set data.root, or TEMT_DATA)")
    stats = ReadStats()
    trees = []
    with io.StringIO(decode_utf8(path.read_bytes(), str(path)), newline=None) as f:   # universal newlines, as open()
        for tree in iterate(f, str(path), on_error, stats):
            trees.append(tree)
            if limit is not None and len(trees) >= limit:
                break
    return trees, stats


def read_conllu(path: str | Path, on_error: str = "raise", limit: int | None = None) -> tuple[list[Tree], ReadStats]:
    """All sentences of a CoNLL-U file (the first `limit` if given) and what was skipped."""
    return _read_file(path, "CoNLL-U", iter_conllu, on_error, limit)


# ----------------------------------------------------------------------------------------------------------------
# PTB brackets: nltk reads them (read_sexpr_block splits the text into trees, as nltk's BracketParseCorpusReader
# does, and nltk.Tree.fromstring parses each); the conversion of an nltk.Tree to a Tree below is the project's.
# Not BracketParseCorpusReader itself: it rewrites `(x)` and `(tag word lemma)` leaves, "recovers" a malformed tree
# silently (a note on stderr and a flat parse) and keeps no line numbers.

_WORD = r"[^\s()]+"        # a label or a word: pinned to nltk's default before 3.10 (3.10 keeps `\(` inside words,
_NONSPACE = re.compile(r"\S")   # where read_sexpr_block still counts it), so that every nltk version reads alike


@functools.lru_cache(maxsize=None)
def _nltk():
    """nltk's Tree and read_sexpr_block, imported when brackets are read (nothing is downloaded)."""
    try:
        from nltk.corpus.reader.util import read_sexpr_block
        from nltk.tree import Tree as NLTKTree
    except ImportError:
        raise ImportError("reading bracketed trees needs nltk, which is not installed "
                          "(pip install 'temt[language]')") from None
    return NLTKTree, read_sexpr_block


def strip_function_tags(label: str) -> str:
    """NP-SBJ-1 -> NP, NP=2 -> NP, PP-LOC -> PP; labels that start with '-' (-NONE-, -LRB-) are kept."""
    if label.startswith("-"):
        return label
    return re.split(r"[-=]", label, 1)[0] or label


def _bracket_strings(lines: Iterable[str], name: str) -> Iterator[tuple[str, int]]:
    """Yield (text, first line) for every top-level bracketed expression, split by nltk's read_sexpr_block.
    Line numbers count the items of `lines`. Text outside brackets and a ')' with nothing open raise; so does a tree
    still open at the end (the rest of the input is unreadable)."""
    _, read_sexpr_block = _nltk()
    starts, parts, offset = [], [], 0
    for line in lines:
        starts.append(offset)
        parts.append(line if line.endswith("\n") else line + "\n")
        offset += len(parts[-1])
    text = "".join(parts)
    stream, pos = io.StringIO(text), 0
    while stream.tell() < len(text):
        for expr in read_sexpr_block(stream):
            pos = _NONSPACE.search(text, pos).start()
            lineno = bisect.bisect_right(starts, pos)
            pos += len(expr)
            if expr.startswith(")"):
                raise TreebankError(f"{name}:{lineno}: unbalanced brackets: ')' with nothing open")
            if not expr.startswith("("):
                word = re.match(_WORD, expr).group()
                raise TreebankError(f"{name}:{lineno}: text {word!r} outside any bracket")
            still_open = expr.count("(") - expr.count(")")     # > 0 only for a tree that the end of input cut
            if still_open > 0:
                raise TreebankError(f"{name}:{lineno}: unbalanced brackets: {still_open} bracket(s) still open "
                                    "at the end")
            yield expr, lineno


def _parse_bracket_tree(expr: str, where: str):
    """One bracketed expression -> nltk.Tree; nltk's ValueError becomes a TreebankError naming file and line."""
    NLTKTree, _ = _nltk()
    try:
        return NLTKTree.fromstring(expr, node_pattern=_WORD, leaf_pattern=_WORD)
    except (ValueError, TimeoutError) as err:          # TimeoutError: nltk>=3.10 bounds a regex run in time
        raise TreebankError(f"{where}: {' '.join(str(err).split())}") from None


def _is_leaf(t) -> bool:
    """(TAG word)"""
    return len(t) == 1 and isinstance(t[0], str) and t.label() != ""


def _keep(t) -> bool:
    """False for traces and constituents with nothing but traces below them."""
    if isinstance(t, str):
        return True
    if _is_leaf(t):
        return t.label() != "-NONE-"
    return any(_keep(k) for k in t if not isinstance(k, str))


def _count_traces(t, stats: ReadStats) -> None:
    """Count the traces of a removed bracket into stats.traces."""
    if isinstance(t, str):
        return
    if _is_leaf(t):
        stats.traces += t.label() == "-NONE-"
        return
    for k in t:
        _count_traces(k, stats)


def _top_brackets(t, where: str) -> list:
    """The top constituents. The PTB wraps each tree in an unlabelled outer bracket, ( (S ...) ), and some
    treebanks in (ROOT ...) or (TOP ...): that bracket is the virtual ROOT. A labelled top bracket, (S ...) as in
    the Tale of Two Cities files, is itself the top constituent."""
    if not t.label():
        if not len(t):
            raise TreebankError(f"{where}: empty brackets ()")
        return list(t)
    if _is_leaf(t) or t.label() not in ("ROOT", "TOP"):
        return [t]
    return list(t)


class _TreeBuilder:
    """Appends the nodes of kept brackets to one tree's lists, depth first (node order = bracket order)."""

    def __init__(self, where: str, stats: ReadStats):
        self.where, self.stats = where, stats
        self.words: list[str] = []
        self.parents: list[int] = [-1]
        self.labels: list[str] = [ROOT_LABEL]
        self.word_nodes: list[int] = []

    def add(self, t, parent: int) -> None:
        where = self.where
        if isinstance(t, str):
            raise TreebankError(f"{where}: word {t!r} is not inside a (TAG word) bracket")
        if _is_leaf(t):
            self.parents.append(parent)
            self.labels.append(t.label())
            self.word_nodes.append(len(self.parents) - 1)
            self.words.append(t[0])
            return
        if not t.label():
            raise TreebankError(f"{where}: a bracket without a label")
        if not len(t):
            raise TreebankError(f"{where}: bracket ({t.label()}) has no children")
        self.parents.append(parent)
        self.labels.append(strip_function_tags(t.label()))
        me = len(self.parents) - 1
        for k in t:
            if isinstance(k, str):
                raise TreebankError(f"{where}: bare word {k!r} beside brackets inside ({t.label()} ...)")
            if _keep(k):
                self.add(k, me)
            else:
                _count_traces(k, self.stats)
                self.stats.empty_constituents += not _is_leaf(k)


def from_nltk(tree, where: str = "<nltk tree>", stats: ReadStats | None = None) -> Tree:
    """An nltk.Tree (PTB style: preterminals over words) -> constituency Tree: -NONE- traces removed, function tags
    and indices stripped, constituents left empty dropped (counted into `stats`). An unlabelled outer bracket, or one
    labelled ROOT or TOP, is the virtual ROOT. Raises TreebankError naming `where`."""
    stats = stats if stats is not None else ReadStats()
    built = _TreeBuilder(where, stats)
    for k in _top_brackets(tree, where):
        if isinstance(k, str):
            raise TreebankError(f"{where}: bare word {k!r} at the top level")
        if _keep(k):
            built.add(k, 0)
        else:
            _count_traces(k, stats)
    if not built.words:
        raise TreebankError(f"{where}: empty sentence (no words once traces are removed)")
    return Tree(built.words, built.parents, built.labels, built.word_nodes, "constituency", where)


def iter_brackets(lines: Iterable[str], name: str = "<text>", on_error: str = "raise",
                  stats: ReadStats | None = None) -> Iterator[Tree]:
    """Yield one Tree per top-level bracketed tree (any number of trees per line, any number of lines per tree).

    Unbalanced brackets make the rest of the input unreadable, so they raise even with on_error='skip'."""
    _check_on_error(on_error)
    stats = stats if stats is not None else ReadStats()
    for expr, lineno in _bracket_strings(lines, name):
        where, sub = f"{name}:{lineno}", ReadStats()
        try:
            tree = from_nltk(_parse_bracket_tree(expr, where), where, sub)
        except TreebankError as err:
            _skip_or_raise(err, on_error, stats)
            continue
        stats.add(sub)
        stats.sentences += 1
        stats.words += len(tree)
        yield tree


def read_brackets(path: str | Path, on_error: str = "raise", limit: int | None = None) -> tuple[list[Tree], ReadStats]:
    """All trees of a bracketed file (PTB .mrg, or one tree per line as in the Tale of Two Cities files)."""
    return _read_file(path, "bracketed tree", iter_brackets, on_error, limit)


def read_ptb_zip(path: str | Path, files: Iterable[int] = range(1, 200), on_error: str = "raise"
                 ) -> tuple[list[Tree], ReadStats]:
    """Trees of the NLTK PTB sample zip, from files wsj_NNNN.mrg for NNNN in `files` (split by file, README)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PTB sample {str(path)!r} does not exist (set data.root, or TEMT_DATA)")
    stats = ReadStats()
    trees = []
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        for number in files:
            member = f"treebank/combined/wsj_{number:04d}.mrg"
            if member not in names:
                raise TreebankError(f"{path}: no member {member}")
            text = decode_utf8(z.read(member), f"{path}!{member}").splitlines()
            trees.extend(iter_brackets(text, f"{path}!{member}", on_error, stats))
    return trees, stats


# ----------------------------------------------------------------------------------------------------------------
# spaCy

def load_spacy(name: str):
    """An installed spaCy pipeline (a package name or a path); nothing is downloaded at run time, so a pipeline
    that is not installed is a ConfigError that says so."""
    from temt_core.config import ConfigError
    try:
        import spacy
    except ImportError:
        raise ConfigError("--spacy needs spaCy, which is not installed (pip install 'temt[language]')") from None
    try:
        return spacy.load(name)
    except OSError as err:
        if "E050" not in str(err):                  # E050: no package or directory of that name
            raise
        raise ConfigError(f"--spacy {name}: spaCy pipeline {name!r} is not installed (no package or directory of "
                          "that name), and nothing is downloaded at run time: install it first, e.g. "
                          f"`python -m spacy download {name}`, or give the path of a saved pipeline") from None


def from_spacy(doc) -> list[Tree]:
    """One dependency Tree per sentence of a parsed spaCy Doc (heads and deps must be set).

    Any installed pipeline works (`spacy.load(name)(text)`); nothing is downloaded here. spaCy's label scheme
    (ClearNLP for the English pipelines) differs from UD: never mix the two in one experiment (spec section 6).
    """
    if not doc.has_annotation("DEP"):
        raise TreebankError("spaCy Doc: no dependency annotation (run a pipeline with a parser, or set heads and "
                            "deps by hand)")
    out = []
    for s_i, sent in enumerate(doc.sents):
        tokens = [t for t in sent if not t.is_space]
        if not tokens:
            continue
        index = {t.i: k + 1 for k, t in enumerate(tokens)}
        parents, labels = [-1], [ROOT_LABEL]
        for t in tokens:
            head = t.head
            while head.is_space and head.head.i != head.i:        # attach across whitespace tokens
                head = head.head
            parents.append(0 if head.i == t.i or head.i not in index else index[head.i])
            labels.append(t.dep_ if head.i != t.i else "root")
        where = f"<spacy doc>:sentence {s_i + 1}"
        check_acyclic(parents, where)
        out.append(Tree([t.text for t in tokens], parents, labels, list(range(1, len(tokens) + 1)),
                        "dependency", where))
    return out

