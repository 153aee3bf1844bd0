"""The energy penalty's forms: known answers, the config check, and a population with a non-default form."""
import pytest
import torch

from temt_core.energy import energy_penalty
from temt_core.model import TEMt, TEMtConfig
from temt_core.population import TEMtPopulation, structure_key
from temt_core.positions import RESET


def test_known_answers():
    e = torch.zeros(2, 3, 4)                      # (B, T, E)
    e[..., 0] = 1.0                               # unit 0 always at 1: mean e^2 = 1
    e[0, :, 1] = 0.5                              # unit 1 at 0.5 in one of two slots: mean e^2 = 0.125
    assert energy_penalty(e, "sum") == pytest.approx(1 + 0.125)           # per step: 1 (+ 0.25 in slot 0)
    assert energy_penalty(e, "mean") == pytest.approx((1 + 0.125) / 4)
    assert energy_penalty(e, "budget", budget=0.1) == pytest.approx((1 - 0.1) + (0.125 - 0.1))
    assert energy_penalty(e, "budget", budget=0.5) == pytest.approx(0.5)  # unit 1 is inside its budget
    pop = torch.stack([e, 2 * e])                 # (P, B, T, E): one value per member
    torch.testing.assert_close(energy_penalty(pop, "budget", 0.1), torch.stack(
        [energy_penalty(e, "budget", 0.1), energy_penalty(2 * e, "budget", 0.1)]))


def test_model_uses_the_configured_form_and_rejects_unknown_ones():
    torch.manual_seed(0)
    x = torch.randint(0, 7, (3, 12))
    a = torch.randint(0, 5, (3, 12))
    a[:, 0] = RESET
    parts = {}
    for kind in ("sum", "mean", "budget"):
        torch.manual_seed(0)
        model = TEMt(TEMtConfig(n_stimuli=7, pos_dim=8, transition_init_std=0.5, energy=kind, energy_budget=0.05))
        out = model(x, a)
        parts[kind] = out.parts["reg_e"]
        torch.testing.assert_close(parts[kind], energy_penalty(out.e, kind, 0.05))
    torch.testing.assert_close(parts["mean"], parts["sum"] / 8)
    with pytest.raises(ValueError, match="energy must be one of"):
        TEMtConfig(energy="l1")
    with pytest.raises(ValueError, match="energy_budget must be >= 0"):
        TEMtConfig(energy_budget=-1.0)


def test_population_with_a_budget_equals_its_members():
    configs = [TEMtConfig(n_stimuli=6, pos_dim=10, transition_init_std=s, energy="budget", energy_budget=0.05,
                          w_reg_e=1.0) for s in (0.3, 0.6)]
    assert structure_key(configs[0]) == structure_key(configs[1])
    assert structure_key(configs[0]) != structure_key(TEMtConfig(n_stimuli=6, pos_dim=10))   # the form groups
    models = []
    for seed, c in enumerate(configs):
        torch.manual_seed(seed)
        models.append(TEMt(c).double())
    pop = TEMtPopulation(models)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 6, (2, 3, 10), generator=g)
    a = torch.randint(0, 5, (2, 3, 10), generator=g)
    a[:, :, 0] = RESET
    out = pop(x, a)
    for p, m in enumerate(models):
        o = m(x[p], a[p])
        torch.testing.assert_close(out.parts["reg_e"][p], o.parts["reg_e"], rtol=1e-12, atol=1e-12)
        assert o.parts["reg_e"] > 0
