"""The ladder's silver rung (docs/results/language-ladder.md, amendment L1): the N = 3,000 rung's own sentences
given as raw text and parsed by a UD parser that never saw them, so only the training trees differ from the gold
rung. Driven by scripts/language_silver.sh; three steps:

    python scripts/language_silver.py prepare DIR     # DIR/text/{train,dev,test}.txt and DIR/other-ud-{train,dev}.conllu
    python scripts/language_silver.py accuracy DIR    # the parser's UAS / LAS on the silver training sentences
    python scripts/language_silver.py summary DIR     # the pre-registered ratios (needs DIR/study/results.json)

The text files hold the gold rung's words exactly (one sentence per line, words separated by spaces, read with
data.raw_format=tokens), so vocabularies and scored test events are the gold rung's. The parser is trained on the
other English UD treebanks (LinES, ParTUT, Atis): a parser trained on EWT train would be parsing its own training
sentences (near-gold trees), while silver trees are what a user gets on text the parser has not seen.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from language.data import DataConfig, data_root, load_corpus  # noqa: E402
from language_compare import compare, seed_nll  # noqa: E402  (scripts/, beside this file)

N = 3000                                   # the gold rung this rung twins (the quick study's subset)
LIMITS = {"train": N, "dev": 300, "test": 200}
OTHER_UD = ("ud-english-lines/en_lines", "ud-english-partut/en_partut", "ud-english-atis/en_atis")
GOLD_RESULTS = ROOT / "docs" / "results" / "language-ladder" / f"N{N}.json"
BASELINES = ("sinusoidal", "rope")


def gold_config() -> DataConfig:
    return DataConfig(corpus="ud-ewt", train_limit=LIMITS["train"], dev_limit=LIMITS["dev"],
                      test_limit=LIMITS["test"], max_words=25)


def prepare(out: Path) -> None:
    splits, _ = load_corpus(gold_config())
    (out / "text").mkdir(parents=True, exist_ok=True)
    for split, trees in splits.items():
        for t in trees:
            bad = [w for w in t.words if not w or w != w.strip() or len(w.split()) != 1]
            if bad:
                raise SystemExit(f"{t.source}: word {bad[0]!r} holds whitespace, which raw_format=tokens cannot keep")
        (out / "text" / f"{split}.txt").write_text("".join(" ".join(t.words) + "\n" for t in trees))
        print(f"{out / 'text' / f'{split}.txt'}: {len(trees)} sentences, {sum(len(t) for t in trees)} words")
    root = data_root(DataConfig())
    for split in ("train", "dev"):
        parts = [(root / f"{stem}-ud-{split}.conllu").read_text() for stem in OTHER_UD]
        path = out / f"other-ud-{split}.conllu"
        path.write_text("".join(p.rstrip("\n") + "\n\n" for p in parts))
        print(f"{path}: {sum(p.count('# sent_id') for p in parts)} sentences")


def accuracy(out: Path, parser: Path) -> dict:
    """Unlabelled and labelled attachment of the silver trees against gold, over every word (punctuation too)."""
    gold, _ = load_corpus(gold_config())
    silver, _ = load_corpus(DataConfig(corpus="raw", root=str(out / "text"), parser=str(parser),
                                       raw_format="tokens", **{f"{s}_limit": n for s, n in LIMITS.items()},
                                       max_words=25))
    res = {}
    for split in ("train", "test"):
        g_trees, s_trees = gold[split], silver[split]
        if [t.words for t in g_trees] != [t.words for t in s_trees]:
            raise SystemExit(f"{split}: the silver sentences' words differ from the gold ones")
        words = heads = labelled = 0
        for g, s in zip(g_trees, s_trees):
            for k in range(1, len(g.parents)):
                words += 1
                if g.parents[k] == s.parents[k]:
                    heads += 1
                    labelled += g.labels[k] == s.labels[k]
        res[split] = {"sentences": len(g_trees), "words": words, "uas": heads / words, "las": labelled / words}
    res["parser"] = str(parser)
    (out / "parser_accuracy.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return res


def reading(ci: list[float], below: str, above: str, level: str) -> str:
    return below if ci[1] < 1 else above if ci[0] > 1 else level


def summary(out: Path) -> dict:
    silver = json.loads((out / "study" / "results.json").read_text())["arms"]
    gold = json.loads(GOLD_RESULTS.read_text())["arms"]
    res = {"silver_vs_gold": compare(silver["grammar"], gold["grammar"])}
    res["silver_vs_gold"]["reading"] = reading(res["silver_vs_gold"]["ratio_ci95"], "silver parses help",
                                               "silver parses cost the grammar model at this scale",
                                               "no cost of silver parses detected")
    for b in BASELINES:
        r = compare(silver["grammar"], silver[b])
        r["reading"] = reading(r["ratio_ci95"], "grammar (silver) better", "grammar (silver) worse", "level")
        res[f"silver_vs_{b}"] = r
        same = np.array_equal(seed_nll(silver[b]), seed_nll(gold[b]))
        res[f"{b}_equals_gold_rung"] = bool(same)
    acc = out / "parser_accuracy.json"
    res["parser_accuracy"] = json.loads(acc.read_text()) if acc.is_file() else None
    (out / "summary.json").write_text(json.dumps(res, indent=1))
    for key in ("silver_vs_gold", "silver_vs_sinusoidal", "silver_vs_rope"):
        r = res[key]
        print(f"{key}: {r['ppl_a']:.2f} / {r['ppl_b']:.2f} = {r['ratio']:.3f} "
              f"[{r['ratio_ci95'][0]:.3f}, {r['ratio_ci95'][1]:.3f}]: {r['reading']}")
    print({b: res[f"{b}_equals_gold_rung"] for b in BASELINES})
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=("prepare", "accuracy", "summary"))
    ap.add_argument("dir", type=Path)
    ap.add_argument("--parser", type=Path, help="accuracy: the pipeline (default DIR/parser/model-best)")
    args = ap.parse_args()
    if args.step == "prepare":
        prepare(args.dir)
    elif args.step == "accuracy":
        accuracy(args.dir, args.parser or args.dir / "parser" / "model-best")
    else:
        summary(args.dir)


if __name__ == "__main__":
    main()
