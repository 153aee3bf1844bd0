"""Tiny synthetic treebanks for the language tests (no real data, no downloads).

A toy grammar with hand-set dependency heads: (DET) (ADJ) NOUN VERB ((DET) NOUN) (.). Word choice is random,
so a small model can learn the structure (which actions follow which words) in a few dozen steps.
"""
import random

NOUNS = ["dog", "cat", "bird", "fish", "man", "child"]
VERBS = ["sees", "likes", "eats", "hears"]
ADJS = ["big", "small", "red"]
DETS = ["the", "a"]


def toy_sentence(rng: random.Random, max_words: int = 8):
    """(words, heads, deprels), heads 1-based with 0 for the root."""
    while True:
        words, heads, deps = [], [], []
        subj_det = rng.random() < 0.7
        subj_adj = rng.random() < 0.3
        has_obj = rng.random() < 0.6
        obj_det = has_obj and rng.random() < 0.7
        punct = rng.random() < 0.8
        # positions
        i = 0
        slots = []
        if subj_det:
            slots.append(("det", rng.choice(DETS)))
        if subj_adj:
            slots.append(("amod", rng.choice(ADJS)))
        slots.append(("nsubj", rng.choice(NOUNS)))
        slots.append(("root", rng.choice(VERBS)))
        if has_obj:
            if obj_det:
                slots.append(("det2", rng.choice(DETS)))
            slots.append(("obj", rng.choice(NOUNS)))
        if punct:
            slots.append(("punct", "."))
        idx = {name: k + 1 for k, (name, _) in enumerate(slots)}
        for name, w in slots:
            words.append(w)
            head = {"det": idx["nsubj"], "amod": idx["nsubj"], "nsubj": idx["root"], "root": 0,
                    "det2": idx.get("obj"), "obj": idx["root"], "punct": idx["root"]}[name]
            heads.append(head)
            deps.append("det" if name == "det2" else name)
            i += 1
        if len(words) <= max_words:
            return words, heads, deps


def conllu_text(sentences) -> str:
    out = []
    for s, (words, heads, deps) in enumerate(sentences):
        out.append(f"# sent_id = toy-{s}")
        for k, (w, h, d) in enumerate(zip(words, heads, deps), 1):
            out.append(f"{k}\t{w}\t{w}\tX\tX\t_\t{h}\t{d}\t_\t_")
        out.append("")
    return "\n".join(out) + "\n"


def write_toy_root(root, n_train=240, n_dev=40, n_test=40, seed=0):
    rng = random.Random(seed)
    d = root / "ud-english-ewt"
    d.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("dev", n_dev), ("test", n_test)):
        (d / f"en_ewt-ud-{split}.conllu").write_text(conllu_text([toy_sentence(rng) for _ in range(n)]))
    return root


def tiny_overrides(root, **extra):
    base = {"data.root": str(root), "data.actions.max_up": 2, "data.actions.max_down": 2,
            "model.d_model": 32, "model.n_layer": 2, "model.n_head": 4, "model.n_pos_head": 2, "model.d_ff": 64,
            "model.pos_dim": 16, "model.dropout": 0.0, "model.max_len": 32, "train.steps": 40,
            "train.max_tokens": 256, "train.lr": 0.01, "train.warmup": 5, "train.eval_every": 20,
            "train.patience": 5, "train.threads": 1, "train.log_with": "none", "train.progress": False,
            "eval.beams": [1, 5], "eval.max_tokens": 512, "eval.bootstrap": 100}
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]
