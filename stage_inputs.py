"""stage_inputs.py - what a DPO stage or an SFT run reads and checks before the model loads (recipes.py's inputs).

On every rank, before any weight is loaded: the run directory (new, or one to --resume with the same settings), the
run it starts from (finished, on the same base model), the pairs or SFT records (their videos present, the same on
every rank), the held-out videos, and what config.json will record. A mistake is one line naming the file and the
fix; a finished run asked to --resume says so and stops.

    python temple.py dpo -r 8 --resume        # read_stage_inputs, then recipes.run_stage
"""

import os

import datafiles
import examples
import heldout
import hub
import runs
import train


def train_config(args, run_dir, **extra):
    """The train.TrainConfig of the options dpo, curriculum and sft share (temple.add_training_options)."""
    return train.TrainConfig(out=run_dir, lr=args.lr, warmup_ratio=args.warmup_ratio, epochs=args.epochs,
                             global_batch=args.global_batch, micro_batch=args.micro_batch,
                             weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm,
                             save_every=args.save_every, max_steps=args.max_steps, seed=args.seed,
                             grad_ckpt=args.grad_ckpt, workers=args.workers, **extra)


def sft_config(args, run_dir, records):
    """The train.TrainConfig of an SFT run."""
    return train_config(
        args, run_dir, tokens_across_ranks=args.tokens_across_ranks,
        # a text-only record leaves the vision adapters out of the forward; DDP must be told to look for that
        find_unused_parameters=not args.freeze_vit and any(r["video"] is None for r in records))


def finished_at(config, num_items):
    """The last step of a finished run that a --resume would not train on (it reached every planned step), else
    None. A stage an adaptive rule stopped early trains on from its stop."""
    if not runs.finished(config.out) or "stopped" in runs.read_run_config(config.out):
        return None
    try:
        last = runs.read_metrics(config.out)[-1]["step"]
    except (OSError, ValueError, IndexError, KeyError):  # a damaged metrics.jsonl: the resume itself names the line
        return None
    return last if last >= train.total_steps(num_items, config) else None


def stage_init(args):
    """The finished run this stage starts from (None: the base model): --init, else the stage before, r * 2."""
    init = args.init
    if init is None and args.r < 16:
        init = os.path.join(args.runs, f"dpo_r{args.r * 2}")
        if not runs.finished(init):
            raise ValueError(f"stage r={args.r} starts from {init}, which is not finished; run "
                             f"`temple.py dpo -r {args.r * 2}` first, or pass --init RUN (or --init base)")
    return None if init == "base" else init


def stage_meta(args, data, start, identity, held_videos):
    """What config.json records of what a stage trains (the settings of how it trains are the train.TrainConfig's)."""
    return {"stage": "dpo", "r": args.r, "base_model": args.model, "base_model_id": identity, "start": start,
            "data": data, "video": examples.video_options(args),
            "max_length": args.max_length, "truncation": args.truncation, "seed": args.seed,
            "model_seed": args.model_seed, "beta": args.beta, "loss_type": args.loss_type,
            "nll_weight": args.nll_weight, "lora": {"r": args.lora_r, "alpha": args.lora_alpha,
                                                    "dropout": args.lora_dropout},
            "heldout": {"videos": args.heldout, "file": args.eval_pairs, "every": args.eval_every},
            "heldout_videos": held_videos,
            "adaptive": {"plateau_delta": args.plateau_delta, "plateau_evals": args.plateau_evals,
                         "accuracy_ceiling": args.accuracy_ceiling} if args.adaptive else None}


def stage_paths(args):
    """(run directory, pairs file) of a stage."""
    return (args.out or os.path.join(args.runs, f"dpo_r{args.r}"),
            args.data or os.path.join(args.data_dir, f"pairs_r{args.r}.jsonl"))


def trained_otherwise(args):
    """What a finished stage was trained with that differs from what `args` asks (curriculum skips a finished stage
    only when this is empty): its start (by content), base model, data file, loss, LoRA, video, the settings that
    change the weights. Its held-out videos follow from the seed and the data, so they are not compared again."""
    run_dir, data = stage_paths(args)
    saved = runs.read_run_config(run_dir)
    init = stage_init(args)
    identity = hub.model_identity(args.model, args.model_seed)
    start = runs.start_after(init, args.model, run_dir, identity)
    meta = stage_meta(args, data, start, identity, saved.get("heldout_videos", []))
    return (runs.trained_otherwise(saved, meta) +
            runs.trained_with_other_settings(saved, train_config(args, run_dir)))


def read_stage_inputs(args, world):
    """What a stage trains on, read and checked before the model loads: (run_dir, data, init, meta, video, pairs,
    held_pairs); init is the finished run it starts from (None: the base model), meta what config.json records."""
    run_dir, data = stage_paths(args)
    runs.check_run_dir(run_dir, args.resume)
    train.check_accumulation(train_config(args, run_dir), world)
    init = stage_init(args)
    identity = hub.model_identity(args.model, args.model_seed)
    start = runs.start_after(init, args.model, run_dir, identity)
    if args.adaptive and not (args.heldout or args.eval_pairs):
        raise ValueError("--adaptive decides on held-out preference accuracy: give --heldout N or --eval-pairs FILE")
    if not os.path.exists(data):
        raise FileNotFoundError(f"{data}: no such file; make the pairs with `temple.py pairs` first, or pass "
                                f"--data FILE")
    pairs = usable(*datafiles.read_pairs(data, args.video_root), data, args.video_root, "pair", world)
    held_videos, note = heldout.stage_heldout_videos(args, init, pairs)
    if world.main and note:
        print(note)
    pairs, held_pairs = heldout.split_off(pairs, held_videos)
    if args.eval_pairs:
        extra = datafiles.read_pairs(args.eval_pairs, args.video_root)[0]
        shown = {os.path.normpath(p["video"]) for p in extra}  # the same video root: compare the joined paths
        shared = sum(os.path.normpath(p["video"]) in shown for p in pairs)
        if world.main and shared:
            print(f"note: {shared} training pair(s) are on videos of {args.eval_pairs}: their chosen answers are "
                  f"trained on, so held-out accuracy there is inflated (--heldout N holds out whole videos)")
        held_pairs += extra
    if not pairs:
        raise ValueError(f"{data}: every pair is on a held-out video; hold out fewer (--heldout) or other ones")
    meta = stage_meta(args, data, start, identity, held_videos)
    if args.resume and runs.resumable(run_dir):
        runs.check_resume(run_dir, meta)
    return run_dir, data, init, meta, meta["video"], pairs, held_pairs


def usable(items, skipped, path, video_root, what, world):
    """The items read from `path`, with one line (rank 0) on those left out for a missing video; an error when none
    is left."""
    if world.main and skipped and items:
        print(f"{path}: skipped {datafiles.missing_videos(skipped, video_root, what)}")
    if not items:
        raise ValueError(f"{path}: no usable {what}s" + (
            f": {datafiles.missing_videos(skipped, video_root, what)}" if skipped else ""))
    return items


def read_sft_inputs(args, world):
    """What SFT trains on, read and checked before the model loads: (run_dir, init, video, meta, records)."""
    run_dir = args.out or os.path.join(args.runs, "sft")
    runs.check_run_dir(run_dir, args.resume)
    train.check_accumulation(sft_config(args, run_dir, []), world)
    init = None if args.init in (None, "base") else args.init
    identity = hub.model_identity(args.model, args.model_seed)
    start = runs.start_after(init, args.model, run_dir, identity)
    records = usable(*datafiles.read_conversations(args.data, args.video_root), args.data, args.video_root,
                     "record", world)
    video = examples.video_options(args)
    meta = {"stage": "sft", "base_model": args.model, "base_model_id": identity, "start": start, "data": args.data,
            "video": video, "max_length": args.max_length, "truncation": args.truncation, "seed": args.seed,
            "model_seed": args.model_seed, "lora": {"r": args.lora_r, "alpha": args.lora_alpha,
                                                    "dropout": args.lora_dropout, "vision": not args.freeze_vit}}
    if args.resume and runs.resumable(run_dir):
        runs.check_resume(run_dir, meta)
    return run_dir, init, video, meta, records


def already_finished(config, num_items, name, world):
    """With --resume: True, and one line saying so, when the run already reached every planned step."""
    done = finished_at(config, num_items)
    if done and world.main:
        print(f"{name}: {config.out} was already finished (step {done}); nothing to resume")
    return bool(done)
