"""Trees to action sequences, and the action vocabulary.

A sentence of n words is read as BOS w_1 ... w_n EOS. Action a_i (i = 0..n) is the move from token i to token i+1:

    a_0        ROOT -> w_1            (BOS sits at the virtual ROOT)
    a_i        w_i -> w_{i+1}         the tree path: `steps up` to the lowest common ancestor, then `steps down`
    a_n        w_n -> EOS             the END action

Dependency trees (words are nodes): `u{up}d{down}`, optionally `:{deprel of w_{t+1}}` (`labels=True`). In UD EWT
train 43 (up, down) pairs occur, and capping each at 4 covers 99.3% (spec section 6); moves beyond the cap are
the OVERFLOW action. Constituency trees (words are leaves): `c{close}o{open}` with close = up - 1 brackets closed
and open = down - 1 brackets opened (the preterminal is part of the word), optionally `:{labels of the opened
brackets}`. Subword tokenisation inserts CONTINUE between pieces of one word (`expand_for_subwords`).

The vocabulary (`ActionVocab`) is built from training data only, saved as JSON beside the model, and maps any
action it has not seen (or that was rarer than `min_count` in training) to OVERFLOW, counting every such case.

Position i of the model is e_i = sigma(e_{i-1} W_{a_{i-1}}), e_0 = e_init (BOS): a position needs only actions
that precede the word it belongs to, so a model can build it while it predicts its own actions (no leak).

Tree mode (conditional diagnostic, Shiv & Quirk): every node from its parent with the node's own label as the
action (`tree_actions`), which needs the whole tree and so knows the future: gold structure given for free.
"""
from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from temt_core.checkpoint import CheckpointError

from .trees import Tree

OVERFLOW, END, CONTINUE, NEXT = "<overflow>", "<end>", "<continue>", "<next>"


@dataclass
class ActionConfig:
    max_up: int = 4                  # cap on steps up (close brackets + 1); 4 x 4 covers 99.3% of UD EWT moves
    max_down: int = 4                # cap on steps down (open brackets + 1)
    labels: bool = False             # add the arrival label (deprel of w_{t+1} / labels of opened brackets)
    label_subtypes: bool = False     # keep UD subtypes (nmod:poss) in labels; False keeps the universal part
    min_count: int = 1               # actions seen fewer times in training map to OVERFLOW
    tree_min_count: int = 1          # same, for the tree-mode label vocabulary

    def __post_init__(self):
        for name in ("max_up", "max_down", "min_count", "tree_min_count"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (got {getattr(self, name)})")


def _label(label: str, cfg: ActionConfig) -> str:
    return label if cfg.label_subtypes else label.split(":", 1)[0]


def path_moves(tree: Tree) -> list[tuple[int, int, list[int]]]:
    """(up, down, nodes entered on the way down) for ROOT -> w_1 -> ... -> w_n (n moves; END not included)."""
    depth = tree.depths()
    parents = tree.parents
    out = []
    prev = 0
    for node in tree.word_nodes:
        a, b = prev, node
        up, down_nodes = 0, []
        while depth[a] > depth[b]:
            a, up = parents[a], up + 1
        while depth[b] > depth[a]:
            down_nodes.append(b)
            b = parents[b]
        while a != b:
            a, up = parents[a], up + 1
            down_nodes.append(b)
            b = parents[b]
        out.append((up, len(down_nodes), down_nodes[::-1]))
        prev = node
    return out


def action_names(tree: Tree, cfg: ActionConfig) -> list[str]:
    """The n + 1 action names of a sentence (the last is END). Moves beyond the caps are OVERFLOW."""
    names = []
    for up, down, entered in path_moves(tree):
        if tree.kind == "constituency":
            close, open_ = up - 1 if up else 0, down - 1
            if up > cfg.max_up or down > cfg.max_down:
                names.append(OVERFLOW)
                continue
            name = f"c{close}o{open_}"
            if cfg.labels and open_ > 0:
                name += ":" + ",".join(tree.labels[n] for n in entered[:-1])
        else:
            if up > cfg.max_up or down > cfg.max_down:
                names.append(OVERFLOW)
                continue
            name = f"u{up}d{down}"
            if cfg.labels:
                name += ":" + _label(tree.labels[tree.word_nodes[len(names)]], cfg)
        names.append(name)
    names.append(END)
    return names


def tree_action_names(tree: Tree, cfg: ActionConfig) -> list[str]:
    """One action per node for tree mode: the node's label (ROOT's is unused)."""
    return [_label(lab, cfg) if tree.kind == "dependency" else lab for lab in tree.labels]


def shuffle_actions(ids: Sequence[int], seed: int) -> list[int]:
    """Control: the sentence's actions in a random order (END stays last). Same permutation every epoch."""
    body = list(ids[:-1])
    random.Random(seed).shuffle(body)
    return body + [ids[-1]]


def expand_for_subwords(actions: Sequence, pieces: Sequence[int], fill=CONTINUE) -> list:
    """Word-level actions (n + 1, END last) -> piece-level actions, CONTINUE between the pieces of one word.

    pieces[t] = number of subword pieces of word t. The move into the first piece of a word is the tree move;
    each further piece of the same word arrives by CONTINUE (`fill`: the name, or its id for encoded actions).
    Scores are summed per word in evaluation.
    """
    if len(actions) != len(pieces) + 1:
        raise ValueError(f"expected {len(pieces) + 1} actions for {len(pieces)} words, got {len(actions)}")
    out = []
    for a, k in zip(actions, pieces):
        if k < 1:
            raise ValueError(f"every word needs at least one piece, got {k}")
        out.append(a)
        out.extend([fill] * (k - 1))
    out.append(actions[-1])
    return out


def continuation_flags(pieces: Sequence[int]) -> list[bool]:
    """Per action a_0..a_P of a subword sentence (P pieces): True where a_i moves into a continuation piece (not
    the first of its word), i.e. where the canonical action is CONTINUE; END into EOS is never one."""
    out = []
    for k in pieces:
        out.extend([False] + [True] * (k - 1))
    return out + [False]


class ActionVocab:
    """Action names <-> ids. Id 0 is OVERFLOW; specials first, then training actions by frequency.

    encode() maps names it does not know to OVERFLOW and counts them in `self.unseen` (name -> count), so a
    report can say how often it happened; `self.overflow_total` also counts moves beyond the caps.
    """

    SPECIALS = (OVERFLOW, END)

    def __init__(self, names: Sequence[str], meta: dict | None = None):
        if list(names[: len(self.SPECIALS)]) != list(self.SPECIALS):
            raise ValueError(f"an ActionVocab starts with {self.SPECIALS}, got {list(names[:2])}")
        if len(set(names)) != len(names):
            raise ValueError("duplicate action names")
        self.names = list(names)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.meta = dict(meta or {})
        self.unseen: Counter = Counter()
        self.overflow_total = 0
        self.encoded_total = 0

    @classmethod
    def build(cls, sequences: Iterable[Sequence[str]], min_count: int = 1, extra: Sequence[str] = (),
              meta: dict | None = None) -> "ActionVocab":
        counts = Counter(n for seq in sequences for n in seq)
        kept = sorted((n for n, c in counts.items() if c >= min_count and n not in cls.SPECIALS),
                      key=lambda n: (-counts[n], n))
        names = list(cls.SPECIALS) + [e for e in extra if e not in cls.SPECIALS and e not in kept] + kept
        total = sum(counts.values())
        covered = sum(counts[n] for n in names if n != OVERFLOW)
        info = {"min_count": min_count, "train_actions": total, "coverage": covered / max(total, 1),
                "train_overflow": counts.get(OVERFLOW, 0) + sum(c for n, c in counts.items() if c < min_count)}
        return cls(names, {**info, **(meta or {})})

    def __len__(self) -> int:
        return len(self.names)

    def encode(self, names: Sequence[str]) -> list[int]:
        ids = []
        for n in names:
            i = self.index.get(n)
            if i is None:
                self.unseen[n] += 1
                i = 0
            self.overflow_total += i == 0
            ids.append(i)
        self.encoded_total += len(names)
        return ids

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.names[i] for i in ids]

    def warning(self) -> str | None:
        """A one-line summary of unseen actions, or None when there were none."""
        n = sum(self.unseen.values())
        if not n:
            return None
        top = ", ".join(f"{k} x{v}" for k, v in self.unseen.most_common(5))
        return (f"{n} action(s) unseen in training were mapped to {OVERFLOW} ({len(self.unseen)} distinct; "
                f"most common: {top})")

    def to_dict(self) -> dict:
        return {"names": self.names, "meta": self.meta}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def from_dict(cls, data: dict) -> "ActionVocab":
        return cls(data["names"], data.get("meta"))

    @classmethod
    def load(cls, path: str | Path) -> "ActionVocab":
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_bytes().decode("utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as err:
            raise CheckpointError(f"{path}: not an action vocabulary, or truncated ({type(err).__name__}: "
                                  f"{err})") from None


def pair_coverage(trees: Iterable[Tree], cap_up: int = 4, cap_down: int = 4) -> dict:
    """How many distinct (up, down) pairs occur and what fraction the caps cover (spec: 43 pairs, 99.3%)."""
    pairs = Counter()
    for t in trees:
        for up, down, _ in path_moves(t):
            pairs[(up, down)] += 1
    total = sum(pairs.values())
    inside = sum(c for (u, d), c in pairs.items() if u <= cap_up and d <= cap_down)
    return {"distinct_pairs": len(pairs), "moves": total, "covered": inside / max(total, 1)}
