"""`mtv` command line: one thin verb per stage; the work lives in the importable modules."""

from __future__ import annotations

import argparse
import os
import sys

from mtv.errors import MTVError
from mtv.eval.command import add_parser as add_eval_parsers
from mtv.experts.command import add_parser as add_label_parser
from mtv.words import count


def _world(a: argparse.Namespace) -> None:
    from mtv.world import generate_world

    s = generate_world(a.out, a.n, a.seed, size=a.size, workers=a.workers, shard_size=a.shard_size, preview=a.preview)
    print(f"wrote {count(s['n'], 'sample')} in {count(len(s['shards']), 'shard')} to {a.out} "
          f"({s['images_per_s']:.0f} images/s)")


def _train(a: argparse.Namespace) -> None:
    from mtv.config import describe, load_config

    if a.help_config:
        print(describe())
        return
    if not a.config:
        raise MTVError("pass --config FILE.yaml (see src/mtv/configs/)")
    from mtv.train import train

    train(load_config(a.config, a.overrides), resume=a.resume)


def _export(a: argparse.Namespace) -> None:
    from mtv.export import export

    print(f"exported to {export(a.ckpt, a.out)}")


def _predict(a: argparse.Namespace) -> None:
    from mtv.predict import predict

    phrases = [p.strip() for p in (a.phrases or "").split(";") if p.strip()]
    result = predict(a.model, a.image, phrases, a.out)
    made = (["depth"] if "depth" in result else []) + ([count(len(result["boxes"]), "box", "boxes")]
                                                        if "boxes" in result else [])
    print(f"wrote {' and '.join(made)} to {a.out}")
    for what, why in result["not_predicted"].items():
        print(f"{what} not predicted: {why}")


def _ablate(a: argparse.Namespace) -> None:
    from mtv.ablate import ablate

    ablate(a.config, a.out, a.overrides, seeds=a.seeds, design=a.design)


def _demo(a: argparse.Namespace) -> None:
    from mtv.demo import run_demo

    run_demo(a.out, steps=a.steps)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mtv", description="Multi-task visual representation learning on SigLIP.")
    sub = p.add_subparsers(dest="verb", required=True)

    w = sub.add_parser("world", help="render MTV World scenes into webdataset shards")
    w.add_argument("--out", required=True, help="folder for the shards, dataset.json and the preview")
    w.add_argument("--n", type=int, required=True, help="number of scenes")
    w.add_argument("--seed", type=int, default=0, help="scene i depends only on (seed, i); another seed, other "
                   "scenes (e.g. 1 for a held-out split)")
    w.add_argument("--size", type=int, default=64, help="image side in pixels")
    w.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="rendering processes (default: one per core); the shards do not depend on it")
    w.add_argument("--shard-size", type=int, default=256, help="samples per shard")
    w.add_argument("--preview", help="write a PNG grid of the first scenes here")
    w.set_defaults(fn=_world)

    add_label_parser(sub)

    t = sub.add_parser("train", help="train from a YAML config (under torchrun for several processes)")
    t.add_argument("--config", help="the run's YAML file, e.g. src/mtv/configs/demo.yaml")
    t.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=3e-4")
    t.add_argument("--resume", action="store_true", help="continue from the run directory's newest checkpoint")
    t.add_argument("--help-config", action="store_true", help="list every config key with its default")
    t.set_defaults(fn=_train)

    e = sub.add_parser("export", help="checkpoint -> HF SiglipModel + SiglipProcessor directory")
    e.add_argument("--ckpt", required=True, help="a checkpoints/step_*.pt file or a run directory")
    e.add_argument("--out", required=True, help="folder for the SiglipModel + SiglipProcessor (+ heads)")
    e.set_defaults(fn=_export)

    add_eval_parsers(sub)

    r = sub.add_parser("predict", help="depth map and phrase boxes of a photo, from an export's heads")
    r.add_argument("--model", required=True, help="an mtv export directory (with heads.safetensors)")
    r.add_argument("--image", required=True, help="a photo (JPEG, PNG, ...)")
    r.add_argument("--phrases", help='phrases separated by ";", e.g. "a red cube; the sphere"')
    r.add_argument("--out", required=True,
                   help="folder for depth.png, depth_color.png, boxes.png and prediction.json")
    r.set_defaults(fn=_predict)

    b = sub.add_parser("ablate", help="objective ablation (the ladder VL, +SSL, +Grounding, +Depth by default): "
                       "train, export, evaluate each rung over seeds")
    b.add_argument("--config", required=True, help="a training YAML with an eval section (see configs/ablation.yaml)")
    b.add_argument("--out", required=True, help="folder for every rung's run, ablation.md/json/png")
    b.add_argument("--seeds", type=int, default=3, help="seeds per rung: the config's seed, +1, ... (default 3)")
    b.add_argument("--design", default="ladder",
                   help="ladder (add one objective at a time), leave-one-out (drop one from all four) or pairs "
                        "(VL plus one objective); default ladder")
    b.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides shared by every rung")
    b.set_defaults(fn=_ablate)

    m = sub.add_parser("demo", help="world -> train tiny -> export -> eval -> Quick Start, on the CPU in minutes")
    m.add_argument("--out", default="runs/demo", help="folder for the world, run, export and eval (default %(default)s)")
    m.add_argument("--steps", type=int, help="override the demo's training steps")
    m.set_defaults(fn=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.fn(args)
    except MTVError as e:
        print(f"mtv {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # training saves a checkpoint first and says how to resume
        print(f"mtv {args.verb}: {e or 'interrupted'}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
