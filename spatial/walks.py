"""Batched random walks: one independent world per batch slot, streamed in truncated-backprop chunks.

    stream = WalkStream(WalkConfig(), batch_size=16, seed=0)
    chunk = stream.next_chunk(75)      # dict of (B, T) numpy arrays, see `WalkStream.next_chunk`

Each slot walks its own world; when a slot's walk ends, that slot alone gets a new world (a new size drawn from
`sizes`, fresh observations, a random start node) and its first step carries the RESET action, so swaps are
out of sync across slots (TEM). Everything is vectorised over the batch; the only Python loop is over time
(and over the rare slots that start a new world).

Policies (spec section 3):
    uniform   uniform over the available actions (stay included when the world has it)
    repeat    TEM's PyTorch port: the previous move is `repeat_bias` times as likely as each other move
    heading   a heading (a move direction) that the agent keeps; with probability `heading_change` per step, or
              when the heading runs into a wall, it picks a new heading uniformly among the available moves
              (TEM's TensorFlow code keeps a slowly drifting direction; this is our discrete version)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from temt_core.config import ConfigError
from temt_core.positions import RESET

from .worlds import World, make_world, sample_observations, world_size_problem

POLICIES = ("uniform", "repeat", "heading")


@dataclass
class WalkConfig:
    kind: str = "square"                         # 'square' (sizes = widths), 'hex' (sizes = radii) or 'graph'
                                                 # (worlds given in code: Trainer(..., worlds=[graph_world(G)]))
    sizes: tuple[int, ...] = (10, 10, 11, 11, 8, 9, 10, 11, 8, 9, 10, 11, 8, 8, 9, 9)  # TEM's widths
    n_stimuli: int = 45
    policy: str = "repeat"
    repeat_bias: float = 2.0                     # TEM's port doubles the chance of repeating the last move
    heading_change: float = 0.25                 # per-step probability of a new heading ('heading' policy)
    walk_length: tuple[int, int] = (500, 1600)   # steps per world, drawn uniformly (TEM's late-training range)
    curriculum_chunks: int = 0                   # >0: a walk-length curriculum over this many chunks (= training
                                                 #   steps): each new world's range moves linearly from
    curriculum_start: tuple[int, int] = (50, 200)  #   this range to walk_length, then stays there. 0: off (TEM)
    shuffle_actions: bool = False                # negative control: the model sees each chunk's moves in a random
                                                 #   order (RESETs kept in place), so its positions cannot follow
                                                 #   the walk; nodes, stimuli and accuracy records stay the true ones

    def __post_init__(self):
        problems = []
        if self.kind not in ("square", "hex", "graph"):
            problems.append(f"kind must be 'square', 'hex' or 'graph' (got {self.kind!r})")
        if self.policy not in POLICIES:
            problems.append(f"policy must be one of {POLICIES} (got {self.policy!r})")
        if not self.sizes:
            problems.append("sizes must list at least one world size")
        elif self.kind in ("square", "hex"):
            problems += [f"walks.sizes[{i}] = {s}: {problem}" for i, s in enumerate(self.sizes)
                         if (problem := world_size_problem(self.kind, s))]
        if self.n_stimuli < 1:
            problems.append(f"n_stimuli must be >= 1 (got {self.n_stimuli})")
        lo, hi = self.walk_length
        if not 1 <= lo <= hi:
            problems.append(f"walk_length must be (min, max) with 1 <= min <= max (got {self.walk_length})")
        lo, hi = self.curriculum_start
        if not 1 <= lo <= hi:
            problems.append(f"curriculum_start must be (min, max) with 1 <= min <= max (got {self.curriculum_start})")
        if self.curriculum_chunks < 0:
            problems.append(f"curriculum_chunks must be >= 0 (got {self.curriculum_chunks})")
        if self.repeat_bias <= 0 or not 0 <= self.heading_change <= 1:
            problems.append("repeat_bias must be > 0 and heading_change in [0, 1]")
        if problems:
            raise ValueError("invalid WalkConfig: " + "; ".join(problems))


class WalkStream:
    """Endless batched walks. State (worlds, positions, visit records, RNG) can be saved and restored exactly."""

    def __init__(self, config: WalkConfig, batch_size: int, seed: int = 0, worlds: list[World] | None = None,
                 fixed: bool = False):
        """worlds: optional list to draw from (e.g. user graphs); default: config.kind x config.sizes.
        fixed: slot b always walks worlds[b % len(worlds)] (fresh observations each time) instead of a random one:
               for analysis, where the world of each slot must be known."""
        self.config, self.batch_size, self.fixed = config, batch_size, fixed
        self.rng = np.random.default_rng(seed)
        if worlds is None and config.kind == "graph":
            raise ConfigError("walks.kind='graph' needs the worlds themselves, which a config file or the command "
                              "line cannot give: from Python, pass worlds=[graph_world(...), ...] to "
                              "spatial.train.Trainer (or WalkStream); otherwise use walks.kind=square or hex")
        self.world_pool = worlds if worlds is not None else [make_world(config.kind, s) for s in config.sizes]
        n_actions = {w.n_actions for w in self.world_pool}
        if len(n_actions) != 1:
            raise ValueError(f"all worlds of a stream must have the same actions, got action counts {n_actions}")
        self.n_actions = n_actions.pop()
        self.max_nodes = max(w.n_nodes for w in self.world_pool)
        B, N, A = batch_size, self.max_nodes, self.n_actions
        # per-slot world tables, padded to the largest world
        self.transitions = np.full((B, N, A), -1, dtype=np.int64)
        self.n_avail = np.ones((B, N), dtype=np.int64)
        self.avail_list = np.zeros((B, N, A), dtype=np.int64)      # available actions, left-packed
        self.repeat_cum = np.ones((B, N, A + 1, A))                 # 'repeat' policy lookup (see _tables)
        self.obs = np.zeros((B, N), dtype=np.int64)
        self.world_index = np.zeros(B, dtype=np.int64)            # which pool world each slot walks
        self.world_count = np.full(B, -1, dtype=np.int64)         # how many worlds each slot has had
        self.node = np.zeros(B, dtype=np.int64)
        self.steps_left = np.zeros(B, dtype=np.int64)             # 0: the next step starts a new world
        self.prev_action = np.full(B, -1, dtype=np.int64)
        self.heading = np.full(B, -1, dtype=np.int64)
        self.visited = np.zeros((B, N), dtype=bool)
        self.chunks_done = np.zeros(1, dtype=np.int64)             # chunks drawn so far (the curriculum's clock)
        self.edge_taken = np.zeros((B, N, A), dtype=bool)
        self.stay = self.world_pool[0].stay_action
        self._pool_tables = [self._tables(w) for w in self.world_pool]

    def _tables(self, world: World):
        avail = world.available
        n_avail = avail.sum(1)
        order = np.argsort(~avail, axis=1, kind="stable")         # available actions first, in action order
        # 'repeat' policy: cumulative action weights for every (node, previous action), previous = -1 at row 0,
        # so that choosing is one lookup and one comparison per step
        N, A = avail.shape
        weights = np.repeat(avail[:, None, :].astype(float), A + 1, axis=1)             # (N, A + 1, A)
        prev = np.arange(A)
        weights[:, prev + 1, prev] *= np.where(avail, self.config.repeat_bias, 1.0)
        return world.transitions, n_avail, order, weights.cumsum(2)

    def walk_lengths(self) -> tuple[int, int]:
        """The (min, max) walk length a world started now gets: walk_length, or its place on the curriculum."""
        c = self.config
        if not c.curriculum_chunks:
            return tuple(c.walk_length)
        frac = min(1.0, int(self.chunks_done[0]) / c.curriculum_chunks)
        return tuple(int(round(a + frac * (b - a))) for a, b in zip(c.curriculum_start, c.walk_length))

    def _new_world(self, slot: int) -> None:
        c = self.config
        k = slot % len(self.world_pool) if self.fixed else int(self.rng.integers(len(self.world_pool)))
        world = self.world_pool[k]
        T, n_avail, order, repeat_cum = self._pool_tables[k]
        n = world.n_nodes
        self.transitions[slot] = -1
        self.transitions[slot, :n] = T
        self.n_avail[slot] = 1
        self.n_avail[slot, :n] = n_avail
        self.avail_list[slot, :n] = order
        self.repeat_cum[slot] = 1.0
        self.repeat_cum[slot, :n] = repeat_cum
        self.obs[slot] = 0
        self.obs[slot, :n] = sample_observations(n, c.n_stimuli, self.rng)
        self.world_index[slot] = k
        self.world_count[slot] += 1
        self.node[slot] = self.rng.integers(n)
        lo, hi = self.walk_lengths()
        self.steps_left[slot] = self.rng.integers(lo, hi + 1)
        self.prev_action[slot] = -1
        self.heading[slot] = -1
        self.visited[slot] = False
        self.edge_taken[slot] = False

    def _choose(self, rows: np.ndarray, u: np.ndarray, u2: np.ndarray) -> np.ndarray:
        """One action per slot in `rows` from the policy; u, u2 uniform draws (len(rows),)."""
        node = self.node[rows]
        policy = self.config.policy
        if policy == "uniform":                                    # the k-th available action, k uniform
            return self.avail_list[rows, node, (u * self.n_avail[rows, node]).astype(np.int64)]
        if policy == "repeat":
            cum = self.repeat_cum[rows, node, self.prev_action[rows] + 1]          # (R, A)
            return (cum <= (u * cum[:, -1])[:, None]).sum(1)
        # heading: keep the heading unless it is blocked, absent, or a change is drawn
        moves = self.transitions[rows, node] >= 0                  # (R, A)
        if self.stay is not None:
            moves[:, self.stay] = False
        heading = self.heading[rows]
        keep = (heading >= 0) & (u2 >= self.config.heading_change)
        keep &= moves[np.arange(len(rows)), heading.clip(0)]
        cum = moves.cumsum(1)
        new = (cum <= (u * cum[:, -1])[:, None]).sum(1)
        new = np.minimum(new, moves.shape[1] - 1)
        chosen = np.where(keep, heading, new)
        self.heading[rows] = chosen
        return chosen

    def next_chunk(self, length: int) -> dict[str, np.ndarray]:
        """The next `length` steps of every slot, as (B, T) arrays:

        x          stimulus observed at each step
        actions    action that arrived at the step (RESET on a world's first step)
        nodes      node index in the slot's world
        revisit    the node had been visited before in this world (the loss mask)
        new_edge   the step used a (node, action) edge for the first time in this world (stay excluded)
        edge_seen  the (node, action) edge had been taken before in this world (what an edge agent can know)
        world      running world number of the slot (increments at each RESET)
        world_index  which of the pool's worlds the slot is in (its size/shape)
        n_visited  nodes of the world visited so far, including this step
        """
        n_visited0 = self.visited.sum(1)
        s = self._walk(length)
        # after the walk, vectorised: new-edge flags, visited-node counts
        new_edge = ~s["edge_seen"] & (s["actions"] != RESET)
        if self.stay is not None:
            new_edge &= s["actions"] != self.stay
        n_visited = _visited_counts(s["revisit"], s["starts"], n_visited0)
        self.chunks_done += 1
        actions = self._shuffled(s["actions"]) if self.config.shuffle_actions else s["actions"]
        T = lambda a: np.ascontiguousarray(a.T)
        return {"x": T(s["x"]), "actions": T(actions), "nodes": T(s["nodes"]), "revisit": T(s["revisit"]),
                "new_edge": T(new_edge), "edge_seen": T(s["edge_seen"]), "world": T(s["world"]),
                "world_index": T(s["world_index"]), "n_visited": T(n_visited)}

    def _walk(self, length: int) -> dict[str, np.ndarray]:
        """Every slot walks `length` steps, starting new worlds where walks end: time-major (T, B) buffers
        (contiguous row writes) of what is sequential; `starts` marks each world's first step."""
        B = self.batch_size
        s = {k: np.empty((length, B), dtype=np.int64) for k in ("actions", "nodes", "x", "world", "world_index")}
        s.update(revisit=np.empty((length, B), dtype=bool), edge_seen=np.zeros((length, B), dtype=bool),
                 starts=np.zeros((length, B), dtype=bool))
        u_all = self.rng.random((length, B))
        u2_all = self.rng.random((length, B))
        rows_all = np.arange(B)
        t = 0
        while t < length:
            # steps until the next world swap of any slot: the loop in between needs no per-step bookkeeping
            starting = self.steps_left <= 0
            if starting.any():
                for slot in np.flatnonzero(starting):
                    self._new_world(int(slot))
                s["starts"][t] = starting
            moving = rows_all[~starting]
            span = min(length - t, int(self.steps_left.min()))            # >= 1: every slot has steps left
            s["world"][t:t + span] = self.world_count
            s["world_index"][t:t + span] = self.world_index
            for k in range(t, t + span):
                self._step(s, k, moving if k == t else rows_all, rows_all, u_all[k], u2_all[k])
            self.steps_left -= span
            t += span
        return s

    def _step(self, s: dict, k: int, rows: np.ndarray, rows_all: np.ndarray, u: np.ndarray, u2: np.ndarray) -> None:
        """Step k: the slots in `rows` move (the others arrive in a new world: RESET); every slot records where it
        is, whether it has been there before, and what it sees."""
        s["actions"][k] = RESET
        if rows.size:
            a = self._choose(rows, u[rows], u2[rows])
            prev_node = self.node[rows]
            s["edge_seen"][k, rows] = self.edge_taken[rows, prev_node, a]
            self.edge_taken[rows, prev_node, a] = True
            self.node[rows] = self.transitions[rows, prev_node, a]
            self.prev_action[rows] = a
            s["actions"][k, rows] = a
        node = self.node
        s["nodes"][k] = node
        s["revisit"][k] = self.visited[rows_all, node]
        self.visited[rows_all, node] = True
        s["x"][k] = self.obs[rows_all, node]

    def _shuffled(self, actions: np.ndarray) -> np.ndarray:
        """(T, B) actions with each slot's moves permuted in time; RESET steps stay where they are."""
        out = actions.copy()
        for b in range(actions.shape[1]):
            moves = np.flatnonzero(actions[:, b] != RESET)
            out[moves, b] = actions[self.rng.permutation(moves), b]
        return out

    # -- exact resume ------------------------------------------------------------------------------------------
    _STATE = ("transitions", "n_avail", "avail_list", "repeat_cum", "obs", "world_index", "world_count", "node", "steps_left",
              "prev_action", "heading", "visited", "edge_taken", "chunks_done")

    def state_dict(self) -> dict:
        return {"arrays": {k: getattr(self, k).copy() for k in self._STATE},
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        arrays = dict(state["arrays"])
        if "chunks_done" not in arrays:         # saved before the curriculum existed: only the count is missing
            if self.config.curriculum_chunks:
                raise ValueError("this walk state was saved without a chunk count; it cannot resume a curriculum")
            arrays["chunks_done"] = np.zeros(1, dtype=np.int64)
        for k in self._STATE:
            arr = np.asarray(arrays[k])
            if arr.shape != getattr(self, k).shape:
                raise ValueError(f"walk state {k!r} has shape {arr.shape}, this stream expects "
                                 f"{getattr(self, k).shape} (another batch size or world set?)")
            setattr(self, k, arr.astype(getattr(self, k).dtype).copy())
        self.rng.bit_generator.state = state["rng"]

    def world_of(self, slot: int) -> World:
        return self.world_pool[int(self.world_index[slot])]


def _visited_counts(revisit: np.ndarray, starts: np.ndarray, n_visited0: np.ndarray) -> np.ndarray:
    """(T, B) nodes of the current world visited so far, this step included, from the revisit flags; `starts` marks
    each world's first step, n_visited0 (B,) the count before the chunk (for a world carried over from before)."""
    first = (~revisit).astype(np.int64)
    seg = np.cumsum(starts, 0)                                       # world segment within the chunk
    counts = np.cumsum(first, 0)
    base = np.where(starts, counts - first, 0)                       # count just before each world start
    base = np.maximum.accumulate(np.where(starts, base, -1), 0)
    return np.where(seg > 0, counts - base, n_visited0[None, :] + counts)
