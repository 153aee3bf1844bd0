"""Graph worlds: nodes with 2-D coordinates, and labelled edges (actions) between them.

    square_world(11)        4-connected grid without wraparound, plus 'stay' (5 actions, TEM's task)
    hex_world(5)            hexagonal patch of a 6-connected lattice, plus 'stay' (91 nodes for radius 5)
    graph_world(G, ...)     any networkx graph (or edge list) whose edges carry an action label

A world is deterministic: from node n, action a leads to `transitions[n, a]`, or is unavailable (-1). Moves into
walls are unavailable, never "bump" moves that leave the agent in place (those breed border codes, spec L1).
Observations are not part of the world: `sample_observations` draws n_x one-hot stimuli per node, with
replacement, fresh for every new world (TEM).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

SQUARE_ACTIONS = ("stay", "north", "east", "south", "west")
HEX_ACTIONS = ("stay", "east", "northeast", "northwest", "west", "southwest", "southeast")


@dataclass(eq=False)
class World:
    kind: str                        # 'square' | 'hex' | 'graph'
    transitions: np.ndarray          # (N, A) int64: node reached by action a from node n, -1 if unavailable
    action_names: tuple[str, ...]
    coords: np.ndarray | None        # (N, 2) float node positions (None: the graph has no geometry)
    stay_action: int | None = None   # the action that keeps the agent in place, if the world has one
    shape: tuple[int, int] | None = None   # (rows, cols) for square worlds: node = row * cols + col
    name: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        T = self.transitions
        if T.ndim != 2 or T.shape[1] != len(self.action_names):
            raise ValueError(f"transitions must be (n_nodes, {len(self.action_names)}), got {T.shape}")
        if T.size and (T.min() < -1 or T.max() >= T.shape[0]):
            raise ValueError("transitions must hold node ids in [0, n_nodes) or -1")
        if self.coords is not None and self.coords.shape != (T.shape[0], 2):
            raise ValueError(f"coords must be (n_nodes, 2) = ({T.shape[0]}, 2), got {self.coords.shape}")
        _check_connected(T, self.name or self.kind)

    @property
    def n_nodes(self) -> int:
        return self.transitions.shape[0]

    @property
    def n_actions(self) -> int:
        return self.transitions.shape[1]

    @property
    def available(self) -> np.ndarray:
        """(N, A) bool."""
        return self.transitions >= 0

    def adjacency(self) -> np.ndarray:
        """(N, N) bool, symmetric: nodes joined by a move (stay excluded)."""
        A = np.zeros((self.n_nodes, self.n_nodes), dtype=bool)
        src, act = np.nonzero(self.available)
        dst = self.transitions[src, act]
        keep = src != dst
        A[src[keep], dst[keep]] = True
        return A | A.T

    def require_coords(self, purpose: str) -> np.ndarray:
        if self.coords is None:
            raise ValueError(f"world {self.name or self.kind!r} has no node coordinates, which {purpose} needs: "
                             "build it with graph_world(..., coords=...) or give nodes a 'pos' attribute")
        return self.coords


def _check_connected(transitions: np.ndarray, name: str) -> None:
    """Every node must be reachable from every other (walks would otherwise get stuck in one part)."""
    n = transitions.shape[0]
    if n == 0:
        raise ValueError(f"world {name!r} has no nodes")
    for start_set, label in ((transitions, "reach"), (None, "be reached from")):
        seen = np.zeros(n, dtype=bool)
        seen[0] = True
        frontier = np.array([0])
        if start_set is not None:
            while frontier.size:
                nxt = transitions[frontier].ravel()
                nxt = np.unique(nxt[nxt >= 0])
                frontier = nxt[~seen[nxt]]
                seen[frontier] = True
        else:   # reverse edges
            src, act = np.nonzero(transitions >= 0)
            dst = transitions[src, act]
            while frontier.size:
                nxt = np.unique(src[np.isin(dst, frontier)])
                frontier = nxt[~seen[nxt]]
                seen[frontier] = True
        if not seen.all():
            missing = int(np.flatnonzero(~seen)[0])
            raise ValueError(f"world {name!r} is disconnected: node 0 cannot {label} node {missing} "
                             f"({int((~seen).sum())} of {n} nodes unreachable)")


def square_world(width: int, height: int | None = None, stay: bool = True) -> World:
    """A width x height 4-connected grid, no wraparound. Actions: stay, north (row - 1), east, south, west."""
    height = width if height is None else height
    if width < 2 or height < 2:
        raise ValueError(f"a square world needs width and height >= 2, got {width} x {height}")
    rows, cols = np.divmod(np.arange(width * height), width)
    moves = {"stay": (0, 0), "north": (-1, 0), "east": (0, 1), "south": (1, 0), "west": (0, -1)}
    names = SQUARE_ACTIONS if stay else SQUARE_ACTIONS[1:]
    T = np.full((width * height, len(names)), -1, dtype=np.int64)
    for a, name in enumerate(names):
        dr, dc = moves[name]
        r, c = rows + dr, cols + dc
        ok = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        T[ok, a] = (r * width + c)[ok]
    coords = np.stack([cols, -rows], 1).astype(float)         # x right, y up: north is +y
    return World("square", T, names, coords, stay_action=0 if stay else None, shape=(height, width),
                 name=f"square{width}x{height}")


def hex_world(radius: int, stay: bool = True) -> World:
    """The hexagonal patch of a triangular lattice within `radius` steps of the centre: 3r(r+1)+1 nodes
    (61, 91, 127 for r = 4, 5, 6). Six moves 60 degrees apart, plus stay."""
    if radius < 1:
        raise ValueError(f"hex_world needs radius >= 1, got {radius}")
    axial = [(q, r) for q in range(-radius, radius + 1) for r in range(-radius, radius + 1) if abs(q + r) <= radius]
    index = {qr: i for i, qr in enumerate(axial)}
    steps = {"stay": (0, 0), "east": (1, 0), "northeast": (1, -1), "northwest": (0, -1),
             "west": (-1, 0), "southwest": (-1, 1), "southeast": (0, 1)}
    names = HEX_ACTIONS if stay else HEX_ACTIONS[1:]
    T = np.full((len(axial), len(names)), -1, dtype=np.int64)
    for i, (q, r) in enumerate(axial):
        for a, name in enumerate(names):
            dq, dr = steps[name]
            T[i, a] = index.get((q + dq, r + dr), -1)
    coords = np.array([(q + r / 2, -r * math.sqrt(3) / 2) for q, r in axial])   # unit spacing, y up
    return World("hex", T, names, coords, stay_action=0 if stay else None, name=f"hex{radius}",
                 meta={"axial": np.array(axial)})


def graph_world(graph, coords=None, action_attr: str = "action", stay: bool = False, name: str = "graph") -> World:
    """Any graph as a world.

    graph: a networkx Graph/DiGraph whose edges carry `action_attr` (an undirected edge u-v with action 'a'
           is a move u->v labelled 'a'; give a DiGraph to label the two directions differently), or a list of
           (u, v, action) triples (directed).
    coords: {node: (x, y)} or None to read each node's 'pos' attribute (if any): needed for rate maps.
    stay: add a 'stay' action that keeps the agent in place.
    """
    edges = _edge_triples(graph, action_attr)
    nodes = sorted({u for u, _, _ in edges} | {v for _, v, _ in edges} | set(_graph_nodes(graph)), key=str)
    if not nodes:
        raise ValueError("graph_world: the graph has no nodes")
    node_index = {n: i for i, n in enumerate(nodes)}
    labels = sorted({str(a) for _, _, a in edges})
    names = (("stay",) if stay else ()) + tuple(labels)
    T = np.full((len(nodes), len(names)), -1, dtype=np.int64)
    for u, v, a in edges:
        if u == v:
            raise ValueError(f"graph_world: edge ({u!r}, {v!r}) labelled {a!r} is a self-loop: a move must lead to "
                             "another node (use stay=True for an action that keeps the agent in place)")
        col = names.index(str(a))
        i = node_index[u]
        if T[i, col] >= 0 and T[i, col] != node_index[v]:
            raise ValueError(f"graph_world: node {u!r} has two edges labelled {a!r} (to "
                             f"{nodes[T[i, col]]!r} and {v!r}); each action must lead to one node")
        T[i, col] = node_index[v]
    if stay:
        T[:, 0] = np.arange(len(nodes))
    xy = _coords(graph, nodes, coords)
    return World("graph", T, names, xy, stay_action=0 if stay else None, name=name,
                 meta={"nodes": nodes})


def _graph_nodes(graph):
    return list(graph.nodes) if hasattr(graph, "nodes") else []


def _edge_triples(graph, action_attr):
    if hasattr(graph, "edges"):                      # networkx
        triples = []
        directed = graph.is_directed()
        for u, v, data in graph.edges(data=True):
            if action_attr not in data:
                raise ValueError(f"graph_world: edge ({u!r}, {v!r}) has no {action_attr!r} attribute; every edge "
                                 "needs an action label")
            triples.append((u, v, data[action_attr]))
            if not directed:
                back = data.get(f"reverse_{action_attr}")
                if back is None:
                    raise ValueError(f"graph_world: undirected edge ({u!r}, {v!r}) needs 'reverse_{action_attr}', "
                                     "the label of the move back (or pass a DiGraph)")
                triples.append((v, u, back))
        return triples
    try:
        return [(u, v, a) for u, v, a in graph]
    except (TypeError, ValueError):
        raise ValueError("graph_world: graph must be a networkx graph or a list of (u, v, action) triples") from None


def _coords(graph, nodes, coords):
    if coords is None and hasattr(graph, "nodes"):
        pos = {n: d.get("pos") for n, d in graph.nodes(data=True)}
        if all(p is not None for p in pos.values()) and pos:
            coords = pos
    if coords is None:
        return None
    missing = [n for n in nodes if n not in coords]
    if missing:
        raise ValueError(f"graph_world: coords has no position for node {missing[0]!r} "
                         f"({len(missing)} nodes missing)")
    try:
        xy = np.array([coords[n] for n in nodes], dtype=float)
    except (TypeError, ValueError):
        raise ValueError("graph_world: every node position must be a pair of numbers (x, y)") from None
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"graph_world: node positions must be (x, y) pairs, got shape {xy.shape[1:]} per node")
    bad = np.flatnonzero(~np.isfinite(xy).all(1))
    if bad.size:
        raise ValueError(f"graph_world: node {nodes[bad[0]]!r} has a non-finite position "
                         f"{tuple(xy[bad[0]].tolist())} ({bad.size} node(s) with NaN or infinite coords)")
    return xy


def sample_observations(n_nodes: int, n_stimuli: int, rng: np.random.Generator) -> np.ndarray:
    """One stimulus id per node, uniformly with replacement (TEM)."""
    return rng.integers(0, n_stimuli, size=n_nodes)


def world_size_problem(kind: str, size: int) -> str | None:
    """What is wrong with `size` for make_world(kind, size), or None if it is fine."""
    if kind == "square" and size < 2:
        return "a square world needs a width >= 2"
    if kind == "hex" and size < 1:
        return "a hexagonal world needs a radius >= 1"
    return None


def config_world(kind: str, size: int, key: str) -> World:
    """make_world for a size read from a config: a bad size or a graph run is a ConfigError naming `key`."""
    from temt_core.config import ConfigError
    if kind not in ("square", "hex"):
        raise ConfigError(f"{key}: worlds of walks.kind={kind!r} cannot be built from a size; only square and hex "
                          "runs can be analysed from the command line (graph worlds: call the Python API with "
                          "your worlds)")
    problem = world_size_problem(kind, size)
    if problem:
        raise ConfigError(f"{key} = {size}: {problem}")
    return make_world(kind, size)


def make_world(kind: str, size: int) -> World:
    """The world families the trainer samples from: 'square' (size = width) or 'hex' (size = radius)."""
    if kind == "square":
        return square_world(size)
    if kind == "hex":
        return hex_world(size)
    raise ValueError(f"world kind must be 'square' or 'hex', got {kind!r}")
