"""Probe profiles: everything that fixes how the dense probes are built and trained, chosen with
``mtv eval --protocol`` and recorded in the report.

- ``cpu`` (default): the light depth head (LayerNorm per layer, concatenation, convs of width 128) on DPT's four
  hook layers at the processor's resolution, and a constant learning rate, so a suite runs on a laptop.
- ``probe3d``: Probe3D's dense probe (mbanani/probe3d ``configs/probe/depth_dpt.yaml``, ``optimizer/ten_epoch.yaml``,
  ``train_depth.py``): a DPT head of hidden width 512 and 3x3 kernels on the blocks n/4 - 1, n/2 - 1, 3n/4 - 1 and
  n - 1, features at 480 px (its NYUv2 crop side), AdamW at 5e-4 with 1.5 warm-up epochs then cosine decay to 1 %,
  10 epochs of batch 8. Meant for a GPU.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mtv.errors import MTVError
from mtv.eval.segmentation import ProbeBudget
from mtv.models.depth_head import depth_layers


class ProbeProfile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    name: str
    depth_head: Literal["light", "dpt"] = Field(description="light: concat + convs; dpt: Probe3D's DPT")
    depth_width: int = Field(ge=1, description="hidden channels of the depth head")
    depth_layers: Literal["dpt_hooks", "probe3d"] = Field(
        description="dpt_hooks: ceil((k + 1) n / 4) - 1; probe3d: n//4 - 1, n//2 - 1, n//4*3 - 1, n - 1")
    image_side: int | None = Field(None, ge=1, description="square side the dense probes' features are computed "
                                   "at (position embeddings interpolated); None: the processor's")
    seg_budget: ProbeBudget
    depth_budget: ProbeBudget

    def describe(self) -> dict:
        return {"name": self.name, "depth_head": self.depth_head, "depth_width": self.depth_width,
                "depth_layers": self.depth_layers, "image_side": self.image_side or "the processor's"}


def probe3d_layers(num_layers: int) -> list[int]:
    """Probe3D's multilayer blocks (0-based) for a tower of ``num_layers``, floored at block 0 for towers under 4."""
    n = num_layers
    return [max(0, k) for k in (n // 4 - 1, n // 2 - 1, n // 4 * 3 - 1, n - 1)]


def profile_layers(chosen: ProbeProfile, num_layers: int) -> list[int]:
    """The 0-based blocks the profile's depth probe reads."""
    return probe3d_layers(num_layers) if chosen.depth_layers == "probe3d" else depth_layers(num_layers)


PROFILES = {
    "cpu": ProbeProfile(name="cpu", depth_head="light", depth_width=128, depth_layers="dpt_hooks",
                        seg_budget=ProbeBudget(seed=0, epochs=20, lr=5e-3, batch_size=32),
                        depth_budget=ProbeBudget(seed=0, epochs=10, lr=5e-4, batch_size=8, weight_decay=1e-2)),
    "probe3d": ProbeProfile(name="probe3d", depth_head="dpt", depth_width=512, depth_layers="probe3d",
                            image_side=480,
                            seg_budget=ProbeBudget(seed=0, epochs=20, lr=5e-3, batch_size=32),
                            depth_budget=ProbeBudget(seed=0, epochs=10, lr=5e-4, batch_size=8, weight_decay=1e-2,
                                                     warmup_epochs=1.5)),
}


def profile(name: str) -> ProbeProfile:
    if name not in PROFILES:
        raise MTVError(f"eval: --protocol {name!r}: choose one of {', '.join(PROFILES)}")
    return PROFILES[name]
