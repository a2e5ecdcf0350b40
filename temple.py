"""temple.py - the command line of the TEMPLE reference implementation.

TEMPLE (arXiv 2503.16929) teaches a video LLM temporal understanding with DPO on preference pairs the model makes
itself: its description of a clean video is "chosen", its description of a temporally perturbed video (clips
dropped, shuffled or reversed at difficulty r) is "rejected". Training runs r = 16 -> 8 -> 4 -> 2 before SFT.

Every subcommand is one arrow of the data flow (see README.md). Heavy modules (torch, transformers) are imported
inside the command that needs them, so `temple.py shots` stays fast.

    python temple.py --help
    python temple.py describe VIDEO --model tiny

Expected failures (a missing file, a bad model name, malformed data) print one line and exit 1; set
TEMPLE_DEBUG=1 to see the traceback instead.
"""

import argparse
import functools
import os
import shlex
import sys

import datafiles


class Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Show every default in --help."""


# ----------------------------------------------------------------------------------------------------------------
# describe: one video in, the model's description out


def add_describe(sub):
    p = sub.add_parser("describe", help="describe one video with a video LLM", formatter_class=Defaults)
    p.add_argument("video", help="path of a video file")
    p.add_argument("--model", default="tiny", help="model directory, hub id, or built-in tiny / tiny-qwen2.5 / tiny-qwen3")
    p.add_argument("--prompt", default="Describe the video in detail.", help="the instruction")
    p.add_argument("--fps", type=float, default=1.0, help="frames sampled per second of video")
    p.add_argument("--max-frames", type=int, default=600, help="at most this many frames")
    p.add_argument("--total-pixels", type=int, default=9_000_000, help="pixel budget for all frames together")
    p.add_argument("--max-new-tokens", type=int, default=256, help="length limit of the answer")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.set_defaults(func=cmd_describe)


def cmd_describe(args):
    import vlm

    model = vlm.load(args.model)
    video = vlm.read_video(args.video, fps=args.fps, max_frames=args.max_frames)
    sample = model.encode([video, args.prompt], total_pixels=args.total_pixels)
    [text] = model.generate([sample], max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                            seed=args.seed)
    print(text)


# ----------------------------------------------------------------------------------------------------------------
# shots / select: shot detection and the choice of temporally rich videos (shots.py, spec sections 1-2)


def add_detector_options(p):
    p.add_argument("--colour-threshold", type=float, default=0.2, help="a cut: the colour histograms of two frames differ by this much (0..1) ...")
    p.add_argument("--layout-threshold", type=float, default=0.3, help="... or their layouts (coarse grey grids, 0..2) by this much ...")
    p.add_argument("--ratio", type=float, default=3.0, help="... and by this many times the local level of that change")
    p.add_argument("--window", type=positive_int, default=12, help="frames on each side for the local level")
    p.add_argument("--flash-frames", type=int, default=4, help="a jump whose old picture returns within this many frames is a flash")
    p.add_argument("--min-shot-frames", type=positive_int, default=8, help="no two cuts closer than this")
    p.add_argument("--fade-frames", type=int, default=16, help="window each side for dissolves (0 = hard cuts only)")
    p.add_argument("--fade-threshold", type=float, default=1.5, help="a dissolve: the windows' mean pictures differ by this many times what a cut needs")
    p.add_argument("--min-grey-range", type=int, default=10, help="a frame whose grey levels span less than this is blank (black, white, a uniform fade); select drops shots of blank frames")


def detector_options(args):
    return dict(colour_threshold=args.colour_threshold, layout_threshold=args.layout_threshold, ratio=args.ratio,
                window=args.window, flash_frames=args.flash_frames, min_shot_frames=args.min_shot_frames,
                fade_frames=args.fade_frames, fade_threshold=args.fade_threshold, min_grey_range=args.min_grey_range)


def add_shots(sub):
    p = sub.add_parser("shots", help="detect the shots of one video; print them as JSON", formatter_class=Defaults)
    p.add_argument("video", help="path of a video file (mp4, mkv, webm, avi, ...)")
    add_detector_options(p)
    p.set_defaults(func=cmd_shots)


def cmd_shots(args):
    import json

    import shots

    scan = shots.scan_video(args.video)
    found = shots.find_shots(scan, **detector_options(args))
    damage = [f"{scan.incomplete()}: the shots cover those" if scan.incomplete() else "",
              f"{scan.corrupt_packets} corrupt packet(s) skipped" if scan.corrupt_packets else ""]
    if any(damage):
        print(f"temple.py shots: warning: {args.video}: {'; '.join(d for d in damage if d)}", file=sys.stderr)
    print(json.dumps({"video": args.video, "fps": scan.fps, "num_frames": scan.num_frames,
                      "shots": [list(s) for s in found]}))


def add_select(sub):
    p = sub.add_parser("select", help="keep temporally rich videos: shots, clips, keyframes -> DIR/videos.jsonl",
                       formatter_class=Defaults)
    p.add_argument("inputs", nargs="+", metavar="VIDEO_OR_DIR", help="video files, or directories searched for .mp4 .mkv .webm .avi .mov")
    p.add_argument("--out", default="data", help="directory of videos.jsonl (appended to; videos already in it are skipped)")
    p.add_argument("--workers", type=positive_int, default=1, help="videos processed in parallel (processes)")
    p.add_argument("--retry-errors", action="store_true", help="process again the videos recorded with status error")
    add_detector_options(p)
    p.add_argument("--min-shot-seconds", type=float, default=0.2, help="cleaning: drop shots shorter than this")
    p.add_argument("--min-shot-len", type=int, default=8, help="cleaning: drop shots of fewer frames")
    p.add_argument("--min-shots", type=int, default=4, help="keep videos with at least this many shots")
    p.add_argument("--max-shots", type=int, default=32, help="... and at most this many")
    p.add_argument("--max-shot-seconds", type=float, default=16.0, help="... and no shot longer than this")
    p.add_argument("--group-threshold", type=float, default=0.8, help="shots more similar than this (1 - histogram distance of middle frames) join one group")
    p.add_argument("--min-clips", type=int, default=4, help="keep videos with at least this many clips (runs of one group)")
    p.add_argument("--max-runs", type=int, default=3, help="a group may come back in at most min(this, clips // 3) runs")
    p.set_defaults(func=cmd_select)


def read_selection(path, retry_errors=False):
    """Records already in videos.jsonl. A half-written last line (a crash mid-write) is cut off; with retry_errors
    the error records are removed so their videos run again. Both rewrites are atomic (temp file + rename)."""
    import json

    if not os.path.exists(path):
        return []
    text = open(path, encoding="utf-8").read()
    lines = text.split("\n")
    complete, partial = lines[:-1], lines[-1]  # the text after the last newline is partial (or empty)
    records = []
    for number, line in enumerate(complete, 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{number}: not a JSON line ({e.msg})") from None
    kept = [r for r in records if not (retry_errors and r.get("status") == "error")]
    if partial.strip() or len(kept) < len(records):
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        os.replace(path + ".tmp", path)
    return kept


def selection_summary(records):
    """kept / rejected by reason / errors by reason, one line each."""
    from collections import Counter

    def kind(record):  # "too few shots: 2 after ..." -> "too few shots"; "a.mp4: empty file (0 bytes)" -> "empty file"
        reason = record.get("reason", "")
        if record.get("status") == "error":
            reason = reason.removeprefix(f"{record.get('path')}: ")
        return reason.split(":")[0].split(" (")[0]

    by_status = Counter(r.get("status") for r in records)
    lines = [f"{len(records)} videos: {by_status['kept']} kept, {by_status['rejected']} rejected, {by_status['error']} errors"]
    for status in ("rejected", "error"):
        for reason, count in Counter(kind(r) for r in records if r.get("status") == status).most_common():
            lines.append(f"  {status}: {reason}: {count}")
    return "\n".join(lines)


def cmd_select(args):
    import functools
    import json
    import multiprocessing

    from tqdm import tqdm

    import shots

    missing = [path for path in args.inputs if not os.path.exists(path)]
    if missing:  # a mistyped path is a usage error: nothing is written
        raise FileNotFoundError(f"{', '.join(missing)}: no such file or directory")
    os.makedirs(args.out, exist_ok=True)
    out = os.path.join(args.out, "videos.jsonl")
    records = read_selection(out, args.retry_errors)
    done = {os.path.abspath(r["path"]) for r in records if isinstance(r.get("path"), str)}
    todo = []
    for path in shots.list_videos(args.inputs):
        if os.path.abspath(path) not in done:
            todo.append(path)
            done.add(os.path.abspath(path))
    options = dict(detector_options(args), min_shot_seconds=args.min_shot_seconds, min_shot_len=args.min_shot_len,
                   min_shots=args.min_shots, max_shots=args.max_shots,
                   max_shot_seconds=args.max_shot_seconds, group_threshold=args.group_threshold,
                   min_clips=args.min_clips, max_runs=args.max_runs)
    select = functools.partial(shots.select_video, **options)
    pool = multiprocessing.Pool(args.workers) if args.workers > 1 and len(todo) > 1 else None
    results = pool.imap_unordered(select, todo) if pool else map(select, todo)
    try:
        with open(out, "a", encoding="utf-8") as f, tqdm(total=len(todo), unit="video", desc="select") as bar:
            for record in results:  # one complete line per video, flushed: a crash loses at most the videos in flight
                f.write(json.dumps(record) + "\n")
                f.flush()
                os.fsync(f.fileno())
                records.append(record)
                bar.update()
    finally:
        if pool:
            pool.terminate()
    skipped = f" ({len(records) - len(todo)} already recorded, skipped)" if len(records) > len(todo) else ""
    print(f"{out}: {selection_summary(records)}{skipped}")


# ----------------------------------------------------------------------------------------------------------------
# captions / pairs / view / export: the self-generated preference pairs (captions.py, perturb.py)


def add_generation_options(p, max_new_tokens):
    p.add_argument("--model", default=RELEASED_MODEL, help="directory, cached hub id or tiny / tiny-qwen2.5 / tiny-qwen3 (the same model makes captions and pairs)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="prompts per generate call, across videos")
    p.add_argument("--max-new-tokens", type=positive_int, default=max_new_tokens, help="length limit of each answer (the released value)")
    p.add_argument("--max-pixels", type=positive_int, default=512 * 28 * 28, help="pixel cap per keyframe (released: 512*28*28)")
    p.add_argument("--min-pixels", type=positive_int, default=None, help="smallest keyframe area (None = the model's)")


def keyframe_pixel_options(args):
    options = {"max_pixels": args.max_pixels, "min_pixels": args.min_pixels}
    return {k: v for k, v in options.items() if v is not None}


def add_captions(sub):
    p = sub.add_parser("captions", help="caption every clip of the kept videos, the previous clip as context",
                       formatter_class=Defaults)
    p.add_argument("--videos", default="data/videos.jsonl", help="videos.jsonl written by `select`")
    p.add_argument("--out", default=None, help="output file (None = captions.jsonl beside --videos)")
    add_generation_options(p, max_new_tokens=2048)
    p.set_defaults(func=cmd_captions)


def cmd_captions(args):
    import captions
    import vlm

    videos = captions.kept_videos(args.videos)  # an empty selection fails here, before the model loads
    rank, world_size, local_rank = captions.distributed_env()
    out = args.out or os.path.join(os.path.dirname(args.videos), "captions.jsonl")
    settings = captions.caption_settings(args.model, args.max_new_tokens, keyframe_pixel_options(args))
    captions.check_settings(out, settings, "--out")  # before the model loads
    model = vlm.load(args.model, device=captions.rank_device(local_rank))
    records = captions.caption_videos(model, videos, out, batch_size=args.batch_size,
                                      max_new_tokens=args.max_new_tokens, rank=rank, world_size=world_size,
                                      **keyframe_pixel_options(args))
    if records is not None:  # rank 0; nothing captioned at all is an error (captions.jsonl holds the reasons)
        print(captions.caption_summary(args.videos, out, records))


def add_pairs(sub):
    p = sub.add_parser("pairs", help="describe clean and perturbed clip lists; write the filtered pairs per r",
                       formatter_class=Defaults)
    p.add_argument("--captions", default="data/captions.jsonl", help="captions.jsonl (the frames route also takes videos.jsonl)")
    p.add_argument("--out-dir", default=None, help="where descriptions.jsonl and pairs_r{R}.jsonl go (None = beside --captions)")
    p.add_argument("-r", "--r", type=positive_int, nargs="+", default=[16, 8, 4, 2], help="difficulties (larger = stronger perturbation); write -r under torchrun")
    p.add_argument("--kinds", nargs="+", default=["drop", "shuffle", "reverse"], choices=["drop", "shuffle", "reverse"], help="perturbations")
    p.add_argument("--perturb-input", default="captions", choices=["captions", "frames"], help="perturb the caption list (released code) or the keyframe sequence (paper wording)")
    add_generation_options(p, max_new_tokens=8192)
    p.add_argument("--total-pixels", type=positive_int, default=9_000_000, help="frames route: pixel budget for all keyframes")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (0 = greedy)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    p.add_argument("--repetition-penalty", type=float, default=1.05, help="penalty on repeated tokens")
    p.add_argument("--seed", type=int, default=0, help="seeds perturbations, sampling and instructions (with the video path)")
    p.add_argument("--max-length-ratio", type=float, default=1.5, help="shuffle/reverse pairs whose answers differ more in length are dropped")
    p.set_defaults(func=cmd_pairs)


def cmd_pairs(args):
    import captions
    import vlm

    route = args.perturb_input
    videos = captions.pair_inputs(args.captions, need_captions=route == "captions")
    rank, world_size, local_rank = captions.distributed_env()
    out_dir = args.out_dir or os.path.dirname(args.captions) or "."
    pixels = {**keyframe_pixel_options(args), "total_pixels": args.total_pixels} if route == "frames" else {}
    settings = captions.description_settings(args.model, route, args.seed, args.temperature, args.top_p,
                                             args.repetition_penalty, args.max_new_tokens, pixels)
    captions.check_settings(captions.descriptions_path(out_dir, route), settings, "--out-dir")  # before loading
    model = vlm.load(args.model, device=captions.rank_device(local_rank))
    descriptions = captions.describe_videos(
        model, videos, captions.descriptions_path(out_dir, route), args.r, args.kinds, route,
        batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
        top_p=args.top_p, repetition_penalty=args.repetition_penalty, seed=args.seed, rank=rank,
        world_size=world_size, **pixels)
    if descriptions is None:  # rank > 0: rank 0 writes the pairs
        return
    for path, stats in captions.write_pairs(descriptions, out_dir, args.r, args.kinds, route, args.seed,
                                            args.max_length_ratio):
        print(captions.summary_line(path, stats))


def add_view(sub):
    p = sub.add_parser("view", help="one static HTML page to look at pairs before training", formatter_class=Defaults)
    p.add_argument("pairs", help="a pairs_r{R}.jsonl file")
    p.add_argument("--out", default=None, help="HTML file (None = the pairs file with .html)")
    p.add_argument("--captions", default=None, help="captions.jsonl for thumbnails and clip captions (None = beside the pairs)")
    p.add_argument("--limit", type=int, default=30, help="show a random sample of this many pairs (0 = all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample")
    p.add_argument("--thumb-height", type=positive_int, default=64, help="keyframe thumbnail height in pixels")
    p.set_defaults(func=cmd_view)


def cmd_view(args):
    import views

    out = args.out or os.path.splitext(args.pairs)[0] + ".html"
    rows = views.pair_page(args.pairs, out, args.captions, args.limit, args.seed, args.thumb_height)
    print(f"{out}: {rows} pairs")


def add_export(sub):
    p = sub.add_parser("export", help="convert a pairs file to ms-swift's RLHF format", formatter_class=Defaults)
    p.add_argument("pairs", help="a pairs_r{R}.jsonl file")
    p.add_argument("--format", default="swift", choices=["swift"], help="target format")
    p.add_argument("--out", default=None, help="output .json (None = the pairs file with .swift.json)")
    p.set_defaults(func=cmd_export)


def cmd_export(args):
    out, count = datafiles.export_pairs(args.pairs, args.out, args.format)
    print(f"{out}: {count} pairs")


# ----------------------------------------------------------------------------------------------------------------
# dpo / curriculum / merge: preference training, stage by stage (dpo.py, train.py)

RELEASED_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
ATTENTION = ("sdpa", "eager", "flash_attention_2")  # transformers' names; flash_attention_2 needs flash-attn


def add_training_options(p, lr, lora_alpha, lora_dropout):
    """The options dpo, curriculum and sft share; defaults = the released run (spec.md sections 5 and 6)."""
    p.add_argument("--model", default=RELEASED_MODEL, help="base model: directory, cached hub id or tiny / tiny-qwen2.5 / tiny-qwen3")
    p.add_argument("--model-seed", type=int, default=0, help="seed of a built-in tiny model's random weights")
    p.add_argument("--runs", default="runs", help="directory holding the run directories")
    p.add_argument("--video-root", default=None, help="directory that relative video paths in the data start from")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.add_argument("--lora-r", type=int, default=32, help="LoRA rank")
    p.add_argument("--lora-alpha", type=float, default=lora_alpha, help="LoRA alpha (scaling alpha / r)")
    p.add_argument("--lora-dropout", type=float, default=lora_dropout, help="dropout on the LoRA input" + (
        " (0: ms-swift and TRL switch dropout off in DPO, disable_dropout)" if lora_dropout == 0 else ""))
    p.add_argument("--lr", type=float, default=lr, help="peak learning rate (AdamW)")
    p.add_argument("--warmup-ratio", type=float, default=0.05, help="share of steps with linear warmup, then cosine")
    p.add_argument("--epochs", type=float, default=1.0, help="passes over the data")
    p.add_argument("--global-batch", type=int, default=16, help="examples per optimizer step over all processes")
    p.add_argument("--micro-batch", type=int, default=1, help="examples per forward on one process")
    p.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay")
    p.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping")
    p.add_argument("--save-every", type=int, default=500, help="optimizer steps between checkpoints")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0 = all epochs)")
    p.add_argument("--seed", type=int, default=42, help="seed of the data order, dropout and sampling")
    p.add_argument("--grad-ckpt", action=argparse.BooleanOptionalAction, default=True,
                   help="non-reentrant activation checkpointing: recompute activations in backward (a real pair needs it)")
    p.add_argument("--workers", type=int, default=2, help="data-loading processes per GPU (video decoding)")
    p.add_argument("--attn", default="sdpa", choices=ATTENTION, help="attention implementation")
    p.add_argument("--fps", type=float, default=1.0, help="video frames per second")
    p.add_argument("--max-frames", type=int, default=600, help="at most this many frames per video")
    p.add_argument("--total-pixels", type=int, default=9_000_000, help="pixel budget per video")
    p.add_argument("--max-length", type=int, default=16384, help="tokens per sequence; longer answers are cut")


def add_dpo_options(p):
    add_training_options(p, lr=5e-6, lora_alpha=64, lora_dropout=0.0)
    p.add_argument("--data-dir", default="data", help="where pairs_r{R}.jsonl are")
    p.add_argument("--beta", type=float, default=0.1, help="DPO temperature")
    p.add_argument("--loss-type", default="sigmoid", choices=["sigmoid", "ipo", "hinge"], help="DPO loss")
    p.add_argument("--nll-weight", type=float, default=1.0, help="weight of the NLL of the chosen answer")
    p.add_argument("--precompute-ref", action="store_true", help="score the reference once per stage and cache it")


def add_dpo(sub):
    p = sub.add_parser("dpo", help="train one DPO curriculum stage", formatter_class=Defaults)
    p.add_argument("-r", "--r", type=positive_int, required=True, help="difficulty of this stage (16, 8, 4, 2); write -r under torchrun")
    p.add_argument("--data", default=None, help="pairs file, ours (.jsonl) or ms-swift (.json/.jsonl); default DATA_DIR/pairs_r{R}.jsonl")
    p.add_argument("--out", default=None, help="run directory; default RUNS/dpo_r{R}")
    p.add_argument("--init", default=None, help="start from this finished run (merged), or 'base'; default RUNS/dpo_r{2R} for R < 16")
    add_dpo_options(p)
    p.set_defaults(func=cmd_dpo)


def cmd_dpo(args):
    import dpo

    dpo.run_stage(args)


def add_curriculum(sub):
    p = sub.add_parser("curriculum", help="run the DPO stages r = 16, 8, 4, 2 in order, skipping finished ones",
                       formatter_class=Defaults)
    p.add_argument("--stages", type=positive_int, nargs="+", default=[16, 8, 4, 2], help="the r of each stage, in order")
    add_dpo_options(p)
    p.set_defaults(func=cmd_curriculum)


def cmd_curriculum(args):
    import dpo
    import train

    main_process = train.setup_distributed().main
    previous = None
    for r in args.stages:
        run_dir = os.path.join(args.runs, f"dpo_r{r}")
        if train.finished(run_dir):
            if main_process:  # under torchrun: one line, not one per rank
                print(f"stage r={r}: {run_dir} is finished, skipped")
        else:
            stage = argparse.Namespace(**{**vars(args), "r": r, "data": None, "out": run_dir, "init": previous,
                                          "resume": args.resume or os.path.isdir(run_dir)})
            dpo.run_stage(stage)
        previous = run_dir


def add_merge(sub):
    p = sub.add_parser("merge", help="fold a run's adapters into its base model and save a transformers model",
                       formatter_class=Defaults)
    p.add_argument("run", help="a finished run directory")
    p.add_argument("--out", required=True, help="output directory (weights, config, tokenizer)")
    p.add_argument("--model", default=None, help="base model, if it moved since training (default: as recorded)")
    p.set_defaults(func=cmd_merge)


def cmd_merge(args):
    import dpo

    print(f"merged model written to {dpo.merge_run(args.run, args.out, args.model)}")


# ----------------------------------------------------------------------------------------------------------------
# sft: instruction tuning after the DPO curriculum (sft.py)


def add_sft(sub):
    p = sub.add_parser("sft", help="instruction tuning (after DPO: --init runs/dpo_r2)", formatter_class=Defaults)
    p.add_argument("--data", required=True, help="LLaVA-Video-178K-style or ms-swift conversations (.json or .jsonl)")
    p.add_argument("--init", default=None, help="start from this finished run, merged (e.g. runs/dpo_r2); default: the base")
    p.add_argument("--out", default=None, help="run directory; default RUNS/sft")
    p.add_argument("--freeze-vit", action="store_true", help="no LoRA on the vision tower (the released SFT trains it)")
    p.add_argument("--tokens-across-ranks", action="store_true", help="divide the summed NLL by the answer tokens of the global batch, not of this process's accumulation window (the released run)")
    add_training_options(p, lr=1e-4, lora_alpha=32, lora_dropout=0.05)
    p.set_defaults(func=cmd_sft)


def cmd_sft(args):
    import sft

    sft.run_sft(args)


def positive_int(text):
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


# ----------------------------------------------------------------------------------------------------------------
# eval: multiple-choice video QA by option likelihood, and preference accuracy on held-out pairs

MCQ_INSTRUCTION = "Answer with the text of the correct option."
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def add_eval(sub):
    p = sub.add_parser("eval", help="multiple-choice video QA and preference accuracy; JSON report and a table",
                       formatter_class=Defaults)
    p.add_argument("--mcq", nargs="+", default=[], metavar="FILE", help="multiple-choice JSONL: video, question, options, answer (the option's text, its letter A, B, ... or its 0-based index)[, category]")
    p.add_argument("--pairs", nargs="+", default=[], metavar="FILE", help="held-out preference pairs, ours (pairs_r{R}.jsonl) or ms-swift (.json/.jsonl)")
    p.add_argument("--model", default=None, help=f"base model or merged directory (directory, cached hub id or tiny / tiny-qwen2.5 / tiny-qwen3); None = the run's base model, else {RELEASED_MODEL}")
    p.add_argument("--model-seed", type=int, default=0, help="seed of a built-in tiny model's random weights (with --run: as recorded)")
    p.add_argument("--run", "--run-dir", default=None, help="a finished run directory: its adapter on its base model with the runs before it merged in (None = no adapter; --run-dir under torchrun)")
    p.add_argument("--out", default=None, help="JSON report (None = the first data file with .eval.json)")
    p.add_argument("--normalize", action="store_true", help="MCQ: pick the option with the highest mean log-prob per token, not the highest sum")
    p.add_argument("--beta", type=float, default=0.1, help="pairs: DPO temperature of the reward margin beta * (r+ - r-)")
    p.add_argument("--video-root", default=None, help="directory that relative video paths in the data start from")
    p.add_argument("--fps", type=float, default=1.0, help="video frames per second")
    p.add_argument("--max-frames", type=int, default=600, help="at most this many frames per video")
    p.add_argument("--total-pixels", type=int, default=9_000_000, help="pixel budget per video")
    p.add_argument("--max-length", type=int, default=16384, help="tokens per sequence; longer answers are cut")
    p.add_argument("--attn", default="sdpa", choices=ATTENTION, help="attention implementation")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args):
    import json

    import vlm

    files = args.mcq + args.pairs
    if not files:
        raise ValueError("nothing to evaluate: give --mcq FILE and/or --pairs FILE")
    for path in files:  # before the model loads
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such file")
    model, has_reference = load_eval_model(args)
    report = {"model": model.name, "run": args.run, "video": video_settings(args),
              "mcq": [evaluate_mcq(model, path, args) for path in args.mcq],
              "pairs": [evaluate_pairs(model, path, args, has_reference) for path in args.pairs]}
    out = eval_out(args)
    datafiles.write_atomic(out, json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(eval_table(report))
    print(f"report: {out}")
    if not any(part["evaluated"] for part in report["mcq"] + report["pairs"]):
        raise ValueError(f"nothing could be evaluated: every item was skipped (reasons in {out})")


def eval_out(args):
    return args.out or os.path.splitext((args.mcq + args.pairs)[0])[0] + ".eval.json"


def video_settings(args):
    return {"fps": args.fps, "max_frames": args.max_frames, "total_pixels": args.total_pixels}


def load_eval_model(args):
    """(model, has_reference). With --run: base model + the runs merged before it + the run's adapter, which
    switched off gives back the run's DPO reference. A base or merged model is its own reference (no rewards)."""
    import train
    import vlm

    if args.run is None:
        return vlm.load(args.model or RELEASED_MODEL, attn_implementation=args.attn, seed=args.model_seed), False
    return train.load_run(args.run, args.model, attn_implementation=args.attn), True


def skip(where, reason):
    """A skipped item for the report; the reason's text before ":" is what the table counts."""
    return {"where": where, "reason": reason}


def skip_fields(skipped):
    """The report's account of the skipped items: how many, how many per reason, and each one."""
    from collections import Counter

    by_reason = Counter(s["reason"].split(":")[0] for s in skipped).most_common()
    return {"skipped": len(skipped), "skipped_by_reason": dict(by_reason), "skipped_items": skipped}


# -- multiple choice ---------------------------------------------------------------------------------------------


def answer_index(answer, options):
    """The answer as an option index: the option's text, its letter (A, "b", "C.") or a 0-based integer."""
    if isinstance(answer, int) and not isinstance(answer, bool):
        return answer if 0 <= answer < len(options) else None
    if not isinstance(answer, str):
        return None
    if answer in options:
        return options.index(answer)
    letter = answer.strip().strip("().").upper()
    return LETTERS.index(letter) if len(letter) == 1 and letter in LETTERS[:len(options)] else None


def mcq_item(record, video_root):
    """The checked item, or raises ValueError with the reason it is skipped."""
    for field in ("video", "question"):
        if not isinstance(record.get(field), str):
            raise ValueError(f"missing field: {field} (a text)")
    options = record.get("options")
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise ValueError("missing field: options (a list of texts)")
    if not 2 <= len(options) <= len(LETTERS):
        raise ValueError(f"options: {len(options)} given (need 2 to {len(LETTERS)})")
    answer = answer_index(record.get("answer"), options)
    if answer is None:
        raise ValueError(f"answer not among options: {record.get('answer')!r}")
    video = os.path.join(video_root or "", record["video"])  # an absolute path stays as it is
    if not os.path.exists(video):
        raise ValueError(f"video missing: {video}")
    category = record.get("category")
    return {"video": video, "question": record["question"], "options": options, "answer": answer,
            "category": None if category is None else str(category)}


def read_mcq(path, video_root):
    """(items, skipped): a malformed line or item is skipped with its file:line and reason, not fatal."""
    import vlm

    items, bad = [], []
    for where, record in datafiles.numbered_jsonl(path, bad):
        try:
            items.append({"where": where, **mcq_item(record, video_root)})
        except ValueError as e:
            bad.append((where, str(e)))
    return items, [skip(where, reason) for where, reason in bad]


def mcq_prompt(question, options):
    listing = "\n".join(f"{LETTERS[i]}. {option}" for i, option in enumerate(options))
    return f"{question}\n{listing}\n{MCQ_INSTRUCTION}"


def mcq_scores(model, video, item, max_length):
    """Summed and mean log p(option | video, question + options) of every option; `video` is prepared once."""
    prompt = [video, mcq_prompt(item["question"], item["options"])]
    sums, counts = model.score_options(prompt, item["options"], max_length, item["where"])
    return sums.tolist(), (sums / counts).tolist()


def evaluate_mcq(model, path, args):
    from tqdm import tqdm

    import vlm

    items, skipped = read_mcq(path, args.video_root)
    results, prepared = [], {}
    for item in tqdm(items, desc=f"mcq {os.path.basename(path)}", unit="question"):
        if item["video"] not in prepared:  # benchmarks ask several questions in a row about one video
            try:
                frames = vlm.read_video(item["video"], fps=args.fps, max_frames=args.max_frames)
            except vlm.BAD_VIDEO as e:
                skipped.append(skip(item["where"], f"unreadable video: {e}"))
                continue
            prepared = {item["video"]: model.prepare(frames, total_pixels=args.total_pixels)}  # keep one video
        sums, means = mcq_scores(model, prepared[item["video"]], item, args.max_length)
        results.append({"where": item["where"], "category": item["category"], "answer": item["answer"],
                        "predicted_sum": argmax(sums), "predicted_mean": argmax(means), "logp_sum": sums,
                        "logp_mean": means})
    return mcq_report(path, results, skipped, rule="mean" if args.normalize else "sum")


def mcq_report(path, results, skipped, rule):
    """Accuracy by the chosen rule overall and per category; by both rules overall (the length-bias check)."""
    for result in results:
        result["correct"] = result[f"predicted_{rule}"] == result["answer"]
    categories = sorted({r["category"] for r in results if r["category"] is not None})
    by_category = {c: [r for r in results if r["category"] == c] for c in categories}
    return {"file": path, "rule": f"highest {rule} log-prob", "evaluated": len(results),
            "accuracy": accuracy(results, rule), "accuracy_sum": accuracy(results, "sum"),
            "accuracy_mean": accuracy(results, "mean"),
            "by_category": {c: {"items": len(rows), "accuracy": accuracy(rows, rule)} for c, rows in by_category.items()},
            **skip_fields(skipped), "items": results}


def argmax(values):
    return max(range(len(values)), key=values.__getitem__)


def accuracy(results, rule):
    if not results:
        return None
    return sum(r[f"predicted_{rule}"] == r["answer"] for r in results) / len(results)


# -- preference pairs --------------------------------------------------------------------------------------------


def evaluate_pairs(model, path, args, has_reference):
    """dpo.preference_accuracy on one pairs file; malformed records and missing or unreadable videos are skipped
    and counted, not fatal."""
    import dpo

    pairs, left_out = datafiles.read_pairs(path, args.video_root, skip_bad=True)
    skipped = [skip(where, reason) for where, reason in left_out]
    scored = dpo.preference_accuracy(model, pairs, video_settings(args), args.max_length, beta=args.beta,
                                     use_reference=has_reference, desc=f"pairs {os.path.basename(path)}")
    skipped += [skip(f"{path}: {video}", reason) for video, reason in scored["unreadable"]]
    return {"file": path, "evaluated": len(scored["items"]), "measure": scored["measure"], "beta": args.beta,
            "groups": scored["groups"], **skip_fields(skipped), "items": scored["items"]}


# -- the table ---------------------------------------------------------------------------------------------------


def eval_table(report):
    rows = [("data", "group", "n", "accuracy", "margin")]
    for part in report["mcq"]:
        name = os.path.basename(part["file"])
        rows.append((name, f"all ({part['rule']})", part["evaluated"], part["accuracy"], None))
        rows += [(name, c, s["items"], s["accuracy"], None) for c, s in part["by_category"].items()]
    for part in report["pairs"]:
        name = os.path.basename(part["file"])
        rows += [(name, group, s["pairs"], s.get("accuracy"), s.get("mean_margin")) for group, s in part["groups"].items()]
    for part in report["mcq"] + report["pairs"]:
        if part["skipped"]:
            reasons = ", ".join(f"{reason}: {n}" for reason, n in part["skipped_by_reason"].items())
            rows.append((os.path.basename(part["file"]), "skipped", part["skipped"], None, reasons))
    lines = aligned([[cell(value) for value in row] for row in rows])
    if report["pairs"]:
        lines.append(f"pairs measure: {report['pairs'][0]['measure']}")
    return "\n".join(lines)


def cell(value):
    if value is None:
        return ""
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def aligned(rows):
    """Columns padded to their widest cell; the last column is left ragged (it may hold a long note)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join([c.ljust(w) for c, w in zip(row, widths)] + [row[-1]]).rstrip() for row in rows]


# ----------------------------------------------------------------------------------------------------------------
# plot: training curves of one or several runs, end to end, as a PNG (train.py)


def add_plot(sub):
    p = sub.add_parser("plot", help="loss, rewards/accuracies and rewards/margins of runs against step, as a PNG",
                       formatter_class=Defaults)
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (or metrics.jsonl files), drawn end to end in this order")
    p.add_argument("--out", default="runs/curves.png", help="PNG file")
    p.add_argument("--width", type=positive_int, default=960, help="image width in pixels")
    p.add_argument("--panel-height", type=positive_int, default=220, help="height of each of the three panels in pixels")
    p.set_defaults(func=cmd_plot)


def cmd_plot(args):
    import views

    curves = views.read_curves(args.runs)
    image = views.plot_curves(curves, args.width, args.panel_height)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    root, extension = os.path.splitext(args.out)
    partial = f"{root}.partial{extension or '.png'}"  # written whole, then renamed: a reader never sees half an image
    image.save(partial)
    os.replace(partial, args.out)
    steps = ", ".join(f"{name} {len(records)}" for name, records in curves)
    print(f"{args.out}: {len(curves)} run(s), steps: {steps}")


# ----------------------------------------------------------------------------------------------------------------
# demo: the whole pipeline on a built-in tiny model and synthetic videos, in about 20 s on 2 CPU cores

DEMO_COLOURS = {"red": (200, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 200), "yellow": (220, 200, 40),
                "purple": (130, 50, 160), "orange": (235, 130, 30), "white": (225, 225, 225), "grey": (110, 110, 110)}


def add_demo(sub):
    p = sub.add_parser("demo", help="the whole pipeline on the tiny model and synthetic videos (about 20 s on 2 CPU cores)",
                       formatter_class=Defaults)
    p.add_argument("--out", default="demo", help="work directory; a re-run skips the stages already done")
    p.add_argument("--videos", type=positive_int, default=6, help="synthetic videos with cuts to make (one more, a single shot, is there to be rejected)")
    p.add_argument("--steps", type=positive_int, default=3, help="optimizer steps per curriculum stage and for SFT")
    p.add_argument("--model", default="tiny", choices=["tiny", "tiny-qwen2.5", "tiny-qwen3"], help="built-in tiny model")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model's matrices are so small that a second thread only adds waiting
    caller = os.getcwd()
    os.makedirs(args.out, exist_ok=True)
    os.chdir(args.out)  # every path the demo records is relative to its own directory: it can be moved as a whole
    try:
        run_demo(args)
    finally:
        os.chdir(caller)
        torch.set_num_threads(threads)


def run_demo(args):
    """The stages, run inside the demo's directory; messages show paths as seen from where the demo was started."""
    import train

    data, runs = "data", "runs"
    model = ["--model", args.model]
    video = ["--fps", "2", "--max-frames", "8", "--total-pixels", str(8 * 56 * 56)]  # 4 tokens per 2 frames
    demo_data(args, data, model)
    demo_stage(6, f"curriculum: DPO r = 16, 8, 4, 2, {args.steps} steps each", f"{runs}/dpo_r*")
    training = [*model, *video, "--runs", runs, "--max-steps", str(args.steps), "--global-batch", "2",
                "--workers", "0", "--lr", "1e-3", "--save-every", "1000"]
    run_command(["curriculum", "--data-dir", data, *training])
    demo_stage(7, "sft: instruction tuning on top of dpo_r2", f"{runs}/sft")
    if train.finished(f"{runs}/sft"):
        print(f"{runs}/sft is finished, skipped")
    else:
        resume = ["--resume"] if os.path.isdir(f"{runs}/sft") else []
        run_command(["sft", "--data", f"{data}/sft.jsonl", "--init", f"{runs}/dpo_r2", *training, *resume])
    demo_stage(8, "eval: colour-order questions (base, dpo_r2, sft) and what DPO learned", "eval_*.json")
    pairs = ["--pairs", *(f"{data}/pairs_r{r}.jsonl" for r in (16, 8, 4, 2))]  # a demo has no held-out pairs
    for name, spec in (("base", model), ("dpo_r2", ["--run", f"{runs}/dpo_r2", *pairs]),
                       ("sft", ["--run", f"{runs}/sft"])):
        report = f"eval_{name}.json"
        if os.path.exists(report):
            print(f"{os.path.join(args.out, report)} exists, skipped")
        else:
            run_command(["eval", *spec, "--mcq", f"{data}/mcq.jsonl", "--out", report, *video])
    demo_stage(9, "plot: training curves of the stages end to end", f"{runs}/curves.png")
    run_command(["plot", *(f"{runs}/{name}" for name in ("dpo_r16", "dpo_r8", "dpo_r4", "dpo_r2", "sft")),
                 "--out", f"{runs}/curves.png"])
    shown = functools.partial(os.path.join, args.out)
    print(f"\ndone. Open {shown(data, 'pairs_r16.html')} and {shown(runs, 'curves.png')}; the reports are "
          f"{shown('eval_*.json')}")


def demo_data(args, data, model):
    """Stages 1-5: videos, selection, captions, pairs for every r, their HTML pages."""
    import vlm

    videos = "videos"
    demo_stage(1, "synthetic videos with cuts, questions about them", videos)
    write_demo_data(videos, data, args.videos)
    demo_stage(2, "select: shots, clips, keyframes", f"{data}/videos.jsonl")
    run_command(["select", videos, "--out", data])
    keyframes = ["--max-pixels", str(56 * 56), "--min-pixels", str(28 * 28), "--batch-size", "16"]
    demo_stage(3, "captions: every clip captioned by the model", f"{data}/captions.jsonl")
    run_command(["captions", "--videos", f"{data}/videos.jsonl", *model, *keyframes, "--max-new-tokens", "16"])
    demo_stage(4, "pairs: clean vs perturbed descriptions, filtered, for every r", f"{data}/pairs_r*.jsonl")
    run_command(["pairs", "--captions", f"{data}/captions.jsonl", *model, *keyframes, "--max-new-tokens", "48"])
    for r in (16, 8, 4, 2):
        if not datafiles.read_jsonl(f"{data}/pairs_r{r}.jsonl"):
            raise ValueError(f"{data}/pairs_r{r}.jsonl: the filters kept no pair; run the demo with more --videos")
    demo_stage(5, "view: an HTML page per pairs file", f"{data}/pairs_r*.html")
    for r in (16, 8, 4, 2):
        run_command(["view", f"{data}/pairs_r{r}.jsonl", "--thumb-height", "40"])


def demo_stage(number, what, where):
    print(f"\n== {number}/9 {what} -> {where} (in the demo directory)", flush=True)


def run_command(argv):
    """Run another subcommand in this process, its options parsed (and defaulted) as on the command line."""
    args = build_parser().parse_args(argv)
    args.func(args)


def demo_colours(seed):
    """The five colours of video `seed`, all different so every cut changes the picture."""
    import random

    return random.Random(seed).sample(sorted(DEMO_COLOURS), 5)


def write_demo_video(path, colours, seed, frames_per_shot=12, fps=8, height=48, width=64):
    """One shot per colour: a camera drifting over a textured scene of that colour, hard cuts between shots."""
    import av
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    partial = path + ".part"  # renamed when complete: an interrupted demo never reuses half a video
    with av.open(partial, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for colour in colours:
            blotches = Image.fromarray(rng.normal(0, 25, (3, 4)).astype(np.float32), mode="F")
            shading = np.asarray(blotches.resize((2 * width, 2 * height), Image.BICUBIC))[..., None]
            grain = rng.normal(0, 10, (2 * height, 2 * width, 3))
            scene = np.clip(np.array(DEMO_COLOURS[colour]) + shading + grain, 0, 255).astype(np.uint8)
            dy, dx = rng.integers(1, 3, size=2)  # the camera's drift in pixels per frame
            for k in range(frames_per_shot):
                frame = np.ascontiguousarray(scene[k * dy:k * dy + height, k * dx:k * dx + width])
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    os.replace(partial, path)


def write_demo_data(videos_dir, data_dir, count):
    """Videos demo_{k}.mp4 with cuts (select keeps them) and one_shot.mp4 (select rejects it); what we know about
    them becomes data: mcq.jsonl (which colour comes first, last, right after another) and sft.jsonl (the colours
    in order). Videos already there are kept."""
    import vlm

    os.makedirs(videos_dir, exist_ok=True)
    questions, conversations = [], []
    for k in range(count):
        path, colours = os.path.join(videos_dir, f"demo_{k}.mp4"), demo_colours(k)
        if not os.path.exists(path):
            write_demo_video(path, colours, seed=k)
        questions += demo_questions(path, colours, k)
        conversations.append({"video": path, "conversations": [
            {"from": "human", "value": "<video>\nWhich colours does the video show, in order?"},
            {"from": "gpt", "value": ", then ".join(colours).capitalize() + "."}]})
    one_shot = os.path.join(videos_dir, "one_shot.mp4")
    if not os.path.exists(one_shot):
        write_demo_video(one_shot, ["blue"], seed=count, frames_per_shot=40)
    datafiles.write_jsonl(os.path.join(data_dir, "mcq.jsonl"), questions)
    datafiles.write_jsonl(os.path.join(data_dir, "sft.jsonl"), conversations)
    print(f"{videos_dir}: {count} videos of 5 shots and one single-shot video\n"
          f"{data_dir}/mcq.jsonl: {len(questions)} questions, {data_dir}/sft.jsonl: {len(conversations)} conversations")


def demo_questions(path, colours, seed):
    import random

    rng = random.Random(seed)
    asks = [("first", "Which colour fills the screen first?", colours[0]),
            ("last", "Which colour fills the screen last?", colours[-1]),
            ("after", f"Which colour comes right after {colours[1]}?", colours[2])]
    questions = []
    for category, question, answer in asks:
        options = rng.sample([c for c in colours if c != answer], 3) + [answer]  # distractors from the same video
        rng.shuffle(options)
        questions.append({"video": path, "question": question, "options": options, "answer": answer,
                          "category": category})
    return questions


# ----------------------------------------------------------------------------------------------------------------


def build_parser():
    parser = argparse.ArgumentParser(prog="temple.py", description=__doc__.split("\n\n")[1],
                                     formatter_class=Defaults)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_describe(sub)
    add_shots(sub)
    add_select(sub)
    add_captions(sub)
    add_pairs(sub)
    add_view(sub)
    add_export(sub)
    add_dpo(sub)
    add_curriculum(sub)
    add_merge(sub)
    add_sft(sub)
    add_eval(sub)
    add_plot(sub)
    add_demo(sub)
    return parser


# What a Ctrl-C leaves behind, per command, and how to go on (training says which checkpoint: train.Interrupted)
KEPT_ON_INTERRUPT = {
    "select": "every video finished so far is in videos.jsonl", "captions": "every caption finished so far is kept",
    "pairs": "every description finished so far is kept", "curriculum": "finished stages and checkpoints are kept",
}
RESUMED_BY_RERUN = ("select", "captions", "pairs", "curriculum")  # these skip what is done on their own
RESUMED_WITH_FLAG = ("dpo", "sft")


def interrupted_line(command, argv, error):
    """One line for Ctrl-C: what was interrupted, what is kept, the command that goes on from there."""
    kept = getattr(error, "kept", None) or KEPT_ON_INTERRUPT.get(command, "nothing is lost but the unfinished work")
    line = f"temple.py {command}: interrupted; {kept[0].lower()}{kept[1:]}"
    if command not in RESUMED_BY_RERUN + RESUMED_WITH_FLAG:
        return line
    flag = ["--resume"] if command in RESUMED_WITH_FLAG and "--resume" not in argv else []
    if "RANK" in os.environ:  # under torchrun: its own options are not ours to repeat
        return line + (". Resume: the same torchrun command" + (" with --resume" if flag else ""))
    return line + ". Resume: " + shlex.join(["python", "temple.py", *argv, *flag])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (OSError, ValueError) as e:  # expected: bad files, bad names, bad data
        if os.environ.get("TEMPLE_DEBUG"):
            raise
        print(f"temple.py {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # Ctrl-C: one line, from rank 0 only, not a traceback per process
        if os.environ.get("TEMPLE_DEBUG"):
            raise
        if os.environ.get("RANK", "0") == "0":
            print(interrupted_line(args.command, argv, e), file=sys.stderr)
        return 130  # the shell's code for "stopped by SIGINT"


if __name__ == "__main__":
    sys.exit(main())
