"""Corpora -> word vocabulary (tokenizers) -> action vocabulary -> datasets (datasets) -> length-bucketed batches.

    corpus = load_corpus(DataConfig())                          # {'train': [Tree], 'dev': [...], 'test': [...]}
    words = build_vocab(corpus["train"], cfg)                   # tokenizers.Tokenizer: word level (data.vocab=word,
                                                                # <unk> below min_freq) or bpe / unigram pieces
    actions = build_action_vocab(corpus["train"], cfg.actions)  # language.actions.ActionVocab
    ds = encode_split(corpus["dev"], words, actions, cfg.actions)   # datasets.Dataset, one row per sentence

Everything is read from local files: the treebanks under `data.root` (default `../shared/data` relative to the
repository root; the environment variable TEMT_DATA overrides it, an explicit `data.root=...` overrides both).
Nothing is downloaded: `encode_split` imports and calls `datasets` with HF_DATASETS_OFFLINE and HF_HUB_OFFLINE set
to 1 (unless set already) and restores the environment afterwards; importing this module sets neither.

One row: ids = [BOS, w_1..w_n, EOS]; actions = a_0..a_n (a_n = END; a_i moves from token i to token i+1);
tree_parents / tree_actions (node labels) / tree_branch (rank among siblings) over the tree's nodes (tree mode),
tok_nodes = the node of every token (BOS and EOS at the ROOT). All models predict the same n + 1 events (n words and EOS) from one shared vocabulary.

Subword vocabularies (data.vocab=bpe | unigram): ids = [BOS, pieces of w_1, ..., pieces of w_n, EOS], each word
split on its own (pieces never cross words); the move into a word's first piece is its tree action and every
further piece arrives by CONTINUE (actions.expand_for_subwords); a piece's node is its word's node; the row also
holds `pieces` (pieces per word). The vocabulary is byte-level, so every word of any file encodes without <unk>.
Scores stay per word: `collate` gives n_events = n_words + 1 per sentence, which evaluate.score_loader counts
instead of the pieces, and a sentence's NLL is the sum over its pieces and EOS.
"""
from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from temt_core.checkpoint import CheckpointError  # noqa: E402
from temt_core.config import ConfigError  # noqa: E402

from .actions import (CONTINUE, NEXT, ActionConfig, ActionVocab, action_names, expand_for_subwords,  # noqa: E402
                      shuffle_actions, tree_action_names)
from .trees import (ReadStats, Tree, TreebankError, from_spacy, load_spacy, read_brackets, read_conllu,  # noqa: E402
                    read_ptb_zip)

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIAL_WORDS = (PAD, UNK, BOS, EOS)            # ids 0..3
REPO_ROOT = Path(__file__).resolve().parent.parent
CORPORA = ("ud-ewt", "ptb-sample", "ttc", "raw")
VOCABS = ("word", "bpe", "unigram")
RAW_FORMATS = ("text", "tokens")
BYTES = 256                                     # the byte-level alphabet every subword vocabulary holds


@dataclass
class DataConfig:
    root: str = ""                   # treebank folder; '' = $TEMT_DATA or <repo>/../shared/data
    corpus: str = "ud-ewt"           # ud-ewt (the study) | ptb-sample | ttc (Tale of Two Cities) | raw (text)
    train_limit: int = 0             # first N training sentences (0 = all): the quick study uses a subset
    dev_limit: int = 0
    test_limit: int = 0
    max_words: int = 0               # drop longer sentences from every split (0 = keep all)
    min_freq: int = 2                # words rarer than this in train become <unk> (spec section 6); data.vocab=bpe:
                                     # a merge must occur this often in train (a pair seen once is not learned);
                                     # unused by unigram
    vocab: str = "word"              # word (one id per training word, the rest <unk>) | bpe | unigram (byte-level
                                     # subword pieces trained on train's words: every word encodes, no <unk>)
    vocab_size: int = 8000           # bpe / unigram: pieces incl. 4 specials + 256 bytes; 8000 is about the word
                                     # vocabulary of full UD EWT train (9,877 types at min_freq 2), so the subword
                                     # arm's embedding and softmax are about the word arm's size (1.31 BPE pieces
                                     # per test word there); a small train split may stop short (bpe: no pair left
                                     # min_freq times)
    on_error: str = "raise"          # 'skip' skips malformed sentences and counts them
    transform: str = "gold"          # gold | next (one action, known in advance) | shuffled (permuted per sentence)
    actions: ActionConfig = field(default_factory=ActionConfig)
    parser: str = ""                 # corpus=raw: the spaCy pipeline that parses root/{train,dev,test}.txt (a path
                                     # or an installed package; `temt-language parser` builds a UD-label one)
    raw_format: str = "text"         # corpus=raw: text (spaCy tokenises and finds the sentences) | tokens (one
                                     # sentence per line, words split on whitespace, parsed as given: a
                                     # pre-tokenised corpus keeps its own words and sentence boundaries)

    def __post_init__(self):
        if self.corpus not in CORPORA:
            raise ValueError(f"corpus must be one of {CORPORA}, got {self.corpus!r}")
        if self.corpus == "raw" and not self.parser:
            raise ValueError("data.corpus=raw needs data.parser (a spaCy pipeline: `temt-language parser --out DIR` "
                             "builds a UD-label one from a treebank, offline)")
        if self.raw_format not in RAW_FORMATS:
            raise ValueError(f"raw_format must be one of {', '.join(RAW_FORMATS)}, got {self.raw_format!r}")
        if self.transform not in ("gold", "next", "shuffled"):
            raise ValueError(f"transform must be gold, next or shuffled, got {self.transform!r}")
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}")
        for name in ("train_limit", "dev_limit", "test_limit", "max_words"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (got {getattr(self, name)})")
        if self.min_freq < 1:
            raise ValueError(f"min_freq must be >= 1 (got {self.min_freq})")
        if self.vocab not in VOCABS:
            raise ValueError(f"data.vocab must be one of {', '.join(VOCABS)} (got {self.vocab!r})")
        if self.vocab_size < len(SPECIAL_WORDS) + BYTES:
            raise ValueError(f"data.vocab_size must be >= {len(SPECIAL_WORDS) + BYTES} (the {len(SPECIAL_WORDS)} "
                             f"special words and {BYTES} bytes every subword vocabulary holds; got {self.vocab_size})")


def data_root(cfg: DataConfig) -> Path:
    if cfg.root:
        root = Path(cfg.root)
        return root if root.is_absolute() else (Path.cwd() / root)
    if os.environ.get("TEMT_DATA"):
        return Path(os.environ["TEMT_DATA"])
    return REPO_ROOT.parent / "shared" / "data"


_CORPUS_CACHE: dict = {}


def load_corpus(cfg: DataConfig) -> tuple[dict[str, list[Tree]], dict[str, ReadStats]]:
    """Read train/dev/test trees of cfg.corpus (with limits and the length filter applied). Remembered per
    process (a study reads the same files for every run); the cache key includes the files' sizes and times."""
    root = data_root(cfg)
    key = (str(root), cfg.corpus, cfg.parser, cfg.raw_format, cfg.train_limit, cfg.dev_limit, cfg.test_limit,
           cfg.max_words, cfg.on_error,
           tuple(sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()))
           if root.is_dir() else ())
    if key not in _CORPUS_CACHE:
        _CORPUS_CACHE.clear()
        _CORPUS_CACHE[key] = _read_corpus(cfg, root)
    return _CORPUS_CACHE[key]


def _read_corpus(cfg: DataConfig, root: Path) -> tuple[dict[str, list[Tree]], dict[str, ReadStats]]:
    if not root.is_dir():
        raise FileNotFoundError(f"treebank folder {str(root)!r} does not exist: set data.root=PATH or TEMT_DATA")
    splits, stats = {}, {}
    limits = {"train": cfg.train_limit, "dev": cfg.dev_limit, "test": cfg.test_limit}
    nlp = load_spacy(cfg.parser) if cfg.corpus == "raw" else None
    for split in ("train", "dev", "test"):
        if cfg.corpus == "raw":
            trees, st = read_text(root / f"{split}.txt", nlp, cfg.raw_format)
        elif cfg.corpus == "ud-ewt":
            trees, st = read_conllu(root / "ud-english-ewt" / f"en_ewt-ud-{split}.conllu", cfg.on_error)
        elif cfg.corpus == "ttc":
            name = {"train": "train", "dev": "valid", "test": "test"}[split]
            trees, st = read_brackets(root / "tale-of-two-cities-trees" / f"{name}.txt", cfg.on_error)
        else:  # NLTK PTB sample: split by file (data README)
            files = {"train": range(1, 160), "dev": range(160, 180), "test": range(180, 200)}[split]
            trees, st = read_ptb_zip(root / "ptb-sample-nltk" / "treebank.zip", files, cfg.on_error)
        if cfg.max_words:
            trees = [t for t in trees if len(t) <= cfg.max_words]
        if limits[split]:
            trees = trees[: limits[split]]
        splits[split], stats[split] = trees, st
    return splits, stats


def read_text(path: str | Path, nlp, raw_format: str = "text") -> tuple[list[Tree], ReadStats]:
    """Raw text parsed on the fly; blank lines are skipped. raw_format 'text': one tree per sentence spaCy finds,
    one line (a sentence or a paragraph) at a time. 'tokens': each line is one sentence of whitespace-separated
    words, parsed as given (spaCy's tokenizer is bypassed and the parser may not split the line: every word after
    the first is marked as no sentence start, which spaCy's parser respects)."""
    from spacy.tokens import Doc
    if raw_format not in RAW_FORMATS:
        raise ValueError(f"raw_format must be one of {', '.join(RAW_FORMATS)}, got {raw_format!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"raw text file {str(path)!r} does not exist")
    try:
        lines = [line.strip() for line in path.read_bytes().decode("utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as err:
        raise TreebankError(f"{path}: not UTF-8 text ({err})") from None
    if raw_format == "tokens":
        inputs = (Doc(nlp.vocab, words=w, sent_starts=[True] + [False] * (len(w) - 1))
                  for w in (line.split() for line in lines))
    else:
        inputs = iter(lines)
    trees, stats = [], ReadStats()
    for i, doc in enumerate(nlp.pipe(inputs)):
        sents = from_spacy(doc)
        if raw_format == "tokens" and len(sents) != 1:           # the parser ignored the preset boundaries
            raise TreebankError(f"{path}: line {i + 1} (non-blank) was parsed as {len(sents)} sentences, "
                                "expected one (raw_format=tokens)")
        for t in sents:
            trees.append(t)
            stats.sentences += 1
            stats.words += len(t)
    return trees, stats


# ----------------------------------------------------------------------------------------------------------------
# vocabularies

def build_word_vocab(trees: Sequence[Tree], min_freq: int = 2):
    """Word-level tokenizers.Tokenizer over training words; words seen fewer than min_freq times are <unk>."""
    from tokenizers import Tokenizer, models, trainers
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    trainer = trainers.WordLevelTrainer(min_frequency=min_freq, special_tokens=list(SPECIAL_WORDS),
                                        show_progress=False)
    # no pre-tokenizer: every treebank word (even one with a space inside) is one token
    tok.train_from_iterator((w for t in trees for w in t.words), trainer=trainer)
    for i, s in enumerate(SPECIAL_WORDS):
        if tok.token_to_id(s) != i:
            raise RuntimeError(f"tokenizers put {s} at id {tok.token_to_id(s)}, expected {i}")
    return tok


def load_word_vocab(path: str | Path):
    from tokenizers import Tokenizer
    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:            # tokenizers raises its own exception type for a damaged file
        raise CheckpointError(f"{path}: not a word vocabulary, or truncated ({err})") from None


def encode_words(tok, words: Sequence[str]) -> list[int]:
    ids = tok.encode(list(words), is_pretokenized=True, add_special_tokens=False).ids
    if len(ids) != len(words):
        raise RuntimeError(f"the word vocabulary split {len(words)} words into {len(ids)} tokens")
    return [SPECIAL_WORDS.index(BOS)] + ids + [SPECIAL_WORDS.index(EOS)]


def build_subword_vocab(trees: Sequence[Tree], kind: str = "bpe", vocab_size: int = 8000, min_freq: int = 2):
    """A byte-level BPE or unigram tokenizers.Tokenizer trained on the training words, the specials at ids 0..3.

    Each word is one training sequence and one pre-token (ByteLevel with use_regex=False maps its bytes and splits
    nothing, not even at a space inside a word), so pieces never cross words and a word's pieces decode back to it.
    The fallback is byte-level rather than a character alphabet: the 256 byte symbols are always in the
    vocabulary, so any word of any file encodes without <unk> (a character alphabet from train would give <unk>
    for a character first seen in test). <unk> is still the model's unk token, so a word that ever fell outside
    would be counted rather than dropped silently."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    if kind not in ("bpe", "unigram"):
        raise ValueError(f"subword vocabularies are bpe or unigram, got {kind!r}")
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token=UNK))
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_freq, show_progress=False,
                                      special_tokens=list(SPECIAL_WORDS), initial_alphabet=alphabet)
    else:
        tok = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_WORDS), unk_token=UNK,
                                          initial_alphabet=alphabet, show_progress=False)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator((w for t in trees for w in t.words), trainer=trainer)
    if kind == "unigram":
        tok = _canonical_unigram(tok, [w for t in trees for w in t.words])
    for i, s in enumerate(SPECIAL_WORDS):
        if tok.token_to_id(s) != i:
            raise RuntimeError(f"tokenizers put {s} at id {tok.token_to_id(s)}, expected {i}")
    missing = [c for c in alphabet if tok.token_to_id(c) is None]
    if missing:
        raise RuntimeError(f"the {kind} vocabulary lacks {len(missing)} of the {BYTES} byte symbols (first "
                           f"{missing[0]!r}): some words could not be encoded without <unk>")
    return tok


UNIGRAM_PENALTY = 1e-4       # tokenizers' unigram trainer: required characters it had pruned come back at the
                             # lowest score plus k times this, k = 0, 1, ... in the order of a hash set


def _canonical_unigram(tok, words: Sequence[str]):
    """The unigram vocabulary made a function of the training words (the ids, and the scores to 1e-8).

    tokenizers' unigram trainer is not reproducible: two trainings on the same words in one process gave the
    byte symbols it re-adds after pruning (every one of the 256 must stay) their made-up scores, min + k * 1e-4,
    in another (hash-set) order, the other pieces' scores differing in the last digits, and tied pieces in another
    order (measured on the toy treebank and on the quick study's 3,000 UD EWT sentences), so every run of a study
    would get its own ids. Here the re-added symbols get those scores in the order of their byte frequency in the
    training words (the most frequent highest; unseen ones by symbol), scores equal to within 1e-9 are one score
    (rounded to 1e-8), and pieces are sorted by (score, piece) after the specials."""
    import json
    from collections import Counter

    from tokenizers import Tokenizer, pre_tokenizers
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    specials, rest = vocab[: len(SPECIAL_WORDS)], [list(ps) for ps in vocab[len(SPECIAL_WORDS):]]
    low = min(score for _, score in rest)
    steps = {i: (score - low) / UNIGRAM_PENALTY for i, (p, score) in enumerate(rest) if len(p) == 1}
    on_grid = {i: round(k) for i, k in steps.items() if abs(k - round(k)) < 1e-6}
    run = 0
    while run in on_grid.values():        # the re-added symbols: k = 0, 1, ... without a gap (a trained piece
        run += 1                          # can sit exactly at the minimum, k = 0, or by chance on the grid far up)
    readded = [i for i, k in on_grid.items() if k < run]
    if readded:
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        freq: Counter = Counter()
        for w, n in Counter(words).items():
            for piece, _ in byte_level.pre_tokenize_str(w):
                for c in piece:
                    freq[c] += n
        order = sorted(readded, key=lambda i: (-freq[rest[i][0]], rest[i][0]))
        for j, i in enumerate(order):
            rest[i][1] = low + (len(order) - 1 - j) * UNIGRAM_PENALTY
    rest.sort(key=lambda ps: -ps[1])
    out, group = [], []
    for ps in rest + [None]:                 # one score per run of scores within 1e-9; ties ordered by piece
        if group and (ps is None or group[0][1] - ps[1] > 1e-9):
            out.extend([p, round(group[0][1], 8)] for p, _ in sorted(group))
            group = []
        if ps is not None:
            group.append(ps)
    data["model"]["vocab"] = specials + out
    return Tokenizer.from_str(json.dumps(data))


def vocab_kind(tok) -> str:
    """'word', 'bpe' or 'unigram': what a tokenizers.Tokenizer (a run's words.json) is."""
    name = type(tok.model).__name__
    kinds = {"WordLevel": "word", "BPE": "bpe", "Unigram": "unigram"}
    if name not in kinds:
        raise CheckpointError(f"a {name} word vocabulary: language runs use WordLevel, BPE or Unigram")
    return kinds[name]


def build_vocab(trees: Sequence[Tree], cfg: DataConfig):
    """The word vocabulary data.vocab asks for, from the training trees."""
    if cfg.vocab == "word":
        return build_word_vocab(trees, cfg.min_freq)
    return build_subword_vocab(trees, cfg.vocab, cfg.vocab_size, cfg.min_freq)


def encode_pieces(tok, words: Sequence[str]) -> tuple[list[int], list[int]]:
    """Subword vocabulary: ids = [BOS, pieces of every word, EOS] and the number of pieces of each word."""
    enc = tok.encode(list(words), is_pretokenized=True, add_special_tokens=False)
    pieces = [0] * len(words)
    last = -1
    for w in enc.word_ids:
        if w is None or w < last:
            raise RuntimeError(f"the subword vocabulary gave a piece outside the words' order (word {w})")
        pieces[w] += 1
        last = w
    empty = [i for i, k in enumerate(pieces) if k == 0]
    if empty:
        raise TreebankError(f"word {empty[0] + 1} ({words[empty[0]]!r}) encodes to no subword piece: an empty word")
    return [SPECIAL_WORDS.index(BOS)] + list(enc.ids) + [SPECIAL_WORDS.index(EOS)], pieces


def unk_words(row: dict) -> int:
    """How many words of an encoded row hold <unk> (word vocabulary: are <unk>; subword: hold an <unk> piece)."""
    unk = SPECIAL_WORDS.index(UNK)
    body = row["ids"][1:-1]
    if "pieces" not in row:
        return sum(i == unk for i in body)
    out, at = 0, 0
    for k in row["pieces"]:
        out += unk in body[at:at + k]
        at += k
    return out


def build_action_vocab(trees: Sequence[Tree], cfg: ActionConfig, transform: str = "gold",
                       subword: bool = False) -> ActionVocab:
    """subword: CONTINUE joins the vocabulary (id 2, right after the specials) unless transform=next, whose one
    NEXT action is the only move there is (between pieces too: a CONTINUE given for free would tell the model
    where a word ends)."""
    if transform == "next":
        return ActionVocab([*ActionVocab.SPECIALS, NEXT], {"transform": "next"})
    return ActionVocab.build((action_names(t, cfg) for t in trees), cfg.min_count,
                             extra=[CONTINUE] if subword else (), meta={"transform": transform})


def build_tree_vocab(trees: Sequence[Tree], cfg: ActionConfig) -> ActionVocab:
    return ActionVocab.build((tree_action_names(t, cfg)[1:] for t in trees), cfg.tree_min_count,
                             meta={"kind": "tree labels"})


# ----------------------------------------------------------------------------------------------------------------
# datasets

def encode_tree(tree: Tree, index: int, words, actions: ActionVocab, tree_vocab: ActionVocab | None,
                cfg: ActionConfig, transform: str = "gold", shuffle_seed: int = 0) -> dict:
    """One row (module docstring). The vocabulary decides word or subword encoding (vocab_kind)."""
    subword = vocab_kind(words) != "word"
    if subword:
        ids, pieces = encode_pieces(words, tree.words)
    else:
        ids, pieces = encode_words(words, tree.words), None
    if transform == "next":
        acts = [actions.index[NEXT]] * (len(ids) - 1)            # one action everywhere, even into EOS
    else:
        acts = actions.encode(action_names(tree, cfg))          # coverage counts: tree moves, not CONTINUEs
        if transform == "shuffled":                             # the tree moves are shuffled; CONTINUE stays
            acts = shuffle_actions(acts, shuffle_seed * 1_000_003 + index)   # where the pieces are
        if subword:
            acts = expand_for_subwords(acts, pieces, fill=_continue_id(actions))
    nodes = list(tree.word_nodes) if not subword else [n for n, k in zip(tree.word_nodes, pieces) for _ in range(k)]
    row = {"ids": ids, "actions": acts, "n_words": len(tree.words), "index": index,
           "tree_parents": list(tree.parents), "tok_nodes": [0] + nodes + [0]}
    if subword:
        row["pieces"] = pieces
    row["tree_actions"] = tree_vocab.encode(tree_action_names(tree, cfg)) if tree_vocab is not None else \
        [0] * len(tree.parents)
    row["tree_actions"][0] = 0
    row["tree_branch"] = branch_indices(tree.parents)
    return row


def _continue_id(actions: ActionVocab) -> int:
    if CONTINUE not in actions.index:
        raise CheckpointError(f"the action vocabulary has no {CONTINUE} action, which a subword vocabulary needs "
                              "(actions.json built for data.vocab=word?)")
    return actions.index[CONTINUE]


def branch_indices(parents: Sequence[int]) -> list[int]:
    """Each node's rank among its parent's children, in node order (Shiv & Quirk's branch index; ROOT 0)."""
    seen: dict[int, int] = {}
    out = [0] * len(parents)
    for node, p in enumerate(parents):
        if p >= 0:
            out[node] = seen.get(p, 0)
            seen[p] = out[node] + 1
    return out


def encode_split(trees: Sequence[Tree], words, actions: ActionVocab, cfg: ActionConfig,
                 tree_vocab: ActionVocab | None = None, transform: str = "gold", shuffle_seed: int = 0):
    """A datasets.Dataset with one row per sentence (built in memory from the local trees; nothing downloads).

    Rows are encoded in Python and handed to Dataset.from_dict: a batched `Dataset.map` over the trees' fields
    gave the same rows 1.7x slower (6.95 s against 4.15 s on UD EWT train, 2026-12-02, loaded 2-core CPU), and its
    disk cache cannot be used because encoding counts the actions it maps to the overflow action."""
    rows = [encode_tree(t, i, words, actions, tree_vocab, cfg, transform, shuffle_seed) for i, t in enumerate(trees)]
    names = ["ids", "actions", "n_words", "index", "tree_parents", "tree_actions", "tree_branch", "tok_nodes"]
    if vocab_kind(words) != "word":
        names.append("pieces")
    columns = {k: [r[k] for r in rows] for k in names}
    with _hf_offline():
        import datasets
        return datasets.Dataset.from_dict(columns)


@contextlib.contextmanager
def _hf_offline():
    """HF_DATASETS_OFFLINE and HF_HUB_OFFLINE = 1 (unless set already) for the block only."""
    saved = {k: os.environ.get(k) for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")}
    os.environ.update({k: v or "1" for k, v in saved.items()})
    try:
        yield
    finally:
        for k in (k for k, v in saved.items() if v is None):
            os.environ.pop(k, None)


def collate(rows: list[dict]) -> dict[str, torch.Tensor]:
    """Pad a list of rows into tensors. Padding: ids 0 (<pad>), actions 0, tree parents -1 (a fresh root).
    n_events: the events a sentence is scored on, n_words + 1 (words and EOS), whatever its number of pieces."""
    B = len(rows)
    L = max(len(r["ids"]) for r in rows)
    N = max(len(r["tree_parents"]) for r in rows)
    ids = torch.zeros(B, L, dtype=torch.long)
    actions = torch.zeros(B, L - 1, dtype=torch.long)
    mask = torch.zeros(B, L - 1, dtype=torch.bool)
    parents = torch.full((B, N), -1, dtype=torch.long)
    tacts = torch.zeros(B, N, dtype=torch.long)
    branch = torch.zeros(B, N, dtype=torch.long)
    nodes = torch.zeros(B, L, dtype=torch.long)
    for b, r in enumerate(rows):
        n = len(r["ids"])
        ids[b, :n] = torch.as_tensor(r["ids"])
        actions[b, : n - 1] = torch.as_tensor(r["actions"])
        mask[b, : n - 1] = True
        k = len(r["tree_parents"])
        parents[b, :k] = torch.as_tensor(r["tree_parents"])
        tacts[b, :k] = torch.as_tensor(r["tree_actions"])
        branch[b, :k] = torch.as_tensor(r["tree_branch"])
        nodes[b, :n] = torch.as_tensor(r["tok_nodes"])
    return {"ids": ids, "actions": actions, "mask": mask, "tree_parents": parents, "tree_actions": tacts,
            "tree_branch": branch, "tok_nodes": nodes, "index": torch.as_tensor([r["index"] for r in rows]),
            "n_events": torch.as_tensor([r["n_words"] + 1 if "n_words" in r else len(r["ids"]) - 1 for r in rows])}


class TokenBatchSampler(torch.utils.data.Sampler):
    """Batches of similar length holding at most max_tokens tokens (padded), in a seeded order per epoch.

    Sentences are sorted by length inside windows of 50 batches' worth, cut into batches, and the batches
    shuffled: little padding, and a different order each epoch. `use_epoch(e)` makes the order reproducible,
    which exact resume relies on (the trainer skips the batches already done in the epoch). Deliberately not
    called `set_epoch`: Accelerate's loaders call `set_epoch` with their own iteration counter, which restarts
    at 0 in the loader `skip_first_batches` makes, and would silently replay epoch 0's order after a resume.
    """

    def __init__(self, lengths: Sequence[int], max_tokens: int, shuffle: bool = True, seed: int = 0):
        if max_tokens < max(lengths, default=1):
            longest = max(range(len(lengths)), key=lengths.__getitem__)
            raise ConfigError(f"max_tokens={max_tokens} is smaller than the longest sentence (sentence {longest} "
                              f"of its split, {lengths[longest]} tokens): raise train.max_tokens (or "
                              "eval.max_tokens) or set data.max_words")
        self.lengths, self.max_tokens, self.shuffle, self.seed = list(lengths), max_tokens, shuffle, seed
        self.epoch = 0

    def use_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        order = list(range(len(self.lengths)))
        rng = random.Random(self.seed * 7919 + self.epoch)
        if self.shuffle:
            rng.shuffle(order)
            avg = max(1, sum(self.lengths) // max(len(self.lengths), 1))
            window = max(1, 50 * self.max_tokens // avg)
            order = [i for s in range(0, len(order), window)
                     for i in sorted(order[s:s + window], key=lambda i: self.lengths[i])]
        else:
            order.sort(key=lambda i: self.lengths[i])
        out, cur, longest = [], [], 0
        for i in order:
            longest_new = max(longest, self.lengths[i])
            if cur and longest_new * (len(cur) + 1) > self.max_tokens:
                out.append(cur)
                cur, longest_new = [], self.lengths[i]
            cur.append(i)
            longest = longest_new
        if cur:
            out.append(cur)
        if self.shuffle:
            rng.shuffle(out)
        return out

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


def make_loader(ds, max_tokens: int, shuffle: bool, seed: int = 0) -> torch.utils.data.DataLoader:
    lengths = [len(x) for x in ds["ids"]]
    rows = ds.to_list()       # small corpora: plain Python rows are faster to collate than Arrow lookups
    sampler = TokenBatchSampler(lengths, max_tokens, shuffle, seed)
    # Its own generator: creating an iterator draws a seed from the loader's generator, and drawing it from the
    # global RNG would shift every later dropout mask when a resumed run creates its iterator at another time.
    return torch.utils.data.DataLoader(rows, batch_sampler=sampler, collate_fn=collate,
                                       generator=torch.Generator().manual_seed(seed))


@dataclass
class Prepared:
    """Everything a run needs from the data: vocabularies, datasets and counts."""
    words: object
    actions: ActionVocab
    tree_vocab: ActionVocab
    splits: dict
    read_stats: dict
    trees: dict

    def save_vocab(self, run_dir: str | Path) -> None:
        run_dir = Path(run_dir)
        self.words.save(str(run_dir / "words.json"))
        self.actions.save(run_dir / "actions.json")
        self.tree_vocab.save(run_dir / "tree_labels.json")


def prepare(cfg: DataConfig, shuffle_seed: int = 0, splits: Sequence[str] = ("train", "dev", "test"),
            vocab_dir: str | Path | None = None) -> Prepared:
    """Load the corpus and build (or, from vocab_dir, reload) the vocabularies, then encode the splits."""
    trees, stats = load_corpus(cfg)
    if vocab_dir is not None and (Path(vocab_dir) / "words.json").is_file():
        words = load_word_vocab(Path(vocab_dir) / "words.json")
        if vocab_kind(words) != cfg.vocab:
            raise CheckpointError(f"{Path(vocab_dir) / 'words.json'} is a {vocab_kind(words)} vocabulary, but "
                                  f"data.vocab={cfg.vocab}")
        actions = ActionVocab.load(Path(vocab_dir) / "actions.json")
        tree_vocab = ActionVocab.load(Path(vocab_dir) / "tree_labels.json")
    else:
        words = build_vocab(trees["train"], cfg)
        actions = build_action_vocab(trees["train"], cfg.actions, cfg.transform, subword=cfg.vocab != "word")
        tree_vocab = build_tree_vocab(trees["train"], cfg.actions)
    out = {s: encode_split(trees[s], words, actions, cfg.actions, tree_vocab, cfg.transform, shuffle_seed)
           for s in splits}
    return Prepared(words, actions, tree_vocab, out, stats, trees)
