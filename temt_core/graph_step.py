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

`PopulationGraphStep` is the same for a TEMtPopulation of capturable members with a capturable PopulationAdam:
    step = PopulationGraphStep(population, PopulationAdam(population.parameters(), capturable=True), batch, chunk)
    step.set_lr(lrs); step.set_clip(clips)           # (P,) each, in place
    losses = step(x, a, mask)                        # (P, B, T) inputs; (P,) losses
"""
from __future__ import annotations

import torch

from .model import TEMt, TEMtState
from .population import PopulationAdam, TEMtPopulation


def _copy_state(dst: TEMtState, src: TEMtState) -> None:
    buffers = dst.tensors()
    for name, t in src.tensors().items():
        buffers[name].copy_(t)


class _CapturedStep:
    """What both steps share: fixed input buffers, `warmup` eager calls on a side stream, then one capture of
    `_body()` replayed by every later call (or, without a graph, `_body()` run eagerly every call)."""

    def _setup(self, device: torch.device, use_graph: bool | None, warmup: int, shape: tuple, dtype) -> None:
        self.device = device
        self.use_graph = device.type == "cuda" if use_graph is None else use_graph
        if self.use_graph and device.type != "cuda":
            raise ValueError(f"use_graph=True needs the model on a CUDA device (it is on {device})")
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1 eager step before capture (got {warmup})")
        self.warmup = warmup
        self.x = torch.zeros(shape, dtype=torch.long, device=device)
        self.actions = torch.zeros(shape, dtype=torch.long, device=device)
        self.loss_mask = torch.ones(shape, dtype=dtype, device=device)
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None

    def _body(self) -> None:
        raise NotImplementedError

    def _own_state(self, fresh: TEMtState) -> None:
        """The carried-state buffers, copies of `fresh` (an initial state's e is an expanded view: own every one)."""
        self.state = TEMtState.from_tensors({k: v.clone() for k, v in fresh.tensors().items()})

    def set_state(self, state: TEMtState) -> None:
        """Carry on from `state` (a resumed run's): copied into the buffers, whose identity a graph depends on."""
        if state.memory.size != self.state.memory.size or tuple(state.e.shape) != tuple(self.state.e.shape):
            raise ValueError(f"state of {state.e.shape[0]} slots with a store {state.memory.size} wide does not fit "
                             f"this step's buffers ({self.state.e.shape[0]} slots, {self.state.memory.size} wide)")
        _copy_state(self.state, state)

    def _keep_outputs(self, out, loss: torch.Tensor, loss_buffer: torch.Tensor) -> None:
        """Copy what a step returns into the fixed buffers: logits, next state, loss(es) and loss parts."""
        self.logits.copy_(out.logits.detach())
        _copy_state(self.state, out.state)            # after backward: saved tensors may alias the state read
        loss_buffer.copy_(loss.detach())
        for k, v in out.parts.items():
            if k not in self.parts:
                self.parts[k] = torch.zeros_like(v.detach())
            self.parts[k].copy_(v.detach())

    def _zero_grad(self) -> None:
        raise NotImplementedError

    def _run(self, x: torch.Tensor, actions: torch.Tensor, loss_mask: torch.Tensor | None) -> None:
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
                self._zero_grad()
                with torch.cuda.graph(self.graph):
                    self._body()
            self.graph.replay()


class GraphTrainStep(_CapturedStep):
    def __init__(self, model: TEMt, optimizer: torch.optim.Optimizer, batch: int, chunk: int,
                 clip: float | None = None, use_graph: bool | None = None, warmup: int = 3):
        """model: a TEMt with config.capturable, on its training device; optimizer: over its parameters (on a GPU:
        capturable=True with a tensor learning rate); clip: gradient-norm clip (None: off; `grad_norm` holds the norm
        before clipping either way); use_graph: None = on
        CUDA devices only."""
        if not model.config.capturable:
            raise ValueError("GraphTrainStep needs a model built with TEMtConfig(capturable=True, max_memories=...)")
        dtype = model.positions.e_init.dtype
        self._setup(model.positions.e_init.device, use_graph, warmup, (batch, chunk), dtype)
        if self.use_graph:
            for group in optimizer.param_groups:
                if not group.get("capturable", False):
                    raise ValueError("a CUDA-graph step needs an optimiser built with capturable=True (torch.optim."
                                     "Adam(params, lr=torch.tensor(lr, device=...), capturable=True))")
        self.model, self.optimizer, self.clip = model, optimizer, clip
        self._own_state(model.initial_state(batch, self.device))
        self.loss = torch.zeros((), dtype=dtype, device=self.device)
        self.grad_norm = torch.zeros((), dtype=dtype, device=self.device)       # before clipping
        self.logits = torch.zeros(batch, chunk, model.config.n_stimuli, dtype=dtype, device=self.device)
        self.parts: dict[str, torch.Tensor] = {}

    def _zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def _body(self) -> None:
        self._zero_grad()                                # in a capture: backward then writes fresh gradients
        out = self.model(self.x, self.actions, self.state, loss_mask=self.loss_mask)
        out.loss.backward()
        # the norm is wanted for logging even without a clip; multiplying by clamp(inf / norm, max=1) = 1 is exact
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                              self.clip if self.clip is not None else float("inf"), foreach=True)
        self.optimizer.step()
        self.grad_norm.copy_(norm)
        self._keep_outputs(out, out.loss, self.loss)

    def __call__(self, x: torch.Tensor, actions: torch.Tensor, loss_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Train on one chunk (B, T); returns the loss (a 0-dim tensor of the fixed buffer: copy it to keep it)."""
        self._run(x, actions, loss_mask)
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



class PopulationGraphStep(_CapturedStep):
    """GraphTrainStep for a TEMtPopulation of capturable members (TEMtConfig.capturable, one max_memories) and a
    PopulationAdam(capturable=True): every member's forward, backward, per-member clip and Adam step as one body on
    fixed buffers, replayed as a CUDA graph on a GPU and run eagerly elsewhere (what the CPU tests compare with an
    ordinary population loop). Learning rates and clips are (P,) device tensors set in place (set_lr, set_clip),
    so a schedule changes them without a new capture."""

    def __init__(self, population: TEMtPopulation, optimizer: PopulationAdam, batch: int, chunk: int,
                 use_graph: bool | None = None, warmup: int = 3):
        if not population.capturable:
            raise ValueError("PopulationGraphStep needs a population of capturable members (TEMtConfig(capturable="
                             "True, max_memories=...), the same max_memories for all)")
        if not optimizer.capturable:
            raise ValueError("PopulationGraphStep needs PopulationAdam(params, capturable=True)")
        e_init = population.param("positions.e_init")
        P = population.P
        self._setup(e_init.device, use_graph, warmup, (P, batch, chunk), e_init.dtype)
        self.population, self.optimizer = population, optimizer
        self._own_state(population.initial_state(batch))
        self.losses = torch.zeros(P, dtype=e_init.dtype, device=self.device)
        self.grad_norm = torch.zeros(P, dtype=e_init.dtype, device=self.device)    # per member, before clipping
        self.logits = torch.zeros(P, batch, chunk, population.configs[0].n_stimuli, dtype=e_init.dtype,
                                  device=self.device)
        self.parts: dict[str, torch.Tensor] = {}

    def _zero_grad(self) -> None:
        self.optimizer.zero_grad()

    def _body(self) -> None:
        self._zero_grad()
        out = self.population(self.x, self.actions, self.state, loss_mask=self.loss_mask)
        out.loss.backward()
        self.grad_norm.copy_(self.optimizer.clip_grad_norm_())
        self.optimizer.step()
        self._keep_outputs(out, out.losses, self.losses)

    def __call__(self, x: torch.Tensor, actions: torch.Tensor, loss_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Train every member on its chunk (P, B, T); returns the (P,) losses (the fixed buffer: copy to keep)."""
        self._run(x, actions, loss_mask)
        return self.losses

    def set_lr(self, lr) -> None:
        self.optimizer.set_lr(lr)

    def set_clip(self, max_norm) -> None:
        self.optimizer.set_clip(max_norm)
