"""CLOC-style prompter: pools a region embedding for a box, or regresses the box of a phrase, from patch tokens.

One module serves both directions (Chen et al., "Contrastive Localized Language-Image Pre-Training"): a query
made of a learned token plus an embedding of the prompt (a box, or an entity's text embedding) cross-attends to
the tower's patch tokens. Queries never attend to each other, so the boxes of one image are independent and
padding queries change nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def fourier_features(x: torch.Tensor, n: int, max_freq: float = 64.0) -> torch.Tensor:
    """(..., k) values in [0, 1] -> (..., 2 n k) sines and cosines at ``n`` frequencies from pi to
    ``max_freq`` pi, geometrically spaced: coarse ones say where, fine ones resolve a patch."""
    freqs = torch.pi * max_freq ** torch.linspace(0, 1, n, device=x.device, dtype=torch.float32)
    angles = (x.float().unsqueeze(-1) * freqs).flatten(-2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def grid_position_encoding(grid: tuple[int, int], dim: int, device=None) -> torch.Tensor:
    """(h w, dim) fixed 2-D encoding of patch centres in normalised coordinates, so grids of any size share one
    frame with the normalised boxes. ``dim // 4`` frequencies per axis; leftover channels are zero."""
    h, w = grid
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
    centres = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).reshape(-1, 2)
    enc = fourier_features(centres, max(dim // 4, 1))
    return F.pad(enc, (0, dim - enc.shape[-1]))[:, :dim]


def xyxy_to_cxcywh(b: torch.Tensor) -> torch.Tensor:
    """Inverse of `mtv.ops.boxes.cxcywh_to_xyxy`: centre and size, the form boxes are encoded and regressed in."""
    return torch.stack([(b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2,
                        b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]], dim=-1)


class _CrossAttention(nn.Module):
    """Pre-norm cross-attention + MLP block; keys carry positions, values carry content only (as in DETR)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm_q, self.norm_kv, self.norm_mlp = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, q: torch.Tensor, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        kv = self.norm_kv(tokens)
        q = q + self.attn(self.norm_q(q), kv + pos, kv, need_weights=False)[0]
        return q + self.mlp(self.norm_mlp(q))


class Prompter(nn.Module):
    """``dim``: patch-token width D; ``text_dim``: text-embedding width E.

    ``regions`` maps boxes to embeddings in the text space (region-text branch, built when ``regions=True``);
    ``locate`` maps entity embeddings to boxes (text-box branch, built when ``boxes=True``). Building only the
    branches in use keeps every parameter in the loss, as DDP requires."""

    def __init__(self, dim: int, text_dim: int, layers: int = 1, heads: int | None = None, box_freqs: int = 16,
                 regions: bool = True, boxes: bool = True):
        super().__init__()
        heads = heads or max(dim // 64, 1)
        if dim % heads:
            raise ValueError(f"prompter: token width {dim} is not divisible by {heads} heads")
        self.query = nn.Parameter(torch.zeros(dim))
        nn.init.normal_(self.query, std=0.02)
        self.blocks = nn.ModuleList(_CrossAttention(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.box_freqs = box_freqs
        if regions:
            self.box_embed = nn.Sequential(nn.Linear(8 * box_freqs, dim), nn.GELU(), nn.Linear(dim, dim))
            self.to_text = nn.Linear(dim, text_dim)
        if boxes:
            self.text_embed = nn.Sequential(nn.Linear(text_dim, dim), nn.GELU(), nn.Linear(dim, dim))
            self.to_box = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 4))

    def attend(self, tokens: torch.Tensor, grid: tuple[int, int], prompts: torch.Tensor) -> torch.Tensor:
        """(B, M, D) prompt embeddings -> (B, M, D) queries after cross-attending to (B, N, D) ``tokens``."""
        pos = grid_position_encoding(grid, tokens.shape[-1], tokens.device).to(tokens.dtype)
        q = self.query.to(prompts.dtype) + prompts
        for block in self.blocks:
            q = block(q, tokens, pos)
        return self.norm(q)

    def regions(self, tokens: torch.Tensor, grid: tuple[int, int], boxes: torch.Tensor) -> torch.Tensor:
        """(B, M, 4) normalised xyxy boxes -> (B, M, E) region embeddings (not normalised)."""
        prompts = self.box_embed(fourier_features(xyxy_to_cxcywh(boxes), self.box_freqs).to(tokens.dtype))
        return self.to_text(self.attend(tokens, grid, prompts))

    def locate(self, tokens: torch.Tensor, grid: tuple[int, int], text: torch.Tensor) -> torch.Tensor:
        """(B, M, E) entity embeddings -> (B, M, 4) boxes as normalised cx, cy, w, h in (0, 1)."""
        prompts = self.text_embed(text.to(tokens.dtype))
        return self.to_box(self.attend(tokens, grid, prompts)).sigmoid()
