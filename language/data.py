"""Corpora -> word vocabulary (tokenizers) -> action vocabulary -> datasets (datasets) -> length-bucketed batches.

    corpus = load_corpus(DataConfig())                          # {'train': [Tree], 'dev': [...], 'test': [...]}
    words = build_word_vocab(corpus["train"], min_freq=2)       # tokenizers.Tokenizer, word level, <unk> below 2
    actions = build_action_vocab(corpus["train"], cfg.actions)  # language.actions.ActionVocab
    ds = encode_split(corpus["dev"], words, actions, cfg.actions)   # datasets.Dataset, one row per sentence

Everything is read from local files: the treebanks under `data.root` (default `../shared/data` relative to the
repository root; the environment variable TEMT_DATA overrides it, an explicit `data.root=...` overrides both).
Nothing is downloaded: `encode_split` imports and calls `datasets` with HF_DATASETS_OFFLINE and HF_HUB_OFFLINE set
to 1 (unless set already) and restores the environment afterwards; importing this module sets neither.

One row: ids = [BOS, w_1..w_n, EOS]; actions = a_0..a_n (a_n = END; a_i moves from token i to token i+1);
tree_parents / tree_actions (node labels) / tree_branch (rank among siblings) over the tree's nodes (tree mode),
tok_nodes = the node of every token (BOS and EOS at the ROOT). All models predict the same n + 1 events (n words and EOS) from one shared vocabulary.
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

from .actions import NEXT, ActionConfig, ActionVocab, action_names, shuffle_actions, tree_action_names  # noqa: E402
from .trees import (ReadStats, Tree, TreebankError, from_spacy, load_spacy, read_brackets, read_conllu,  # noqa: E402
                    read_ptb_zip)

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIAL_WORDS = (PAD, UNK, BOS, EOS)            # ids 0..3
REPO_ROOT = Path(__file__).resolve().parent.parent
CORPORA = ("ud-ewt", "ptb-sample", "ttc", "raw")


@dataclass
class DataConfig:
    root: str = ""                   # treebank folder; '' = $TEMT_DATA or <repo>/../shared/data
    corpus: str = "ud-ewt"           # ud-ewt (the study) | ptb-sample | ttc (Tale of Two Cities) | raw (text)
    train_limit: int = 0             # first N training sentences (0 = all): the quick study uses a subset
    dev_limit: int = 0
    test_limit: int = 0
    max_words: int = 0               # drop longer sentences from every split (0 = keep all)
    min_freq: int = 2                # words rarer than this in train become <unk> (spec section 6)
    on_error: str = "raise"          # 'skip' skips malformed sentences and counts them
    transform: str = "gold"          # gold | next (one action, known in advance) | shuffled (permuted per sentence)
    actions: ActionConfig = field(default_factory=ActionConfig)
    parser: str = ""                 # corpus=raw: the spaCy pipeline that parses root/{train,dev,test}.txt (a path
                                     # or an installed package; `temt-language parser` builds a UD-label one)

    def __post_init__(self):
        if self.corpus not in CORPORA:
            raise ValueError(f"corpus must be one of {CORPORA}, got {self.corpus!r}")
        if self.corpus == "raw" and not self.parser:
            raise ValueError("data.corpus=raw needs data.parser (a spaCy pipeline: `temt-language parser --out DIR` "
                             "builds a UD-label one from a treebank, offline)")
        if self.transform not in ("gold", "next", "shuffled"):
            raise ValueError(f"transform must be gold, next or shuffled, got {self.transform!r}")
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}")
        for name in ("train_limit", "dev_limit", "test_limit", "max_words"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (got {getattr(self, name)})")
        if self.min_freq < 1:
            raise ValueError(f"min_freq must be >= 1 (got {self.min_freq})")


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
    key = (str(root), cfg.corpus, cfg.train_limit, cfg.dev_limit, cfg.test_limit, cfg.max_words, cfg.on_error,
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
            trees, st = read_text(root / f"{split}.txt", nlp)
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


def read_text(path: str | Path, nlp) -> tuple[list[Tree], ReadStats]:
    """Raw text parsed on the fly: one tree per sentence spaCy finds, one line (a sentence or a paragraph) at a
    time; blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"raw text file {str(path)!r} does not exist")
    try:
        lines = [line.strip() for line in path.read_bytes().decode("utf-8").splitlines()]
    except UnicodeDecodeError as err:
        raise TreebankError(f"{path}: not UTF-8 text ({err})") from None
    trees, stats = [], ReadStats()
    for doc in nlp.pipe(line for line in lines if line):
        for t in from_spacy(doc):
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


def build_action_vocab(trees: Sequence[Tree], cfg: ActionConfig, transform: str = "gold") -> ActionVocab:
    if transform == "next":
        return ActionVocab([*ActionVocab.SPECIALS, NEXT], {"transform": "next"})
    return ActionVocab.build((action_names(t, cfg) for t in trees), cfg.min_count, meta={"transform": transform})


def build_tree_vocab(trees: Sequence[Tree], cfg: ActionConfig) -> ActionVocab:
    return ActionVocab.build((tree_action_names(t, cfg)[1:] for t in trees), cfg.tree_min_count,
                             meta={"kind": "tree labels"})


# ----------------------------------------------------------------------------------------------------------------
# datasets

def encode_tree(tree: Tree, index: int, words, actions: ActionVocab, tree_vocab: ActionVocab | None,
                cfg: ActionConfig, transform: str = "gold", shuffle_seed: int = 0) -> dict:
    ids = encode_words(words, tree.words)
    if transform == "next":
        acts = [actions.index[NEXT]] * (len(tree.words) + 1)    # one action everywhere, even into EOS
    else:
        acts = actions.encode(action_names(tree, cfg))
        if transform == "shuffled":
            acts = shuffle_actions(acts, shuffle_seed * 1_000_003 + index)
    row = {"ids": ids, "actions": acts, "n_words": len(tree.words), "index": index,
           "tree_parents": list(tree.parents), "tok_nodes": [0] + list(tree.word_nodes) + [0]}
    row["tree_actions"] = tree_vocab.encode(tree_action_names(tree, cfg)) if tree_vocab is not None else \
        [0] * len(tree.parents)
    row["tree_actions"][0] = 0
    row["tree_branch"] = branch_indices(tree.parents)
    return row


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
    columns = {k: [r[k] for r in rows] for k in
               ("ids", "actions", "n_words", "index", "tree_parents", "tree_actions", "tree_branch", "tok_nodes")}
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
    """Pad a list of rows into tensors. Padding: ids 0 (<pad>), actions 0, tree parents -1 (a fresh root)."""
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
            "tree_branch": branch, "tok_nodes": nodes, "index": torch.as_tensor([r["index"] for r in rows])}


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
        actions = ActionVocab.load(Path(vocab_dir) / "actions.json")
        tree_vocab = ActionVocab.load(Path(vocab_dir) / "tree_labels.json")
    else:
        words = build_word_vocab(trees["train"], cfg.min_freq)
        actions = build_action_vocab(trees["train"], cfg.actions, cfg.transform)
        tree_vocab = build_tree_vocab(trees["train"], cfg.actions)
    out = {s: encode_split(trees[s], words, actions, cfg.actions, tree_vocab, cfg.transform, shuffle_seed)
           for s in splits}
    return Prepared(words, actions, tree_vocab, out, stats, trees)
