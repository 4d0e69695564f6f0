"""The interface every evaluated encoder family implements, and the image preprocessing they share.

A family adapter turns one kind of model directory into the same four things: patch tokens on a grid per layer,
a pooled image embedding, a text embedding (or none), and the image preprocessing its own processor config
prescribes. The probes see only this interface, so SigLIP, CLIP, DINOv2 and MTV compare on identical code.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from mtv.errors import MTVError
from mtv.models.vision import VisionOutput
from mtv.progress import quiet_hf_bars

# transformers 5 keeps a processor's image settings in processor_config.json, earlier versions beside it
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def read_config(path: str | Path) -> dict:
    """``config.json`` of a model directory, or a one-line error."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        raise MTVError(f"{path}: not a model directory (no config.json); give a directory a transformers model "
                       "was saved to (save_pretrained), e.g. the one `mtv export` wrote")
    try:
        config = json.loads(cfg.read_text())
    except (OSError, ValueError) as e:
        raise MTVError(f"{cfg}: not a readable model config ({_first_line(e)})") from None
    if not isinstance(config, dict):
        raise MTVError(f"{cfg}: not a model config (a JSON object with a model_type)")
    return config


@dataclass(frozen=True)
class ImageSpec:
    """How the model's own image processor prepares an image, read from its processor config: the whole frame is
    resized to ``size`` with ``resample`` (no centre crop, so dense labels stay aligned with the patch grid),
    rescaled by ``rescale_factor`` and normalised by ``mean``/``std``."""

    size: tuple[int, int]  # (height, width)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resample: str  # PIL's filter name: "bicubic", "bilinear", ...
    rescale_factor: float
    source: str  # the file the settings came from

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "ImageSpec":
        """The settings in ``path``'s processor config; a crop size, where the processor crops, is the size."""
        files = [Path(path) / f for f in PROCESSOR_FILES if (Path(path) / f).is_file()]
        if not files:
            raise MTVError(f"{path}: no {' or '.join(PROCESSOR_FILES)}; save the model's image processor beside it "
                           "(processor.save_pretrained(dir))")
        try:
            cfg = json.loads(files[0].read_text())
        except (OSError, ValueError) as e:
            raise MTVError(f"{files[0]}: not readable JSON ({_first_line(e)})") from None
        cfg = cfg.get("image_processor", cfg)  # processor_config.json nests it

        def need(key: str):
            if key not in cfg:
                raise MTVError(f"{files[0]}: no {key!r}; the image processor's config must state it")
            return cfg[key]

        size = need("crop_size") if cfg.get("do_center_crop") else need("size")
        if isinstance(size, int):
            size = {"shortest_edge": size}
        if "height" in size and "width" in size:
            hw = (int(size["height"]), int(size["width"]))
        elif "shortest_edge" in size:
            hw = (int(size["shortest_edge"]),) * 2
        else:
            raise MTVError(f"{files[0]}: size {size} has neither height/width nor shortest_edge")
        normalise, rescale = cfg.get("do_normalize", True), cfg.get("do_rescale", True)
        mean = tuple(float(v) for v in need("image_mean")) if normalise else (0.0, 0.0, 0.0)
        std = tuple(float(v) for v in need("image_std")) if normalise else (1.0, 1.0, 1.0)
        resample = Image.Resampling(int(need("resample"))).name.lower()
        return cls(hw, mean, std, resample, float(need("rescale_factor")) if rescale else 1.0, str(files[0]))

    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(B, 3, H, W) float32: each image resized whole to ``size``, rescaled, normalised."""
        h, w = self.size
        filt = Image.Resampling[self.resample.upper()]
        arrays = [np.asarray(im.convert("RGB").resize((w, h), filt), np.float32) for im in images]
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) * self.rescale_factor
        return (x - torch.tensor(self.mean).view(1, 3, 1, 1)) / torch.tensor(self.std).view(1, 3, 1, 1)

    def describe(self) -> dict:
        return {**asdict(self), "size": list(self.size), "mean": list(self.mean), "std": list(self.std),
                "crop": "none: the whole frame is resized"}


class Encoder:
    """One model directory of a family. Subclasses set the class attributes, `load` their model and say how it
    yields patch tokens (`encode`) and, if it has a text tower, text embeddings (`text_features`)."""

    family: ClassVar[str]  # its name in reports and errors
    accepts_text: ClassVar[str]  # what `recognises` accepts, for the error that lists the families
    model_types: ClassVar[tuple[str, ...]] = ()
    fallback: ClassVar[bool] = False  # tried after every family that names its model types
    has_text: ClassVar[bool] = False
    carries_heads: ClassVar[bool] = False  # an MTV export's grounding and depth heads fit it
    prefix_tokens: ClassVar[int | None] = None  # class + register tokens before the patch grid (None: any)

    def __init__(self, model: nn.Module, image: ImageSpec, path: str, tokenizer=None):
        self.model, self.image, self.path, self.tokenizer = model, image, path, tokenizer

    @classmethod
    def recognises(cls, config: dict) -> bool:
        return config.get("model_type") in cls.model_types

    @classmethod
    def load(cls, path: str) -> "Encoder":
        from transformers import AutoModel

        image = ImageSpec.from_pretrained(path)
        try:
            with quiet_hf_bars():
                model = AutoModel.from_pretrained(path)
        except Exception as e:  # HF raises many types for a broken checkpoint; the user needs one line, not a trace
            raise MTVError(f"{path}: not a loadable {cls.family} model ({type(e).__name__}: {_first_line(e)})") from None
        return cls(model.eval(), image, path, cls.load_tokenizer(path) if cls.has_text else None)

    @classmethod
    def load_tokenizer(cls, path: str):
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError, TypeError) as e:
            raise MTVError(f"{path}: no tokenizer here ({_first_line(e)}); save the model's tokenizer beside it "
                           "(processor.save_pretrained(dir))") from None

    @classmethod
    def untrained(cls, path: str, recipe: dict) -> nn.Module:
        """The family's model built from ``path``'s config with fresh weights from ``recipe["seed"]``."""
        from transformers import AutoConfig, AutoModel

        config = AutoConfig.from_pretrained(path)
        torch.manual_seed(recipe["seed"])
        return AutoModel.from_config(config)

    @property
    def vision_config(self):
        return getattr(self.model.config, "vision_config", None) or self.model.config

    @property
    def num_layers(self) -> int:
        return self.vision_config.num_hidden_layers

    @property
    def patch_size(self) -> int:
        return self.vision_config.patch_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.image.pixels(images).to(self.device, self.model.dtype)

    def forward(self, pixel_values: torch.Tensor):
        """The HF output whose ``last_hidden_state``, ``hidden_states`` and ``pooler_output`` `encode` reads."""
        return self.model(pixel_values=pixel_values, output_hidden_states=True)

    def pool(self, out, tokens: torch.Tensor) -> torch.Tensor:
        """The image embedding: the model's own pooled output."""
        return out.pooler_output

    def encode(self, pixel_values: torch.Tensor, layers: Sequence[int] = ()) -> VisionOutput:
        """Pooled embedding (unnormalised), final patch tokens and the 0-based ``layers``' patch tokens. Each is
        the last rows × cols tokens of the model's output (class and register tokens come first, and Probe3D
        reads the grid the same way); ``hidden_states[i + 1]`` is layer i's output."""
        out = self.forward(pixel_values)
        grid = (pixel_values.shape[-2] // self.patch_size, pixel_values.shape[-1] // self.patch_size)
        n, found = grid[0] * grid[1], out.last_hidden_state.shape[1]
        if found < n or (self.prefix_tokens is not None and found != n + self.prefix_tokens):
            want = f"{n}" + (f" + {self.prefix_tokens} class/register tokens" if self.prefix_tokens else "")
            raise MTVError(f"{self.path}: the model returned {found} tokens for a {grid[0]}x{grid[1]} patch grid, "
                           f"not {want}; it is not a ViT with a square patch grid")
        tokens = out.last_hidden_state[:, -n:]
        return VisionOutput(self.pool(out, tokens), tokens, [out.hidden_states[i + 1][:, -n:] for i in layers], grid)

    def text_features(self, texts: list[str]) -> torch.Tensor:
        """(N, E) unnormalised text embeddings in the space of the pooled image embedding."""
        raise MTVError(f"{self.path}: a {self.family} encoder has no text tower")

    def logit_scale_and_bias(self) -> tuple[float | None, float | None]:
        return None, None

    def describe(self) -> dict:
        scale, bias = self.logit_scale_and_bias()
        return {"family": self.family, "class": type(self.model).__name__, "text": self.has_text,
                "layers": self.num_layers, "patch_size": self.patch_size, "image": self.image.describe(),
                "logit_scale": scale, "logit_bias": bias}
