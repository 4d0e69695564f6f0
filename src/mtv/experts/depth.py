"""Depth Anything V2 as a pseudo-labeller: batched relative inverse depth at each image's own size, stored as a
16-bit PNG with its scale and shift.

The processor resizes an image, keeping its aspect ratio, to sides that are multiples of the patch size (14), so
images of one batch can differ in shape. Padding them to a common shape would change what the ViT sees (its
attention spans the padding) and make an image's depth depend on its batch companions; images are grouped by
processed shape instead and each group runs as its own batch. The prediction covers the whole processed image,
which is the whole original image resized, so resizing it to the original (H, W) puts it back on the pixels.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F


class DepthPrep:
    """Worker-side half: the image processor's resize and normalisation, run where the JPEG was decoded."""

    def __init__(self, image_processor):
        self.image_processor = image_processor

    def __call__(self, sample: dict, image, caption: str, meta: dict) -> dict:
        pixels = self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]
        return {"pixel_values": pixels, "size": (image.height, image.width)}


class DepthAnything:
    """A ``DepthAnythingForDepthEstimation`` (or any module whose output has ``predicted_depth`` (B, h, w), relative
    inverse depth over the whole input) with its image processor."""

    kind = "depth"

    def __init__(self, model, image_processor, device: torch.device, dtype: torch.dtype | None, source: dict,
                 min_side: int = 14):
        self.model = model.to(device).eval()
        self.prep = DepthPrep(image_processor)
        self.device, self.dtype, self.source, self.min_side = device, dtype, source, min_side

    def provenance(self) -> dict:
        return dict(self.source)

    @torch.inference_mode()
    def label(self, payloads: list[dict]) -> list[np.ndarray]:
        """Float32 (H, W) inverse depth per payload, at the original image size."""
        out: list[np.ndarray | None] = [None] * len(payloads)
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, p in enumerate(payloads):
            groups[tuple(p["pixel_values"].shape)].append(i)
        for members in groups.values():
            pixels = torch.stack([payloads[i]["pixel_values"] for i in members]).to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
                pred = self.model(pixel_values=pixels).predicted_depth
            for j, i in enumerate(members):
                # Bicubic, like the processor's own post_process_depth_estimation.
                full = F.interpolate(pred[j][None, None].float(), size=payloads[i]["size"], mode="bicubic",
                                     align_corners=False)
                out[i] = full[0, 0].cpu().numpy()
        return out


def save_tiny_depth_anything(path, size: int = 56) -> str:
    """A randomly initialised Depth Anything (4-layer, 32-wide DINOv2 backbone) with its processor, saved to
    ``path``: the real classes and code path in milliseconds, for tests and benchmarks."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessorPil

    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            patch_size=14, image_size=size, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32],
                                 fusion_hidden_size=16, head_hidden_size=8, patch_size=14)
    torch.manual_seed(0)
    DepthAnythingForDepthEstimation(config).save_pretrained(path)
    DPTImageProcessorPil(size={"height": size, "width": size}, keep_aspect_ratio=True,
                         ensure_multiple_of=14).save_pretrained(path)
    return str(path)
