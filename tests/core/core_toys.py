"""The small float64 TEMt the core's model tests share (no data files; seeds fix everything)."""
import torch

from temt_core.model import TEMt, TEMtConfig

N_X = 7                 # stimuli of the toy walks
N_ACTIONS = 5


def small_temt(seed=0, **overrides) -> TEMt:
    """A TEMt with 16 position units in float64; transition_init_std=0.5 so that positions differ from the first
    step (the zero init leaves every position at e_init). overrides: any TEMtConfig key."""
    torch.manual_seed(seed)
    cfg = dict(n_actions=N_ACTIONS, n_stimuli=N_X, pos_dim=16, transition_init_std=0.5)
    cfg.update(overrides)
    return TEMt(TEMtConfig(**cfg)).double()
