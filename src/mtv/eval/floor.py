"""The untrained floor of a report: an encoder of the evaluated model's family and architecture that never took a
step (an untrained CLIP for a CLIP, an untrained DINOv2 for a DINOv2), built with the init seed and logit
initialisation its training used (read from ``mtv_export.json``), so that "trained minus floor" is what training
changed and nothing else.

Both the untrained model and its report are cached under ``$MTV_CACHE`` (default ``~/.cache/mtv``): the model
per architecture and init, the report per model, data, probe list and probe settings, so the floor costs
nothing the second time. Entries appear whole or not at all (written under a temporary name, then renamed).
Both keys hold the mtv version and a digest of the source the entries depend on (`source_digest`: the eval
package and the model-building code), so a changed probe in a development checkout gets a fresh floor. The digest
is taken once, when this module is imported (`LOADED_SOURCE`): a job that runs while its checkout is edited keys
what it computes by the code it runs, not by the newer code on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from mtv import __version__
from mtv.data.shards import DATASET_META
from mtv.eval.encoders import encoder_class, read_config

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
KEYED_SOURCES = ("eval", "models")  # the probes, and the code that builds and runs the untrained twin

# the export's own files that are not the tokenizer or image processor
_MODEL_FILES = {"config.json", "model.safetensors", "pytorch_model.bin", "mtv_export.json", "heads.safetensors",
                "heads.json", "generation_config.json"}


def cache_root() -> Path:
    return Path(os.environ.get("MTV_CACHE") or Path.home() / ".cache" / "mtv")


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def source_digest(root: Path | None = None) -> str:
    """SHA-256 (16 hex digits) of every file under ``root``'s `KEYED_SOURCES` (default: this mtv package), by
    relative path and content; compiled caches are left out."""
    root = PACKAGE_ROOT if root is None else root
    h = hashlib.sha256()
    for sub in KEYED_SOURCES:
        for f in sorted((root / sub).rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts:
                h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


LOADED_SOURCE = source_digest()


def init_recipe(model_dir: str | os.PathLike) -> dict:
    """Seed and logit init of the model's training run; seed 0 for a model we did not train, whose family then
    initialises as it does by default (its ``source`` says which)."""
    path = Path(model_dir) / "mtv_export.json"
    if path.exists():
        cfg = json.loads(path.read_text())["config"]
        return {"seed": cfg["seed"], "init_logit_scale": cfg["model"]["init_logit_scale"],
                "init_logit_bias": cfg["model"]["init_logit_bias"], "source": "mtv_export.json"}
    return {"seed": 0, "source": "defaults (the model has no mtv_export.json)"}


def publish(tmp: Path, final: Path) -> None:
    """Renames a finished entry into place; another process that got there first wins, its entry is the same."""
    try:
        os.replace(tmp, final)
    except OSError:
        if not (final / "config.json").exists() and not (final / "report.json").exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def untrained_model(model_dir: str | os.PathLike) -> tuple[Path, dict]:
    """The cached untrained twin of ``model_dir`` (its family's model from the init seed, the same tokenizer and
    image processor files) and its init recipe."""
    model_dir = Path(model_dir)
    recipe = init_recipe(model_dir)
    family = encoder_class(str(model_dir))
    arch = {k: v for k, v in read_config(model_dir).items() if k not in ("_name_or_path", "transformers_version")}
    out = cache_root() / "untrained" / _digest({"arch": arch, "recipe": recipe, "mtv": __version__,
                                                "source": LOADED_SOURCE})
    if (out / "config.json").exists():
        return out, recipe
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    family.untrained(str(model_dir), recipe).save_pretrained(tmp)
    for f in model_dir.iterdir():
        if f.is_file() and f.name not in _MODEL_FILES:
            shutil.copy(f, tmp / f.name)
    publish(tmp, out)
    return out, recipe


def _data_id(path: str | os.PathLike | None) -> dict | None:
    """What identifies a dataset for the cache: its real path, and for world shards the settings they were
    drawn with (a world regenerated with the same settings is the same world)."""
    if path is None:
        return None
    meta = Path(path) / DATASET_META
    return {"path": os.path.realpath(path), "meta": meta.read_text() if meta.is_file() else None}


def floor_report_dir(untrained: Path, settings: dict) -> Path:
    """Where the floor report of ``untrained`` under ``settings`` (data, probes, seeds, budgets) is kept."""
    key = {**settings, "data": _data_id(settings["data"]), "train": _data_id(settings.get("train")),
           "mtv": __version__, "source": LOADED_SOURCE}
    return untrained / "floors" / _digest(key)
