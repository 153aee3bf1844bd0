"""Positional encodings: the registry, each contract, grammar positions through temt_core, fixed Shiv & Quirk."""
import math

import pytest
import torch

from language.actions import ActionConfig, action_names
from language.positions import (ALiBi, GrammarPositions, Learned, Rotary, ShivQuirkPositions, ShivQuirkTreePositions,
                                Sinusoidal, check_name, contract_of)
from language.trees import Tree
from temt_core import RecurrentPositions


def test_registry_rejects_unknown_names_with_a_suggestion():
    with pytest.raises(ValueError, match="unknown positional encoding 'sinusiodal' \\(did you mean 'sinusoidal'\\?\\)"):
        check_name("sinusiodal")
    assert [contract_of(n) for n in ("sinusoidal", "rope", "alibi", "grammar", "grammar_tree", "none")] == \
        ["additive", "rotary", "bias", "path", "tree", "none"]


def test_sinusoidal_matches_the_formula_and_learned_limits_length():
    sin = Sinusoidal(8)
    assert sin.scale.item() == pytest.approx(0.02 * 2 ** 0.5)     # learned scale; table rms = token rms at start
    pe = sin.table(5) / sin.scale
    assert pe[3, 2].item() == pytest.approx(math.sin(3 / 10000 ** (2 / 8)), abs=1e-6)
    assert pe[4, 5].item() == pytest.approx(math.cos(4 / 10000 ** (4 / 8)), abs=1e-6)
    with pytest.raises(ValueError, match="longer than model.max_len=4"):
        Learned(8, 4).table(5)


def test_rope_scores_depend_only_on_the_offset():
    rope = Rotary(8)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    def score(i, j):
        return (rope.rotate(q, torch.tensor([i])) * rope.rotate(k, torch.tensor([j]))).sum().item()
    assert score(7, 3) == pytest.approx(score(14, 10), abs=1e-4)
    assert score(7, 3) != pytest.approx(score(7, 5), abs=1e-3)


def test_alibi_bias():
    b = ALiBi(2).bias(torch.arange(3), torch.arange(3))
    assert b.shape == (2, 3, 3)
    assert b[0, 2, 0].item() == pytest.approx(-2 * 2 ** -4) and b[1, 2, 1].item() == pytest.approx(-1 * 2 ** -8)
    assert b[0, 0, 2].item() == 0.0                          # the future is masked elsewhere, not biased


def test_grammar_positions_use_temt_core_and_step_agrees_with_path():
    g = GrammarPositions(n_actions=5, dim=6, init_std=1.0)
    assert isinstance(g.rec, RecurrentPositions)
    a = torch.randint(0, 5, (3, 7))
    e = g.path(a)
    assert e.shape == (3, 8, 6) and torch.allclose(e[:, 0], g.rec.e_init.expand(3, 6))
    loop = g.rec(torch.cat([torch.full((3, 1), -1), a], 1), method="loop")
    assert torch.allclose(e, loop, atol=1e-6)                              # fused path == the definition
    nxt = g.step(e[:, 4], torch.stack([a[:, 4], (a[:, 4] + 1) % 5], 1))    # (3, 2, 6)
    assert torch.allclose(nxt[:, 0], e[:, 5], atol=1e-6) and not torch.allclose(nxt[:, 1], e[:, 5])
    e.sum().backward()
    assert g.rec.U.grad is not None and g.rec.U.grad.abs().sum() > 0


def test_shiv_quirk_is_a_fixed_stack_that_tracks_tree_depth():
    heads = [3, 3, 4, 0, 4, 7, 4]                                          # depths 3 3 2 1 2 3 2
    t = Tree([f"w{i}" for i in range(7)], [-1] + heads, ["ROOT"] + ["dep"] * 7, list(range(1, 8)))
    names = action_names(t, ActionConfig())
    vocab = sorted(set(names))
    sq = ShivQuirkPositions(vocab, depth=8)
    assert sq.dim == 9 and not sq.rec.U.requires_grad and not sq.rec.e_init.requires_grad
    e = sq.path(torch.tensor([[vocab.index(n) for n in names]]))           # (1, 9, 9)
    depth_units = e[0, :, :-1].sum(-1)                                     # one generic symbol per level
    assert depth_units.tolist() == [0, 3, 3, 2, 1, 2, 3, 2, 0]             # BOS at the root ... END pops all
    assert torch.all(e[0, :, -1] == 1)                                     # the constant unit


def test_shiv_quirk_labels_push_symbols():
    sq = ShivQuirkPositions(["<overflow>", "<end>", "u0d1:nsubj", "u0d1:obj", "u1d1:obj"], depth=3)
    e = sq.path(torch.tensor([[2, 3, 4]]))                  # root -> nsubj child -> its obj child -> sibling obj
    k = sq.n_symbols
    top = lambda v: v[:k].argmax().item()                                  # noqa: E731
    assert top(e[0, 1]) == sq.symbols["nsubj"] and top(e[0, 2]) == sq.symbols["obj"]
    assert torch.equal(e[0, 2], e[0, 3])                    # pop then push the same symbol: the same position
    tree = ShivQuirkTreePositions(branches=2, depth=3)
    pos = tree.tree(torch.tensor([[-1, 0, 0, 1]]), torch.tensor([[0, 0, 1, 5]]), torch.tensor([[0, 1, 2, 3]]))
    assert pos.shape == (1, 4, tree.dim) and not torch.equal(pos[0, 1], pos[0, 2])


def test_every_encoding_name_has_a_builder_and_registration_is_checked():
    from language.positions import BUILDERS, POSITIONS, register_encoding
    assert set(BUILDERS) == set(POSITIONS)

    class NoContract(torch.nn.Module):
        pass
    with pytest.raises(ValueError, match="NoContract.contract must be one of"):
        register_encoding("mine", NoContract, lambda cfg: NoContract())
    with pytest.raises(ValueError, match="'rope' exists already"):
        register_encoding("rope", POSITIONS["rope"], BUILDERS["rope"])
    assert "mine" not in POSITIONS and "mine" not in BUILDERS
