"""Wall time of the world probe suite (`mtv eval --suite world`) on random-init `tiny` and `base` towers, with the
frozen-feature cache on (one pass per split) and off (every probe recomputes its features).

    python benchmarks/bench_eval.py [--tiny 500,300] [--base 48,32] [--presets tiny,base]

Each preset gets its own train/test world (64-px scenes; `base` resizes them to 224 px); sizes are TRAIN,TEST.
Random weights time the same work as trained ones: the probes' budgets are fixed, not convergence-driven.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import machine

from mtv.eval.suite import run_suite
from mtv.models.siglip import build_model, preset_config
from mtv.models.tokenizer import build_processor, train_tokenizer
from mtv.world import generate_world


def model_dir(root: Path, preset: str) -> Path:
    path = root / preset
    captions = [f"a photo of a {c} {s}" for c in ("red", "green", "blue") for s in ("cube", "sphere", "cone")]
    tok = train_tokenizer(captions, str(path), vocab_size=200, text_length=64)
    model = build_model(preset_config(preset, len(tok), 64, tok.pad_token_id, tok.eos_token_id))
    model.save_pretrained(path)
    build_processor(tok, model.config.vision_config.image_size).save_pretrained(path)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", default="500,300", help="TRAIN,TEST scenes for tiny")
    p.add_argument("--base", default="48,32", help="TRAIN,TEST scenes for base")
    p.add_argument("--presets", default="tiny,base")
    a = p.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for preset in a.presets.split(","):
            n_train, n_test = (int(x) for x in getattr(a, preset).split(","))
            train, test = root / f"{preset}-train", root / f"{preset}-test"
            generate_world(train, n_train, seed=0, size=64, progress=False)
            generate_world(test, n_test, seed=1, size=64, progress=False)
            model = model_dir(root, preset)
            for cache in (True, False):
                start = time.perf_counter()
                r = run_suite(model, test, root / f"out-{preset}-{cache}", "world", train=train, cache=cache,
                              progress=False)
                total = time.perf_counter() - start
                probes = ", ".join(f"{k} {v:.1f}" for k, v in r["timings_s"].items() if k not in r["not_run"])
                print(f"{preset}: {n_train} train / {n_test} test scenes, cache {'on ' if cache else 'off'}: "
                      f"{total:.1f} s total, {r['config']['feature_passes']} feature passes ({probes} s)")


if __name__ == "__main__":
    main()
