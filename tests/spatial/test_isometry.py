"""The positive control's conformal-isometry loss: known answers, and a tiny run that lowers it."""
import json

import numpy as np
import pytest
import torch

from spatial.config import SpatialConfig
from spatial.isometry import isometry_loss, node_coordinates
from spatial.train import Trainer
from spatial.worlds import make_world
from temt_core.config import load_config


def test_an_isometric_code_scores_zero_and_a_scaled_one_the_known_value():
    xy = torch.tensor([[[0., 0.], [1., 0.], [1., 1.], [1., 1.], [0., 1.]]])      # a stay at step 3
    world = torch.zeros(1, 5, dtype=torch.long)
    rot = torch.tensor([[0.6, -0.8, 0.0], [0.8, 0.6, 0.0]])                       # an isometry into 3-D
    e = 2.0 * xy @ rot
    assert isometry_loss(e, xy, world, lags=(1, 2), scale=2.0) == pytest.approx(0.0, abs=1e-12)
    # scale 1 against a code that moves 2 per unit: every displaced pair is off by exactly its distance
    pairs = [1, 1, 1, 2 ** 0.5, 1, 1]             # lag 1: (0,1) (1,2) (3,4); lag 2: (0,2) (1,3) (2,4) [stays out]
    assert isometry_loss(e, xy, world, lags=(1, 2), scale=1.0) == pytest.approx(np.mean(np.square(pairs)))


def test_pairs_across_a_new_world_are_left_out():
    xy = torch.tensor([[[0., 0.], [1., 0.], [5., 5.], [6., 5.]]])
    e = xy.clone()
    e[0, 2:] += 100.0                              # a jump exactly where the world changes
    world = torch.tensor([[0, 0, 1, 1]])
    assert isometry_loss(e, xy, world, lags=(1,)) == pytest.approx(0.0, abs=1e-12)
    assert isometry_loss(e, xy, torch.zeros_like(world), lags=(1,)) > 1.0


def test_node_coordinates_gathers_each_slots_world():
    worlds = [make_world("square", 3), make_world("hex", 1)]
    nodes = np.array([[0, 4], [6, 0]])
    index = np.array([[0, 0], [1, 1]])
    xy = node_coordinates(worlds, index, nodes)
    assert np.allclose(xy[0], worlds[0].coords[[0, 4]]) and np.allclose(xy[1], worlds[1].coords[[6, 0]])


def test_training_with_the_control_lowers_it(tmp_path):
    cfg = load_config(SpatialConfig, None, ["model.pos_dim=16", "walks.sizes=[4, 5]", "walks.walk_length=[40, 80]",
                                            "train.chunk_length=20", "train.batch_size=4", "eval.steps=40",
                                            "eval.n_worlds=4", "train.steps=60", "train.log_every=20",
                                            "eval.every=60", "train.w_isometry=1.0", "train.lr_max=0.005"])
    Trainer(cfg, tmp_path / "run", progress=False).run()
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    iso = [r["isometry"] for r in rows if r["split"] == "train"]
    assert len(iso) == 3 and iso[-1] < 0.5 * iso[0]
    with pytest.raises(ValueError, match="w_isometry must be >= 0"):
        load_config(SpatialConfig, None, ["train.w_isometry=-1"])
