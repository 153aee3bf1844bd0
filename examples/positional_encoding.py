"""A positional encoding of your own in the language models: here ALiBi with learned slopes.

    python examples/positional_encoding.py OUT_DIR

An encoding is an nn.Module with a `contract` (language/positions.py lists them) and the method that contract
calls; a `bias` encoding gives bias(q_index, k_index) -> (H, Tq, Tk), added to the attention scores.
`register_encoding` makes it a value of `model.pos` like the built-in ones. 60 steps: the plumbing, not a result.
"""
import sys
from pathlib import Path

import torch
import torch.nn as nn

from safetensors.torch import save_model

from language.model import LanguageModel, ModelConfig
from language.positions import register_encoding


class LearnedSlopes(nn.Module):
    contract = "bias"

    def __init__(self, n_heads: int):
        super().__init__()
        self.log_slope = nn.Parameter(torch.linspace(-4.0, -0.5, n_heads))     # one distance penalty per head

    def bias(self, q_index: torch.Tensor, k_index: torch.Tensor) -> torch.Tensor:
        dist = (q_index[:, None] - k_index[None, :]).clamp(min=0).float()       # (Tq, Tk)
        return -self.log_slope.exp()[:, None, None] * dist                       # (H, Tq, Tk)


torch.manual_seed(0)
torch.set_num_threads(1)
register_encoding("learned_slopes", LearnedSlopes, lambda cfg: LearnedSlopes(cfg.n_head))
cfg = ModelConfig(pos="learned_slopes", vocab_size=20, d_model=32, n_layer=2, n_head=4, d_ff=64, dropout=0.0)
model = LanguageModel(cfg)                                  # calls model.enc.bias(...) (contract 'bias')
opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
for step in range(60):      # BOS, 6 random words said twice, EOS (best possible loss 6 ln 16 / 13 = 1.28)
    words = torch.randint(4, 20, (16, 6))
    loss = model(torch.cat([torch.full((16, 1), 2), words, words, torch.full((16, 1), 3)], 1)).loss
    opt.zero_grad()
    loss.backward()
    opt.step()
Path(sys.argv[1]).mkdir(parents=True, exist_ok=True)
save_model(model, str(Path(sys.argv[1]) / "learned_slopes.safetensors"))     # tensors only, tied weights once
print(f"loss {loss.item():.3f} after 60 steps; slopes {model.enc.log_slope.exp().detach().numpy().round(3)}")
