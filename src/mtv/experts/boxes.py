"""OWLv2 as a pseudo-labeller: each image's caption phrases as text queries, boxes back in original pixels.

Geometry: OWLv2's processor pads an image at the bottom and right to a square of side max(H, W), then resizes
the square; predicted boxes are (cx, cy, w, h) relative to that square. Multiplying by max(H, W) — not by W
and H separately — gives original pixels; boxes are then clipped to the image, and boxes that lie wholly in the
padding are dropped.

Queries: the phrases of all images in a batch are embedded once (and cached across batches, so a fixed
vocabulary costs one text pass per run); each image is scored only against its own phrases through the class
head's query mask. Each predicted box takes its best-scoring phrase, as the processor's own post-processing
does; then ``BoxFilter`` keeps scores ≥ threshold, runs NMS per phrase and keeps the best ``max_boxes``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from mtv.errors import MTVError
from mtv.experts.phrases import PhraseConfig
from mtv.ops.boxes import batched_nms, box_area, cxcywh_to_xyxy

TEXT_CACHE = 8192  # phrases whose embeddings are kept on the device between batches


@dataclass(frozen=True)
class BoxFilter:
    """docs/METHOD.md's filtering of pseudo-boxes: score ≥ ``threshold`` after NMS, up to ``max_boxes`` per image."""

    threshold: float = 0.3
    nms_iou: float = 0.5
    max_boxes: int = 10

    def __post_init__(self):
        if not (0 <= self.threshold <= 1 and 0 < self.nms_iou <= 1 and self.max_boxes >= 0):
            raise MTVError(f"box filter: threshold must be in [0, 1], nms-iou in (0, 1], max-boxes >= 0; "
                           f"got {self.threshold}, {self.nms_iou}, {self.max_boxes}")

    def __call__(self, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                 phrases: list[str]) -> list[dict]:
        """``boxes`` (N, 4) in pixels, ``scores`` (N,), ``labels`` (N,) indices into ``phrases``."""
        keep = scores >= self.threshold
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        kept = batched_nms(boxes, scores, labels, self.nms_iou)[: self.max_boxes].tolist()
        boxes, scores, labels = boxes.tolist(), scores.tolist(), labels.tolist()
        return [{"phrase": phrases[labels[i]], "box": [round(v, 2) for v in boxes[i]], "score": round(scores[i], 4)}
                for i in kept]

    def provenance(self) -> dict:
        return asdict(self)


def to_image_pixels(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, 4) boxes as (cx, cy, w, h) relative to OWLv2's bottom/right-padded square → (x0, y0, x1, y1) pixels of
    the (H, W) image, clipped to it."""
    height, width = size
    xyxy = cxcywh_to_xyxy(boxes.float()) * max(height, width)
    limits = torch.tensor([width, height, width, height], dtype=xyxy.dtype, device=xyxy.device)
    return torch.minimum(xyxy.clamp(min=0), limits)


class OwlPrep:
    """Worker-side half: pad-and-resize (the slow, scipy-based part of OWLv2's processor) and phrase extraction."""

    def __init__(self, image_processor, phrases: PhraseConfig):
        self.image_processor, self.phrases = image_processor, phrases

    def __call__(self, sample: dict, image, caption: str, meta: dict) -> dict:
        pixels = self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]
        return {"pixel_values": pixels, "size": (image.height, image.width), "phrases": self.phrases.queries(caption)}


class Owlv2Boxes:
    """An ``Owlv2ForObjectDetection`` with its processor (image processor + tokenizer)."""

    kind = "boxes"

    def __init__(self, model, processor, device: torch.device, dtype: torch.dtype | None, source: dict,
                 phrases: PhraseConfig = PhraseConfig(), box_filter: BoxFilter = BoxFilter(), min_side: int = 16):
        self.model = model.to(device).eval()
        self.tokenizer = processor.tokenizer
        self.prep = OwlPrep(processor.image_processor, phrases)
        self.device, self.dtype, self.source, self.min_side = device, dtype, source, min_side
        self.phrases, self.filter = phrases, box_filter
        self._text: dict[str, torch.Tensor] = {}

    def provenance(self) -> dict:
        return {**self.source, **self.filter.provenance(), "phrases": self.phrases.provenance()}

    @torch.inference_mode()
    def label(self, payloads: list[dict]) -> list[list[dict]]:
        """Filtered boxes per payload: ``[{"phrase", "box": [x0, y0, x1, y1] pixels, "score"}]``."""
        queries = list(dict.fromkeys(q for p in payloads for q in p["phrases"]))
        if not queries:
            return [[] for _ in payloads]
        column = {q: i for i, q in enumerate(queries)}
        mask = torch.zeros(len(payloads), len(queries), dtype=torch.bool)
        for b, p in enumerate(payloads):
            mask[b, [column[q] for q in p["phrases"]]] = True
        pixels = torch.stack([p["pixel_values"] for p in payloads]).to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            probs, boxes = self.scores_and_boxes(pixels, queries, mask.to(self.device))
        results = []
        for b, p in enumerate(payloads):
            own = mask[b].nonzero()[:, 0].to(self.device)
            if not len(own):
                results.append([])
                continue
            scores, best = probs[b].float()[:, own].max(-1)
            xyxy = to_image_pixels(boxes[b], p["size"])
            inside = box_area(xyxy) > 0
            results.append(self.filter(xyxy[inside], scores[inside], own[best][inside], queries))
        return results

    def scores_and_boxes(self, pixels: torch.Tensor, queries: list[str], mask: torch.Tensor):
        """The model-facing step: (B, N, Q) probabilities of every predicted box for every query (0 where ``mask``
        is False) and (B, N, 4) boxes as (cx, cy, w, h) relative to the processed square."""
        feature_map = self.model.image_embedder(pixel_values=pixels)[0]
        b, h, w, d = feature_map.shape
        feats = feature_map.reshape(b, h * w, d)
        boxes = self.model.box_predictor(feats, feature_map)
        text = self._embed(queries)
        logits = self.model.class_predictor(feats, text.to(feats.dtype).expand(b, -1, -1), mask)[0]
        return logits.sigmoid(), boxes

    def _embed(self, queries: list[str]) -> torch.Tensor:
        missing = [q for q in queries if q not in self._text]
        if len(self._text) + len(missing) > TEXT_CACHE:
            self._text.clear()
            missing = queries
        for start in range(0, len(missing), 256):
            chunk = missing[start:start + 256]
            tokens = self.tokenizer(chunk, padding="max_length", truncation=True, return_tensors="pt").to(self.device)
            embeds = self.model.owlv2.get_text_features(**tokens).pooler_output.float()
            self._text.update(zip(chunk, embeds))
        return torch.stack([self._text[q] for q in queries])


def tiny_owlv2_processor(size: int = 64):
    """OWLv2's processor at ``size`` px with a byte-level CLIP tokenizer without merges (needs no vocabulary file)."""
    from transformers import CLIPTokenizer, Owlv2ImageProcessorPil, Owlv2Processor
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)} | {c + "</w>": len(chars) + i for i, c in enumerate(chars)}
    vocab |= {"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], pad_token="!", model_max_length=16)
    return Owlv2Processor(image_processor=Owlv2ImageProcessorPil(size={"height": size, "width": size}),
                          tokenizer=tokenizer)


def save_tiny_owlv2(path, size: int = 64) -> str:
    """A randomly initialised OWLv2 (2-layer, 32-wide towers, patch 16) with its processor, saved to ``path``."""
    from transformers import Owlv2Config, Owlv2ForObjectDetection

    processor = tiny_owlv2_processor(size)
    n = len(processor.tokenizer)
    config = Owlv2Config(
        text_config=dict(vocab_size=n, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=16, bos_token_id=n - 2, eos_token_id=n - 1, pad_token_id=0),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=size, patch_size=16),
        projection_dim=32)
    torch.manual_seed(0)
    model = Owlv2ForObjectDetection(config)
    # A random box head saturates to zero-width boxes; a zero last layer leaves the grid prior (a box per patch).
    torch.nn.init.zeros_(model.box_head.dense2.weight)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return str(path)
