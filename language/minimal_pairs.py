"""Targeted syntax tests: subject-verb agreement minimal pairs built offline from a UD treebank, scored per run.

    pairs, stats = build_pairs("../shared/data/ud-english-ewt/en_ewt-ud-test.conllu",
                               lexicon=read_lexicon("../shared/data/ud-english-ewt/en_ewt-ud-train.conllu"))
    res = score_run("runs/language-quick/grammar/seed0")       # writes RUN/pairs.json
    temt-language pairs RUN [RUN ...] [--file F.conllu] [--limit N] [--beam K] [--force]

A pair is a treebank sentence whose finite verb agrees with a third-person nominal or pronominal subject, and the
same sentence with that one verb's number flipped (is <-> are, was <-> were, has <-> have, does <-> do, 's <-> 're
or 've, and a lexical verb's VBZ <-> VBP form of the same lemma in the training split's lexicon). Everything else,
the tree included, stays: the ungrammatical sentence keeps the grammatical sentence's tree. Pairs come from a held-out
file (UD EWT's test split by default), never from the training split the models learn from; the training split only
supplies the lexicon of verb forms. Each pair has a category: `be`, `have/do` or `lexical` (the verb), and a flag
`attractor` (a noun of the opposite number stands between the subject and the verb), which the report counts as a
fourth, overlapping category.

Scoring: a pair is right when the model gives the grammatical sentence the lower whole-sentence negative
log-likelihood (both have the same number of words, so totals compare directly; a tie is wrong). Exact arms are
scored by their exact word NLL (language.scoring.score_dataset with the run's own vocabularies); structure-predicting
arms by the word-synchronous beam bound at one fixed K for both sentences (eval.pairs_beam, with the run's
eval.action_top), without proposals (the gold tree would be the same for both sentences, so it is left out).
Comparing two bounds is an approximation: each is an upper bound on its sentence's NLL, and the beam may be tighter
for one sentence than for the other, so a pair can be "wrong" for the bound while the model's exact marginal gets it
right (or the reverse). Conditional arms (gold structure given: not language models) are refused. Pairs whose
grammatical or flipped verb form is <unk> in the run's vocabulary cannot test agreement and are skipped and counted,
as are sentences longer than the run's data.max_words (the run never saw such lengths).
"""
from __future__ import annotations

import dataclasses
import functools
import io
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from temt_core.config import ConfigError

from .trees import ROOT_LABEL, Tree, TreebankError, decode_utf8, read_conllu

SUBJECT_RELS = ("nsubj", "nsubj:pass")
NOMINAL = ("NOUN", "PROPN", "PRON")         # subjects whose number is a feature of their head word
NOUNS = ("NOUN", "PROPN")                   # what counts as an attractor (intervening nouns, after Linzen et al.)
VERB_CHILD_RELS = ("aux", "aux:pass", "cop")  # where the finite verb sits when the subject's head is not finite
FLIPS = {                                   # (lemma, form) -> flipped form: agreement forms of be / have / do
    ("be", "is"): "are", ("be", "are"): "is", ("be", "was"): "were", ("be", "were"): "was",
    ("be", "'s"): "'re", ("be", "'re"): "'s", ("be", "’s"): "’re", ("be", "’re"): "’s",
    ("have", "has"): "have", ("have", "have"): "has", ("have", "'s"): "'ve", ("have", "'ve"): "'s",
    ("have", "’s"): "’ve", ("have", "’ve"): "’s",
    ("do", "does"): "do", ("do", "do"): "does",
}
CATEGORIES = ("be", "have/do", "lexical", "attractor")      # attractor overlaps the other three
OPPOSITE = {"Sing": "Plur", "Plur": "Sing"}
XPOS_NUMBER = {"VBZ": "Sing", "VBP": "Plur"}  # present-tense forms and the (3rd-person) number they mark
DEFAULT_FILE = ("ud-english-ewt", "en_ewt-ud-test.conllu")
LEXICON_FILE = ("ud-english-ewt", "en_ewt-ud-train.conllu")


@dataclass
class Token:
    form: str
    lemma: str
    upos: str
    xpos: str
    feats: dict
    head: int                 # 1-based, 0 = root
    deprel: str
    line: int


@dataclass
class Pair:
    id: str                   # file:line of the verb's token line (unique per pair)
    words: list[str]          # the grammatical sentence
    index: int                # 0-based position of the verb in words
    good: str
    bad: str
    category: str             # be | have/do | lexical
    attractor: bool           # a noun of the opposite number between subject and verb
    subject: int              # 0-based position of the subject's head word
    number: str               # the subject's (and the grammatical verb's) number: Sing | Plur
    sentence: str             # file:line of the sentence's first line (Tree.source)
    heads: list[int]          # the tree both sentences share: CoNLL-U HEAD (1-based, 0 = root) and DEPREL
    deprels: list[str]

    def bad_words(self) -> list[str]:
        return self.words[: self.index] + [self.bad] + self.words[self.index + 1:]


@dataclass
class BuildStats:
    sentences: int = 0
    subjects: int = 0         # nsubj / nsubj:pass relations seen in the sentences kept
    pairs: int = 0
    skipped_sentences: Counter = field(default_factory=Counter)      # reason -> sentences
    skipped: Counter = field(default_factory=Counter)                # reason -> subject relations
    categories: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {"sentences": self.sentences, "subjects": self.subjects, "pairs": self.pairs,
                "skipped_sentences": dict(self.skipped_sentences), "skipped": dict(self.skipped),
                "categories": dict(self.categories)}


# ----------------------------------------------------------------------------------------------------------------
# reading

def _feats(text: str, where: str) -> dict:
    if text == "_":
        return {}
    try:
        return dict(kv.split("=", 1) for kv in text.split("|"))
    except ValueError:
        raise TreebankError(f"{where}: FEATS {text!r} is not Key=Value|Key=Value") from None


def _blocks(path: Path):
    """(first line, [(line, columns)]) of every sentence block of a CoNLL-U file (blocks as language.trees reads
    them: a block starts at its first non-blank line, comments included)."""
    if not path.is_file():
        raise FileNotFoundError(f"CoNLL-U file {str(path)!r} does not exist (set data.root, TEMT_DATA or --file)")
    text = decode_utf8(path.read_bytes(), str(path))
    rows, start = [], None
    for lineno, line in enumerate(io.StringIO(text, newline=None), 1):
        line = line.rstrip("\n")
        if not line.strip():
            if start is not None:
                yield start, rows
            rows, start = [], None
            continue
        start = lineno if start is None else start
        if not line.startswith("#"):
            rows.append((lineno, line.split("\t")))
    if start is not None:
        yield start, rows


def _tokens(rows, path: Path) -> tuple[list[Token], bool]:
    """The syntactic words of one sentence, and whether it has a multiword token (empty nodes are left out, as
    language.trees does)."""
    out, multiword = [], False
    for lineno, cols in rows:
        where = f"{path}:{lineno}"
        if len(cols) != 10:
            raise TreebankError(f"{where}: expected 10 tab-separated columns, got {len(cols)}")
        if "-" in cols[0]:
            multiword = True
            continue
        if "." in cols[0]:
            continue
        if not cols[6].isdigit():
            raise TreebankError(f"{where}: HEAD {cols[6]!r} is not a non-negative integer")
        out.append(Token(cols[1], cols[2], cols[3], cols[4], _feats(cols[5], where), int(cols[6]), cols[7], lineno))
    return out, multiword


def read_train_forms(path: str | Path) -> tuple[dict[tuple[str, str], Counter], Counter]:
    """The lexicon of a CoNLL-U file (the training split): (lemma, XPOS) -> Counter of lower-cased forms for the
    present-tense verb forms VBZ and VBP (the forms a flipped verb may take; tokens marked Typo=Yes are left out, a
    misspelling would become a second, ambiguous form), and the count of every lower-cased form (the frequency
    baseline)."""
    path = Path(path)
    lex: dict[tuple[str, str], Counter] = {}
    counts: Counter = Counter()
    for _, rows in _blocks(path):
        tokens, _ = _tokens(rows, path)
        for t in tokens:
            counts[t.form.lower()] += 1
            if t.xpos in XPOS_NUMBER and t.feats.get("Typo") != "Yes":
                lex.setdefault((t.lemma.lower(), t.xpos), Counter())[t.form.lower()] += 1
    return lex, counts


def read_lexicon(path: str | Path) -> dict[tuple[str, str], Counter]:
    """The lexicon of read_train_forms alone."""
    return read_train_forms(path)[0]


# ----------------------------------------------------------------------------------------------------------------
# building

def _with_case(like: str, form: str) -> str:
    """`form` in the capitalisation of `like` (Is -> Are, IS -> ARE)."""
    if len(like) > 1 and like.isupper():
        return form.upper()
    if like[:1].isupper():
        return form[:1].upper() + form[1:]
    return form


def _finite(t: Token) -> bool:
    """A verb form that agrees in number: present VBZ/VBP, or be's past (was / were)."""
    return t.xpos in XPOS_NUMBER or (t.xpos == "VBD" and t.lemma.lower() == "be")


def _agreeing_verb(tokens: list[Token], children: dict[int, list[int]], subj: int) -> tuple[int | None, str]:
    """The finite word that agrees with subject `subj` (0-based), or (None, why not)."""
    head = tokens[subj].head - 1
    if head < 0:
        return None, "subject is the root"                # fragments: no verb to agree with
    if _finite(tokens[head]):
        return head, ""
    # copulas and auxiliaries carry the agreement when the subject's head is a predicate or a participle
    found = [c for c in children.get(head, []) if tokens[c].deprel in VERB_CHILD_RELS and _finite(tokens[c])]
    if not found:
        return None, "no present (or be past) finite verb"      # past lexical verbs, modals, non-finite clauses
    if len(found) > 1:
        return None, "several finite verbs"                      # which one agrees is not determined by the tree
    return found[0], ""


def _flip(verb: Token, lexicon: dict) -> tuple[str | None, str, str]:
    """(flipped form, category, why not) of a finite verb (_finite: a lexical verb is VBZ or VBP here)."""
    lemma, form = verb.lemma.lower(), verb.form.lower()
    if lemma in ("be", "have", "do"):
        new = FLIPS.get((lemma, form))
        if new is None:
            return None, "", f"no {lemma} flip for {form!r}"     # am, ain't, spelled-out variants: no clean flip
        return _with_case(verb.form, new), "be" if lemma == "be" else "have/do", ""
    target = "VBP" if verb.xpos == "VBZ" else "VBZ"
    forms = lexicon.get((lemma, target))
    if not forms:
        return None, "", "flipped form not in the train lexicon"   # nothing attested to flip to
    if len(forms) > 1:
        return None, "", "flipped form ambiguous in the train lexicon"   # two attested spellings: no single answer
    new = next(iter(forms))
    if new == form:
        return None, "", "flipped form is the same word"         # nothing would change
    return _with_case(verb.form, new), "lexical", ""


def _subject_number(s: Token, children: list[int], tokens: list[Token]) -> tuple[str | None, str]:
    if s.upos not in NOMINAL:
        return None, "subject not nominal"           # clauses, numerals, adjectives: number not a feature of the head
    if s.feats.get("Number") not in OPPOSITE:
        return None, "subject number unmarked"       # relative who/that, you: agreement is with an antecedent
    if s.feats.get("Person", "3") != "3":
        return None, "1st/2nd person subject"        # am / are / have agree in person there, not only in number
    if any(tokens[c].deprel == "conj" for c in children):
        return None, "coordinated subject"           # 'John and Mary are': the phrase's number is not its head's
    return s.feats["Number"], ""


def _verb_check(verb: Token, number: str) -> str:
    if verb.feats.get("Typo") == "Yes":
        return "verb marked Typo"                    # its form is a misspelling: the flip tables do not apply
    if verb.feats.get("Person") != "3" or verb.feats.get("Number") != number:
        return "verb does not agree in the treebank"     # notional agreement ('the team are'), errors, subjunctives
    if XPOS_NUMBER.get(verb.xpos, number) != number:
        return "verb number contradicts its XPOS"     # annotation inconsistency
    return ""


def _attractor(tokens: list[Token], subj: int, verb: int, number: str) -> bool:
    lo, hi = sorted((subj, verb))
    return any(t.upos in NOUNS and t.feats.get("Number") == OPPOSITE[number] for t in tokens[lo + 1: hi])


def _sentence_pairs(tokens: list[Token], tree: Tree, path: Path, lexicon: dict, stats: BuildStats) -> list[Pair]:
    children: dict[int, list[int]] = {}
    for i, t in enumerate(tokens):
        children.setdefault(t.head - 1, []).append(i)
    found: dict[int, list] = {}                      # verb -> [(subject, number, flip, category)]
    for s, tok in enumerate(tokens):
        if tok.deprel not in SUBJECT_RELS:
            continue
        stats.subjects += 1
        number, why = _subject_number(tok, children.get(s, []), tokens)
        verb = None
        if not why:
            verb, why = _agreeing_verb(tokens, children, s)
        if not why:
            why = _verb_check(tokens[verb], number)
        new, category = None, ""
        if not why:
            new, category, why = _flip(tokens[verb], lexicon)
        if why:
            stats.skipped[why] += 1
            continue
        found.setdefault(verb, []).append((s, number, new, category))
    out = []
    for verb, subjects in found.items():
        if len(subjects) > 1:                        # two subjects claim one verb: which one it agrees with is unclear
            stats.skipped["verb with several subjects"] += len(subjects)
            continue
        s, number, new, category = subjects[0]
        out.append(Pair(f"{path}:{tokens[verb].line}", list(tree.words), verb, tokens[verb].form, new, category,
                        _attractor(tokens, s, verb, number), s, number, tree.source, tree.parents[1:],
                        tree.labels[1:]))
    return out


def build_pairs(path: str | Path, lexicon: dict) -> tuple[list[Pair], BuildStats]:
    """Every agreement minimal pair of a CoNLL-U file, in file order, and what was skipped and why. `lexicon`:
    read_lexicon of the training split. Trees come from language.trees (the project's reader)."""
    path = Path(path)
    stats = BuildStats()
    pairs = []
    trees = {t.source: t for t in read_conllu(path)[0]}      # malformed input raises, naming file and line
    for start, rows in _blocks(path):
        stats.sentences += 1
        tokens, multiword = _tokens(rows, path)
        if multiword:
            # a contraction is one surface token for two words ("doesn't" = does + n't): flipping one word would
            # leave the surface token unchanged or invent a new one
            stats.skipped_sentences["multiword token"] += 1
            continue
        pairs.extend(_sentence_pairs(tokens, trees[f"{path}:{start}"], path, lexicon, stats))
    stats.pairs = len(pairs)
    stats.categories = Counter(p.category for p in pairs) + Counter("attractor" for p in pairs if p.attractor)
    return pairs, stats


def pair_trees(pair: Pair) -> tuple[Tree, Tree]:
    """The grammatical and the ungrammatical sentence, both with the pair's one tree."""
    n = len(pair.words)
    parents, labels = [-1] + list(pair.heads), [ROOT_LABEL] + list(pair.deprels)
    good = Tree(list(pair.words), parents, labels, list(range(1, n + 1)), "dependency", pair.sentence)
    return good, dataclasses.replace(good, words=pair.bad_words(), parents=list(parents), labels=list(labels),
                                     word_nodes=list(good.word_nodes))


# ----------------------------------------------------------------------------------------------------------------
# scoring

def pairs_metric(cfg, where: str = "run") -> str:
    """'exact' (word NLL) or 'beam' (the bound) for a run's config; conditional runs are refused."""
    m = cfg.model
    if (m.structure == "given" or m.kind == "tree") and cfg.data.transform != "next":
        raise ConfigError(f"{where}: model.pos={m.pos}, model.structure={m.structure} is given the gold structure "
                          "of the sentence it predicts (a conditional diagnostic, not a language model): agreement "
                          "pairs are scored for language-model arms only")
    return "beam" if m.predicts_structure else "exact"


def select(pairs: list[Pair], words, max_words: int, limit: int) -> tuple[list[Pair], dict]:
    """The pairs a run can score, the first `limit` (0 = all), and the counts of those it cannot."""
    from .data import UNK
    unk = words.token_to_id(UNK)

    def is_unk(form: str) -> bool:     # encoded as the run encodes words (a subword vocabulary never gives <unk>)
        ids = words.encode([form], is_pretokenized=True, add_special_tokens=False).ids
        return not ids or unk in ids

    keep, skipped = [], Counter()
    for p in pairs:
        if max_words and len(p.words) > max_words:
            skipped["longer than data.max_words"] += 1       # the run never trained on such lengths
            continue
        if is_unk(p.good) or is_unk(p.bad):
            skipped["<unk> verb form"] += 1                 # an <unk> form cannot show agreement
            continue
        if limit and len(keep) >= limit:
            skipped["over the limit"] += 1
            continue
        keep.append(p)
    return keep, dict(skipped)


def score_pairs(model, cfg, words, actions, tree_vocab, pairs: list[Pair], K: int, device: str = "cpu",
                log=print) -> dict:
    """Per pair: NLL of the grammatical and the ungrammatical sentence, and whether the grammatical one is lower.
    One batched pass: all 2N sentences go through language.scoring.score_dataset together (exact word NLL, or the
    beam at K: the two sentences of a pair have one length and so share a beam batch)."""
    import numpy as np

    from .data import encode_split
    from .scoring import score_dataset
    metric = pairs_metric(cfg)
    trees = [t for p in pairs for t in pair_trees(p)]               # good, bad, good, bad, ...
    ecfg = dataclasses.replace(cfg.eval, beams=(K,), beam_until=0.0)
    run_cfg = dataclasses.replace(cfg, eval=ecfg)
    t0 = time.time()
    if not pairs:
        nll = np.zeros(0)
    else:
        ds = encode_split(trees, words, actions, cfg.data.actions, tree_vocab, cfg.data.transform, cfg.train.seed)
        res = score_dataset(model, run_cfg, ds, actions, device, log=log)
        nll = np.array(res["beam"][str(K)] if metric == "beam" else res["word_nll"])
    good, bad = nll[0::2], nll[1::2]
    rows = [{"id": p.id, "category": p.category, "attractor": p.attractor, "good": p.good, "bad": p.bad,
             "nll_good": float(g), "nll_bad": float(b), "correct": bool(g < b)}
            for p, g, b in zip(pairs, good, bad)]
    return {"metric": metric, "K": K if metric == "beam" else None,
            "action_top": cfg.eval.action_top if metric == "beam" else None,
            "scored": len(rows), "correct": sum(r["correct"] for r in rows), "ties": int(np.sum(good == bad)),
            "accuracy": float(np.mean([r["correct"] for r in rows])) if rows else None,
            "by_category": by_category(rows), "seconds": time.time() - t0, "pairs": rows}


def frequency_baseline(pairs: list[Pair], counts: Counter) -> dict:
    """What a model that only knows word frequencies gets: right when the grammatical form is the more frequent one
    in the training split (lower-cased; a tie is wrong, as for the models). A trained model near this is not yet
    using the subject."""
    rows = [{"category": p.category, "attractor": p.attractor,
             "correct": counts[p.good.lower()] > counts[p.bad.lower()]} for p in pairs]
    return {"scored": len(rows), "accuracy": sum(r["correct"] for r in rows) / len(rows) if rows else None,
            "by_category": by_category(rows)}


def by_category(rows: list[dict]) -> dict:
    out = {}
    for cat in CATEGORIES:
        sel = [r["correct"] for r in rows if (r["attractor"] if cat == "attractor" else r["category"] == cat)]
        out[cat] = {"n": len(sel), "correct": int(sum(sel)), "accuracy": sum(sel) / len(sel) if sel else None}
    return out


def _stamp(path: Path) -> tuple:
    """(size, mtime) of a file, or () if missing: part of the cache key, so an edited file is read again."""
    return (path.stat().st_size, path.stat().st_mtime_ns) if path.is_file() else ()


@functools.lru_cache(maxsize=4)
def _built(file: str, lexicon: str, *_stamps) -> tuple[list[Pair], BuildStats, Counter]:
    """build_pairs and the training split's form counts, remembered per process: a study scores the same pairs for
    every run (about 3 s each time on UD EWT, most of it reading the training split). Callers must not modify what
    it returns."""
    lex, counts = read_train_forms(lexicon)
    return (*build_pairs(file, lex), counts)


def default_paths(cfg) -> tuple[Path, Path]:
    """The run's UD EWT test split (pairs) and train split (lexicon), under its data root."""
    from .data import data_root
    root = data_root(cfg.data)
    return root.joinpath(*DEFAULT_FILE), root.joinpath(*LEXICON_FILE)


def output_path(run_dir: Path, file: Path, default: Path) -> Path:
    """RUN/pairs.json for the default file, RUN/files/<name>.pairs.json for any other (as `evaluate --file`)."""
    if file.resolve() == default.resolve():
        return run_dir / "pairs.json"
    return run_dir / "files" / f"{file.name}.pairs.json"


def score_run(run_dir: str | Path, file: str | Path | None = None, lexicon: str | Path | None = None,
              limit: int | None = None, K: int | None = None, force: bool = False, log=print) -> dict:
    """Build the pairs of `file` (default: the run's UD EWT test split) and score them with the run's model and
    vocabularies; writes and returns RUN/pairs.json (or RUN/files/<name>.pairs.json for another file). An existing
    result is not overwritten unless force. limit / K default to the run's eval.pairs / eval.pairs_beam."""
    import torch

    from .actions import ActionVocab
    from .data import load_word_vocab
    from .scoring import device_for
    from .train import load_run_config, load_trained
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    metric = pairs_metric(cfg, str(run_dir))
    default_file, default_lexicon = default_paths(cfg)
    file, lexicon = Path(file or default_file), Path(lexicon or default_lexicon)
    if file.resolve() == default_lexicon.resolve() or (file.exists() and lexicon.exists() and
                                                      file.resolve() == lexicon.resolve()):
        raise ConfigError(f"{file}: the training split (the models learn from it, and it is the lexicon): build "
                          "pairs from a held-out file (default: the test split)")
    out = output_path(run_dir, file, default_file)
    if out.exists() and not force:
        raise ConfigError(f"{out} exists: the pairs of {file.name} were scored for this run already (pass --force "
                          "to recompute the same numbers)")
    limit = cfg.eval.pairs if limit is None else limit
    K = cfg.eval.pairs_beam if K is None else K
    if limit < 0 or K < 1:
        raise ConfigError(f"pairs: the limit must be >= 0 (0 = all) and the beam K >= 1 (got {limit}, {K})")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    t0 = time.time()
    pairs, stats, counts = _built(*(str(p) for p in (file, lexicon)), *(_stamp(p) for p in (file, lexicon)))
    words = load_word_vocab(run_dir / "words.json")
    chosen, skipped = select(pairs, words, cfg.data.max_words, limit)
    device = device_for(cfg)
    res = score_pairs(load_trained(run_dir, device=device), cfg, words, ActionVocab.load(run_dir / "actions.json"),
                      ActionVocab.load(run_dir / "tree_labels.json"), chosen, K, device, log=lambda *_: None)
    res.update({"file": str(file), "lexicon": str(lexicon), "limit": limit, "built": stats.as_dict(),
                "frequency_baseline": frequency_baseline(chosen, counts),
                "skipped": skipped, "seconds_total": time.time() - t0})
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res))
    log(f"  pairs: {res['correct']}/{res['scored']} right ({metric}{f' K={K}' if metric == 'beam' else ''}), "
        f"{res['seconds_total']:.0f} s")
    return res
