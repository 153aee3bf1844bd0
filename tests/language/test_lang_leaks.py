"""Leak tests (spec section 6): no word probability may depend on structure that is not yet paid for.

- exact <= beam(K) <= joint on tiny sentences, exact by enumerating every action sequence;
- beam non-increasing in K, and equal to the exact marginal once it keeps every hypothesis;
- corrupting actions after position t never changes word log-probabilities up to t (nor action
  log-probabilities up to t), for every structure-using model; changing later words changes nothing earlier;
- the step-by-step scoring used by beam search equals the full forward;
- the tree-mode (conditional) encodings DO see the future: that is why they are reported apart.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from language.evaluate import beam_marginal, exact_marginal
from language.model import LanguageModel, ModelConfig

NAMES = ["<overflow>", "<end>", "u0d1", "u1d0", "u1d1"]


def tiny(pos, structure, n_actions=3, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = ModelConfig(pos=pos, structure=structure, vocab_size=12, n_actions=n_actions,
                      action_names=NAMES[:n_actions], n_tree_actions=4, d_model=32, n_layer=2, n_head=4,
                      n_pos_head=2, d_ff=64, pos_dim=8, dropout=0.0, pos_init_std=1.0, max_len=32, **kw)
    return LanguageModel(cfg).eval()


JOINT = [("grammar", "joint"), ("shiv_quirk", "joint"), ("sinusoidal", "tokens")]
SENTENCES = [[2, 5, 3], [2, 5, 6, 3], [2, 7, 8, 9, 3], [2, 4, 10, 11, 5, 3], [2, 6, 6, 6, 6, 6, 3]]


@pytest.mark.parametrize("pos, structure", JOINT)
def test_exact_le_beam_and_beam_monotone_and_complete(pos, structure):
    model = tiny(pos, structure)
    exact = [exact_marginal(model, s) for s in SENTENCES]                     # every 3^(n+1) sequence
    beams = {K: beam_marginal(model, SENTENCES, K) for K in (1, 5, 20, 50, 3 ** 6)}
    for K, lp in beams.items():
        for e, b in zip(exact, lp):
            assert b <= e + 1e-4                                               # a beam only drops mass
    for k1, k2 in zip(list(beams)[:-1], list(beams)[1:]):
        assert all(a <= b + 1e-4 for a, b in zip(beams[k1], beams[k2]))      # monotone in K
    assert beams[3 ** 6] == pytest.approx(exact, abs=1e-4)                    # keeps everything: exact
    assert beams[1][-1] < exact[-1] - 1e-3                                    # and pruning really prunes


@pytest.mark.parametrize("pos, structure", JOINT)
def test_proposals_tighten_the_bound_and_are_never_counted_twice(pos, structure):
    """A proposal adds its own p(words, actions) to the beam's final set unless the beam holds it already: the
    bound stays below the exact marginal, is at least the beam's and the proposal's, and a complete beam with
    proposals is still exactly the marginal."""
    import math
    model = tiny(pos, structure)
    rng = torch.Generator().manual_seed(0)
    props = [torch.randint(0, 3, (len(s) - 1,), generator=rng).tolist() for s in SENTENCES]
    props[1] = None                                                            # a sentence without one
    exact = [exact_marginal(model, s) for s in SENTENCES]
    beam = beam_marginal(model, SENTENCES, 1)
    with_p = beam_marginal(model, SENTENCES, 1, proposals=props)
    for i, s in enumerate(SENTENCES):
        assert with_p[i] <= exact[i] + 1e-4 and with_p[i] >= beam[i] - 1e-5
        if props[i] is None:
            assert with_p[i] == pytest.approx(beam[i], abs=1e-6)
            continue
        out = model(torch.tensor([s]), actions=torch.tensor([props[i]]))
        own = -(out.word_nll + out.action_nll).item()
        assert with_p[i] >= own - 1e-5
        same = beam_marginal(model, [s], 1, proposals=[_greedy_path(model, s)])[0]
        assert same == pytest.approx(beam[i], abs=1e-5)                        # the beam's own path: once
        if math.isclose(own, beam[i], abs_tol=1e-6):
            continue
        assert with_p[i] == pytest.approx(float(torch.logaddexp(torch.tensor(beam[i]), torch.tensor(own))),
                                          abs=1e-4)
    complete = beam_marginal(model, SENTENCES, 3 ** 6, proposals=props)
    assert complete == pytest.approx(exact, abs=1e-4)


def _greedy_path(model, s):
    """The action sequence the K = 1 beam keeps (recomputed step by step)."""
    acts = []
    for i in range(len(s) - 1):
        ids = torch.tensor([s[: i + 1]])
        alp, cand, wlp = model.step(ids, torch.tensor([acts], dtype=torch.long).view(1, i),
                                    target=torch.tensor([s[i + 1]]))
        acts.append(int(cand[0, (alp.gather(1, cand) + wlp)[0].argmax()]))
    return acts


def test_action_top_is_a_valid_cheaper_bound():
    model = tiny("grammar", "joint")
    exact = [exact_marginal(model, s) for s in SENTENCES[:4]]
    full = beam_marginal(model, SENTENCES[:4], 5)
    top = beam_marginal(model, SENTENCES[:4], 5, action_top=2)
    assert all(t <= e + 1e-4 for t, e in zip(top, exact))
    assert top.sum() <= full.sum() + 1e-4


def _train_on_structured_toy(pos, structure, steps=150):
    """Words that determine the next action: after an even word id the move is action 2, after an odd one 0."""
    model = tiny(pos, structure, seed=1)
    model.train()
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        n = 4
        words = torch.randint(4, 8, (64, n), generator=g)
        ids = torch.cat([torch.full((64, 1), 2), words, torch.full((64, 1), 3)], 1)
        acts = torch.cat([torch.full((64, 1), 2), 2 * (1 - words[:, :-1] % 2), torch.full((64, 1), 1)], 1)
        loss = model(ids, acts).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("pos, structure", [("grammar", "joint"), ("sinusoidal", "tokens")])
def test_trained_model_exact_le_beam_le_joint(pos, structure):
    model = _train_on_structured_toy(pos, structure)
    sents = [[2, 4, 5, 6, 7, 3], [2, 5, 5, 4, 6, 3], [2, 7, 6, 5, 4, 3]]
    gold = [[2] + [2 * (1 - w % 2) for w in s[1:-2]] + [1] for s in sents]
    out = model(torch.tensor(sents), torch.tensor(gold))
    joint = -(out.word_nll + out.action_nll).detach()
    exact = torch.tensor([exact_marginal(model, s) for s in sents])           # 3^5 sequences each
    prev = None
    for K in (1, 5, 20, 50):
        b = torch.tensor(beam_marginal(model, sents, K))
        assert torch.all(b <= exact + 1e-4)
        assert torch.all(b >= joint - 1e-4)                                    # beam <= joint in perplexity
        if prev is not None:
            assert torch.all(b >= prev - 1e-4)
        prev = b
    n = sum(len(s) - 1 for s in sents)
    ppl = lambda lp: math.exp(-float(lp.sum()) / n)                            # noqa: E731
    assert ppl(exact) <= ppl(prev) * (1 + 1e-6) and ppl(prev) <= ppl(joint) * (1 + 1e-6)


STRUCTURED = [("grammar", "joint"), ("shiv_quirk", "joint"), ("sinusoidal", "tokens"), ("sinusoidal", "aux"),
              ("grammar", "given")]


@pytest.mark.parametrize("pos, structure", STRUCTURED)
def test_corrupting_later_actions_never_changes_earlier_probabilities(pos, structure):
    model = tiny(pos, structure)
    g = torch.Generator().manual_seed(3)
    ids = torch.cat([torch.full((4, 1), 2), torch.randint(4, 12, (4, 7), generator=g), torch.full((4, 1), 3)], 1)
    acts = torch.randint(0, 3, (4, 8), generator=g)
    logits, hb = model.logits(ids[:, :-1], acts)
    word_lp = F.log_softmax(logits, -1)
    a_lp = F.log_softmax(model.act_head(model.ln_a(hb)), -1) if model.cfg.has_action_head else None
    for t in range(7):
        bad = acts.clone()
        bad[:, t + 1:] = (bad[:, t + 1:] + 1 + torch.randint(0, 2, bad[:, t + 1:].shape, generator=g)) % 3
        logits2, hb2 = model.logits(ids[:, :-1], bad)
        # row i predicts word i+1 knowing a_0..a_i: rows 0..t are fixed by a_<=t
        assert torch.allclose(F.log_softmax(logits2, -1)[:, : t + 1], word_lp[:, : t + 1], atol=1e-5)
        if a_lp is not None:   # the action head at row i sees a_<i only: rows 0..t+1 are fixed
            a2 = F.log_softmax(model.act_head(model.ln_a(hb2)), -1)
            assert torch.allclose(a2[:, : t + 2], a_lp[:, : t + 2], atol=1e-5)
        if t < 6:              # the check has teeth: some later row does change
            assert not torch.allclose(F.log_softmax(logits2, -1)[:, t + 1:], word_lp[:, t + 1:], atol=1e-5) \
                or structure == "aux"


@pytest.mark.parametrize("pos, structure", STRUCTURED + [("rope", "none"), ("alibi", "none"), ("learned", "none"),
                                                         ("none", "none")])
def test_later_words_never_change_earlier_predictions(pos, structure):
    model = tiny(pos, structure)
    ids = torch.tensor([[2, 4, 5, 6, 7, 8, 9]])
    acts = torch.tensor([[2, 0, 1, 2, 0, 1, 2]])
    base = model.logits(ids, acts)[0]
    for t in range(1, 6):
        other = ids.clone()
        other[0, t + 1:] = 11
        assert torch.allclose(model.logits(other, acts)[0][:, : t + 1], base[:, : t + 1], atol=1e-5)


@pytest.mark.parametrize("pos, structure", JOINT)
def test_stepwise_scores_equal_the_full_forward(pos, structure):
    model = tiny(pos, structure)
    ids = torch.tensor([[2, 5, 6, 7, 8, 3], [2, 9, 9, 4, 10, 3]])
    acts = torch.tensor([[2, 1, 0, 2, 1], [0, 0, 2, 2, 1]])
    out = model(ids, acts)
    total = torch.zeros(2)
    for i in range(5):
        alp, wlp = model.candidates(ids[:, : i + 1], acts[:, :i], ids[:, i + 1], acts[:, i:i + 1])
        total += alp.gather(1, acts[:, i:i + 1]).squeeze(1) + wlp[:, 0]
    assert torch.allclose(total, -(out.word_nll + out.action_nll), atol=1e-4)


def test_tree_mode_encodings_see_the_future():
    """Gold-tree positions of an early word depend on its head, which can come later: the leak, by design."""
    model = tiny("grammar_tree", "given")
    ids = torch.tensor([[2, 4, 5, 6, 3]])
    tree = {"tree_parents": torch.tensor([[-1, 3, 3, 0]]), "tree_actions": torch.tensor([[0, 1, 2, 3]]),
            "tok_nodes": torch.tensor([[0, 1, 2, 3, 0]])}
    before = model.logits(ids[:, :-1], None, tree)[0]
    tree["tree_actions"] = torch.tensor([[0, 1, 2, 1]])          # relabel word 3 (the head of words 1 and 2)
    after = model.logits(ids[:, :-1], None, tree)[0]
    assert not torch.allclose(before[:, 1], after[:, 1], atol=1e-5)    # row 1 predicts word 2: changed by word 3


@pytest.mark.parametrize("pos, structure", [("grammar", "joint"), ("shiv_quirk", "joint"), ("grammar_tree", "given")])
def test_mixed_precision_autocast_trains(pos, structure):
    """Accelerate's mixed precision is autocast: the recurrence must run (in float32) inside it."""
    model = tiny(pos, structure).train()
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 9, 3, 0]])
    acts = torch.tensor([[2, 0, 1, 1], [0, 2, 1, 0]])
    tree = {"tree_parents": torch.tensor([[-1, 0, 1, 1], [-1, 0, 1, -1]]),
            "tree_actions": torch.tensor([[0, 1, 2, 3], [0, 1, 2, 0]]),
            "tok_nodes": torch.tensor([[0, 1, 2, 3, 0], [0, 1, 2, 0, 0]])}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, acts, **tree)
    out.loss.backward()
    assert torch.isfinite(out.loss) and all(torch.isfinite(p.grad).all() for p in model.parameters()
                                            if p.grad is not None)


def test_config_validation():
    with pytest.raises(ValueError, match="structure must be 'joint'"):
        ModelConfig(pos="grammar", structure="none")
    with pytest.raises(ValueError, match="needs the whole gold tree"):
        ModelConfig(pos="grammar_tree", structure="joint")
    with pytest.raises(ValueError, match="control for non-grammar positions"):
        ModelConfig(pos="grammar", structure="aux")
    with pytest.raises(ValueError, match="structure='given' needs grammar positions"):
        ModelConfig(pos="sinusoidal", structure="given")
    with pytest.raises(ValueError, match="unknown positional encoding"):
        ModelConfig(pos="rotary")
    with pytest.raises(ValueError, match="needs actions"):
        tiny("grammar", "joint")(torch.tensor([[2, 4, 3]]))


@pytest.mark.parametrize("pos, structure", JOINT)
def test_proposal_bound_is_the_proposals_own_joint_probability(pos, structure):
    """The cheap proposal bound (no beam) is -log p(words, proposal) exactly, a valid bound below the exact
    marginal; a sentence without a proposal gets none; the best bound takes the per-sentence minimum."""
    import numpy as np

    from language.evaluate import proposal_logp
    from language.scoring import bounds_of, proposal_scores
    model = tiny(pos, structure)
    rng = torch.Generator().manual_seed(1)
    props = [torch.randint(0, 3, (len(s) - 1,), generator=rng).tolist() for s in SENTENCES]
    props[0] = None
    lp = proposal_logp(model, SENTENCES, props, batch=2)
    for i, s in enumerate(SENTENCES):
        if props[i] is None:
            assert lp[i] == -float("inf")
            continue
        out = model(torch.tensor([s]), actions=torch.tensor([props[i]]))
        assert lp[i] == pytest.approx(-(out.word_nll + out.action_nll).item(), abs=1e-5)
        assert lp[i] <= exact_marginal(model, s) + 1e-5
    with pytest.raises(ValueError, match="proposals for"):
        proposal_logp(model, SENTENCES, props[:-1])
    res = {"word_nll": [5.0] * len(SENTENCES), "action_nll": [1.0] * len(SENTENCES),
           "beam": {"1": [7.0] * len(SENTENCES)}}
    res.update(proposal_scores(model, SENTENCES, props, "gold"))
    assert res["proposal_nll"][0] is None
    best = np.min(np.stack(bounds_of(res)), 0)
    assert best[0] == 6.0                                   # no proposal: the gold joint
    assert all(best[i] == min(6.0, -lp[i]) for i in range(1, len(SENTENCES)))
