"""Train TEM-t on a world of your own: any graph whose edges are labelled with actions.

    python examples/graph_world.py OUT_DIR

A ring of 12 rooms with 'cw' / 'ccw' moves (and a stay action), built with networkx, walked by the usual random
policy; a few dozen training steps, so the accuracy is near chance: this shows the plumbing, not learning.
"""
import sys

import networkx as nx
import numpy as np

from spatial.config import SpatialConfig
from spatial.train import Trainer
from spatial.worlds import graph_world
from temt_core.config import load_config

out = sys.argv[1]
ring = nx.DiGraph()
for i in range(12):
    ring.add_edge(i, (i + 1) % 12, action="cw")
    ring.add_edge((i + 1) % 12, i, action="ccw")
coords = {i: (np.cos(2 * np.pi * i / 12), np.sin(2 * np.pi * i / 12)) for i in range(12)}   # for rate maps
world = graph_world(ring, coords=coords, stay=True, name="ring12")          # actions: stay, ccw, cw

cfg = load_config(SpatialConfig, None, [
    "walks.kind=graph", f"model.n_actions={world.n_actions}", "model.pos_dim=32", "walks.walk_length=[60, 100]",
    "train.steps=40", "train.batch_size=8", "train.chunk_length=25", "eval.every=40", "eval.steps=100",
    "eval.n_worlds=4"])
final = Trainer(cfg, f"{out}/ring", progress=False, worlds=[world]).run()   # every slot walks a fresh ring
print(f"revisit accuracy {final['acc_revisit']:.3f} (chance {final['chance']:.3f}); run directory {out}/ring")
