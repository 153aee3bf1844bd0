"""A UD-label dependency parser for raw text, trained offline from a treebank with spaCy's own training.

    temt-language parser --out parsers/ud-ewt                       # UD EWT train/dev from the shared data
    temt-language parser --out parsers/toy --train T.conllu --dev D.conllu --steps 300
    temt-language actions --spacy parsers/ud-ewt/model-best "Any raw text."

spaCy's English pipelines label dependencies with ClearNLP's scheme, not UD's, so a model trained on UD trees must
not read their parses (spec section 6). This builds a pipeline whose labels are the treebank's own:
CoNLL-U -> spaCy DocBin (spaCy's CoNLL-U converter) -> `spacy init config` for a tok2vec + parser pipeline
(efficiency preset, no pretrained vectors, so nothing is downloaded) -> `spacy train`. The pipeline is written to
OUT/model-best (and OUT/model-last), with OUT/train.spacy, OUT/dev.spacy and OUT/config.cfg beside it;
`language.trees.load_spacy(OUT/model-best)` loads it and `language.trees.from_spacy` turns its parses into trees.
"""
from __future__ import annotations

from pathlib import Path

from temt_core.config import ConfigError


def conllu_to_docbin(conllu: str | Path, out: str | Path, n_sents: int = 10) -> int:
    """spaCy's CoNLL-U converter into a DocBin file; returns the number of sentences."""
    from spacy.tokens import DocBin
    from spacy.training.converters import conllu_to_docs
    text = Path(conllu).read_bytes().decode("utf-8", errors="strict")
    try:
        docs = list(conllu_to_docs(text, n_sents=n_sents, no_print=True)) if text.strip() else []
    except ValueError as err:                  # a line without 10 tab-separated columns
        raise ConfigError(f"{conllu}: not a CoNLL-U file spaCy can read ({err})") from None
    if not docs:
        raise ConfigError(f"{conllu}: no sentences to train a parser on")
    DocBin(docs=docs).to_disk(out)
    return sum(len(list(d.sents)) for d in docs)


def build_parser(out: str | Path, train: str | Path | None = None, dev: str | Path | None = None,
                 steps: int = 20_000, seed: int = 0, gpu: int = -1, data_root: str = "") -> Path:
    """Train the parser (see the module docstring); returns OUT/model-best. train/dev default to UD EWT's
    splits under the shared data folder (data_root, $TEMT_DATA or ../shared/data)."""
    from spacy.cli.init_config import init_config
    from spacy.cli.train import train as spacy_train

    from .data import DataConfig, data_root as root_of
    out = Path(out)
    if train is None or dev is None:
        ewt = root_of(DataConfig(root=data_root)) / "ud-english-ewt"
        train = train or ewt / "en_ewt-ud-train.conllu"
        dev = dev or ewt / "en_ewt-ud-dev.conllu"
    for name, path in (("train", train), ("dev", dev)):
        if not Path(path).is_file():
            raise ConfigError(f"parser --{name}: {path} does not exist")
    if steps < 1:
        raise ConfigError(f"parser --steps must be >= 1 (got {steps})")
    if (out / "model-best").exists():
        raise ConfigError(f"{out / 'model-best'} exists: choose another --out (a parser is never overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    n_train = conllu_to_docbin(train, out / "train.spacy")
    conllu_to_docbin(dev, out / "dev.spacy")
    config = init_config(lang="en", pipeline=["parser"], optimize="efficiency", gpu=gpu >= 0, silent=True)
    config.to_disk(out / "config.cfg")
    spacy_train(out / "config.cfg", out, use_gpu=gpu,
                overrides={"paths.train": str(out / "train.spacy"), "paths.dev": str(out / "dev.spacy"),
                           "training.max_steps": steps, "training.seed": seed,
                           "training.eval_frequency": max(1, min(200, steps // 4))})
    best = out / "model-best"
    (out / "README.txt").write_text(f"UD-label dependency parser trained by temt-language parser on {train} "
                                    f"({n_train} sentences), dev {dev}, {steps} steps, seed {seed}.\n")
    return best
