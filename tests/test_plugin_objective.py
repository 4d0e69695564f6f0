"""A fifth objective defined and registered here, with no edit to the package: it gets a config section, its own
sample field, schedule, towers' layer and λ, and it trains, checkpoints, resumes exactly and exports."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from fixtures import train_tree, write_toy_shards
from mtv.ablate import designs
from mtv.config import build_config
from mtv.errors import MTVError
from mtv.export import export
from mtv.heads import load_heads
from mtv.models.siglip import load_siglip
from mtv.objectives.base import Needs, Objective, register, unregister
from mtv.train import checkpoint, train
from mtv.train.logger import read_metrics

OFF = {"enabled": False}
CRASH = {"after_update": None}  # a stand-in for a killed process


class BrightnessConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    weight: float = Field(2.0, ge=0)


def sample_brightness(raw: dict, image, rng) -> dict:
    """The decoder's part: each image's mean grey level in [0, 1]."""
    return {"brightness": torch.tensor(np.asarray(image.convert("L"), np.float32).mean() / 255.0)}


@dataclass(frozen=True)
class Ramp:
    scale: float


class Brightness(Objective):
    """Predicts the image's brightness, scaled by a ramp, from the mean of encoder layer 0's tokens."""

    name, title, order, Config = "brightness", "Brightness", 5, BrightnessConfig
    exported = True
    needs = Needs(layers=(0,))

    def __init__(self, cfg: BrightnessConfig, dim: int):
        super().__init__()
        self.cfg = cfg
        self.head = nn.Linear(dim, 1)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @classmethod
    def build(cls, cfg, model):
        return cls(cfg, model.config.vision_config.hidden_size)

    @staticmethod
    def sample_fields(cfg):
        return sample_brightness

    def schedule(self, step, total_steps):
        return Ramp((step + 1) / total_steps)

    def scalars(self, schedule):
        return {"brightness_scale": schedule.scale}

    def weights(self):
        return {"loss_brightness": self.cfg.weight}

    def forward(self, towers, batch, schedule):
        pred = self.head(towers.layers[0].mean(1).float())[:, 0]
        return {"loss_brightness": ((pred - schedule.scale * batch.extra["brightness"]) ** 2).mean()}

    def after_step(self, model, schedule):
        self.updates += 1
        if int(self.updates) == CRASH["after_update"]:
            raise KeyboardInterrupt("simulated kill")


@pytest.fixture()
def brightness():
    register(Brightness)
    yield Brightness
    unregister(Brightness.name)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy")
    write_toy_shards(folder, n_shards=2, per_shard=16)
    return folder


def tree(run, data, **extra):
    return train_tree(run, data, **{"ssl": OFF, "grounding": OFF, "depth": OFF, "brightness": {"enabled": True},
                                    **extra})


def test_the_config_section_is_the_objectives_own(brightness, data, tmp_path):
    cfg = build_config(tree(tmp_path, data))
    assert cfg.brightness.enabled and cfg.brightness.weight == 2.0
    with pytest.raises(MTVError, match="unknown key brightness.wieght"):
        build_config(tree(tmp_path, data, brightness={"enabled": True, "wieght": 1}))
    with pytest.raises(MTVError, match="brightness.weight"):
        build_config(tree(tmp_path, data, brightness={"enabled": True, "weight": -1}))
    rungs = dict(designs()["ladder"])
    assert rungs["+Brightness"] == {"ssl": True, "grounding": True, "depth": True, "brightness": True}


def test_a_registered_objective_trains_checkpoints_resumes_exactly_and_exports(brightness, data, tmp_path,
                                                                              monkeypatch):
    whole = tmp_path / "whole"
    train(build_config(tree(whole, data)), progress=False)
    records = read_metrics(whole)
    assert all(r["loss"] == pytest.approx(r["loss_vl"] + r["loss_brightness"]) for r in records)
    assert [r["brightness_scale"] for r in records] == pytest.approx([(s + 1) / 6 for s in range(6)])
    state = checkpoint.load(whole)
    assert int(state["objectives"]["brightness"]["updates"]) == 6

    killed = tmp_path / "killed"
    monkeypatch.setitem(CRASH, "after_update", 5)
    with pytest.raises(KeyboardInterrupt):
        train(build_config(tree(killed, data)), progress=False)
    assert checkpoint.latest(killed).name == "step_00000003.pt"
    monkeypatch.setitem(CRASH, "after_update", None)
    train(build_config(tree(killed, data)), resume=True, progress=False)
    resumed = read_metrics(killed)
    assert [r["step"] for r in resumed] == list(range(1, 7))
    for key in ("loss", "loss_vl", "loss_brightness", "brightness_scale"):
        assert [r[key] for r in resumed] == [r[key] for r in records], key

    out = export(whole, tmp_path / "export")
    heads = load_heads(out, load_siglip(out))
    assert set(heads) == {"brightness"}
    for k, v in heads["brightness"].state_dict().items():
        assert torch.equal(v, state["objectives"]["brightness"][k])


def test_an_export_with_a_head_of_an_unregistered_objective_is_a_one_line_error(brightness, data, tmp_path):
    train(build_config(tree(tmp_path / "run", data, steps=2, optim={"warmup_steps": 1})), progress=False)
    out = export(tmp_path / "run", tmp_path / "export")
    unregister(Brightness.name)
    with pytest.raises(MTVError, match="'brightness' head but no objective of that name is registered"):
        load_heads(out, load_siglip(out))
    with pytest.raises(MTVError, match="unknown key brightness"):
        build_config(tree(tmp_path / "other", data))
