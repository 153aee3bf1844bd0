"""Issue 7, part 3: a TEM-t training step replayed as a CUDA graph against eager steps, in the same run.

    python benchmarks/graph_step_speed.py --device cuda        # prints JSON (the GPU check)
    python benchmarks/graph_step_speed.py                      # CPU: the eager arms only (the cost of capturable)

Reference config (as core_speed.py): batch 16, chunks of 75 steps, e = 128, n_x = 45, slots reset every 1,000 steps
out of phase, de-duplication off; the store is max_memories = 1,000 wide (capturable: always that wide).

Both for the parallel path and for landmark correction (stimulus query), whose 75-step loop is where a GPU waits
most on launches.

    eager            TEMt as trained today (store width follows the data, host reads allowed)
    eager_capturable TEMtConfig(capturable=True): fixed width, no host reads, still one launch per kernel
    graph            the capturable step in temt_core.graph_step.GraphTrainStep, replayed as one CUDA graph

Exactness: `graph` and `eager_capturable` start from the same weights and train on the same chunks; the JSON gives
the largest relative difference of their losses over the first chunks (float32: rounding only, since the same
kernels run in the same order). Target (issue 7): graph >= 5x the 42 steps/s measured for one model at batch 16.

    python benchmarks/graph_step_speed.py --device cuda --members 32     # and a population of 32 members

--members P adds a population of P reference models (parallel path, each its own seed and walk stream) in the same
three arms: `eager` (TEMtPopulation + PopulationAdam as sweeps train today), `eager_capturable` and `graph`
(temt_core.graph_step.PopulationGraphStep). `minutes_for_20k_steps` is the issue's second GPU target: P = 32
members x 20k steps in one 15-minute window.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch

from core_speed import synthetic_stream
from temt_core.graph_step import GraphTrainStep, PopulationGraphStep
from temt_core.model import TEMt, TEMtConfig
from temt_core.population import PopulationAdam, TEMtPopulation


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _optimizer(model, device, capturable):
    if capturable and device.type == "cuda":
        return torch.optim.Adam(model.parameters(), lr=torch.tensor(1e-4, device=device), capturable=True)
    return torch.optim.Adam(model.parameters(), lr=1e-4)


def run_arm(step, chunks, warmup, device):
    """step(x, a) -> loss tensor. Returns timings of the chunks after `warmup` and every loss (read at the end)."""
    times, losses = [], []
    for i, (x, a) in enumerate(chunks):
        x, a = x.to(device), a.to(device)
        _sync(device)
        t0 = time.perf_counter()
        losses.append(step(x, a).detach().clone())
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    return {"sec_per_step": sec, "steps_per_s": 1 / sec, "timed_steps": len(times)}, torch.stack(losses).cpu()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--warmup", type=int, default=14, help="chunks before timing (fills the store)")
    p.add_argument("--chunks", type=int, default=20, help="timed chunks per arm")
    p.add_argument("--members", type=int, default=0, help="also a population of this many models (0: none)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    base = dict(n_actions=5, n_stimuli=45, pos_dim=128, dedup_threshold=None, transition_init_std=0.3,
                max_memories=1000)
    chunks = synthetic_stream(args.batch, 75, args.warmup + args.chunks, 1000, 5, 45)
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
              "threads": args.threads, "config": f"batch {args.batch} x 75 steps, e=128, n_x=45, memory 0..1000 "
                                                 "per slot, dedup off, max_memories=1000", "runs": {}, "ratios": {}}
    for model_name, extra in (("parallel", {}), ("landmark_stimulus", {"landmark": "stimulus"})):
        torch.manual_seed(0)
        plain = TEMt(TEMtConfig(**base, **extra)).to(device)
        fixed = TEMt(TEMtConfig(**base, **extra, capturable=True)).to(device)
        fixed.load_state_dict(plain.state_dict())
        runs = result["runs"][model_name] = {}
        opt, state = _optimizer(plain, device, False), [None]

        def eager(x, a):
            out = plain(x, a, state[0])
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            state[0] = out.state
            return out.loss
        runs["eager"], _ = run_arm(eager, chunks, args.warmup, device)
        twin = copy.deepcopy(fixed)
        eager_step = GraphTrainStep(fixed, _optimizer(fixed, device, True), args.batch, 75, use_graph=False)
        runs["eager_capturable"], eager_losses = run_arm(eager_step, chunks, args.warmup, device)
        r = result["ratios"][model_name] = {
            "eager_capturable_over_eager": runs["eager_capturable"]["steps_per_s"] / runs["eager"]["steps_per_s"]}
        if device.type == "cuda":
            graph_step = GraphTrainStep(twin, _optimizer(twin, device, True), args.batch, 75, use_graph=True)
            runs["graph"], graph_losses = run_arm(graph_step, chunks, args.warmup, device)
            rel = ((graph_losses - eager_losses).abs() / eager_losses.abs().clamp(min=1e-12)).max()
            r["graph_vs_eager_capturable_max_rel_loss_diff"] = float(rel)
            r["graph_over_eager"] = runs["graph"]["steps_per_s"] / runs["eager"]["steps_per_s"]
            r["graph_steps_per_s_over_42"] = runs["graph"]["steps_per_s"] / 42
    if args.members:
        result["runs"]["population"], result["ratios"]["population"] = population_arms(args, base, device)
    print(json.dumps(result, indent=1))


def population_arms(args, base: dict, device) -> tuple[dict, dict]:
    """The three arms for a population of args.members reference models (see the module docstring)."""
    P, B = args.members, args.batch
    streams = [synthetic_stream(B, 75, args.warmup + args.chunks, 1000, 5, 45, seed=p) for p in range(P)]
    chunks = [(torch.stack([s[i][0] for s in streams]), torch.stack([s[i][1] for s in streams]))
              for i in range(args.warmup + args.chunks)]
    members = lambda capturable: [TEMt(TEMtConfig(**base, capturable=capturable)) for _ in range(P)]
    torch.manual_seed(0)
    plain = TEMtPopulation(members(False)).to(device)
    make_fixed = lambda: TEMtPopulation(members(True)).to(device)
    torch.manual_seed(0)
    fixed, twin = make_fixed(), make_fixed()
    for pop in (fixed, twin):
        pop.load_state_dict(plain.state_dict())
    runs, lr, clip = {}, [1e-4] * P, [2.0] * P
    opt, state = PopulationAdam(plain.parameters()), [None]

    def eager(x, a):
        out = plain(x, a, state[0])
        opt.zero_grad()
        out.loss.backward()
        opt.clip_grad_norm_(clip)
        opt.step(lr)
        state[0] = out.state
        return out.losses
    runs["eager"], _ = run_arm(eager, chunks, args.warmup, device)

    def graph_step(pop, use_graph):
        step = PopulationGraphStep(pop, PopulationAdam(pop.parameters(), capturable=True), B, 75,
                                   use_graph=use_graph)
        step.set_lr(lr)
        step.set_clip(clip)
        return step
    runs["eager_capturable"], eager_losses = run_arm(graph_step(fixed, False), chunks, args.warmup, device)
    arms = ["eager", "eager_capturable"]
    ratios = {"eager_capturable_over_eager": runs["eager_capturable"]["steps_per_s"] / runs["eager"]["steps_per_s"]}
    if device.type == "cuda":
        runs["graph"], graph_losses = run_arm(graph_step(twin, True), chunks, args.warmup, device)
        arms.append("graph")
        rel = ((graph_losses - eager_losses).abs() / eager_losses.abs().clamp(min=1e-12)).max()
        ratios["graph_vs_eager_capturable_max_rel_loss_diff"] = float(rel)
        ratios["graph_over_eager"] = runs["graph"]["steps_per_s"] / runs["eager"]["steps_per_s"]
    for arm in arms:
        runs[arm]["members"] = P
        runs[arm]["walk_steps_per_s"] = runs[arm]["steps_per_s"] * P * B * 75
        runs[arm]["minutes_for_20k_steps"] = 20000 / runs[arm]["steps_per_s"] / 60
    return runs, ratios


if __name__ == "__main__":
    main()
