"""One training step of a capturable TEM-t (forward, backward, clip, optimiser) on fixed buffers, replayed as a
CUDA graph on a GPU.

On a GPU a TEM-t step at batch 16 is launch-bound: hundreds of small kernels, each waiting for Python. A CUDA graph
records the step's kernels once and replays them with one launch. Capture needs what `TEMtConfig.capturable`
provides (fixed shapes, no host reads) plus fixed input buffers: every call copies the chunk into the same `x`,
`actions` and `loss_mask` tensors, the carried state lives in the same tensors from chunk to chunk (the step
writes the next state into them at its end), and the optimiser must not read values back either (torch's
`Adam(capturable=True)`, with the learning rate a tensor set in place: `set_lr`).

    step = GraphTrainStep(model, optimizer, batch=16, chunk=75)      # model.config.capturable, model on its device
    for x, a, mask in chunks:
        loss = step(x, a, mask)              # a 0-dim tensor on the device; read it only when you log

The first `warmup` calls run eagerly (on a side stream, as torch's capture recipe asks: the caching allocator and
cuBLAS workspaces settle), and are real training steps; the next call is captured and then replayed, as is every
later one, so call k always trains on chunk k. Without a GPU (or with `use_graph=False`) every call runs the same
body eagerly on the same buffers: the fallback, and what the CPU tests compare with an ordinary training loop.
The GPU check is `benchmarks/graph_step_speed.py` (equality with eager steps and steps/s).
"""
from __future__ import annotations

import torch

from .model import TEMt, TEMtState


def _copy_state(dst: TEMtState, src: TEMtState) -> None:
    buffers = dst.tensors()
    for name, t in src.tensors().items():
        buffers[name].copy_(t)


class GraphTrainStep:
    def __init__(self, model: TEMt, optimizer: torch.optim.Optimizer, batch: int, chunk: int,
                 clip: float | None = None, use_graph: bool | None = None, warmup: int = 3):
        """model: a TEMt with config.capturable, on its training device; optimizer: over its parameters (on a GPU:
        capturable=True with a tensor learning rate); clip: gradient-norm clip (None: off; `grad_norm` holds the norm
        before clipping either way); use_graph: None = on
        CUDA devices only."""
        if not model.config.capturable:
            raise ValueError("GraphTrainStep needs a model built with TEMtConfig(capturable=True, max_memories=...)")
        self.device = model.positions.e_init.device
        self.use_graph = self.device.type == "cuda" if use_graph is None else use_graph
        if self.use_graph and self.device.type != "cuda":
            raise ValueError(f"use_graph=True needs the model on a CUDA device (it is on {self.device})")
        if self.use_graph:
            for group in optimizer.param_groups:
                if not group.get("capturable", False):
                    raise ValueError("a CUDA-graph step needs an optimiser built with capturable=True (torch.optim."
                                     "Adam(params, lr=torch.tensor(lr, device=...), capturable=True))")
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1 eager step before capture (got {warmup})")
        self.model, self.optimizer, self.clip, self.warmup = model, optimizer, clip, warmup
        dtype = model.positions.e_init.dtype
        self.x = torch.zeros(batch, chunk, dtype=torch.long, device=self.device)
        self.actions = torch.zeros(batch, chunk, dtype=torch.long, device=self.device)
        self.loss_mask = torch.ones(batch, chunk, dtype=dtype, device=self.device)
        fresh = model.initial_state(batch, self.device)           # its e is an expanded view: own every buffer
        self.state = TEMtState.from_tensors({k: v.clone() for k, v in fresh.tensors().items()})
        self.loss = torch.zeros((), dtype=dtype, device=self.device)
        self.grad_norm = torch.zeros((), dtype=dtype, device=self.device)       # before clipping
        self.logits = torch.zeros(batch, chunk, model.config.n_stimuli, dtype=dtype, device=self.device)
        self.parts: dict[str, torch.Tensor] = {}
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None

    def _body(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)       # in a capture: backward then writes fresh gradients
        out = self.model(self.x, self.actions, self.state, loss_mask=self.loss_mask)
        out.loss.backward()
        # the norm is wanted for logging even without a clip; multiplying by clamp(inf / norm, max=1) = 1 is exact
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                              self.clip if self.clip is not None else float("inf"), foreach=True)
        self.optimizer.step()
        self.grad_norm.copy_(norm)
        self.logits.copy_(out.logits.detach())
        # after backward: the forward's saved tensors may alias the state it read
        _copy_state(self.state, out.state)
        self.loss.copy_(out.loss.detach())
        for k, v in out.parts.items():
            if k not in self.parts:
                self.parts[k] = torch.zeros_like(v.detach())
            self.parts[k].copy_(v.detach())

    def __call__(self, x: torch.Tensor, actions: torch.Tensor, loss_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Train on one chunk (B, T); returns the loss (a 0-dim tensor of the fixed buffer: copy it to keep it)."""
        if tuple(x.shape) != tuple(self.x.shape) or tuple(actions.shape) != tuple(self.x.shape):
            raise ValueError(f"x and actions must have the step's fixed shape {tuple(self.x.shape)}, got "
                             f"{tuple(x.shape)} and {tuple(actions.shape)}")
        self.x.copy_(x)
        self.actions.copy_(actions)
        self.loss_mask.copy_(loss_mask if loss_mask is not None else torch.ones_like(self.loss_mask))
        self.calls += 1
        if not self.use_graph:
            self._body()
        elif self.graph is None and self.calls <= self.warmup:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self._body()
            torch.cuda.current_stream().wait_stream(side)
        else:
            if self.graph is None:
                self.graph = torch.cuda.CUDAGraph()
                self.optimizer.zero_grad(set_to_none=True)
                with torch.cuda.graph(self.graph):
                    self._body()
            self.graph.replay()
        return self.loss

    def set_lr(self, lr: float) -> None:
        """Set every group's learning rate without re-capturing: in place where it is a tensor (a graph reads it
        from device memory), else as a number (eager steps)."""
        for group in self.optimizer.param_groups:
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr

    def reset_state(self) -> None:
        """Every slot starts afresh (new worlds, empty store) without changing the buffers' identity."""
        self.set_state(self.model.initial_state(self.x.shape[0], self.device))

    def set_state(self, state: TEMtState) -> None:
        """Carry on from `state` (a resumed run's): copied into the buffers, whose identity a graph depends on."""
        if state.memory.size != self.state.memory.size or tuple(state.e.shape) != tuple(self.state.e.shape):
            raise ValueError(f"state of batch {state.e.shape[0]} with a store {state.memory.size} wide does not fit "
                             f"this step's buffers (batch {self.state.e.shape[0]}, {self.state.memory.size} wide)")
        _copy_state(self.state, state)

