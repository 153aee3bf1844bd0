"""The arms of the language study (spec section 6): what each one trains and how it is scored.

`language.study` trains and scores them; `language.report` tabulates them. Both read this registry, and
neither imports the other for it.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arm:
    name: str
    pos: str
    structure: str
    transform: str = "gold"
    table: str = "lm"                # lm (a language-model perplexity) | conditional (gold structure given)
    what: str = ""


ARMS = {a.name: a for a in [
    Arm("sinusoidal", "sinusoidal", "none", what="fixed sinusoidal positions (the paper's comparison)"),
    Arm("learned", "learned", "none", what="learned absolute positions"),
    Arm("rope", "rope", "none", what="rotary positions"),
    Arm("alibi", "alibi", "none", what="ALiBi distance biases"),
    Arm("nopos", "none", "none", what="no positions (causal mask only)"),
    Arm("grammar", "grammar", "joint", what="grammar positions, path-integrated, actions predicted (joint)"),
    Arm("next", "grammar", "given", "next", what="control: recurrent positions with one 'next' action"),
    Arm("shuffled", "grammar", "joint", "shuffled", what="control: the sentence's actions shuffled, predicted"),
    Arm("shiv_quirk", "shiv_quirk", "joint", what="control: fixed push/pop matrices (Shiv & Quirk), predicted"),
    Arm("action_tokens", "sinusoidal", "tokens", what="control: actions as token embeddings, sinusoidal model"),
    Arm("aux", "sinusoidal", "aux", what="control: action prediction as an auxiliary loss only"),
    Arm("grammar_tree", "grammar_tree", "given", table="conditional",
        what="conditional: gold-tree positions, each node from its parent (tree mode)"),
    Arm("shiv_quirk_tree", "shiv_quirk_tree", "given", table="conditional",
        what="conditional: Shiv & Quirk root-path positions of the gold tree"),
]}
QUICK_ARMS = list(ARMS)      # the quick CPU study runs every arm (its run time: README.md, "The language study")
REFERENCE = "grammar"        # parameter counts are matched to this arm
BASELINE = "sinusoidal"      # the hypothesis compares the grammar model against this arm
CONTROLS = ("next", "shuffled", "shiv_quirk", "action_tokens", "aux")     # the verdict's control comparisons


def metric_kind(arm: Arm) -> str:
    if arm.table == "conditional":
        return "conditional"
    if arm.structure in ("joint", "tokens"):
        return "joint"
    return "exact"           # none, aux, and 'next' (its one action is known in advance: no structure to pay for)
