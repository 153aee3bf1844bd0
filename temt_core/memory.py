"""The memory store of TEM-t: (position, stimulus) conjunctions carried across truncated-backprop chunks.

Each batch slot holds the memories of its current world in a padded (B, M) layout (`valid` marks real entries,
in the order they were stored).
Memories from earlier chunks are detached (truncated backprop); memories of the chunk being processed live
in the model's forward and keep their gradient. Every memory gets a `slot` id: the order in which it was
stored in its world (0, 1, 2, ...). A memory neuron's identity is its slot, which is how memory neurons are
compared across worlds (slot k holds whatever the k-th new conjunction of that world was).

De-duplication (paper): a memory is stored only if no stored memory of the same world already holds the same
(position, stimulus) conjunction, judged by similarity: same stimulus and cosine(z, z') > threshold. Within a
chunk this is resolved in order (a step is compared with the earlier steps that were themselves stored), so
the result does not depend on how a walk is cut into chunks.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F


@dataclass
class MemoryStore:
    z: torch.Tensor       # (B, M, E) z-scored stored positions: the attention keys (LN(e), computed once)
    e: torch.Tensor       # (B, M, E) raw stored positions, the values landmark correction retrieves;
                          #   (B, M, 0) when the model does not need them
    x: torch.Tensor       # (B, M) stimulus ids
    world: torch.Tensor   # (B, M) int64 id of the world each memory belongs to
    slot: torch.Tensor    # (B, M) int64 memory-neuron id within its world, -1 for padding
    valid: torch.Tensor   # (B, M) bool, False for padding

    @classmethod
    def empty(cls, batch: int, dim: int, keep_positions: bool, device=None, dtype=torch.float32) -> "MemoryStore":
        return cls(z=torch.zeros(batch, 0, dim, device=device, dtype=dtype),
                   e=torch.zeros(batch, 0, dim if keep_positions else 0, device=device, dtype=dtype),
                   x=torch.zeros(batch, 0, dtype=torch.long, device=device),
                   world=torch.zeros(batch, 0, dtype=torch.long, device=device),
                   slot=torch.zeros(batch, 0, dtype=torch.long, device=device),
                   valid=torch.zeros(batch, 0, dtype=torch.bool, device=device))

    @classmethod
    def empty_fixed(cls, batch: int, width: int, dim: int, keep_positions: bool, device=None,
                    dtype=torch.float32) -> "MemoryStore":
        """A store of fixed width (for `append_fixed`): `width` padding columns, nothing valid yet."""
        return cls(z=torch.zeros(batch, width, dim, device=device, dtype=dtype),
                   e=torch.zeros(batch, width, dim if keep_positions else 0, device=device, dtype=dtype),
                   x=torch.zeros(batch, width, dtype=torch.long, device=device),
                   world=torch.zeros(batch, width, dtype=torch.long, device=device),
                   slot=torch.full((batch, width), -1, dtype=torch.long, device=device),
                   valid=torch.zeros(batch, width, dtype=torch.bool, device=device))

    @property
    def size(self) -> int:
        """Width of the padded layout (>= the number of valid memories of any slot)."""
        return self.z.shape[1]

    def detach(self) -> "MemoryStore":
        return MemoryStore(**{f.name: getattr(self, f.name).detach() for f in fields(self)})

    def to(self, device) -> "MemoryStore":
        return MemoryStore(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "MemoryStore":
        return cls(**{f.name: tensors[f.name] for f in fields(cls)})

    def select(self, keep: torch.Tensor, capacity: int | None = None) -> "MemoryStore":
        """Pack the entries where keep (B, M) is True to the left (order kept), drop the rest.

        capacity: keep at most the newest `capacity` memories per slot (oldest dropped first).
        """
        if capacity is not None:
            newer = keep.flip(1).long().cumsum(1).flip(1)              # rank from the newest kept entry
            keep = keep & (newer <= capacity)
        B, M = keep.shape
        width = int(keep.sum(1).max()) if keep.numel() else 0
        order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :width]  # kept first, in order
        rows = (order + M * torch.arange(B, device=order.device).unsqueeze(1)).reshape(-1)   # flat row indices
        # index_select copies whole rows of E floats: far faster than gather with an expanded (B, M, E) index
        take = lambda t: t.reshape(B * M, *t.shape[2:]).index_select(0, rows).reshape(B, width, *t.shape[2:])
        packed = MemoryStore(**{f.name: take(getattr(self, f.name)) for f in fields(self)})
        packed.valid = packed.valid & keep.gather(1, order)
        packed.slot = packed.slot.masked_fill(~packed.valid, -1)
        return packed

    def append(self, chunk: "MemoryStore", current_world: torch.Tensor, capacity: int | None = None) -> "MemoryStore":
        """This store followed by a chunk's memories, keeping only what each slot can still read.

        Memories of a world a slot has left can never be read again, and neither can padding. The chunk is packed
        on its own (cheap: T entries) and the store's dead entries are only marked invalid; a full re-pack (a
        gather over all M memories) happens when the padding exceeds a chunk's length and an eighth of the
        width, or a slot exceeds `capacity`. Padding is not free: every query still scores it, so a padded
        column costs as much as a memory in attention, while a re-pack costs about what 100 columns do.
        """
        readable = lambda m: m.valid & (m.world == current_world.unsqueeze(1))
        chunk = chunk.select(readable(chunk))
        store_valid = readable(self)
        merged = MemoryStore(**{f.name: torch.cat([getattr(self, f.name), getattr(chunk, f.name)], 1)
                                for f in fields(self)})
        merged.valid = torch.cat([store_valid, chunk.valid], 1)
        counts = merged.valid.sum(1)
        needed = int(counts.max()) if counts.numel() else 0
        over_capacity = capacity is not None and needed > capacity
        if over_capacity or merged.size - needed > max(chunk.valid.shape[1], needed // 8):
            return merged.select(merged.valid, capacity)
        return merged


    def append_fixed(self, chunk: "MemoryStore", current_world: torch.Tensor) -> "MemoryStore":
        """`append` with the width fixed at this store's: each slot keeps its newest `self.size` readable
        memories (oldest dropped first, as `append` with capacity = width), right-aligned, padding on the left.

        No shape depends on the data and nothing is read back to the host, so a training step that uses it can be
        captured as a CUDA graph (TEMtConfig.capturable). The same memories in the same order as `append`, laid
        out differently: every consumer reads them through `valid`, so the model's outputs are equal (up to the
        summation order of softmax sums over the padding's zeros)."""
        C = self.size
        merged = {f.name: torch.cat([getattr(self, f.name), getattr(chunk, f.name)], 1) for f in fields(self)}
        valid = merged["valid"] & (merged["world"] == current_world.unsqueeze(1))               # (B, C + T)
        newer = valid.flip(1).long().cumsum(1).flip(1)                  # rank from the newest readable memory
        keep = valid & (newer <= C)
        # kept entries last, in their order; the last C columns then hold every kept one (at most C)
        order = torch.argsort(keep.to(torch.int8), dim=1, stable=True)[:, -C:] if C else keep[:, :0].long()
        B, K = keep.shape
        rows = (order + K * torch.arange(B, device=order.device).unsqueeze(1)).reshape(-1)
        take = lambda t: t.reshape(B * K, *t.shape[2:]).index_select(0, rows).reshape(B, C, *t.shape[2:])
        packed = MemoryStore(**{name: take(t) for name, t in merged.items()})
        packed.valid = keep.gather(1, order)
        packed.slot = packed.slot.masked_fill(~packed.valid, -1)
        return packed


def slot_ids(stored: torch.Tensor, new_world: torch.Tensor, count0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Memory-neuron ids for a chunk: the running count of stored memories in each world.

    stored:    (B, T) bool, step t adds a memory
    new_world: (B, T) bool, step t starts a new world (its count restarts at 0)
    count0:    (B,) memories already stored in the current world before the chunk
    returns    slot (B, T) int64 (-1 where nothing is stored), count after the chunk (B,)
    """
    s = stored.long()
    c = s.cumsum(1)                                          # stored up to and including t
    before = c - s                                           # stored strictly before t (in this chunk)
    # at a world start, remember `before`; later steps subtract the latest such value
    base = torch.where(new_world, before, torch.full_like(before, -1)).cummax(1).values
    started = base >= 0
    slot = torch.where(started, before - base, count0.unsqueeze(1) + before)
    slot = slot.masked_fill(~stored, -1)
    count = torch.where(started[:, -1], c[:, -1] - base[:, -1], count0 + c[:, -1]) if stored.shape[1] else count0
    return slot, count


@torch.no_grad()
def find_duplicates(z: torch.Tensor, x: torch.Tensor, world: torch.Tensor, mem: MemoryStore | None,
                    threshold: float, fixed_rounds: bool = False) -> torch.Tensor:
    """Which steps of a chunk repeat a conjunction that is already stored.

    z: (B, T, E) z-scored positions of the chunk, x: (B, T) stimuli, world: (B, T) world id of each step.
    mem: the store before the chunk.
    returns dup (B, T) bool. Sequential semantics, resolved by fixed-point iteration: step t is a duplicate iff
    a stored memory, or an earlier non-duplicate step of the chunk, has the same stimulus and world and
    cosine similarity above threshold.
    fixed_rounds: run T + 1 rounds without testing for convergence (no host read: TEMtConfig.capturable); the
    fixed point is reached within T rounds, so the result is the same.
    """
    B, T, _ = z.shape
    zn = F.normalize(z, dim=-1)
    dup_store = torch.zeros(B, T, dtype=torch.bool, device=z.device)
    if mem is not None and mem.size:
        zm = F.normalize(mem.z, dim=-1)
        match = ((zn @ zm.transpose(1, 2)) > threshold) & (x.unsqueeze(2) == mem.x.unsqueeze(1))
        match &= mem.valid.unsqueeze(1) & (world.unsqueeze(2) == mem.world.unsqueeze(1))
        dup_store = match.any(-1)
    earlier = torch.ones(T, T, dtype=torch.bool, device=z.device).tril(-1)
    match = ((zn @ zn.transpose(1, 2)) > threshold) & (x.unsqueeze(2) == x.unsqueeze(1))
    match &= earlier & (world.unsqueeze(2) == world.unsqueeze(1))           # (B, T, T): t repeats tau < t
    dup = dup_store.clone()
    if fixed_rounds:
        for _ in range(T + 1):
            dup = dup_store | (match & ~dup.unsqueeze(1)).any(-1)
        return dup
    for _ in range(T + 1):        # converges in (length of the longest duplicate chain) rounds, usually 1-3
        new = dup_store | (match & ~dup.unsqueeze(1)).any(-1)
        if torch.equal(new, dup):
            return dup
        dup = new
    raise RuntimeError("duplicate resolution did not converge")  # impossible: each round fixes one more step
