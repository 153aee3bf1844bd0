"""Worlds and batched walks: structure, policies, out-of-sync swaps, visit records, exact resume."""
import networkx as nx
import numpy as np
import pytest

from spatial.walks import WalkConfig, WalkStream
from spatial.worlds import graph_world, hex_world, square_world
from temt_core.positions import RESET


def test_square_world_moves_and_walls():
    w = square_world(4, 3)
    assert w.n_nodes == 12 and w.n_actions == 5 and w.shape == (3, 4)
    T = w.transitions
    assert T[0, 0] == 0                       # stay
    assert T[0, 1] == -1 and T[0, 4] == -1    # north and west of the top-left corner are walls, not bumps
    assert T[0, 2] == 1 and T[0, 3] == 4      # east, south
    assert T[5, 1] == 1 and T[5, 4] == 4
    assert w.adjacency().sum() == 2 * (3 * 3 + 4 * 2)   # undirected grid edges, counted both ways


def test_hex_world_sizes_and_geometry():
    for r, n in ((4, 61), (5, 91), (6, 127)):
        assert hex_world(r).n_nodes == n
    w = hex_world(2)
    centre = int(np.flatnonzero((w.coords ** 2).sum(1) < 1e-9)[0])
    nbrs = w.transitions[centre, 1:]
    assert (nbrs >= 0).all()
    d = np.linalg.norm(w.coords[nbrs] - w.coords[centre], axis=1)
    np.testing.assert_allclose(d, 1.0)        # six neighbours at unit distance
    angles = np.degrees(np.arctan2(*(w.coords[nbrs] - w.coords[centre])[:, ::-1].T)) % 360
    np.testing.assert_allclose(np.sort(angles), [0, 60, 120, 180, 240, 300], atol=1e-9)


def test_graph_world_from_networkx_and_errors():
    g = nx.DiGraph()
    g.add_edge("a", "b", action="go")
    g.add_edge("b", "c", action="go")
    g.add_edge("c", "a", action="go")
    w = graph_world(g, coords={"a": (0, 0), "b": (1, 0), "c": (0, 1)}, stay=True)
    assert w.n_nodes == 3 and w.action_names == ("stay", "go")
    u = nx.Graph()
    u.add_edge(0, 1, action="right", reverse_action="left")
    assert graph_world(u).transitions.tolist() == [[-1, 1], [0, -1]]
    with pytest.raises(ValueError, match="disconnected"):
        graph_world([(0, 1, "x"), (1, 0, "y"), (2, 3, "x"), (3, 2, "y")])
    with pytest.raises(ValueError, match="two edges labelled 'x'"):
        graph_world([(0, 1, "x"), (0, 2, "x"), (1, 0, "y"), (2, 0, "y")])
    with pytest.raises(ValueError, match="has no 'action' attribute"):
        h = nx.DiGraph()
        h.add_edge(0, 1)
        graph_world(h)
    with pytest.raises(ValueError, match="no node coordinates"):
        graph_world([(0, 1, "x"), (1, 0, "y")]).require_coords("a rate map")


@pytest.mark.parametrize("policy", ["uniform", "repeat", "heading"])
def test_walks_follow_the_world_and_record_visits(policy):
    cfg = WalkConfig(sizes=(4, 5), walk_length=(30, 60), policy=policy)
    s = WalkStream(cfg, batch_size=6, seed=1)
    c = s.next_chunk(200)
    for b in range(6):
        world_starts = np.flatnonzero(c["actions"][b] == RESET)
        assert world_starts[0] == 0 and len(world_starts) >= 3          # several worlds per slot
        for lo, hi in zip(world_starts, list(world_starts[1:]) + [200]):
            w = s.world_pool[int(c["world_index"][b, lo])]
            nodes = c["nodes"][b, lo:hi]
            acts = c["actions"][b, lo + 1:hi]
            assert np.all(w.transitions[nodes[:-1], acts] == nodes[1:])  # every move is a legal edge
            seen, edges = set(), set()
            for t in range(lo, hi):
                n = int(c["nodes"][b, t])
                assert c["revisit"][b, t] == (n in seen)
                seen.add(n)
                assert c["n_visited"][b, t] == len(seen)
                if t > lo:
                    e = (int(c["nodes"][b, t - 1]), int(c["actions"][b, t]))
                    assert c["edge_seen"][b, t] == (e in edges)
                    edges.add(e)
    starts = [tuple(np.flatnonzero(c["actions"][b] == RESET)) for b in range(6)]
    assert len(set(starts)) > 1                                        # swaps are out of sync across slots


def test_repeat_policy_doubles_the_repeat_probability():
    s = WalkStream(WalkConfig(sizes=(30,), walk_length=(10**6, 10**6), policy="repeat", repeat_bias=2.0),
                   batch_size=64, seed=0)
    c = s.next_chunk(400)
    a = c["actions"][:, 1:]
    prev, cur = a[:, :-1], a[:, 1:]
    interior = (c["nodes"][:, 1:-1] % 30 > 0) & (c["nodes"][:, 1:-1] % 30 < 29) & \
        (c["nodes"][:, 1:-1] >= 30) & (c["nodes"][:, 1:-1] < 870) & (prev >= 0)
    repeat = (cur == prev)[interior].mean()
    assert abs(repeat - 2 / 6) < 0.02                                   # 5 options, one weighted 2: 2/6


def test_stream_state_round_trip_gives_identical_walks():
    cfg = WalkConfig(sizes=(5, 6), walk_length=(20, 40), policy="heading")
    a = WalkStream(cfg, 4, seed=3)
    a.next_chunk(50)
    saved = a.state_dict()
    expect = a.next_chunk(80)
    b = WalkStream(cfg, 4, seed=99)
    b.load_state_dict(saved)
    got = b.next_chunk(80)
    for k in expect:
        np.testing.assert_array_equal(expect[k], got[k])


def test_bad_walk_config():
    with pytest.raises(ValueError, match="policy must be one of"):
        WalkConfig(policy="levy")
    with pytest.raises(ValueError, match="walk_length"):
        WalkConfig(walk_length=(10, 5))
