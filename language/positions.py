"""Positional encodings for the language models: one small module per encoding, one contract per kind.

    contract    what the model does with it                          encodings
    --------    ---------------------------------------------------  ----------------------------------------
    additive    table(T) (T, d) is added to the token embeddings     sinusoidal, learned
    rotary      rotate(x, index) turns the content heads' q and k   rope
    bias        bias(q_index, k_index) (H, Tq, Tk) is added to the   alibi
                attention scores of the content heads
    path        path(actions) (B, T+1, E): e_0 = e_init (BOS),       grammar (learned W_a), shiv_quirk (fixed
                e_{i+1} = sigma(e_i W_{a_i}); step(e, actions)       push/pop): both path-integrated in
                for beam search. Added through a learned projection, temt_core's time mode (fused loop)
                and the address of the TEM-t heads (q, k from LN(e))
    tree        tree(parents, labels, tok_nodes) (B, L, E): every    grammar_tree, shiv_quirk_tree: temt_core's
                node from its parent (needs the whole gold tree:     tree mode, level by level
                a conditional diagnostic, never a language model)
    none        nothing (causal attention alone orders the tokens)   none

`build_encoding(cfg)` looks the name up in POSITIONS and rejects unknown names (with a suggestion); each
constructor takes only the settings it uses. Grammar positions must come from temt_core.RecurrentPositions:
the Shiv & Quirk encoding is the same recurrence with W_a fixed to stack push/pop matrices (not trained).
"""
from __future__ import annotations

import difflib
import math
import re

import torch
import torch.nn as nn

from temt_core import RESET, RecurrentPositions

from .actions import CONTINUE, END, NEXT, OVERFLOW


class Sinusoidal(nn.Module):
    """Vaswani et al. 2017: fixed sin/cos of the index at geometric frequencies. Extends to any length.

    Scaled by a learned scalar (as x-transformers' ScaledSinusoidalEmbedding) that starts where the table's rms
    equals the token embeddings' (GPT-2 init, std 0.02): 0.02 * sqrt(2). Unscaled (entries of size 1) the table
    drowns the words, and a crippled baseline would flatter every rival: quick pilot, dev perplexity 128 unscaled,
    105 at x-transformers' d^-0.5 start, 89-93 at this start (two seeds each, dev only), against 79-84 for RoPE.
    """
    contract = "additive"

    def __init__(self, d_model: int, base: float = 10000.0):
        super().__init__()
        self.d_model, self.base = d_model, base
        self.scale = nn.Parameter(torch.tensor(0.02 * math.sqrt(2.0)))

    def table(self, T: int, device=None) -> torch.Tensor:
        pos = torch.arange(T, device=device, dtype=torch.float32).unsqueeze(1)          # (T, 1)
        freq = torch.exp(torch.arange(0, self.d_model, 2, device=device, dtype=torch.float32)
                         * (-math.log(self.base) / self.d_model))                       # (d/2,)
        pe = torch.zeros(T, self.d_model, device=device)
        pe[:, 0::2] = torch.sin(pos * freq)
        pe[:, 1::2] = torch.cos(pos * freq)[:, : self.d_model // 2]
        return pe * self.scale                                                           # (T, d)


class Learned(nn.Module):
    """GPT-2: a learned vector per index, up to max_len (longer input is an error, not a silent wrap)."""
    contract = "additive"

    def __init__(self, d_model: int, max_len: int):
        super().__init__()
        self.max_len = max_len
        self.weight = nn.Parameter(0.02 * torch.randn(max_len, d_model))

    def table(self, T: int, device=None) -> torch.Tensor:
        if T > self.max_len:
            raise ValueError(f"learned positions: sequence of {T} tokens is longer than model.max_len="
                             f"{self.max_len}")
        return self.weight[:T]


class NoPositions(nn.Module):
    """NoPE: the causal mask alone tells tokens apart (Haviv et al. 2022)."""
    contract = "none"


class Rotary(nn.Module):
    """RoPE (Su et al. 2021): rotate pairs of q/k channels by index-dependent angles; scores depend on q - k."""
    contract = "rotary"

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rope needs an even head dimension, got {head_dim}")
        self.head_dim, self.base = head_dim, base      # no buffers: nothing to lose in a meta-device load

    def rotate(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """x (B, T, H, hd), index (T,) -> rotated x (pairs (x_2j, x_2j+1) turned by index * inv_freq_j)."""
        inv_freq = self.base ** (-torch.arange(0, self.head_dim, 2, device=x.device).float() / self.head_dim)
        ang = index.float().unsqueeze(-1) * inv_freq                                      # (T, hd/2)
        cos, sin = ang.cos()[:, None, :].to(x.dtype), ang.sin()[:, None, :].to(x.dtype)  # (T, 1, hd/2)
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1).flatten(-2)


class ALiBi(nn.Module):
    """ALiBi (Press et al. 2022): score -= slope_h * (i - j), slopes 2^(-8h/H)."""
    contract = "bias"

    def __init__(self, n_heads: int):
        super().__init__()
        self.n_heads = n_heads

    def bias(self, q_index: torch.Tensor, k_index: torch.Tensor) -> torch.Tensor:
        slopes = 2.0 ** (-8.0 * torch.arange(1, self.n_heads + 1, device=q_index.device).float() / self.n_heads)
        dist = (q_index[:, None] - k_index[None, :]).clamp(min=0).float()               # (Tq, Tk)
        return -slopes[:, None, None] * dist                                              # (H, Tq, Tk)


class GrammarPositions(nn.Module):
    """Grammar positions: temt_core.RecurrentPositions driven by the tree-path actions (learned W_a = I + U_a).

    Time mode runs temt_core's fast path ('auto': the fused loop with its hand-written backward on CPU, the
    parallel scan for an unbounded linear recurrence on GPU), batched over sentences.
    """
    contract = "path"

    def __init__(self, n_actions: int, dim: int, activation: str = "relu", bound: float | None = 1.0,
                 init_std: float = 0.5, method: str = "auto", check_finite: bool = True):
        super().__init__()
        # init_std 0.5 (not TEM's 0): with every W_a = I at the start all positions coincide and the TEM-t
        # heads have no gradient signal to tell moves apart; a small random U_a breaks that symmetry.
        self.rec = RecurrentPositions(n_actions, dim, activation=activation, bound=bound, init_std=init_std,
                                      method=method, check_finite=check_finite)
        self.dim = dim

    def path(self, actions: torch.Tensor) -> torch.Tensor:
        """actions (B, T) a_0..a_{T-1} -> e (B, T+1, E), e[:, 0] = e_init (BOS), e[:, i+1] after a_i.

        Always in the parameters' precision (float32 under Accelerate's mixed precision), outside autocast: a
        recurrence of T steps is where low precision would compound. temt_core's fused loop turns autocast off
        for itself (it writes into preallocated buffers); this covers every method (loop, fused, scan)."""
        B = actions.shape[0]
        start = torch.full((B, 1), RESET, dtype=actions.dtype, device=actions.device)
        with torch.autocast(actions.device.type, enabled=False):
            return self.rec(torch.cat([start, actions], 1))

    def step(self, e: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """e (N, E), candidate actions (N, C) -> next positions (N, C, E), all candidates in one matmul."""
        with torch.autocast(actions.device.type, enabled=False):
            W = self.rec.transition_matrices()                                           # (A, E, E)
            N, C = actions.shape
            h = torch.bmm(e.float().unsqueeze(1).expand(N, C, self.dim).reshape(N * C, 1, self.dim),
                          W[actions.reshape(-1)]).view(N, C, self.dim)
            return self.rec.activate(h)


class ShivQuirkPositions(GrammarPositions):
    """Shiv & Quirk (2019) tree positions: a stack of one-hot symbols along the root path, moved by FIXED push and
    pop matrices (no training), path-integrated with the same temt_core recurrence as the grammar positions.

    e holds `depth` slots of `n_symbols` units (slot 0 = the top of the stack) and a constant unit (last), so
    push, an affine map (shift every slot down one, write the symbol into slot 0), is one matrix. Pop shifts
    up. An action (up u, down d[, labels]) is Pop^u Push^d; symbols are the action's labels when it has them,
    else one generic symbol (then e encodes the depth). OVERFLOW pops everything and pushes one generic symbol
    (somewhere unknown), END pops everything, NEXT pushes a generic symbol, CONTINUE is the identity.
    """

    def __init__(self, action_names: list[str], depth: int = 8, method: str = "auto"):
        symbols = ["*"] + sorted({lab for n in action_names for lab in _parse_action(n)[2]})
        self.symbols = {s: i for i, s in enumerate(symbols)}
        self.n_symbols, self.depth = len(symbols), depth
        dim = depth * self.n_symbols + 1
        super().__init__(len(action_names), dim, activation="linear", bound=None, init_std=0.0, method=method)
        W = torch.stack([self._matrix(n) for n in action_names])                          # (A, E, E)
        with torch.no_grad():
            self.rec.U.copy_(W - torch.eye(dim))
            init = torch.zeros(dim)
            init[-1] = 1.0
            self.rec.e_init.copy_(init)
        self.rec.U.requires_grad_(False)
        self.rec.e_init.requires_grad_(False)

    def _push(self, symbol: str) -> torch.Tensor:
        k, E = self.n_symbols, self.depth * self.n_symbols + 1
        M = torch.zeros(E, E)
        for s in range(self.depth - 1):                                 # slot s -> slot s + 1 (row-vector maps)
            M[s * k:(s + 1) * k, (s + 1) * k:(s + 2) * k] = torch.eye(k)
        M[-1, -1] = 1.0
        M[-1, self.symbols.get(symbol, 0)] = 1.0                        # constant unit writes the symbol on top
        return M

    def _pop(self) -> torch.Tensor:
        k, E = self.n_symbols, self.depth * self.n_symbols + 1
        M = torch.zeros(E, E)
        for s in range(1, self.depth):                                  # slot s -> slot s - 1; the top is lost
            M[s * k:(s + 1) * k, (s - 1) * k:s * k] = torch.eye(k)
        M[-1, -1] = 1.0
        return M

    def _matrix(self, name: str) -> torch.Tensor:
        E = self.depth * self.n_symbols + 1
        M = torch.eye(E)
        if name == CONTINUE:
            return M
        if name in (END, OVERFLOW):
            for _ in range(self.depth):
                M = M @ self._pop()
            return M @ self._push("*") if name == OVERFLOW else M
        if name == NEXT:
            return self._push("*")
        up, down, labels = _parse_action(name)
        for _ in range(up):
            M = M @ self._pop()
        pushes = ["*"] * (down - len(labels)) + list(labels)
        for s in pushes:
            M = M @ self._push(s)
        return M


def _parse_action(name: str) -> tuple[int, int, list[str]]:
    """'u1d2:nsubj' -> (1, 2, ['nsubj']); 'c1o2:NP,PP' -> (2, 3, ['NP', 'PP']) (a leaf is entered too)."""
    if name in (OVERFLOW, END, CONTINUE, NEXT):
        return 0, 0, []
    m = re.fullmatch(r"u(\d+)d(\d+)(?::(.*))?", name)
    if m:
        return int(m.group(1)), int(m.group(2)), [m.group(3)] if m.group(3) and int(m.group(2)) else []
    m = re.fullmatch(r"c(\d+)o(\d+)(?::(.*))?", name)
    if m:
        return int(m.group(1)) + 1, int(m.group(2)) + 1, m.group(3).split(",") if m.group(3) else []
    raise ValueError(f"cannot read action name {name!r} (expected u<up>d<down>[:label] or c<close>o<open>[:labels])")


class GrammarTreePositions(nn.Module):
    """Conditional diagnostic: positions from the gold tree, every node from its parent (temt_core tree mode),
    the node's label as the action. A word's position depends on its ancestors, which may come later in the
    sentence: the future leaks, so these numbers go in the conditional table only."""
    contract = "tree"
    tree_input = "tree_actions"          # which per-node column drives the tree (labels; Shiv & Quirk: branches)

    def __init__(self, n_labels: int, dim: int, activation: str = "relu", bound: float | None = 1.0,
                 init_std: float = 0.5):
        super().__init__()
        self.rec = RecurrentPositions(n_labels, dim, activation=activation, bound=bound, init_std=init_std)
        self.dim = dim

    def tree(self, parents: torch.Tensor, labels: torch.Tensor, tok_nodes: torch.Tensor) -> torch.Tensor:
        """parents, labels (B, N) over nodes (node 0 = ROOT), tok_nodes (B, L) -> token positions (B, L, E)."""
        with torch.autocast(parents.device.type, enabled=False):                        # float32, as path()
            e = self.rec.tree(parents, labels)                                           # (B, N, E)
        return e.gather(1, tok_nodes.unsqueeze(-1).expand(-1, -1, self.dim))


class ShivQuirkTreePositions(GrammarTreePositions):
    """Shiv & Quirk's encoding as published: every node's root path as a stack of one-hot branch indices (its
    rank among its siblings, capped at `branches`), pushed by fixed matrices from the whole gold tree in
    temt_core's tree mode. Conditional diagnostic only (it knows the future, like any gold tree)."""
    tree_input = "tree_branch"

    def __init__(self, branches: int = 4, depth: int = 8):
        sq = ShivQuirkPositions([f"u0d1:b{i}" for i in range(branches)], depth)
        nn.Module.__init__(self)
        self.rec, self.dim, self.branches = sq.rec, sq.dim, branches

    def tree(self, parents, labels, tok_nodes):
        return super().tree(parents, labels.clamp(max=self.branches - 1), tok_nodes)


POSITIONS = {
    "sinusoidal": Sinusoidal, "learned": Learned, "rope": Rotary, "alibi": ALiBi, "none": NoPositions,
    "grammar": GrammarPositions, "shiv_quirk": ShivQuirkPositions,
    "grammar_tree": GrammarTreePositions, "shiv_quirk_tree": ShivQuirkTreePositions,
}


def check_name(name: str) -> None:
    if name not in POSITIONS:
        close = difflib.get_close_matches(name, list(POSITIONS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown positional encoding {name!r}{hint}; options: {', '.join(POSITIONS)}")


def contract_of(name: str) -> str:
    check_name(name)
    return POSITIONS[name].contract


def _shiv_quirk(cfg) -> nn.Module:
    if len(cfg.action_names) != cfg.n_actions:
        raise ValueError(f"shiv_quirk builds its matrices from model.action_names ({len(cfg.action_names)} "
                         f"names) and needs one per action (n_actions={cfg.n_actions})")
    return ShivQuirkPositions(list(cfg.action_names), cfg.sq_depth, cfg.pos_method)


# name -> build(ModelConfig) -> module; every name of POSITIONS has one (register_encoding adds both)
BUILDERS = {
    "sinusoidal": lambda cfg: Sinusoidal(cfg.d_model),
    "learned": lambda cfg: Learned(cfg.d_model, cfg.max_len),
    "rope": lambda cfg: Rotary(cfg.d_model // cfg.n_head, cfg.rope_base),
    "alibi": lambda cfg: ALiBi(cfg.n_head),
    "none": lambda cfg: NoPositions(),
    "grammar": lambda cfg: GrammarPositions(cfg.n_actions, cfg.pos_dim, cfg.pos_activation, cfg.pos_bound,
                                            cfg.pos_init_std, cfg.pos_method, cfg.pos_check_finite),
    "shiv_quirk": _shiv_quirk,
    "grammar_tree": lambda cfg: GrammarTreePositions(cfg.n_tree_actions, cfg.pos_dim, cfg.pos_activation,
                                                     cfg.pos_bound, cfg.pos_init_std),
    "shiv_quirk_tree": lambda cfg: ShivQuirkTreePositions(cfg.sq_branches, cfg.sq_depth),
}


def register_encoding(name: str, cls: type, build) -> None:
    """Make `name` a value of model.pos: `cls` carries the contract (see the module docstring), `build(cfg)`
    returns the module from a ModelConfig. Refuses to replace a name that exists."""
    if name in POSITIONS:
        raise ValueError(f"positional encoding {name!r} exists already")
    contracts = {c.contract for c in POSITIONS.values()}
    if getattr(cls, "contract", None) not in contracts:
        raise ValueError(f"{cls.__name__}.contract must be one of {sorted(contracts)} (the module docstring says "
                         f"what each means), got {getattr(cls, 'contract', None)!r}")
    POSITIONS[name], BUILDERS[name] = cls, build


def build_encoding(cfg) -> nn.Module:
    """The encoding named cfg.pos, built from the ModelConfig fields it uses."""
    check_name(cfg.pos)
    return BUILDERS[cfg.pos](cfg)
