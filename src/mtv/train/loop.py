"""The training loop: config → checkpoints, ``metrics.jsonl`` and TensorBoard, on one process or under torchrun."""

from __future__ import annotations

import random
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from transformers import SiglipConfig, SiglipTokenizer

from mtv.atomic import disk_error, is_disk_error
from mtv.config import TrainConfig, dump_config, first_difference
from mtv.data.batch import Batch
from mtv.data.schema import decode_caption
from mtv.data.shards import ReadStats, list_shards, read_samples, require_tars
from mtv.data.stream import Batches, ShardStream, StreamState
from mtv.data.transforms import Pixels
from mtv.data.views import ViewDecoder
from mtv.errors import MTVError, SkipSample, writable_dir
from mtv.models.pretrained import init_config, load_init
from mtv.models.siglip import build_model, load_config, preset_config
from mtv.models.tokenizer import build_processor, load_processor, train_tokenizer
from mtv.objectives.base import registered
from mtv.objectives.multitask import MultiTask
from mtv.train import checkpoint
from mtv.train.distributed import Dist, gather_objects, mean_over_ranks, setup, teardown
from mtv.train.interrupt import StopRequest, interrupted
from mtv.train.lock import run_lock
from mtv.train.logger import MetricsLog
from mtv.train.periodic_eval import PeriodicEval
from mtv.train.parallel import checkpoint_blocks, distribute, is_sharded, whole
from mtv.train.precision import autocast_dtype
from mtv.train.optim import build_optimizer, scaled_lr
from mtv.train.schedule import ScheduleTable
from mtv.train.step import Engine, compile_failures_said, compiled, train_step


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Trains ``cfg``; Ctrl-C saves a checkpoint at the current step and raises `TrainingInterrupted`."""
    d = setup(cfg.device, cfg.parallel)
    finished = False
    try:
        with run_lock(cfg.run_dir, enabled=d.main), StopRequest() as stop:
            result = _train(cfg, d, resume, progress, stop)
        finished = True
        return result
    except OSError as e:  # a full or read-only disk under the run directory (config, processor, logs)
        if is_disk_error(e):
            raise disk_error(e.filename or cfg.run_dir, e, "run_dir") from None
        raise
    finally:
        teardown(drain=finished)


def _train(cfg: TrainConfig, d: Dist, resume: bool, progress: bool, stop: StopRequest) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = Path(cfg.run_dir)
    shards = require_tars(list_shards(cfg.data.train), "data.train")
    ck = _prepare_run_dir(run, resume, d)
    init = init_config(cfg.model.init, cfg.model.image_size) if cfg.model.init else None
    if init is not None:  # the checkpoint's text positions fix the padding length
        cfg.model.text_length = init.text_config.max_position_embeddings
    if d.main:
        dump_config(cfg, run / "config.yaml")
    processor = _processor(cfg, run, shards, d)
    tok = processor.tokenizer
    model_cfg = SiglipConfig.from_dict(ck["model_config"]) if ck else init or _model_config(cfg, tok)
    _check_vocabulary(cfg, len(tok), model_cfg.text_config.vocab_size)
    vision = model_cfg.vision_config
    if vision.image_size % vision.patch_size:
        raise MTVError(f"model.image_size {vision.image_size} is not a multiple of the patch size "
                       f"{vision.patch_size}; choose {vision.image_size // vision.patch_size * vision.patch_size}")
    model = build_model(model_cfg, cfg.model.init_logit_scale, cfg.model.init_logit_bias, seed=cfg.seed)
    if init is not None and not ck:
        skipped = load_init(model, cfg.model.init, cfg.model.init_skip)
        if d.main:
            print(f"model.init: weights of {cfg.model.init}" + (f", {len(skipped)} tensors left freshly "
                  f"initialised by model.init_skip" if skipped else ""))
    task = MultiTask(model, cfg, d.group).to(d.device)
    if cfg.activation_checkpointing:
        checkpoint_blocks(task)
    dtype = autocast_dtype(cfg.precision, d.device)
    idle = any(o.idles_at_start() for o in task.objectives.values())  # DDP must allow unused parameters then
    net = distribute(task, cfg.parallel, d, dtype, find_unused=idle)  # before the optimiser: FSDP swaps parameters
    opt, rules = build_optimizer(task, cfg)
    per_step = cfg.batch_size * cfg.optim.accum_steps * d.world_size
    table = ScheduleTable(cfg, task, rules, scaled_lr(cfg.optim, per_step))
    if cfg.optim.lr_scaling != "none" and d.main:
        print(f"optim.lr {cfg.optim.lr:g} for a global batch of {cfg.optim.lr_reference_batch}, scaled "
              f"({cfg.optim.lr_scaling}) to {table.peak_lr:g} for this run's {per_step}")
    scaler = torch.amp.GradScaler(d.device.type, enabled=dtype == torch.float16)

    step, state, nonfinite = 0, StreamState({}), 0
    if ck:
        _check_same_model(ck["config"], cfg, run)
        _restore_modules(ck, task, opt, cfg, run)
        _note_new_optim(cfg, ck["config"]["optim"], d)
        scaler.load_state_dict(ck["scaler"])
        _set_rng(ck["rng"][d.rank] if d.rank < len(ck["rng"]) else ck["rng"][0])
        step, nonfinite = ck["step"], ck["nonfinite_steps"]
        state = StreamState.from_dict(ck["data"][d.rank] if d.rank < len(ck["data"]) else None)
    else:
        _seed_everything(cfg.seed + d.rank)
    batches = Batches(ShardStream(shards, _decoder(cfg, processor, vision), cfg.batch_size, cfg.seed, d.rank,
                                  d.world_size, cfg.data.shuffle_buffer, state), cfg.data.workers)
    log = MetricsLog(run, step, enabled=d.main)
    evaluator = PeriodicEval(cfg, run, tok, model_cfg, d)
    bar = tqdm(total=cfg.steps, initial=step, disable=not (progress and d.main), desc="train", unit="step")
    start_step, t_start, noted = step, time.perf_counter(), False
    t_log, step_log = t_start, step
    grid = (vision.image_size // vision.patch_size,) * 2

    engine = Engine(task, net, compiled(net, cfg.compile_backend) if cfg.compile else net, opt, scaler, dtype,
                    cfg.optim.accum_steps, cfg.optim.grad_clip, d)

    while step < cfg.steps:
        row = table.row(step)
        with compile_failures_said(cfg.compile_backend, dtype) if cfg.compile else nullcontext():
            result = train_step(engine, lambda micro: _step_batch(next(batches), task, row.plan, tok, cfg, grid,
                                                                  (d.rank, step, micro)).to(d.device), row)
        if result.bad:
            nonfinite += 1
            if d.main:
                tqdm.write(f"step {step + 1}: {', '.join(result.bad)} not finite; update skipped "
                           f"({nonfinite}/{cfg.max_nonfinite_steps} allowed)")
            if nonfinite > cfg.max_nonfinite_steps:
                raise MTVError(f"{', '.join(result.bad)} was NaN/inf in {nonfinite} steps (> max_nonfinite_steps="
                               f"{cfg.max_nonfinite_steps}); the last good checkpoint is {checkpoint.latest(run)}; "
                               "lower optim.lr or use precision=fp32")
            continue
        step += 1
        bar.update(1)
        _check_skips(batches.state, cfg)

        if step % cfg.log_every == 0 or step == cfg.steps:
            now = time.perf_counter()
            counts = _total_counts(batches.state.counts, d)
            if not noted and d.main and (note := _missing_note(counts)):  # said once, at the first log step
                tqdm.write(f"note: {note}")
            noted = True
            terms = {k: float(v) for k, v in result.terms.items()}  # the only read-back of the terms
            record = {"step": step, "loss": mean_over_ranks(sum(terms.values()), d),
                      **{k: mean_over_ranks(v, d) for k, v in sorted(terms.items())},
                      **row.scalars(), "images_per_s": per_step * (step - step_log) / (now - t_log),
                      "grad_norm": float(result.grad_norm), "logit_scale": whole(model.logit_scale).exp().item(),
                      "logit_bias": whole(model.logit_bias).item(), "samples_seen": counts.get("seen", 0),
                      "samples_skipped": counts.get("skipped", 0), "nonfinite_steps": nonfinite,
                      **{f"labels_missing_{k[8:]}": v for k, v in counts.items() if k.startswith("missing/")}}
            log.log(record)
            bar.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{record['images_per_s']:.0f}")
            t_log, step_log = now, step
        else:
            log.scalars(step, row.scalars())  # the schedule table reaches TensorBoard at every step
        if evaluator.due(step):
            began = time.perf_counter()
            found = evaluator(task)
            if found:
                log.log({"step": step, **found})
                tqdm.write(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in found.items()))
            spent = time.perf_counter() - began  # evaluation is not training throughput
            t_log, t_start = t_log + spent, t_start + spent
        saved = step % cfg.ckpt_every == 0 or step == cfg.steps
        if saved:
            _save(cfg, run, step, task, opt, scaler, batches.state, model_cfg, nonfinite, d)
        if step < cfg.steps and stop.now(d.world_size, d.device):
            if not saved:
                _save(cfg, run, step, task, opt, scaler, batches.state, model_cfg, nonfinite, d)
            bar.close()
            log.close()
            raise interrupted(run, step, checkpoint.latest(run))
    bar.close()
    log.close()
    seconds = time.perf_counter() - t_start
    summary = _summary(run, step - start_step, seconds, per_step, _total_counts(batches.state.counts, d))
    if d.main and progress:
        _print_summary(summary)
    return summary


def _prepare_run_dir(run: Path, resume: bool, d: Dist) -> dict | None:
    writable_dir(run, "run directory", "run_dir")
    found = checkpoint.latest(run)
    if found and not resume:
        raise MTVError(f"{run}: already has checkpoints; pass --resume to continue it or choose another run_dir")
    if resume and found is None and d.main:
        print(f"{run}: no checkpoint yet, starting from step 0")
    if not (resume and found):
        return None
    path, state, bad = checkpoint.newest_intact(run)
    if bad and d.main:
        print(f"{run}: resuming from {path.name}, the newest readable checkpoint; skipped: " + "; ".join(bad))
    return state


def _check_same_model(saved: dict, cfg: TrainConfig, run: Path) -> None:
    """A resumed run must build the same modules its checkpoint holds; name the first setting that differs. An
    objective off both then and now builds nothing, so its settings do not count."""
    now = cfg.model_dump(mode="json")
    built = {"model": saved["model"], "optim": {"no_weight_decay": saved["optim"].get("no_weight_decay", [])},
             **{name: saved[name] for name in registered()
                if saved[name].get("enabled", True) or now[name]["enabled"]}}  # optim: the parameter groups' split
    if first := first_difference(built, now):
        key, was, now = first
        raise MTVError(f"{run}: was trained with {key}={was!r}, the config now says {now!r}; resume with "
                       f"{run / 'config.yaml'} or choose a new run_dir")


def _restore_modules(ck: dict, task: MultiTask, opt, cfg: TrainConfig, run: Path) -> None:
    """Module and optimiser state from either checkpoint form; the form must be the one this run writes."""
    sharded = "sharded" in ck
    if sharded != (cfg.parallel == "fsdp"):
        was = ck["config"].get("parallel", "ddp")
        raise MTVError(f"{run}: its checkpoints are {'sharded (parallel=fsdp)' if sharded else 'plain'}, the config "
                       f"now says parallel={cfg.parallel}; resume with parallel={was}")
    if sharded:
        checkpoint.restore_sharded(ck["sharded"], task, opt)
        return
    task.model.load_state_dict(ck["model"])
    for name, objective in task.objectives.items():
        objective.load_state_dict(ck["objectives"].get(name, {}))
    opt.load_state_dict(ck["optimizer"])


def _processor(cfg: TrainConfig, run: Path, shards: list[str], d: Dist):
    """The tokenizer+image processor that export ships; trained once on the corpus captions by rank 0."""
    folder = run / "processor"
    if d.main and not (folder / "processor_config.json").exists():
        if cfg.model.init:
            processor = load_processor(cfg.model.init)  # its own tokenizer, size, resampling, mean and std
            if cfg.model.image_size:
                processor.image_processor.size = {"height": cfg.model.image_size, "width": cfg.model.image_size}
            processor.save_pretrained(folder)
        else:
            tok = _tokenizer(cfg, folder, shards)
            # _model_config applies model.config, the preset and model.image_size: the model's own size
            build_processor(tok, _model_config(cfg, tok).vision_config.image_size).save_pretrained(folder)
    d.barrier()
    return load_processor(folder)


def _tokenizer(cfg: TrainConfig, folder: Path, shards: list[str]):
    """``model.tokenizer`` when given, else a SentencePiece model trained on the corpus captions."""
    if not cfg.model.tokenizer:
        return train_tokenizer(_captions(shards, cfg.model.tokenizer_captions), str(folder), cfg.model.vocab_size,
                               cfg.model.text_length)
    try:
        return SiglipTokenizer.from_pretrained(cfg.model.tokenizer, model_max_length=cfg.model.text_length)
    except (OSError, ValueError) as e:
        raise MTVError(f"model.tokenizer: {cfg.model.tokenizer} is not a SigLIP tokenizer "
                       f"({str(e).splitlines()[0]})") from None


def _captions(shards: list[str], limit: int) -> list[str]:
    out, stats = [], ReadStats()
    for raw in read_samples(shards, stats):
        try:
            out.append(decode_caption(raw))
        except SkipSample:
            continue
        if len(out) >= limit:
            break
    return out


def _check_vocabulary(cfg: TrainConfig, tokens: int, vocab: int) -> None:
    """A token id past the text tower's embedding table would fail deep inside the first forward."""
    if tokens <= vocab:
        return
    if cfg.model.init:
        raise MTVError(f"model.init: {cfg.model.init}'s tokenizer has {tokens} tokens but its text tower only {vocab}; "
                       "the directory's tokenizer and config.json do not belong together")
    source = f"model.tokenizer {cfg.model.tokenizer}" if cfg.model.tokenizer else \
        f"model.vocab_size {cfg.model.vocab_size}"
    raise MTVError(f"{source}: the tokenizer has {tokens} tokens but model.config's text tower {vocab}; use a "
                   f"tokenizer of at most {vocab} tokens or a config whose text_config.vocab_size is at least {tokens}")


def _model_config(cfg: TrainConfig, tok) -> SiglipConfig:
    config = load_config(cfg.model.config) if cfg.model.config else \
        preset_config(cfg.model.preset, len(tok), cfg.model.text_length, tok.pad_token_id, tok.eos_token_id)
    if cfg.model.image_size:
        config.vision_config.image_size = cfg.model.image_size
    return config


def _note_new_optim(cfg: TrainConfig, saved: dict, d: Dist) -> None:
    """A resumed run trains with the config it was given, as config.yaml records it: the schedule table sets each
    step's lr and weight decay from it, so a changed optim.lr replaces the checkpoint's from the same step on."""
    now = cfg.optim.model_dump(mode="json")
    changed = [f"{k} {saved.get(k)} -> {v}" for k, v in now.items() if k in saved and saved[k] != v]
    if changed and d.main:
        print(f"resume: optim {', '.join(changed)} from the config, not the checkpoint")


def _check_skips(state: StreamState, cfg: TrainConfig) -> None:
    seen, skipped = state.counts.get("seen", 0), state.counts.get("skipped", 0)
    if seen < cfg.data.min_samples_for_skip_check:
        return
    if skipped > cfg.data.max_skip_fraction * seen:
        reasons = {k.split("/", 1)[1]: v for k, v in state.counts.items() if k.startswith("skipped/")}
        raise MTVError(f"{cfg.data.train}: {skipped} of {seen} samples could not be used "
                       f"({skipped / seen:.1%} > data.max_skip_fraction={cfg.data.max_skip_fraction}); "
                       f"reasons: {reasons}")
    used, limit = seen - skipped, cfg.data.max_missing_label_fraction
    starved = [f"{missing} of {used} samples have no {label} labels ({missing / used:.1%} > "
               f"data.max_missing_label_fraction={limit}); label them with mtv label or set {objective}.enabled=false"
               for label, objective in _label_objectives().items()
               if used and (missing := state.counts.get(f"missing/{label}", 0)) > limit * used]
    if starved:
        raise MTVError(f"{cfg.data.train}: " + "; ".join(starved))


def _label_objectives() -> dict[str, str]:
    """A shard label -> the objective that starves without it."""
    return {label: name for name, cls in registered().items() for label in cls.labels}


def _missing_note(counts: dict) -> str:
    used = counts.get("seen", 0) - counts.get("skipped", 0)
    parts = [f"{counts[f'missing/{k}']} of {used} samples have no {k} labels ({o} learns from the rest)"
             for k, o in _label_objectives().items() if counts.get(f"missing/{k}")]
    return "; ".join(parts)


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _decoder(cfg: TrainConfig, processor, vision) -> ViewDecoder:
    """The sample decoder with every enabled objective's options and extra fields."""
    options, fields = {}, []
    for name, cls in registered().items():
        section = getattr(cfg, name)
        if section.enabled:
            options.update(cls.decoder_options(section, vision.image_size, vision.patch_size))
            if (read := cls.sample_fields(section)) is not None:
                fields.append(read)
    return ViewDecoder(processor.tokenizer, vision.image_size, cfg.model.text_length, flip=cfg.data.flip,
                       crop_scale=cfg.data.crop_scale, pixels=Pixels.of(processor.image_processor), fields=fields,
                       **options)


def _step_batch(collated: dict, task: MultiTask, plan: dict, tok, cfg: TrainConfig, grid: tuple[int, int],
                key: tuple[int, int, int]) -> Batch:
    """The typed batch plus each active objective's random inputs, drawn from a generator keyed by
    (seed, rank, step, micro-step) so that a resumed run draws the same ones."""
    batch = Batch.from_collated(collated, tok, cfg.model.text_length)
    for name, schedule in plan.items():
        rng = np.random.default_rng([cfg.seed, *key])
        for field, value in task.objectives[name].step_inputs(schedule, cfg.batch_size, grid, rng).items():
            if hasattr(batch, field) and field != "extra":
                setattr(batch, field, value)
            else:
                batch.extra[field] = value
    return batch


def _total_counts(counts, d: Dist) -> dict[str, int]:
    total: dict[str, int] = {}
    for c in gather_objects(dict(counts), d):
        for k, v in c.items():
            total[k] = total.get(k, 0) + v
    return total


def _save(cfg, run, step, task, opt, scaler, data_state, model_cfg, nonfinite, d: Dist) -> None:
    rngs = gather_objects(_rng_state(), d)
    data = gather_objects(data_state.to_dict(), d)
    files = {p.name: p.read_bytes() for p in (run / "processor").iterdir() if p.is_file()} if d.main else {}
    train_state = {"step": step, "nonfinite_steps": nonfinite, "scaler": scaler.state_dict(), "rng": rngs, "data": data, "model_config": model_cfg.to_dict(),
                   "processor_files": files, "config": cfg.model_dump(mode="json")}
    if is_sharded(task):
        checkpoint.save_sharded(train_state, task, opt, run, step, cfg.keep_ckpts, d.main)
        return
    if d.main:
        checkpoint.save({**train_state, "model": task.model.state_dict(), "optimizer": opt.state_dict(),
                         "objectives": {name: objective.state_dict() for name, objective in task.objectives.items()}},
                        run, step, cfg.keep_ckpts)
    d.barrier()


def _summary(run: Path, steps: int, seconds: float, per_step: int, total: dict[str, int]) -> dict:
    return {"run_dir": str(run), "steps_this_run": steps, "seconds": seconds,
            "images_per_s": steps * per_step / seconds if seconds else 0.0,
            "samples_seen": total.get("seen", 0), "samples_skipped": total.get("skipped", 0),
            "skip_reasons": {k.split("/", 1)[1]: v for k, v in total.items() if k.startswith("skipped/")},
            "bad_shards": total.get("bad_shards", 0),
            "labels_missing": {k[8:]: v for k, v in total.items() if k.startswith("missing/")},
            "checkpoint": str(checkpoint.latest(run)), "metrics": str(run / "metrics.jsonl")}


def _print_summary(s: dict) -> None:
    print(f"trained {s['steps_this_run']} steps in {s['seconds']:.0f} s ({s['images_per_s']:.1f} images/s); "
          f"samples seen {s['samples_seen']}, skipped {s['samples_skipped']} {s['skip_reasons'] or ''}")
    if s["labels_missing"]:
        print("labels missing: " + ", ".join(f"{k} in {v} samples" for k, v in s["labels_missing"].items()))
    print(f"checkpoint: {s['checkpoint']}\nmetrics:    {s['metrics']}")
