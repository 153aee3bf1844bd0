"""Perplexities that mean what they say (spec section 6), and the statistics to compare them.

    exact        baselines: exp( sum_s -log p(words_s) / N )          N = predicted events (words + EOS)
    joint        structure-predicting models: exp( sum_s -log p(words_s, gold actions_s) / N ); an upper bound
                 on the model's word perplexity that needs no search
    beam K       word-synchronous beam over the model's own actions: log p(words) >= log sum_{a in beam} p(w, a),
                 so exp(-sum log(beam sum) / N) is a tighter upper bound (K = 1, 5, 20, 50)
    conditional  exp( sum_s -log p(words_s | gold actions_s) / N ): actions given for free; NOT a language-model
                 perplexity (the gold tree describes the words being predicted). Its own table, labelled.

For any model: exact <= beam(K) <= ... and, for a model that has learnt its structure, beam <= joint; the beam
never sees a gold action. `exact_marginal` enumerates every action sequence of a short sentence (tests).

Subword models (data.vocab=bpe | unigram) are scored per word: a sentence's events are its n words and EOS
(the loader's n_events), its NLL the sum over its pieces and EOS. Their beam (and enumeration) takes the
canonical action set: at a continuation piece the only candidate is CONTINUE (its probability still paid), at a
word's first piece (and EOS) CONTINUE is not a candidate (`continuation`).

Beam search (Stern et al. 2017, word-synchronous): hypotheses are action prefixes a_<i with score
log p(x_<=i, a_<i). Step i expands every hypothesis by every action a_i, scores
log p(a_i | ...) + log p(x_{i+1} | ..., a_i), and keeps the K best; the last step (predicting EOS) sums all
expansions instead of pruning (nothing is gained by pruning the final sum). Sentences of one length run together.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

import numpy as np
import torch


@torch.no_grad()
def score_loader(model, loader, accelerator=None) -> dict[str, np.ndarray]:
    """Per-sentence index, n_tokens, word_nll, action_nll over a loader (full forward, gold actions given), in
    sentence-index order, each sentence once. n_tokens counts the scored events, words + EOS (the batch's
    n_events; the model's own count of predicted pieces where a batch has none), so subword and word-level runs
    report perplexity per word.

    Under several processes each process scores its own shard; the shards are gathered once at the end as whole
    per-process tables (their lengths differ: token-budget batches hold different numbers of sentences, which a
    per-batch tensor gather cannot take) and de-duplicated by sentence index (Accelerate pads the shards to equal
    batch counts by repeating batches)."""
    was_training = model.training
    model.eval()
    cols = defaultdict(list)
    for batch in loader:
        out = model(**batch)
        events = batch["n_events"] if "n_events" in batch else out.n_tokens
        vals = (batch["index"], events, out.word_nll.float(), out.action_nll.float())
        for name, v in zip(("index", "n_tokens", "word_nll", "action_nll"), vals):
            cols[name].append(v.detach().cpu())
    model.train(was_training)
    names = ("index", "n_tokens", "word_nll", "action_nll")
    local = {k: torch.cat(cols[k]).numpy() if cols[k] else np.zeros(0) for k in names}
    if accelerator is not None and accelerator.num_processes > 1:
        from accelerate.utils import gather_object
        tables = gather_object([local])             # one table per process, any lengths
        local = {k: np.concatenate([t[k] for t in tables]) for k in names}
    _, first = np.unique(local["index"], return_index=True)     # sorted by index; repeats dropped
    return {k: v[first] for k, v in local.items()}


def ppl(nll: np.ndarray, n: np.ndarray) -> float:
    return float(math.exp(float(np.sum(nll)) / max(float(np.sum(n)), 1.0)))


@torch.no_grad()
def beam_marginal(model, sentences: Sequence[Sequence[int]], K: int, max_rows: int = 0,
                  action_top: int = 0, proposals: Sequence[Sequence[int] | None] | None = None,
                  continuation: Sequence[Sequence[bool]] | None = None) -> np.ndarray:
    """log of the beam's lower bound on p(words) for every sentence (ids with BOS and EOS), in input order.

    max_rows bounds the rows of one scoring call (hypotheses x candidates x vocabulary sets the memory);
    0 picks it from the vocabulary size. action_top > 0 expands only each hypothesis's action_top most likely
    actions (cheaper; still a valid lower bound); 0 expands them all.

    proposals: per sentence one whole action sequence (n + 1 actions) or None, added to the beam's final
    candidate set (once: a proposal the beam found already is not counted twice). Any set of action sequences
    gives a lower bound on p(words), so a parser's parse (or the treebank's own) only tightens it.

    continuation (subword models): per sentence one flag per action (actions.continuation_flags): where True the
    only candidate is CONTINUE, elsewhere every action but CONTINUE (action_top: the likeliest of those). The
    bound stays valid: p(words) sums p(words, a) over ALL action sequences, every term is >= 0, so the sum over
    any subset (here the canonical sequences, CONTINUE exactly inside words) is still a lower bound on p(words);
    the tokenisation fixes where pieces continue, so no other sequence describes a tree of these words.
    """
    if K < 1:
        raise ValueError(f"beam size must be >= 1, got {K}")
    model.eval()
    device = next(model.parameters()).device
    A, V = model.cfg.n_actions, model.cfg.vocab_size
    cont_id = _continue_id(model) if continuation is not None else None
    free = A - (cont_id is not None)                        # candidates at a word's first piece
    C = free if not action_top else min(action_top, free)
    if not max_rows:
        max_rows = max(1, (1 << 24) // (C * V))            # ~64 MB of float32 log-probabilities per call
    out = np.zeros(len(sentences))
    for L, idx in _length_groups(sentences, max(1, max_rows // K)):
        ids = torch.as_tensor([list(sentences[i]) for i in idx], device=device)         # (S, L)
        prop = _proposal_tensor(proposals, idx, L, device) if proposals is not None else None
        cont = _continuation_tensor(continuation, idx, L, device) if continuation is not None else None
        out[idx] = _beam_group(model, ids, K, C, action_top, max_rows, prop, cont, cont_id).cpu().numpy()
    return out


def _continue_id(model) -> int:
    from .actions import CONTINUE
    names = list(model.cfg.action_names)
    if CONTINUE not in names:
        raise ValueError(f"continuation flags need a model whose actions include {CONTINUE} (a subword run); "
                         f"this one has {len(names)} action names without it")
    return names.index(CONTINUE)


def _continuation_tensor(continuation, idx, L, device):
    """(S, L-1) bool: True where action i moves into a continuation piece."""
    rows = []
    for i in idx:
        c = list(continuation[i])
        if len(c) != L - 1:
            raise ValueError(f"continuation flags {i}: {len(c)} for a sentence of {L - 1} actions (pieces + END)")
        if c[-1]:
            raise ValueError(f"continuation flags {i}: the last action (END, into EOS) cannot be CONTINUE")
        rows.append(c)
    return torch.as_tensor(rows, dtype=torch.bool, device=device)


def _length_groups(sentences: Sequence[Sequence[int]], size: int):
    """(L, indices) batches of at most `size` sentences of one length L each (no padding needed), in input order
    within a length."""
    by_len = defaultdict(list)
    for i, s in enumerate(sentences):
        by_len[len(s)].append(i)
    for L, members in by_len.items():
        for start in range(0, len(members), size):
            yield L, members[start:start + size]


def _proposal_tensor(proposals, idx, L, device):
    """(S, L-1) action ids, with -1 rows where a sentence has no proposal."""
    rows = []
    for i in idx:
        p = proposals[i]
        if p is not None and len(p) != L - 1:
            raise ValueError(f"proposal {i} has {len(p)} actions; its sentence needs {L - 1} (n words + END)")
        rows.append(list(p) if p is not None else [-1] * (L - 1))
    return torch.as_tensor(rows, dtype=torch.long, device=device)


@torch.no_grad()
def proposal_logp(model, sentences: Sequence[Sequence[int]], proposals: Sequence[Sequence[int] | None],
                  batch: int = 256) -> np.ndarray:
    """log p(words, proposal) for every sentence, in input order (-inf where a sentence has no proposal): one
    action sequence is a one-element candidate set, so this is a valid lower bound on p(words) by itself, got from
    one forward pass per batch instead of a beam. (The beam with `proposals` also adds the proposal to its final
    candidates; this is the cheap form, for scores that already have their beams.)"""
    if len(proposals) != len(sentences):
        raise ValueError(f"{len(proposals)} proposals for {len(sentences)} sentences")
    model.eval()
    device = next(model.parameters()).device
    out = np.full(len(sentences), -math.inf)
    for L, idx in _length_groups(sentences, batch):
        ids = torch.as_tensor([list(sentences[i]) for i in idx], device=device)           # (S, L)
        prop = _proposal_tensor(proposals, idx, L, device)                              # (S, L-1), -1 rows: none
        out[idx] = _proposal_logp(model, ids, prop).double().cpu().numpy()
    return out


def _proposal_logp(model, ids, prop):
    """log p(words, proposal) per sentence (-inf where there is none)."""
    has = (prop >= 0).all(1)
    out = model(ids, actions=prop.clamp(min=0))
    return torch.where(has, -(out.word_nll + out.action_nll), torch.full_like(out.word_nll, -math.inf))


def _expand(model, prefix, acts, target, action_top, max_rows):
    """Every hypothesis row by its candidate actions (all, or the action_top likeliest): (cand (N, C),
    log p(a) + log p(x | a) (N, C))."""
    cands, totals = [], []
    for r in range(0, prefix.shape[0], max_rows):
        sl = slice(r, r + max_rows)
        alp, cand, wlp = model.step(prefix[sl], acts[sl], top=action_top, target=target[sl])
        cands.append(cand)
        totals.append(alp.gather(1, cand) + wlp)
    return torch.cat(cands), torch.cat(totals)


def _expand_canonical(model, prefix, acts, target, cont, C, action_top, max_rows, cont_id):
    """As _expand, for the canonical subword set: rows with cont True get the one candidate CONTINUE (column 0;
    the other columns repeat it at -inf, so they add nothing to a sum and never beat a real hypothesis), the others
    every action but CONTINUE, or the action_top likeliest of those (chosen by log p(a), as `step(top=)` does)."""
    N, A = prefix.shape[0], model.cfg.n_actions
    cand = torch.full((N, C), cont_id, dtype=torch.long, device=prefix.device)
    total = torch.full((N, C), -math.inf, device=prefix.device)
    rows_c, rows_f = cont.nonzero().squeeze(1), (~cont).nonzero().squeeze(1)
    for r in range(0, len(rows_c), max_rows):
        rows = rows_c[r:r + max_rows]
        one = torch.full((len(rows), 1), cont_id, dtype=torch.long, device=prefix.device)
        alp, _, wlp = model.step(prefix[rows], acts[rows], cand=one, target=target[rows])
        total[rows, 0] = alp[:, cont_id] + wlp[:, 0]
    others = torch.tensor([a for a in range(A) if a != cont_id], device=prefix.device)
    for r in range(0, len(rows_f), max_rows):
        rows = rows_f[r:r + max_rows]
        if action_top:      # one more than needed, so that C remain once CONTINUE (if among them) is dropped
            alp, c, wlp = model.step(prefix[rows], acts[rows], top=min(C + 1, A), target=target[rows])
            pick = alp.gather(1, c).masked_fill(c == cont_id, -math.inf).topk(C, -1).indices
            c, wlp = c.gather(1, pick), wlp.gather(1, pick)
        else:
            alp, c, wlp = model.step(prefix[rows], acts[rows], cand=others.expand(len(rows), C),
                                     target=target[rows])
        cand[rows], total[rows] = c, alp.gather(1, c) + wlp
    return cand, total


def _beam_group(model, ids, K, C, action_top, max_rows, prop=None, cont=None, cont_id=None):
    S, L = ids.shape
    device = ids.device
    acts = torch.zeros(S, 1, 0, dtype=torch.long, device=device)       # (S, k, i) action prefixes
    score = torch.zeros(S, 1, device=device)                           # (S, k)
    C_all = C
    for i in range(L - 1):                                             # predict a_i, then x_{i+1}
        k = acts.shape[1]
        N = S * k
        prefix = ids[:, : i + 1].unsqueeze(1).expand(S, k, i + 1).reshape(N, i + 1)
        target = ids[:, i + 1].unsqueeze(1).expand(S, k).reshape(N)
        flat_acts = acts.reshape(N, i)
        if cont is None:
            cand, step_total = _expand(model, prefix, flat_acts, target, action_top, max_rows)
        else:
            C = 1 if bool(cont[:, i].all()) else C_all                 # all continue: one column is enough
            row_cont = cont[:, i].unsqueeze(1).expand(S, k).reshape(N)
            cand, step_total = _expand_canonical(model, prefix, flat_acts, target, row_cont, C, action_top,
                                                 max_rows, cont_id)
        cand = cand.view(S, k * C)
        total = (score.reshape(N, 1) + step_total).view(S, k * C)
        if i == L - 2:
            if prop is None:
                return torch.logsumexp(total, -1)
            full = torch.cat([acts.unsqueeze(2).expand(S, k, C, i).reshape(S, k * C, i),
                              cand.unsqueeze(-1)], 2)                 # (S, k*C, L-1): every final sequence
            found = (full == prop.unsqueeze(1)).all(-1)               # the proposal is among them already
            total = total.masked_fill(found, -math.inf)
            return torch.logsumexp(torch.cat([total, _proposal_logp(model, ids, prop).unsqueeze(1)], 1), -1)
        keep = min(K, k * C)
        score, pick = total.topk(keep, -1)                             # (S, keep)
        parent = pick // C
        acts = torch.cat([acts.gather(1, parent.unsqueeze(-1).expand(S, keep, i)),
                          cand.gather(1, pick).unsqueeze(-1)], 2)
    return score.squeeze(1)


@torch.no_grad()
def exact_marginal(model, ids: Sequence[int], batch: int = 4096, continuation: Sequence[bool] | None = None) -> float:
    """log p(words) = logsumexp over ALL A^(n+1) action sequences of log p(words, actions). Tiny inputs only.
    continuation (subword models): over the canonical set the beam searches instead (beam_marginal), CONTINUE
    exactly where the flag is True, any other action elsewhere: (A-1)^(first pieces + 1) sequences."""
    model.eval()
    device = next(model.parameters()).device
    T = len(ids) - 1
    A = model.cfg.n_actions
    choices = torch.arange(A, device=device).expand(T, A)                 # per position: the actions allowed
    if continuation is not None:
        flags = _continuation_tensor([continuation], [0], T + 1, device)[0]
        cont_id = _continue_id(model)
        others = torch.tensor([a for a in range(A) if a != cont_id], device=device)
        choices = torch.stack([torch.full_like(others, cont_id) if f else others for f in flags.tolist()])
        free = [t for t in range(T) if not flags[t]]
        A = A - 1
    else:
        free = list(range(T))
    total = A ** len(free)
    if total > 2_000_000:
        raise ValueError(f"{total} action sequences: too many to enumerate (use a shorter sentence or fewer actions)")
    x = torch.as_tensor(ids, device=device).unsqueeze(0)
    logps = []
    for start in range(0, total, batch):
        codes = torch.arange(start, min(total, start + batch), device=device)
        digits = torch.zeros(len(codes), T, dtype=torch.long, device=device)                 # (n, T) choice ranks
        for j, t in enumerate(free):
            digits[:, t] = (codes // A ** (len(free) - 1 - j)) % A
        acts = torch.gather(choices.unsqueeze(0).expand(len(codes), T, -1), 2, digits.unsqueeze(-1)).squeeze(-1)
        out = model(x.expand(len(codes), -1), acts)
        logps.append(-(out.word_nll + out.action_nll))
    return float(torch.logsumexp(torch.cat(logps), 0))


def seed_sentence_bootstrap(nll_a: np.ndarray, nll_b: np.ndarray, n: np.ndarray, n_boot: int = 1000,
                            seed: int = 0) -> dict:
    """Bootstrap over seeds and sentences: each resample draws the test sentences (paired: the same ones for both
    arms) and, independently for each arm, its training seeds with replacement; an arm's perplexity on a resample
    averages its drawn seeds' summed NLL. The interval so carries the spread between training runs as well as
    between sentences (resampling sentences alone treats one set of seeds as the truth).

    nll_a (Sa, N), nll_b (Sb, N): per-seed, per-sentence NLL; n (N,) predicted events per sentence. Returns what
    paired_bootstrap returns (ppl of the seed means, ratio, 95% interval, p) plus the seed counts."""
    nll_a, nll_b, n = (np.asarray(v, dtype=np.float64) for v in (nll_a, nll_b, n))
    if nll_a.ndim != 2 or nll_b.ndim != 2 or nll_a.shape[1] != len(n) or nll_b.shape[1] != len(n):
        raise ValueError(f"expected (seeds, sentences) arrays over {len(n)} sentences, got {nll_a.shape} and "
                         f"{nll_b.shape}")
    rng = np.random.default_rng(seed)
    S = len(n)
    idx = rng.integers(0, S, size=(n_boot, S))                          # (R, N) sentences
    sa = rng.integers(0, len(nll_a), size=(n_boot, len(nll_a)))        # (R, Sa) seeds of a
    sb = rng.integers(0, len(nll_b), size=(n_boot, len(nll_b)))
    sums_a = np.stack([nll_a[:, i].sum(1) for i in idx])               # (R, Sa): every seed on resample r
    sums_b = np.stack([nll_b[:, i].sum(1) for i in idx])
    na = np.take_along_axis(sums_a, sa, 1).mean(1)
    nb = np.take_along_axis(sums_b, sb, 1).mean(1)
    log_ratio = (na - nb) / n[idx].sum(1)
    lo, hi = np.percentile(log_ratio, [2.5, 97.5])
    mean_a, mean_b = nll_a.mean(0), nll_b.mean(0)
    return {"ppl_a": ppl(mean_a, n), "ppl_b": ppl(mean_b, n),
            "ratio": float(math.exp((mean_a.sum() - mean_b.sum()) / n.sum())),
            "ratio_ci95": [float(math.exp(lo)), float(math.exp(hi))], "p_a_not_better": float(np.mean(log_ratio >= 0)),
            "sentences": int(S), "seeds_a": int(len(nll_a)), "seeds_b": int(len(nll_b)), "resamples": int(n_boot),
            "resampled": "seeds and sentences"}


def paired_bootstrap(nll_a: np.ndarray, nll_b: np.ndarray, n: np.ndarray, n_boot: int = 1000,
                     seed: int = 0) -> dict:
    """Paired bootstrap over sentences: resample sentences, compare PPL_a and PPL_b on the same resample.

    Returns the two perplexities, the ratio PPL_a / PPL_b with its 95% interval, and p = the fraction of
    resamples in which a is not better than b (one-sided: small p = a reliably lower perplexity)."""
    nll_a, nll_b, n = (np.asarray(v, dtype=np.float64) for v in (nll_a, nll_b, n))
    rng = np.random.default_rng(seed)
    S = len(n)
    idx = rng.integers(0, S, size=(n_boot, S))
    na, nb, nn = nll_a[idx].sum(1), nll_b[idx].sum(1), n[idx].sum(1)
    log_ratio = (na - nb) / nn
    lo, hi = np.percentile(log_ratio, [2.5, 97.5])
    return {"ppl_a": ppl(nll_a, n), "ppl_b": ppl(nll_b, n), "ratio": float(math.exp((nll_a.sum() - nll_b.sum())
                                                                                       / n.sum())),
            "ratio_ci95": [float(math.exp(lo)), float(math.exp(hi))], "p_a_not_better": float(np.mean(log_ratio >= 0)),
            "sentences": int(S), "resamples": int(n_boot), "resampled": "sentences"}
