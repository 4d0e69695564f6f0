"""Pseudo-labelling with expert models: Depth Anything V2 (relative inverse depth) and OWLv2 (boxes for the
caption's noun phrases), or the MTV World oracle, over image–text shards.

    from mtv.experts import label_shards
    summary = label_shards("data/shards", "data/labelled")            # real experts from the HF cache
    label_shards("world/", "world-labelled", depth="oracle", boxes="oracle", oracle=OracleConfig(drop=0.2))

Experts are named by a hub id (looked up in the local Hugging Face cache only, unless ``allow_download``), a
directory written by ``save_pretrained``, ``"oracle"`` or ``"none"``; an expert object (``kind``, ``prep``,
``label``, ``provenance``, ``min_side``) is accepted too. The output format is described in ``mtv.experts.run``.

This package is imported by the ``mtv`` command line to register its verb, so it stays free of torch and
transformers until something is used: the classes below load on first access.
"""

from __future__ import annotations

import importlib
import os

DEFAULT_DEPTH = "depth-anything/Depth-Anything-V2-Large-hf"
DEFAULT_BOXES = "google/owlv2-base-patch16-ensemble"

# Matched against the lower-cased expert name; the weights' licence is what the pseudo-labels inherit.
LICENCES = {"depth-anything-v2-small": "Apache-2.0", "depth-anything-v2-base": "CC-BY-NC-4.0",
            "depth-anything-v2-large": "CC-BY-NC-4.0", "depth-anything-v2-giant": "CC-BY-NC-4.0",
            "owlv2": "Apache-2.0"}

_LAZY = {"BoxFilter": "boxes", "Owlv2Boxes": "boxes", "to_image_pixels": "boxes",
         "DepthAnything": "depth",
         "OracleConfig": "oracle", "OracleDepth": "oracle", "OracleBoxes": "oracle",
         "PhraseConfig": "phrases", "noun_phrases": "phrases",
         "format_summary": "run", "label_shard_list": "run", "summarise": "run"}

__all__ = ["DEFAULT_BOXES", "DEFAULT_DEPTH", "LICENCES", "label_shards", "licence", "load_expert", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"mtv.experts.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'mtv.experts' has no attribute {name!r}")


def licence(name: str) -> str:
    low = name.lower()
    return next((lic for key, lic in LICENCES.items() if key in low), "unknown (check the model card)")


def _pretrained(spec: str, model_cls, processor_cls, allow_download: bool):
    """Model, processor and source record from a directory or the HF cache; never downloads unless allowed.
    A checkpoint of another architecture, or one lacking weights, is refused: transformers would fill the gaps
    with random weights and the labels would be noise."""
    from huggingface_hub import constants, try_to_load_from_cache
    import torch
    from transformers import AutoConfig

    from mtv.errors import MTVError

    local = os.path.isdir(spec)
    expected = model_cls.config_class.model_type
    try:
        if local and not os.path.exists(os.path.join(spec, "config.json")):
            raise OSError
        config = AutoConfig.from_pretrained(spec, local_files_only=not allow_download)
        if config.model_type != expected:
            raise MTVError(f"{spec}: a {config.model_type} model, not {expected}; check the expert options")
        model, info = model_cls.from_pretrained(spec, config=config, local_files_only=not allow_download,
                                                dtype=torch.float32, output_loading_info=True)
        processor = processor_cls.from_pretrained(spec, local_files_only=not allow_download)
    except OSError:
        where = f"no config.json in the directory {spec}" if local else \
            f"no directory {spec}, and not in the Hugging Face cache {constants.HF_HUB_CACHE}"
        raise MTVError(f"{spec}: expert weights not found ({where}); fetch them on a machine with network "
                       f"(`hf download {spec}`, then copy the cache or set HF_HOME), pass a directory made with "
                       "save_pretrained, or add --allow-download") from None
    except ValueError as e:
        raise MTVError(f"{spec}: not a usable {expected} checkpoint ({str(e).splitlines()[0]})") from None
    if info["missing_keys"]:
        missing = sorted(info["missing_keys"])
        raise MTVError(f"{spec}: the checkpoint lacks {len(missing)} of the model's weights (e.g. {missing[0]}); "
                       "download it again or point to a complete one")
    cached = None if local else try_to_load_from_cache(spec, "config.json")
    revision = os.path.basename(os.path.dirname(cached)) if isinstance(cached, str) else None
    name = os.path.abspath(spec) if local else spec
    return model, processor, {"expert": name, "revision": revision, "licence": licence(name)}


def load_expert(kind: str, spec, device, *, precision: str = "auto", allow_download: bool = False,
                phrases=None, box_filter=None, oracle=None):
    """An expert of ``kind`` ("depth" or "boxes") from ``spec``; None for "none"."""
    from mtv.errors import MTVError

    if spec is None or spec == "none":
        return None
    if not isinstance(spec, str):
        return spec  # an expert object: a stand-in, or one built by hand
    from mtv.experts.boxes import BoxFilter, Owlv2Boxes
    from mtv.experts.oracle import OracleBoxes, OracleConfig, OracleDepth
    from mtv.experts.phrases import PhraseConfig

    if kind not in ("depth", "boxes"):
        raise MTVError(f"expert kind must be depth or boxes, not {kind!r}")
    box_filter = box_filter or BoxFilter()
    if spec == "oracle":
        cfg = oracle or OracleConfig()
        return OracleDepth(cfg) if kind == "depth" else OracleBoxes(cfg, box_filter)
    dtype = _autocast_dtype(precision, device)
    if kind == "depth":
        from transformers import AutoImageProcessor, DepthAnythingForDepthEstimation

        from mtv.experts.depth import DepthAnything

        model, processor, source = _pretrained(spec, DepthAnythingForDepthEstimation, AutoImageProcessor,
                                               allow_download)
        return DepthAnything(model, processor, device, dtype, source, min_side=model.config.patch_size)
    from transformers import AutoProcessor, Owlv2ForObjectDetection

    model, processor, source = _pretrained(spec, Owlv2ForObjectDetection, AutoProcessor, allow_download)
    return Owlv2Boxes(model, processor, device, dtype, source, phrases=phrases or PhraseConfig(),
                      box_filter=box_filter, min_side=model.config.vision_config.patch_size)


def _autocast_dtype(precision: str, device):
    """None (fp32) or the autocast dtype, as training chooses it, except that auto stays fp32 on a CPU: bf16
    autocast is rarely faster there for inference, and labels should not lose precision for nothing."""
    from mtv.errors import MTVError
    from mtv.train.precision import autocast_dtype

    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise MTVError(f"--precision must be auto, fp32, bf16 or fp16, not {precision!r}")
    if precision == "auto" and device.type != "cuda":
        return None
    return autocast_dtype(precision, device)


def _rank_and_device(device: str):
    """This process's (rank, world size, device) from torchrun's variables. Labelling needs no process group:
    ranks only split the shards, so none waits for another and a slow rank cannot make the others time out."""
    import torch

    from mtv.errors import MTVError

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if device not in ("auto", "cpu", "cuda"):
        raise MTVError(f"--device must be auto, cpu or cuda, not {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise MTVError("--device cuda: no CUDA device is visible to this process; use --device cpu")
    if device == "cpu" or not torch.cuda.is_available():
        return rank, world, torch.device("cpu")
    local = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local)
    return rank, world, torch.device("cuda", local)


def label_shards(inputs, out, *, depth=DEFAULT_DEPTH, boxes=DEFAULT_BOXES, phrases=None, box_filter=None,
                 oracle=None, device: str = "auto", precision: str = "auto", allow_download: bool = False,
                 batch_size: int = 16, workers: int = 2, shard_index: int = 0, num_shards: int = 1,
                 overwrite: bool = False, max_skip_rate: float = 0.5, progress: bool = False, log=print) -> dict:
    """Labels the shards ``inputs`` (folder, glob, brace pattern, file or list) into the folder ``out``.

    Under ``torchrun`` each rank takes its share of the shards (and its own GPU); ``shard_index/num_shards``
    split them further by hand, e.g. across nodes launched separately. Ranks never talk to each other — a
    rank that finishes early does not wait for (or time out on) the others — so each returns the summary of its
    own shards; a later run over everything finds all shards done and sums them up.
    """
    from mtv.data.shards import list_shards, require_tars
    from mtv.errors import MTVError
    from mtv.experts.run import label_shard_list

    shards = require_tars(list_shards(inputs), "--in")
    names = [os.path.basename(s) for s in shards]
    if len(set(names)) != len(names):
        raise MTVError("input shards from different folders share file names; label each folder into its own --out")
    if not 0 <= shard_index < num_shards:
        raise MTVError(f"--shard-index must be in [0, --num-shards) (got {shard_index} of {num_shards})")
    rank, world, dev = _rank_and_device(device)
    part, parts = shard_index * world + rank, num_shards * world
    opts = {"precision": precision, "allow_download": allow_download, "phrases": phrases,
            "box_filter": box_filter, "oracle": oracle}
    experts = [e for e in (load_expert("depth", depth, dev, **opts), load_expert("boxes", boxes, dev, **opts))
               if e is not None]
    if not experts:
        raise MTVError("both experts are 'none': nothing to label")
    if part == 0:
        for e in experts:
            p = e.provenance()
            lic = p.get("licence", "unknown")
            note = " (non-commercial: these pseudo-labels inherit its terms)" if "-NC-" in lic else ""
            rev = f" @ {p['revision'][:12]}" if p.get("revision") else ""
            log(f"{e.kind} expert: {p.get('expert', type(e).__name__)}{rev}, licence {lic}{note}")
    return label_shard_list(shards[part::parts], out, experts, dev, batch_size=batch_size, workers=workers,
                            overwrite=overwrite, max_skip_rate=max_skip_rate, progress=progress and rank == 0)
