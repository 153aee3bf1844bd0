"""Sweeps: many arms x seeds trained as populations (temt_core.population), one group after another.

    temt-spatial sweep configs/spatial/sweeps/quick-seeds.yaml --out runs/quick-seeds
    temt-spatial sweep configs/spatial/sweeps/quick-seeds.yaml --out runs/quick-seeds --resume

The sweep file:
    base_config: configs/spatial/quick.yaml   # optional: a spatial config file (relative to the working directory
                                              #   or to the sweep file)
    base:                                     # optional: overrides of it, as in a config file
      train: {steps: 400}
    grid:                                     # optional: dotted key -> list of values; the Cartesian product
      model.w_reg_e: [0.01, 0.1]
    members:                                  # optional: a list of override mappings (dotted or nested keys);
      - {model.transition_init_std: 0.0}      #   every member is combined with every grid point
      - {model.transition_init_std: 0.3, train.lr_max: 5.0e-4}
    seeds: [0, 1, 2]                          # optional: train.seed of every arm (default: the base's seed)

Members whose shapes or code paths differ (population.structure_key, plus the training loop's shape: steps,
batch, chunk, logging, checkpoint and eval cadence, device) are put into separate groups automatically; each
group is trained as one population, except members a population cannot hold yet (module norms, the isometry
control) and landmark members on a CPU (where their population is slower), which are trained one after another by
the plain Trainer into the same member layout. The output directory:
    plan.json              every member: name, group, overrides, resolved config (checked on --resume)
    groups/gK/             the population's checkpoints (checkpoints/step-N, LATEST) and log.jsonl
    members/NAME/          config.yaml, run.json, metrics.jsonl, metrics.json and checkpoints/ of one member,
                           as a single `temt-spatial train` run writes them (temt-spatial analyse reads it; the
                           checkpoint is a full Trainer checkpoint, so `train --resume` can continue it alone)
    summary.csv/.json/.md  every member's evaluation accuracies at every evaluation; per-arm means over seeds
Capturable members (model.capturable with one model.max_memories) with train.graph=eager or cuda train through
temt_core.graph_step.PopulationGraphStep: the whole population step on fixed buffers, replayed as one CUDA graph
with 'cuda'.
A member that diverges is dropped from its population (members/NAME/diverged.json) and the others go on.
A member's training equals the same config trained alone (tests/spatial/test_sweep.py).

Several processes: `temt-spatial sweep FILE --out DIR --processes N` (spatial/sweep_launch.py), which runs
`accelerate launch --multi_gpu --num_processes N -m spatial sweep FILE --out DIR` (on CPUs too:
Accelerate's --cpu launcher starts several processes only through MPI; under --multi_gpu without GPUs the
processes meet over gloo). Rank r trains members r, r + N, ... of every group as its own population
(groups/gK-rR/); rank 0 writes the summary once all are done. Resume with the same N.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from temt_core.checkpoint import CheckpointError, flatten, latest_checkpoint, unflatten
from temt_core.graph_step import PopulationGraphStep
from temt_core.config import ConfigError, to_dict
from temt_core.model import TEMt, TEMtState
from temt_core.population import PopulationAdam, TEMtPopulation
from temt_core.rundir import RunDir, changed_keys, check_resume_config, with_defaults
from temt_core.validation import NonFiniteError

from .metrics import accuracy_summary
from .sweep_file import Member, assign_groups, load_sweep, trains_alone     # noqa: F401 (assign_groups: re-exported)
from .sweep_summary import DIVERGED, write_summary
from .train import RESUMABLE_CHANGES, Trainer, apply_keep_freed_memory, evaluate, learning_rate
from .walks import WalkStream

# -- one population --------------------------------------------------------------------------------------------------

GROUP_LOG = "log.jsonl"             # a group's own log: population size and speed per log step


class PopulationTrainer:
    """spatial.train.Trainer for a group of members: one TEMtPopulation, per-member Adam, learning-rate schedule,
    gradient clip, walk stream, logs and evaluations. Checkpoints hold the whole population (weights, moments,
    carried state, every walk stream) so a resumed group continues with the numbers of an uninterrupted one.

    A member whose positions stop being finite is dropped (diverged.json and a "diverged" line in its
    metrics.jsonl say when and why); the others go on, with the numbers they would have had anyway."""

    def __init__(self, members: list[Member], group_dir: str | Path, member_dirs: list[Path], resume: bool = False,
                 bar=None, dtype: torch.dtype = torch.float32):
        if not members:
            raise ValueError("a group needs at least one member")
        self.members, self.group_dir, self.member_dirs, self.bar = members, Path(group_dir), member_dirs, bar
        self.configs = [m.config for m in members]
        t = self.configs[0].train
        torch.set_num_threads(t.threads)
        apply_keep_freed_memory(t, members=len(members))
        self.device = torch.device(t.device)
        models = []
        for c in self.configs:                  # as Trainer: the member's seed, then its TEMt
            torch.manual_seed(c.train.seed)
            models.append(TEMt(c.model))
        self.population = TEMtPopulation(models).to(device=self.device, dtype=dtype)
        # train.graph (capturable members): the step on fixed buffers (temt_core.graph_step), replayed as a CUDA
        # graph with 'cuda'; its optimiser keeps step count, learning rates and clips on the device
        self.graph = t.graph
        self.state: TEMtState | None = None
        self.optimizer = PopulationAdam(self.population.parameters(), capturable=self.graph != "off")
        self.graph_step: PopulationGraphStep | None = None
        self._new_graph_step()
        self.walks = [WalkStream(c.walks, c.train.batch_size, seed=c.train.seed) for c in self.configs]
        self.step = 0
        self.dtype = dtype
        self.group = RunDir(self.group_dir)     # the population's checkpoints and log.jsonl
        self.group_dir.mkdir(parents=True, exist_ok=True)
        self.group.lock()                       # one trainer per group (members trained alone lock their own)
        if resume and latest_checkpoint(self.group_dir) is not None:
            self._resume()
        else:
            self._start()

    @property
    def P(self) -> int:
        return len(self.members)

    def _new_graph_step(self) -> None:
        """(Re)build the graph step for the current population and optimiser (after members are dropped too)."""
        if self.graph == "off":
            return
        t = self.configs[0].train
        self.graph_step = PopulationGraphStep(self.population, self.optimizer, t.batch_size, t.chunk_length,
                                              use_graph=self.graph == "cuda")
        if self.state is not None:
            self.graph_step.set_state(self.state)

    @property
    def member_runs(self) -> list[RunDir]:
        return [RunDir(d) for d in self.member_dirs]

    # -- run directories ---------------------------------------------------------------------------------------

    def _start(self) -> None:
        self.group_dir.mkdir(parents=True, exist_ok=True)
        self.group.start_log(GROUP_LOG)
        for m, d, run in zip(self.members, self.member_dirs, self.member_runs):
            d.mkdir(parents=True, exist_ok=True)
            run.write_config(m.config)
            run.start_log()
            (d / DIVERGED).unlink(missing_ok=True)
            run.write_info(seed=m.config.train.seed,
                           parameters=sum(p[0].numel() for p in self.population.parameters()),
                           sweep={"member": m.name, "group": m.group, "overrides": m.overrides,
                                  "population": [x.name for x in self.members]})

    def _resume(self) -> None:
        ckpt, tensors, meta = self.group.resume_point(require=("step", "members", "configs", "optimizer", "walk_rng"))
        names = [m.name for m in self.members]
        if meta["members"] != [n for n in names if n in meta["members"]]:
            raise ConfigError(f"cannot resume {ckpt}: it holds members {meta['members']}, the plan has {names}")
        gone = [p for p, n in enumerate(names) if n not in meta["members"]]
        if gone:                                        # they diverged before this checkpoint
            self._keep([p for p in range(len(names)) if p not in gone])
        for m, saved in zip(self.members, meta["configs"]):
            check_resume_config(saved, to_dict(m.config), RESUMABLE_CHANGES, f"{ckpt} (member {m.name})",
                                type(m.config))
        with torch.no_grad():
            for name in self.population.names:
                self.population.param(name).copy_(tensors[f"pop.{name}"])
        self.optimizer.load_state_dict(unflatten(meta["optimizer"], tensors))
        for p, w in enumerate(self.walks):
            w.load_state_dict({"arrays": {k[len(f"walks.{p}."):]: v.numpy() for k, v in tensors.items()
                                          if k.startswith(f"walks.{p}.")}, "rng": meta["walk_rng"][p]})
        if any(k.startswith("state.") for k in tensors):
            dtype = self.population.param("positions.e_init").dtype
            self.state = TEMtState.from_tensors({k[6:]: (v.to(self.device, dtype) if v.is_floating_point() else
                                                         v.to(self.device)) for k, v in tensors.items()
                                                 if k.startswith("state.")})
        if self.graph_step is not None and self.state is not None:
            self.graph_step.set_state(self.state)
        self.step = meta["step"]
        torch.set_rng_state(tensors["rng.torch"])
        # drop log lines written after this checkpoint by the interrupted run, so none is counted twice
        self.group.truncate_log(self.step, GROUP_LOG)
        for m, d, run in zip(self.members, self.member_dirs, self.member_runs):
            run.truncate_log(self.step)
            run.write_config(m.config)
            (d / DIVERGED).unlink(missing_ok=True)     # it was alive at this checkpoint; it may diverge again

    def save(self) -> Path:
        pop = self.population
        tensors = {f"pop.{name}": pop.param(name) for name in pop.names}
        if self.state is not None:
            tensors.update({f"state.{k}": v for k, v in self.state.tensors().items()})
        tensors["rng.torch"] = torch.get_rng_state()
        optimizer = flatten(self.optimizer.state_dict(), "optim", tensors)
        walk_rng = []
        for p, w in enumerate(self.walks):
            s = w.state_dict()
            tensors.update({f"walks.{p}.{k}": torch.from_numpy(v) for k, v in s["arrays"].items()})
            walk_rng.append(s["rng"])
        meta = {"step": self.step, "members": [m.name for m in self.members],             # survivors only
                "configs": [to_dict(c) for c in self.configs], "optimizer": optimizer, "walk_rng": walk_rng}
        return self.group.save(self.step, tensors, meta, keep=self.configs[0].train.keep_checkpoints)

    def save_members(self) -> None:
        """Every member as a single run's checkpoint (Trainer's layout: model, optimizer, walks, state, RNG)."""
        B = self.configs[0].train.batch_size
        for p, (c, run) in enumerate(zip(self.configs, self.member_runs)):
            model = self.population.member_model(p)          # the population's dtype (float32 unless testing)
            tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
            if self.state is not None:
                tensors.update({f"state.{k}": v for k, v in
                                self.population.member_state(self.state, p, B).tensors().items()})
            tensors["rng.torch"] = torch.get_rng_state()
            optimizer = flatten(self.optimizer.member_torch_state(p, model), "optim", tensors)
            s = self.walks[p].state_dict()
            tensors.update({f"walks.{k}": torch.from_numpy(v) for k, v in s["arrays"].items()})
            meta = {"step": self.step, "config": to_dict(c), "optimizer": optimizer, "walk_rng": s["rng"]}
            run.save(self.step, tensors, meta, keep=c.train.keep_checkpoints)

    def _log(self, p: int, record: dict) -> None:
        self.member_runs[p].log(record)

    # -- training ----------------------------------------------------------------------------------------------

    def train_step(self, chunks: list[dict]) -> list[dict]:
        """One step of every member on its own chunk; returns per-member stats as Trainer.train_step does. Members
        that diverge on this step are dropped (see _diverged) and the step is done again by the others, on the
        same chunks; `self.members` then lists the survivors, whose stats are returned."""
        if self.graph_step is not None:
            return self._graph_train_step(chunks)
        while True:
            x, a, mask = self._inputs(chunks)
            try:
                out = self.population(x, a, self.state, loss_mask=mask)
                break
            except NonFiniteError as err:
                bad = getattr(err, "members", None)
                if not bad:
                    raise
                keep = self._diverged(bad, err)
                if not keep:
                    return []
                chunks = [chunks[p] for p in keep]
        lr = [learning_rate(self.step, c.train) for c in self.configs]
        self.optimizer.zero_grad()
        out.loss.backward()
        grad_norm = self.optimizer.clip_grad_norm_([c.train.grad_clip for c in self.configs])
        self.optimizer.step(lr)
        self.state = out.state
        self.step += 1
        correct = (out.logits.detach().argmax(-1) == x).cpu().numpy()                       # (P, B, T)
        stats = self._member_stats(out.losses, out.parts, grad_norm, correct)
        return self._drop_non_finite(stats) if self.population.capturable else stats

    def _member_stats(self, losses, parts, norms, correct) -> list[dict]:
        """Per-member records from (P,) losses, parts and gradient norms and the (P, B, T) correct mask."""
        losses, norms = losses.detach().cpu().tolist(), norms.detach().cpu().tolist()
        parts = {k: v.detach().cpu().tolist() for k, v in parts.items()}
        return [{"loss": losses[p], **{k: v[p] for k, v in parts.items()}, "grad_norm": norms[p],
                 "correct": correct[p]} for p in range(self.P)]

    def _inputs(self, chunks: list[dict]):
        """(P, B, T) stimuli, actions and loss mask of the members' chunks."""
        stack = lambda k: torch.from_numpy(np.stack([c[k] for c in chunks])).to(self.device)  # (P, B, T)
        x, a, revisit = stack("x"), stack("actions"), stack("revisit")
        mask = torch.stack([revisit[p] if c.train.loss_on == "revisit" else torch.ones_like(revisit[p])
                            for p, c in enumerate(self.configs)])
        return x, a, mask

    def _graph_train_step(self, chunks: list[dict]) -> list[dict]:
        """train_step through PopulationGraphStep (train.graph): the same step on fixed buffers, nothing read back
        until it has run. A capturable step checks nothing on the way, so a member whose loss is no longer finite
        after the step is dropped then (`_drop_non_finite`; the ordinary step drops it before, when its positions
        stop being finite); members are independent (own loss term, clip and Adam), so the others' step stands."""
        x, a, mask = self._inputs(chunks)
        gs = self.graph_step
        gs.set_lr([learning_rate(self.step, c.train) for c in self.configs])
        gs.set_clip([c.train.grad_clip for c in self.configs])
        gs(x, a, mask.to(gs.loss_mask.dtype))
        self.state = gs.state
        self.step += 1
        correct = (gs.logits.argmax(-1) == x).cpu().numpy()                                # (P, B, T)
        return self._drop_non_finite(self._member_stats(gs.losses, gs.parts, gs.grad_norm, correct))

    def _drop_non_finite(self, stats: list[dict]) -> list[dict]:
        """After a capturable population's step (which checks nothing on the way): drop the members whose loss is
        not finite; returns the survivors' stats."""
        bad = [p for p, st in enumerate(stats) if not math.isfinite(st["loss"])]
        if not bad:
            return stats
        self.step -= 1                         # _diverged records the step being taken
        keep = self._diverged(bad, NonFiniteError(f"the loss of population member(s) {bad} became non-finite "
                                                  "(a capturable step: read after the step)"))
        self.step += 1
        return [stats[p] for p in keep]

    def _diverged(self, bad: list[int], err: Exception) -> list[int]:
        """Record members `bad` as diverged at the coming step, drop them; returns the kept indices."""
        step = self.step + 1
        for p in bad:
            info = {"step": step, "split": "diverged", "error": str(err),
                    "last_checkpoint": str(latest_checkpoint(self.group_dir) or "none")}
            self._log(p, info)
            (self.member_dirs[p] / DIVERGED).write_text(json.dumps(info, indent=1))
            if self.bar is not None:
                self.bar.write(f"step {step}: member {self.members[p].name} diverged and is dropped ({err})")
        keep = [p for p in range(self.P) if p not in bad]
        if keep:
            self._keep(keep)
        else:
            self.members, self.member_dirs, self.configs, self.walks = [], [], [], []
        return keep

    def _keep(self, keep: list[int]) -> None:
        """Continue with members `keep` only (weights, moments, carried state, walks)."""
        B = self.configs[0].train.batch_size
        self.population = self.population.subset(keep)
        self.optimizer = self.optimizer.subset(keep, list(self.population.parameters()))
        if self.state is not None:
            self.state = TEMtPopulation.subset_state(self.state, keep, B)
        pick = lambda xs: [xs[p] for p in keep]
        self.members, self.member_dirs, self.configs, self.walks = (pick(self.members), pick(self.member_dirs),
                                                                    pick(self.configs), pick(self.walks))
        self._new_graph_step()                 # a new population: new fixed buffers (and, on a GPU, a new capture)

    def evaluate(self) -> list[dict]:
        return [evaluate(self.population.member_model(p), c, self.device)
                for p, c in enumerate(self.configs)]

    def run(self) -> list[dict]:
        try:
            return self._run()
        finally:
            self.group.close()

    def _run(self) -> list[dict]:
        t, e = self.configs[0].train, self.configs[0].eval      # shared within a group
        windows: dict[str, list[dict]] = {m.name: [] for m in self.members}
        chunks: dict[str, list[dict]] = {m.name: [] for m in self.members}
        started, start_step = time.perf_counter(), self.step
        final = None
        while self.step < t.steps and self.members:
            step_chunks = [w.next_chunk(t.chunk_length) for w in self.walks]
            names = [m.name for m in self.members]
            stats = self.train_step(step_chunks)
            if self.bar is not None:
                self.bar.update(len(names))
            if not self.members:                # every member diverged
                break
            for m, st in zip(self.members, stats):
                windows[m.name].append(st)
                chunks[m.name].append(step_chunks[names.index(m.name)])
            if self.step % t.log_every == 0 or self.step == t.steps:
                elapsed = time.perf_counter() - started
                steps_per_s = (self.step - start_step) / max(elapsed, 1e-9)
                records = [self._train_record(p, windows[m.name], chunks[m.name], steps_per_s)
                           for p, m in enumerate(self.members)]
                for p, r in enumerate(records):
                    self._log(p, r)
                self.group.log({"step": self.step, "members": self.P, "steps_per_s": steps_per_s,
                                "walk_steps_per_s": steps_per_s * self.P * t.batch_size * t.chunk_length,
                                "loss_mean": float(np.mean([r["loss"] for r in records]))}, GROUP_LOG)
                if self.bar is not None:
                    self.bar.set_postfix(loss=f"{np.mean([r['loss'] for r in records]):.3f}",
                                         acc_revisit=f"{np.mean([r['acc_revisit'] for r in records]):.3f}")
                windows = {m.name: [] for m in self.members}
                chunks = {m.name: [] for m in self.members}
            if self.step % e.every == 0 or self.step == t.steps:
                final = self._evaluate_and_log()
            if self.step % t.checkpoint_every == 0 or self.step == t.steps:
                self.save()
        if not self.members:
            return []
        if final is None:                      # resumed at the end: evaluate once more for the summary
            final = [{"step": self.step, "split": "eval", **r} for r in self.evaluate()]
        self.save_members()
        for run, f in zip(self.member_runs, final):
            run.write_json("metrics.json", f)
        return final

    def _evaluate_and_log(self) -> list[dict]:
        final = [{"step": self.step, "split": "eval", **r} for r in self.evaluate()]
        for p, f in enumerate(final):
            self._log(p, {k: v for k, v in f.items() if not isinstance(v, (dict, list))})   # scalars, as Trainer
        if self.bar is not None:
            self.bar.write(f"step {self.step}: eval acc_revisit " + " ".join(f"{f['acc_revisit']:.3f}" for f in final))
        return final

    def _train_record(self, p: int, window: list[dict], chunks: list[dict], steps_per_s: float) -> dict:
        """The same record as Trainer._train_record (steps_per_s: the population's steps, each of which advances
        every member by one step)."""
        c = self.configs[p]
        correct = np.concatenate([w["correct"] for w in window], 1)
        cat = lambda k: np.concatenate([ch[k] for ch in chunks], 1)
        acc = accuracy_summary(correct, cat("revisit"), cat("new_edge"), cat("edge_seen"), cat("actions"),
                               c.walks.n_stimuli)
        record = {"step": self.step, "split": "train", "lr": learning_rate(self.step, c.train),
                  "steps_per_s": steps_per_s,
                  "walk_steps_per_s": steps_per_s * c.train.batch_size * c.train.chunk_length}
        for k in window[0]:
            if k != "correct":
                record[k] = float(np.mean([w[k] for w in window]))
        record.update({k: acc[k] for k in ("acc", "acc_revisit", "acc_zero_shot", "node_agent", "edge_agent")})
        return record


# -- the whole sweep ---------------------------------------------------------------------------------------------

PLAN = "plan.json"


def _plan(members: list[Member], sweep_file: str) -> dict:
    return {"sweep_file": sweep_file, "groups": max(m.group for m in members) + 1,
            "members": [{"name": m.name, "group": m.group, "overrides": m.overrides, "config": to_dict(m.config)}
                        for m in members]}


def check_resume(saved: dict, members: list[Member]) -> None:
    """Resuming must train the same members in the same groups; name every difference."""
    old = {m["name"]: m for m in saved["members"]}
    new = {m.name: m for m in members}
    problems = []
    added = [n for n in new if n not in old]
    removed = [n for n in old if n not in new]
    if added:
        problems.append(f"the sweep file now has member(s) the run lacks: {', '.join(added)}")
    if removed:
        problems.append(f"the run has member(s) the sweep file no longer gives: {', '.join(removed)}")
    for name in new:
        if name not in old:
            continue
        m, o = new[name], old[name]
        if m.overrides != o["overrides"]:
            problems.append(f"member {name}: overrides {o['overrides']} in the run, {m.overrides} in the file")
        saved = with_defaults(type(m.config), o["config"], f"member {name}")
        diff = [k for k in changed_keys(saved, to_dict(m.config)) if k not in RESUMABLE_CHANGES]
        for k in diff:
            get = lambda d: _dig(d, k)
            problems.append(f"member {name}: {k} is {get(saved)!r} in the run, {get(to_dict(m.config))!r} "
                            "in the file")
        if m.group != o["group"]:
            problems.append(f"member {name}: group {o['group']} in the run, {m.group} with the file")
    if problems:
        raise ConfigError("cannot resume with a different sweep (nothing was changed): " + "; ".join(problems) +
                          f". Only {', '.join(sorted(RESUMABLE_CHANGES))} may change on resume")


def _dig(d: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def _processes(cpu: bool):
    """(rank, number of processes, barrier). Under `accelerate launch` with several processes, Accelerate's
    PartialState sets up the process group (gloo when the members train on the CPU: cpu=True, which Accelerate
    needs to be told under its multi-process launcher); a plain run is rank 0 of 1."""
    import os
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, lambda: None
    from accelerate import PartialState
    state = PartialState(cpu=cpu)
    return state.process_index, state.num_processes, state.wait_for_everyone


def check_out(out: Path, members: list[Member], resume: bool, processes: int) -> None:
    """Refuse what a sweep into `out` cannot do: start over a sweep already there, resume one that is not there,
    resume with another sweep file (check_resume) or another number of processes."""
    plan_path = out / PLAN
    if not resume:
        if plan_path.exists():
            raise FileExistsError(f"{out} already holds a sweep: resume it with --resume, or choose another --out")
        return
    if not plan_path.is_file():
        raise CheckpointError(f"{out} holds no sweep to resume ({plan_path} is missing)")
    saved = json.loads(plan_path.read_text())
    check_resume(saved, members)
    trained = saved.get("processes", 1)
    if trained != processes:
        raise ConfigError(f"{out} was trained by {trained} process(es); resume it with as many (got {processes}): "
                          f"each process's checkpoints hold its own members (--resume --processes {trained})")


def run_sweep(sweep_file: str | Path, out: str | Path, resume: bool = False, progress: bool = True,
              dtype: torch.dtype = torch.float32) -> list[dict] | None:
    """Train every group of the sweep (one population each, one after another); returns the summary rows (None
    on ranks other than 0).

    Under `accelerate launch --num_processes N`, rank r trains members r, r + N, r + 2N, ... of every group as its
    own population (groups/gK-rR/), and rank 0 writes the summary of all members once every rank is done."""
    out = Path(out)
    members = load_sweep(sweep_file)
    rank, world, barrier = _processes(cpu=all(m.config.train.device == "cpu" for m in members))
    plan_path = out / PLAN
    # every rank checks (nothing is written before all have), so a refused resume stops all of them alike
    check_out(out, members, resume, world)
    barrier()
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        plan_tmp = out / f"{PLAN}.tmp"
        plan_tmp.write_text(json.dumps({**_plan(members, str(sweep_file)), "processes": world}, indent=1))
        plan_tmp.replace(plan_path)
    barrier()
    groups = [[m for m in members if m.group == g] for g in range(max(m.group for m in members) + 1)]
    slices = [(g, group[rank::world]) for g, group in enumerate(groups) if group[rank::world]]
    total = sum(len(mine) * mine[0].config.train.steps for _, mine in slices)
    bar = tqdm(total=total, desc="sweep", unit="member-step", disable=not progress or rank != 0,
               dynamic_ncols=True)
    try:
        for g, mine in slices:
            dirs = [out / "members" / m.name for m in mine]
            gdir = out / "groups" / (f"g{g}" if world == 1 else f"g{g}-r{rank}")
            steps = mine[0].config.train.steps
            if resume and latest_checkpoint(gdir) is not None and all(_finished(d, steps) for d in dirs):
                bar.update(len(mine) * steps)
                continue
            bar.set_description(f"sweep group {g + 1}/{len(groups)}")
            if trains_alone(mine[0].config):
                _train_alone(mine, dirs, resume, bar, dtype)
            else:
                trainer = PopulationTrainer(mine, gdir, dirs, resume=resume, bar=bar, dtype=dtype)
                bar.update(len(mine) * trainer.step)
                trainer.run()
            if world == 1:
                write_summary(out, members)
    finally:
        bar.close()
    barrier()
    return write_summary(out, members) if rank == 0 else None


def _train_alone(members: list[Member], dirs: list[Path], resume: bool, bar, dtype) -> None:
    """Members that cannot share a population, one after another, each a plain `temt-spatial train` run in its
    member folder (a resumed sweep resumes each from its own checkpoints)."""
    if dtype != torch.float32:
        raise ConfigError(f"member {members[0].name}: members trained alone (landmark correction on a CPU, module "
                          f"norms, isometry) run in float32 only (got {dtype})")
    for m, d in zip(members, dirs):
        steps = m.config.train.steps
        if _finished(d, steps):
            bar.update(steps)
            continue
        # a member the sweep started but that stopped before its first checkpoint is started again
        has_checkpoint = latest_checkpoint(d) is not None
        trainer = Trainer(m.config, d, resume=resume and has_checkpoint, overwrite=resume and not has_checkpoint,
                          progress=False)
        start = trainer.step
        bar.update(start)
        trainer.run()
        bar.update(steps - start)


def _finished(member_dir: Path, steps: int) -> bool:
    f = member_dir / "metrics.json"
    return (member_dir / DIVERGED).is_file() or (f.is_file() and json.loads(f.read_text()).get("step") == steps)
