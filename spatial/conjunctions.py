"""Triple conjunctions (claim C8): TEM-t with a second stimulus stream, next to the plain model.

    python -m spatial.conjunctions --out runs/conjunctions [--steps 1000] [--seed 0] [--overwrite]
    result = run_conjunctions(Path("runs/conjunctions"), steps=500, seed=0)

The paper's claim: a further cortical stream costs TEM-t only n_c more feature neurons, while the number of memory
neurons stays the same. Here every node of a world carries two stimuli drawn independently: stream 1 by the walk
generator (spatial.walks), stream 2 by a numpy generator of its own, seeded per (seed, batch slot, world). Two
models train on identical walks from the same torch seed:
    plain        TEM-t on stream 1 (memories are (position, x) conjunctions)
    two streams  TEM-t with model.n_stimuli_2 (memories are (position, x, x2) triples, temt_core/model.py)
They share their initial weights where they share parameters (TEMt builds the second stream's last). Both then
walk the same fresh evaluation worlds, and we count:
    value (feature) neurons   the width of what the memory neurons read (TEMt.feature_neurons): n_x vs n_x + n_x2
    memory neurons            memories stored in each world at the end of the evaluation walk (one neuron each)
    accuracy                  on revisits and on zero-shot revisits (a new edge into a visited node), per stream,
                              against chance 1/n
    naive TEM                 the conjunctive cells p a TEM with this project's TEM sizes (temt_core/tem.py) needs:
                              sum(g_memory) * n_x_c for one stream, sum(g_memory) * n_x_c * n_x2_c for two, where
                              n_c is the width of TEM's two-hot code of n stimuli (n_c choose 2 >= n: 10 for 45)
Writes conjunctions.json and conjunctions.md (the report section) into --out; files already there are kept unless
--overwrite is given.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from temt_core.config import ConfigError, to_dict
from temt_core.model import TEMt, TEMtConfig
from temt_core.rundir import atomic_write_text
from temt_core.tem import TEMConfig

from .config import TrainConfig
from .metrics import accuracy_summary
from .train import learning_rate
from .walks import WalkConfig, WalkStream

OUTPUTS = ("conjunctions.json", "conjunctions.md")
DEFAULT_STEPS = 1000    # 73-82 s for both models on one core of the loaded 2-core machine (2026-12-02), revisits of
                        # both streams at about 0.8 against chance 0.022


@dataclass
class ConjunctionsConfig:
    sizes: tuple[int, ...] = (4, 5)          # square world widths: small, so a short run learns both streams
    n_stimuli: int = 45                      # stream 1 (TEM's n_x)
    n_stimuli_2: int = 45                    # stream 2, drawn independently per node and world
    pos_dim: int = 64
    batch_size: int = 16
    chunk_length: int = 50
    walk_length: tuple[int, int] = (150, 250)   # steps per training world
    eval_worlds: int = 16
    eval_steps: int = 250                    # one world per slot for the whole evaluation walk
    eval_seed: int = 12345

    def __post_init__(self):
        for name in ("n_stimuli", "n_stimuli_2", "pos_dim", "batch_size", "chunk_length", "eval_worlds",
                     "eval_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"conjunctions: {name} must be >= 1 (got {getattr(self, name)})")


class SecondStimuli:
    """Stream 2: one stimulus per node, drawn when a slot enters a world, independently of stream 1.

    The table of (slot b, world w) comes from numpy's generator seeded with (seed, 2, b, w), never from the walk
    generator, so stream 1 and the walks are exactly those the plain model sees, and the draw does not depend on
    how the walk is cut into chunks."""

    def __init__(self, walks: WalkStream, n_stimuli: int, seed: int):
        self.walks, self.n_stimuli, self.seed = walks, n_stimuli, seed
        self.tables: dict[tuple[int, int], np.ndarray] = {}

    def of(self, chunk: dict) -> np.ndarray:
        """(B, T) stream-2 stimulus at each step of a chunk from `walks.next_chunk`."""
        world, nodes, index = chunk["world"], chunk["nodes"], chunk["world_index"]
        x2 = np.empty_like(nodes)
        for b in range(nodes.shape[0]):
            for w in np.unique(world[b]):
                steps = world[b] == w
                n_nodes = self.walks.world_pool[int(index[b, steps][0])].n_nodes
                x2[b, steps] = self._table(b, int(w), n_nodes)[nodes[b, steps]]
        last = world[:, -1]
        self.tables = {k: v for k, v in self.tables.items() if k[1] >= last[k[0]]}    # worlds left behind
        return x2

    def _table(self, b: int, w: int, n_nodes: int) -> np.ndarray:
        if (b, w) not in self.tables:
            self.tables[(b, w)] = np.random.default_rng([self.seed, 2, b, w]).integers(0, self.n_stimuli, n_nodes)
        return self.tables[(b, w)]


def two_hot_width(n_stimuli: int) -> int:
    """TEM's compressed sensory code: the smallest n_c with n_c choose 2 >= n stimuli (TEM: 10 for 45)."""
    n_c = 2
    while math.comb(n_c, 2) < n_stimuli:
        n_c += 1
    return n_c


def naive_tem_cells(n_stimuli: int, n_stimuli_2: int) -> dict:
    """Conjunctive cells p of TEM (g_memory (x) x_c) for one stream, and a triple conjunction for two streams."""
    g_memory = sum(TEMConfig().g_memory)
    n_c, n_c2 = two_hot_width(n_stimuli), two_hot_width(n_stimuli_2)
    return {"g_memory": g_memory, "n_x_c": n_c, "n_x2_c": n_c2, "one_stream": g_memory * n_c,
            "two_streams": g_memory * n_c * n_c2}


def _model(cfg: ConjunctionsConfig, seed: int, two_streams: bool) -> TEMt:
    torch.manual_seed(seed)
    return TEMt(TEMtConfig(n_actions=5, n_stimuli=cfg.n_stimuli, pos_dim=cfg.pos_dim,
                           n_stimuli_2=cfg.n_stimuli_2 if two_streams else 0))


def one_stream_twin(model: TEMt) -> TEMt:
    """A one-stream TEM-t with the two-stream model's weights, stream 2 dropped: the same positions, so its memory
    count shows what the second stream itself changes in storage (only de-duplication: a repeat needs both
    stimuli to match), apart from the two trained models' different positions."""
    twin = TEMt(replace(model.config, n_stimuli_2=0))
    twin.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("stream_2.")})
    return twin


def _tensors(chunk: dict, x2: np.ndarray) -> tuple[torch.Tensor, ...]:
    return (torch.from_numpy(chunk["x"]), torch.from_numpy(chunk["actions"]), torch.from_numpy(x2),
            torch.from_numpy(chunk["revisit"]))


def train_pair(cfg: ConjunctionsConfig, steps: int, seed: int) -> tuple[dict[str, TEMt], dict[str, float]]:
    """Both models, trained step for step on the same chunks with TEM's Adam schedule and clip (spatial.config
    TrainConfig defaults); the loss counts revisits only, as in spatial training. Returns the models and the
    seconds each spent training."""
    t = TrainConfig()
    walks_cfg = WalkConfig(sizes=cfg.sizes, n_stimuli=cfg.n_stimuli, walk_length=cfg.walk_length)
    walks = WalkStream(walks_cfg, cfg.batch_size, seed=seed)
    second = SecondStimuli(walks, cfg.n_stimuli_2, seed)
    models = {"plain": _model(cfg, seed, False), "two_streams": _model(cfg, seed, True)}
    optims = {k: torch.optim.Adam(m.parameters(), lr=learning_rate(0, t)) for k, m in models.items()}
    states = {k: None for k in models}
    seconds = {k: 0.0 for k in models}
    for step in range(steps):
        chunk = walks.next_chunk(cfg.chunk_length)
        x, a, x2, revisit = _tensors(chunk, second.of(chunk))
        for name, model in models.items():
            start = time.perf_counter()
            for group in optims[name].param_groups:
                group["lr"] = learning_rate(step, t)
            out = model(x, a, states[name], loss_mask=revisit, x2=x2 if model.stream_2 is not None else None)
            optims[name].zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            optims[name].step()
            states[name] = out.state
            seconds[name] += time.perf_counter() - start
    return models, seconds


@torch.no_grad()
def evaluate_pair(models: dict[str, TEMt], cfg: ConjunctionsConfig) -> dict:
    """Both models on the same fresh worlds (one per slot, eval_steps steps each): accuracies per stream, memory
    neurons at the end of the walk, and the nodes the walk visited (what de-duplication should store at most)."""
    walks_cfg = WalkConfig(sizes=cfg.sizes, n_stimuli=cfg.n_stimuli, walk_length=(cfg.eval_steps, cfg.eval_steps))
    walks = WalkStream(walks_cfg, cfg.eval_worlds, seed=cfg.eval_seed)
    second = SecondStimuli(walks, cfg.n_stimuli_2, cfg.eval_seed)
    chunks = []
    for lo in range(0, cfg.eval_steps, cfg.chunk_length):
        chunk = walks.next_chunk(min(cfg.chunk_length, cfg.eval_steps - lo))
        chunks.append((chunk, second.of(chunk)))
    cat = lambda k: np.concatenate([c[k] for c, _ in chunks], 1)
    revisit, new_edge, edge_seen, actions = cat("revisit"), cat("new_edge"), cat("edge_seen"), cat("actions")
    result = {"nodes_visited": float(cat("n_visited")[:, -1].mean())}
    for name, model in models.items():
        model.eval()
        state, right, right2 = None, [], []
        for chunk, x2 in chunks:
            x, a, x2t, _ = _tensors(chunk, x2)
            out = model(x, a, state, x2=x2t if model.stream_2 is not None else None)
            state = out.state
            right.append((out.logits.argmax(-1) == x).numpy())
            if out.logits2 is not None:
                right2.append((out.logits2.argmax(-1) == x2t).numpy())
        model.train()
        row = {"feature_neurons": model.feature_neurons,
               "memory_neurons": state.count.tolist(),                  # per world: memories stored in it
               "memory_neurons_mean": float(state.count.float().mean())}
        streams = [("stream_1", right, cfg.n_stimuli)] + ([("stream_2", right2, cfg.n_stimuli_2)] if right2 else [])
        for stream, correct, n in streams:
            acc = accuracy_summary(np.concatenate(correct, 1), revisit, new_edge, edge_seen, actions, n)
            row[stream] = {k: acc[k] for k in ("acc_revisit", "acc_zero_shot", "acc_first_visit", "chance",
                                               "n_revisit", "n_zero_shot")}
        result[name] = row
    return result


def run_conjunctions(out: Path, steps: int = DEFAULT_STEPS, seed: int = 0, config: ConjunctionsConfig | None = None,
                     overwrite: bool = False) -> dict:
    """Train both models, evaluate them, write conjunctions.json and conjunctions.md into `out`; the result."""
    cfg = config or ConjunctionsConfig()
    if steps < 1:
        raise ConfigError(f"conjunctions: steps must be >= 1 (got {steps})")
    out = Path(out)
    held = [name for name in OUTPUTS if (out / name).exists()]
    if held and not overwrite:                       # checked before any work: nothing written is lost
        raise FileExistsError(f"{out} already holds {', '.join(held)}: choose another --out or pass --overwrite")
    started = time.perf_counter()
    models, seconds = train_pair(cfg, steps, seed)
    models["same_positions"] = one_stream_twin(models["two_streams"])
    result = {"steps": steps, "seed": seed, "config": to_dict(cfg), "train_seconds": seconds,
              **evaluate_pair(models, cfg), "naive_tem": naive_tem_cells(cfg.n_stimuli, cfg.n_stimuli_2)}
    result["wall_seconds"] = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "conjunctions.json", json.dumps(result, indent=1) + "\n")
    atomic_write_text(out / "conjunctions.md", section(result))
    return result


def section(result: dict) -> str:
    """The report section (markdown) of a run_conjunctions result."""
    plain, two, tem, cfg = result["plain"], result["two_streams"], result["naive_tem"], result["config"]
    n1, n2 = cfg["n_stimuli"], cfg["n_stimuli_2"]
    acc = lambda row, stream, key: f"{row[stream][key]:.3f}" if stream in row else "-"
    lines = [
        "## Triple conjunctions (C8)", "",
        f"Square worlds of widths {list(cfg['sizes'])}, two stimuli per node drawn independently ({n1} and {n2} "
        f"possible), {result['steps']} training steps (batch {cfg['batch_size']}, chunks of {cfg['chunk_length']}, "
        f"seed {result['seed']}), both models on the same walks and from the same initial weights; evaluation on "
        f"{cfg['eval_worlds']} fresh worlds of {cfg['eval_steps']} steps ({result['nodes_visited']:.1f} nodes "
        "visited per world on average). Memory neurons: memories stored in a world at the end of its walk, mean "
        "over worlds. Chance: "
        f"1/{n1} = {1 / n1:.3f} (stream 1), 1/{n2} = {1 / n2:.3f} (stream 2).", "",
        "| model | value (feature) neurons | memory neurons | revisits, stream 1 | revisits, stream 2 | "
        "zero-shot, stream 1 | zero-shot, stream 2 |",
        "|---|---|---|---|---|---|---|",
    ]
    twin = result["same_positions"]
    for label, row in (("TEM-t, one stream", plain), ("TEM-t, two streams", two),
                       ("two-stream weights, stream 2 dropped", twin)):
        lines.append(f"| {label} | {row['feature_neurons']} | {row['memory_neurons_mean']:.1f} | "
                     f"{acc(row, 'stream_1', 'acc_revisit')} | {acc(row, 'stream_2', 'acc_revisit')} | "
                     f"{acc(row, 'stream_1', 'acc_zero_shot')} | {acc(row, 'stream_2', 'acc_zero_shot')} |")
    same = sum(a == b for a, b in zip(twin["memory_neurons"], two["memory_neurons"]))
    lines += [
        "",
        f"Adding the stream added {two['feature_neurons'] - plain['feature_neurons']} value (feature) neurons. "
        f"Memory neurons: {two['memory_neurons_mean']:.1f} with it and {twin['memory_neurons_mean']:.1f} from the "
        f"same positions with stream 2 dropped (equal in {same} of {len(two['memory_neurons'])} worlds): a second "
        "stream adds a memory only where two steps with the same stream-1 stimulus have positions close enough to "
        "count as a repeat but different stream-2 stimuli. The plain model, trained on its own, stores "
        f"{plain['memory_neurons_mean']:.1f}: how many memories a world gets follows how consistently the learned "
        "positions repeat on revisits, not the number of streams. A naive TEM, whose conjunctive cells p are every "
        f"combination of its {tem['g_memory']} memory-indexing g units with the two-hot sensory code "
        f"({tem['n_x_c']} units for {n1} stimuli), has {tem['one_stream']} cells for one stream and would need "
        f"{tem['g_memory']} x {tem['n_x_c']} x {tem['n_x2_c']} = {tem['two_streams']} for (g, x, x2) triples "
        f"({tem['two_streams'] // tem['one_stream']}x: multiplicative in the streams).", "",
        f"Training time: {result['train_seconds']['plain']:.0f} s (one stream) and "
        f"{result['train_seconds']['two_streams']:.0f} s (two streams); {result['wall_seconds']:.0f} s in all. "
        f"Command: `python -m spatial.conjunctions --out DIR --steps {result['steps']} --seed {result['seed']}`.", "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spatial.conjunctions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="directory for conjunctions.json and conjunctions.md")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help=f"training steps of each model (default {DEFAULT_STEPS})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace conjunctions.json/.md already in --out")
    args = parser.parse_args(argv)
    try:
        if args.threads < 1:
            raise ConfigError(f"--threads must be >= 1 (got {args.threads})")
        torch.set_num_threads(args.threads)
        result = run_conjunctions(Path(args.out), args.steps, args.seed, overwrite=args.overwrite)
    except (ConfigError, FileExistsError) as err:
        print(f"spatial.conjunctions: error: {err}", file=sys.stderr)
        return 2
    for name in ("plain", "two_streams", "same_positions"):
        row = result[name]
        streams = ", ".join(f"{s} revisits {row[s]['acc_revisit']:.3f} (chance {row[s]['chance']:.3f})"
                            for s in ("stream_1", "stream_2") if s in row)
        print(f"{name}: {row['feature_neurons']} feature neurons, {row['memory_neurons_mean']:.1f} memory neurons, "
              f"{streams}")
    print(f"naive TEM: {result['naive_tem']['one_stream']} -> {result['naive_tem']['two_streams']} conjunctive cells; "
          f"{result['wall_seconds']:.0f} s  ({Path(args.out) / 'conjunctions.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
