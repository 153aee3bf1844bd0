"""A small GPT-style decoder with pluggable positions, TEM-t heads, and an action head for the joint model.

    python -m language train --config configs/language/quick.yaml --out runs/lang/grammar model.pos=grammar \
        model.structure=joint
    python -m language train --out runs/lang/sin model.pos=sinusoidal                    # the baseline

Read top to bottom: ModelConfig, Attention (content heads + TEM-t heads), Block, LanguageModel.

A sentence is BOS w_1..w_n EOS; input row i holds token x_i and predicts x_{i+1}. Action a_i is the tree move
from token i to token i+1 (language/actions.py). The joint model factorises, word-synchronously,

    p(words, actions) = prod_i  p(a_i | x_<=i, a_<i)  *  p(x_{i+1} | x_<=i, a_<=i)

and pays for every action (spec section 6). To keep that honest the network is split in two:

    body       blocks 1..L-1 at row i see tokens x_<=i and their positions e_<=i (e_i needs only a_<i)
    action     a_i ~ softmax(ActionHead(LN(h_i)))          from the body, before a_i is known
    predict    block L: the query row i may also use where the next word will be (e_{i+1} = sigma(e_i W_{a_i}),
               or for the actions-as-tokens control an embedding of a_i); keys and values come from the body
               only. TEM-t heads: q = LN(e_{i+1}) W_q, k = LN(e_tau) W_k for tau <= i: "which word did I see
               at the place I am going to?", the paper's memory read. Content heads: ordinary q, k from h.
    word       x_{i+1} ~ softmax(LM head(LN(block L output)))

For the baselines (sinusoidal, learned, RoPE, ALiBi, none) block L is an ordinary block and there is no action
head, so they are plain GPTs and report exact word perplexity. `structure` says how a model uses actions:

    none      no actions (baselines)                 joint   predicts its actions, positions from them
    aux       action head as an auxiliary loss only  tokens  actions fed as embeddings (sinusoidal control)
    given     actions or gold tree given free (conditional diagnostic; 'next' control: one action, no cost)

`step()` scores every candidate action for the next word of many beam hypotheses at once: the body runs
on each prefix, then the prediction block runs only its query row per candidate (keys shared). The full forward
and `step()` agree to float tolerance (tests/language/test_lang_leaks.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from temt_core.attention import zscore
from temt_core.config import ConfigError

from .positions import build_encoding, check_name, contract_of

STRUCTURES = ("none", "joint", "aux", "tokens", "given")
PAD_ID = 0


@dataclass
class ModelConfig:
    pos: str = "sinusoidal"          # positional encoding (language/positions.py POSITIONS)
    structure: str = "none"          # none | joint | aux | tokens | given (see the module docstring)
    vocab_size: int = 0              # set from the data (word vocabulary)
    n_actions: int = 0               # set from the data (action vocabulary)
    n_tree_actions: int = 0          # set from the data (tree-mode label vocabulary)
    action_names: list[str] = field(default_factory=list)        # saved with the model; Shiv & Quirk reads them
    tree_action_names: list[str] = field(default_factory=list)
    d_model: int = 256               # GPU default; the quick CPU study overrides it (configs/language/quick.yaml)
    n_layer: int = 4                 # >= 2 so that the action head sits on at least one block
    n_head: int = 4
    n_pos_head: int = 2              # TEM-t heads per block (path/tree encodings only; the rest are content)
    d_ff: int = 1024                 # MLP width; the study adjusts it per arm to match parameter counts
    pos_dim: int = 64                # E, units of the grammar position e
    pos_activation: str = "relu"     # sigma of the recurrence (the paper: linear and relu both work)
    pos_bound: float | None = 1.0    # TEM clamps positions to [-1, 1]; keeps the recurrence stable
    pos_init_std: float = 0.5        # std of U_a at init (x sqrt(E)); breaks the all-equal start
    pos_method: str = "auto"         # temt_core path: auto (fused on CPU) | fused | loop | scan
    pos_log_scale: bool = True       # TEM-t heads scale scores by log(n keys) (the paper's memory scaling)
    pos_check_finite: bool = True    # temt_core checks e after every call (one host sync; off for GPU speed:
                                     # the trainer still stops on a non-finite loss)
    sq_depth: int = 8                # Shiv & Quirk stack slots
    sq_branches: int = 4             # Shiv & Quirk tree mode: branch indices 0..3 (later siblings share 3)
    max_len: int = 512               # learned positions only (EWT's longest sentence has 159 words)
    rope_base: float = 10000.0
    dropout: float = 0.1
    action_weight: float = 1.0       # joint/tokens: 1 (the joint NLL); aux: the auxiliary loss weight
    tie_embeddings: bool = True      # GPT-2 ties the word embedding and the output layer

    def __post_init__(self):
        check_name(self.pos)
        if self.structure not in STRUCTURES:
            raise ValueError(f"structure must be one of {STRUCTURES}, got {self.structure!r}")
        kind = contract_of(self.pos)
        if self.structure in ("aux", "tokens") and kind in ("path", "tree"):
            raise ValueError(f"structure={self.structure!r} is a control for non-grammar positions, "
                             f"not for pos={self.pos!r}")
        if kind == "path" and self.structure not in ("joint", "given"):
            raise ValueError(f"pos={self.pos!r} builds positions from actions: structure must be 'joint' (predict "
                             f"them) or 'given' (conditional), got {self.structure!r}")
        if kind == "tree" and self.structure != "given":
            raise ValueError(f"pos={self.pos!r} needs the whole gold tree: structure must be 'given' "
                             "(a conditional diagnostic)")
        if self.structure == "given" and kind not in ("path", "tree"):
            raise ValueError("structure='given' needs grammar positions (path or tree encodings)")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_head={self.n_head}")
        if not 0 <= self.n_pos_head <= self.n_head:
            raise ValueError(f"n_pos_head must be in [0, n_head={self.n_head}], got {self.n_pos_head}")
        if self.n_layer < 2 and self.structure in ("joint", "aux", "tokens"):
            raise ValueError("an action head needs n_layer >= 2 (it reads the body, blocks 1..n_layer-1)")
        for name in ("d_model", "n_layer", "n_head", "d_ff", "pos_dim", "max_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (got {getattr(self, name)})")
        if not 0 <= self.dropout < 1:             # NaN fails too
            raise ValueError(f"model.dropout must be in [0, 1) (got {self.dropout})")
        if not 0 <= self.action_weight < math.inf:
            raise ValueError(f"model.action_weight must be a finite number >= 0 (got {self.action_weight})")

    @property
    def kind(self) -> str:
        return contract_of(self.pos)

    @property
    def pos_heads(self) -> int:
        return self.n_pos_head if self.kind in ("path", "tree") else 0

    @property
    def has_action_head(self) -> bool:
        return self.structure in ("joint", "aux", "tokens")

    @property
    def predicts_structure(self) -> bool:
        """True when actions are inputs the model must pay for (joint PPL and beam marginals apply)."""
        return self.structure in ("joint", "tokens")


@dataclass
class LMOutput:
    loss: torch.Tensor               # scalar: mean training loss per predicted word
    word_nll: torch.Tensor           # (B,) -log p(words | actions) summed over each sentence (n + 1 events)
    action_nll: torch.Tensor         # (B,) -log p(actions) summed (zeros without an action head)
    n_tokens: torch.Tensor           # (B,) predicted events per sentence (n words + EOS)
    logits: torch.Tensor | None = None          # (B, T, V)
    action_logits: torch.Tensor | None = None   # (B, T, A)


class Attention(nn.Module):
    """Causal multi-head attention: n_head - n_pos content heads (q, k from h) and n_pos TEM-t heads (q, k from
    z-scored positions, values from h). One SDPA call over all heads."""

    def __init__(self, cfg: ModelConfig, n_pos: int, pos_dim: int):
        super().__init__()
        self.n_head, self.n_pos, self.hd = cfg.n_head, n_pos, cfg.d_model // cfg.n_head
        n_c = cfg.n_head - n_pos
        self.q = nn.Linear(cfg.d_model, n_c * self.hd, bias=False)
        self.k = nn.Linear(cfg.d_model, n_c * self.hd, bias=False)
        self.v = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        if n_pos:
            self.q_pos = nn.Linear(pos_dim, n_pos * self.hd, bias=False)
            self.k_pos = nn.Linear(pos_dim, n_pos * self.hd, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.dropout = cfg.dropout
        self.log_scale = cfg.pos_log_scale

    def forward(self, xq, xkv, zq=None, zk=None, causal=True, rope=None, bias=None, q_index=None, k_index=None):
        """xq (B, Tq, d) query rows, xkv (B, Tk, d) key rows; zq (B, Tq, E), zk (B, Tk, E) z-scored positions.
        causal: row i sees keys 0..i (Tq == Tk); else every query sees every key (beam candidates)."""
        B, Tq, _ = xq.shape
        Tk = xkv.shape[1]
        n_c = self.n_head - self.n_pos
        q = self.q(xq).view(B, Tq, n_c, self.hd)
        k = self.k(xkv).view(B, Tk, n_c, self.hd)
        v = self.v(xkv).view(B, Tk, self.n_head, self.hd)
        if rope is not None:
            q, k = rope.rotate(q, q_index), rope.rotate(k, k_index)
        if self.n_pos:
            qp = self.q_pos(zq).view(B, Tq, self.n_pos, self.hd)
            if self.log_scale:   # TEM-t: beta = log(n memories visible); row i sees i + 1 keys
                n = (q_index + 1).float() if causal else torch.full((Tq,), float(Tk), device=xq.device)
                qp = qp * torch.log(n).clamp(min=1e-3).to(qp.dtype)[None, :, None, None]
            q = torch.cat([q, qp], 2)
            k = torch.cat([k, self.k_pos(zk).view(B, Tk, self.n_pos, self.hd)], 2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))                                # (B, H, T, hd)
        drop = self.dropout if self.training else 0.0
        if bias is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=causal and Tq > 1)
        else:   # ALiBi: bias (H_c, Tq, Tk) on the content heads, zero on TEM-t heads, -inf above the diagonal
            full = torch.zeros(self.n_head, Tq, Tk, device=q.device, dtype=q.dtype)
            full[:n_c] = bias.to(q.dtype)
            if causal:
                full = full.masked_fill(torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=full.unsqueeze(0), dropout_p=drop)
        return self.proj(y.transpose(1, 2).reshape(B, Tq, self.n_head * self.hd))


class Block(nn.Module):
    """Pre-LN transformer block. `kv` separates the rows that are read (keys/values) from the query rows, for the
    prediction block (query rows carry the next position; keys never do)."""

    def __init__(self, cfg: ModelConfig, n_pos: int, pos_dim: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg, n_pos, pos_dim)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_ff), nn.GELU(), nn.Linear(cfg.d_ff, cfg.d_model))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, h, kv=None, **attn_kw):
        xkv = self.ln1(h if kv is None else kv)
        xq = xkv if kv is None else self.ln1(h)
        h = h + self.drop(self.attn(xq, xkv, **attn_kw))
        return h + self.drop(self.mlp(self.ln2(h)))


class LanguageModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vocab_size < 4:
            raise ValueError(f"model.vocab_size must be set from the data (got {cfg.vocab_size})")
        if cfg.kind == "path" or cfg.has_action_head:
            if cfg.n_actions < 1:
                raise ValueError(f"model.n_actions must be set from the data (got {cfg.n_actions})")
        if cfg.kind == "tree" and cfg.n_tree_actions < 1:
            raise ValueError("model.n_tree_actions must be set from the data")
        self.cfg = cfg
        d = cfg.d_model
        self.enc = build_encoding(cfg)
        E = getattr(self.enc, "dim", cfg.pos_dim)                    # Shiv & Quirk's size is set by its stack
        self.tok = nn.Embedding(cfg.vocab_size, d)
        self.drop = nn.Dropout(cfg.dropout)
        if cfg.kind in ("path", "tree"):
            self.pos_in = nn.Linear(E, d, bias=False)                 # e_i joins the residual stream of row i
            self.pos_next = nn.Linear(E, d, bias=False)               # e_{i+1} joins the query row of block L
        if cfg.structure == "tokens":
            self.act_in = nn.Embedding(cfg.n_actions + 1, d)          # a_{i-1} at row i; last id = "no action yet"
            self.act_next = nn.Embedding(cfg.n_actions, d)            # a_i at the query row of block L
        self.blocks = nn.ModuleList([Block(cfg, cfg.pos_heads, E) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.tok.weight
        if cfg.has_action_head:
            self.ln_a = nn.LayerNorm(d)
            self.act_head = nn.Linear(d, cfg.n_actions)
        self.apply(self._init)
        for name, p in self.named_parameters():      # GPT-2: scale the residual projections by 1/sqrt(2 L)
            if name.endswith("attn.proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def n_params(self) -> int:
        """Trainable parameters (tied weights once; fixed Shiv & Quirk matrices not counted)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ---------------------------------------------------------------------------------------------------------
    def _inputs(self, x, actions, tree):
        """Token embeddings plus what the encoding adds; returns h (B, T, d), attention kwargs for the body and
        for block L, the next-context (B, T, d) added to block L's query rows (None for baselines), and the
        positions e_0..e_T (B, T+1, E) of path/tree encodings (else None)."""
        cfg, B, T = self.cfg, x.shape[0], x.shape[1]
        idx = torch.arange(T, device=x.device)
        h = self.tok(x)
        body = {"q_index": idx, "k_index": idx}
        pred = dict(body)
        nxt_ctx = e = None
        kind = cfg.kind
        if kind == "additive":
            h = h + self.enc.table(T, x.device).to(h.dtype)
        elif kind == "rotary":
            body["rope"] = pred["rope"] = self.enc
        elif kind == "bias":
            body["bias"] = pred["bias"] = self.enc.bias(idx, idx)[: cfg.n_head - cfg.pos_heads]
        elif kind in ("path", "tree"):
            if kind == "path":
                e = self.enc.path(actions[:, :T])                                     # (B, T+1, E)
            else:
                e = self.enc.tree(tree["tree_parents"], tree[self.enc.tree_input], tree["tok_nodes"][:, : T + 1])
            cur, nxt = e[:, :T], e[:, 1:]
            h = h + self.pos_in(cur)
            z_cur, z_nxt = zscore(cur), zscore(nxt)
            body.update(zq=z_cur, zk=z_cur)
            pred.update(zq=z_nxt, zk=z_cur)
            nxt_ctx = self.pos_next(nxt)
        if cfg.structure == "tokens":
            prev = torch.cat([torch.full((B, 1), cfg.n_actions, dtype=torch.long, device=x.device),
                              actions[:, : T - 1]], 1)
            h = h + self.act_in(prev)
            nxt_ctx = self.act_next(actions[:, :T])
        return self.drop(h), body, pred, nxt_ctx, e

    def _body(self, h, body_kw):
        for blk in self.blocks[:-1]:
            h = blk(h, **body_kw)
        return h

    def logits(self, x, actions=None, tree=None):
        """Next-token logits for every input row: x (B, T) -> (B, T, V), and the body output hb (B, T, d).
        Structure-using models need actions a_0..a_{T-1} (row i predicts x_{i+1} knowing a_i)."""
        cfg = self.cfg
        if (cfg.kind == "path" or cfg.structure in ("tokens", "joint", "aux")) and actions is None:
            raise ValueError(f"model pos={cfg.pos!r}, structure={cfg.structure!r} needs actions")
        if cfg.kind == "tree" and (tree is None or tree.get("tree_parents") is None):
            raise ValueError(f"model pos={cfg.pos!r} needs tree_parents, tree_actions and tok_nodes")
        if actions is not None and actions.shape[1] < x.shape[1]:
            raise ValueError(f"actions must cover every input row: {tuple(actions.shape)} for inputs "
                             f"{tuple(x.shape)}")
        h, body_kw, pred_kw, nxt_ctx, _ = self._inputs(x, actions, tree or {})
        hb = self._body(h, body_kw)                                                   # (B, T, d)
        if nxt_ctx is None:                                                           # baselines: a plain block
            h = self.blocks[-1](hb, **body_kw)
        else:                                                                         # query rows know a_i
            h = self.blocks[-1](hb + nxt_ctx, kv=hb, **pred_kw)
        return self.head(self.ln_f(h)), hb

    def forward(self, ids, actions=None, mask=None, tree_parents=None, tree_actions=None, tok_nodes=None,
                tree_branch=None, return_logits: bool = False, **_) -> LMOutput:
        """ids (B, T+1) BOS..EOS padded with 0; actions (B, T) a_0..a_{T-1}; mask (B, T) marks real targets.
        Tree mode reads tree_parents / tree_actions / tree_branch (B, N) and tok_nodes (B, T+1)."""
        cfg = self.cfg
        self._check_length(ids, mask, _.get("index"))
        x, y = ids[:, :-1], ids[:, 1:]                                                # (B, T) each
        if mask is None:
            mask = y != PAD_ID
        tree = {"tree_parents": tree_parents, "tree_actions": tree_actions, "tree_branch": tree_branch,
                "tok_nodes": tok_nodes}
        logits, hb = self.logits(x, actions, tree)                                    # (B, T, V), (B, T, d)
        B, T, V = logits.shape
        m = mask.to(torch.float32)
        word_nll = (F.cross_entropy(logits.reshape(B * T, V).float(), y.reshape(-1), reduction="none")
                    .view(B, T) * m).sum(1)
        action_nll = torch.zeros_like(word_nll)
        a_logits = None
        if cfg.has_action_head:
            a_logits = self.act_head(self.ln_a(hb))                                   # (B, T, A)
            action_nll = (F.cross_entropy(a_logits.reshape(B * T, -1).float(), actions[:, :T].reshape(-1),
                                          reduction="none").view(B, T) * m).sum(1)
        n = mask.sum(1)
        total = word_nll + (cfg.action_weight * action_nll if cfg.has_action_head else 0)
        loss = total.sum() / n.sum().clamp(min=1)
        return LMOutput(loss, word_nll, action_nll, n, logits if return_logits else None,
                        a_logits if return_logits else None)

    def _check_length(self, ids, mask, index) -> None:
        """Learned positions stop at model.max_len: a longer sentence is a config error that names it (the data
        keeps every sentence unless data.max_words drops the long ones)."""
        limit = getattr(self.enc, "max_len", None)
        T = ids.shape[1] - 1
        if limit is None or T <= limit:
            return
        rows = (mask.sum(1) if mask is not None else (ids[:, 1:] != PAD_ID).sum(1))
        b = int(rows.argmax())
        which = f"sentence {int(index[b])} of its split" if index is not None else f"batch row {b}"
        raise ConfigError(f"{which} has {int(rows[b]) - 1} words ({int(rows[b])} input positions with BOS), more "
                          f"than model.max_len={limit} learned positions: raise model.max_len, or set "
                          f"data.max_words={limit - 1} to drop longer sentences from every split")

    # ---------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, ids, actions, cand=None, top: int = 0, target=None):
        """One more step of many prefixes at once (beam search, generation): the body runs once per prefix, the
        prediction block only on its query row, once per candidate action (keys shared).

        ids (N, L) tokens x_0..x_{L-1}; actions (N, L-1) a_0..a_{L-2}. Candidates for a_{L-1}: cand (N, C), or
        the `top` most likely actions of each prefix, or (neither) every action.
        returns action_logp (N, A) of a_{L-1}, cand (N, C), and word scores under each candidate: with target
        (N,) given, log p(x_L = target | a_{L-1} = cand) (N, C); else the log-probabilities (N, C, V).
        """
        cfg = self.cfg
        if not cfg.predicts_structure:
            raise ValueError(f"step() is for structure-predicting models, not structure={cfg.structure!r}")
        N, L = ids.shape
        placeholder = torch.zeros(N, 1, dtype=torch.long, device=ids.device)
        full = torch.cat([actions, placeholder], 1)          # a_{L-1} is unknown: only row L-1's next-context
        h, body_kw, pred_kw, _, e = self._inputs(ids, full, None)    # reads it, and that is replaced below
        hb = self._body(h, body_kw)                                                   # (N, L, d)
        action_logp = F.log_softmax(self.act_head(self.ln_a(hb[:, -1])).float(), -1)  # (N, A)
        if cand is None:
            cand = action_logp.topk(top, -1).indices if top else \
                torch.arange(cfg.n_actions, device=ids.device).expand(N, cfg.n_actions)
        C = cand.shape[1]
        if cfg.kind == "path":
            nxt = self.enc.step(e[:, L - 1], cand)                                    # (N, C, E) from e_{L-1}
            nxt_ctx = self.pos_next(nxt)
            pred_kw = dict(pred_kw, zq=zscore(nxt))
        else:  # tokens
            nxt_ctx = self.act_next(cand)
        q_index = torch.full((C,), L - 1, device=ids.device)
        pred_kw.update(q_index=q_index, causal=False)
        if "bias" in pred_kw:
            pred_kw["bias"] = self.enc.bias(q_index, pred_kw["k_index"])[: cfg.n_head - cfg.pos_heads]
        h = self.blocks[-1](hb[:, -1:] + nxt_ctx, kv=hb, **pred_kw)                   # (N, C, d)
        logits = self.head(self.ln_f(h)).float()                                      # (N, C, V)
        if target is None:
            return action_logp, cand, F.log_softmax(logits, -1)
        picked = logits.gather(2, target.view(N, 1, 1).expand(N, C, 1)).squeeze(2)
        return action_logp, cand, picked - torch.logsumexp(logits, -1)

    @torch.no_grad()
    def candidates(self, ids, actions, target, cand):
        """(action_logp (N, A), word_logp (N, C)): log p(a_{L-1}) and log p(x_L = target | a_{L-1} = cand)."""
        action_logp, _, word_logp = self.step(ids, actions, cand=cand, target=target)
        return action_logp, word_logp

    @torch.no_grad()
    def generate_joint(self, n_samples: int, max_words: int = 50, temperature: float = 1.0, bos: int = 2,
                       eos: int = 3, generator: torch.Generator | None = None):
        """Sample sentences with their own structure: a_i ~ p(a | ...), then x_{i+1} ~ p(x | ..., a_i).
        Returns a list of (word ids, action ids) per sample (EOS and the last action included)."""
        device = self.tok.weight.device
        ids = torch.full((n_samples, 1), bos, dtype=torch.long, device=device)
        acts = torch.zeros((n_samples, 0), dtype=torch.long, device=device)
        done = torch.zeros(n_samples, dtype=torch.bool, device=device)
        for _ in range(max_words + 1):
            alp, _, _ = self.step(ids, acts, cand=torch.zeros(n_samples, 1, dtype=torch.long, device=device))
            a = torch.multinomial((alp / temperature).softmax(-1), 1, generator=generator)          # (N, 1)
            _, _, wlp = self.step(ids, acts, cand=a)
            w = torch.multinomial((wlp[:, 0] / temperature).softmax(-1), 1, generator=generator)    # (N, 1)
            w = torch.where(done.unsqueeze(1), torch.full_like(w, eos), w)
            ids, acts = torch.cat([ids, w], 1), torch.cat([acts, a], 1)
            done |= w.squeeze(1) == eos
            if bool(done.all()):
                break
        out = []
        for b in range(n_samples):
            row = ids[b].tolist()
            end = row.index(eos) if eos in row else len(row) - 1
            out.append((row[: end + 1], acts[b, :end].tolist()))
        return out


def count_params(cfg: ModelConfig) -> int:
    with torch.device("meta"):
        return LanguageModel(cfg).n_params()


def match_d_ff(cfg: ModelConfig, target: int) -> ModelConfig:
    """A copy of cfg whose MLP width brings its trainable parameter count closest to `target`."""
    import dataclasses
    base = count_params(dataclasses.replace(cfg, d_ff=1))
    per = count_params(dataclasses.replace(cfg, d_ff=2)) - base                      # params per unit of d_ff
    d_ff = max(1, round((target - base) / per) + 1)
    return dataclasses.replace(cfg, d_ff=d_ff)
