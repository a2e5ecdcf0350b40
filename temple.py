"""temple.py - the command line of the TEMPLE reference implementation: options and wiring, nothing else.

TEMPLE (arXiv 2503.16929) teaches a video LLM temporal understanding with DPO on preference pairs the model makes
itself: its description of a clean video is "chosen", its description of a temporally perturbed video (clips
dropped, shuffled or reversed at difficulty r) is "rejected". Training runs r = 16 -> 8 -> 4 -> 2 before SFT.
docs/method.md tells the method; docs/commands.md gives every command.

Every subcommand is one arrow of the data flow, and each calls one module. The modules that load torch and
transformers (about 5 s) are imported inside the commands that need a model, so `shots`, `select`, `view`, `export`
and `plot` start in a moment.

    python temple.py --help
    python temple.py describe VIDEO --model tiny

Expected failures (a missing file, a bad model name, malformed data) print one line and exit 1, Ctrl-C one line and
130; set TEMPLE_DEBUG=1 to see the traceback instead.
"""

import argparse
import json
import os
import sys

import datafiles
import jobs
import perturb
import prompts as prompt_texts
import shots
import views

RELEASED_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"  # the model of the released run (docs/method.md, "Training")
ATTENTION = ("sdpa", "eager", "flash_attention_2")  # transformers' names; flash_attention_2 needs flash-attn


class Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Show every default in --help."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        """A mistake on the command line is one line naming it, not the whole usage."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def ranged(kind, low=None, high=None, above=None, below=None):
    """An argparse type: a number of `kind` (int or float) >= low / > above and <= high / < below. Every option has its
    range, checked before any work: --epochs 0 or --beta 0 is a mistake, not a run that trains nothing."""
    bounds = [f">= {low}" if low is not None else "", f"> {above}" if above is not None else "",
              f"<= {high}" if high is not None else "", f"< {below}" if below is not None else ""]
    wanted = f"{'an integer' if kind is int else 'a number'} {' and '.join(b for b in bounds if b)}".strip()

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
        if (value != value or (low is not None and value < low) or (above is not None and value <= above) or
                (high is not None and value > high) or (below is not None and value >= below)):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value
    return parse


positive_int = ranged(int, low=1)
count = ranged(int, low=0)
positive = ranged(float, above=0)
non_negative = ranged(float, low=0)
share = ranged(float, low=0, below=1)  # a part of a whole: warmup, dropout


# ----------------------------------------------------------------------------------------------------------------
# describe: one video in, the model's description out


def add_describe(sub):
    p = sub.add_parser("describe", help="describe one video with a video LLM", formatter_class=Defaults)
    p.add_argument("video", help="path of a video file")
    p.add_argument("--model", default="tiny", help="model directory, hub id, or built-in tiny / tiny-qwen2.5 / tiny-qwen3")
    p.add_argument("--prompt", default="Describe the video in detail.", help="the instruction")
    p.add_argument("--fps", type=positive, default=1.0, help="frames sampled per second of video")
    p.add_argument("--max-frames", type=ranged(int, low=2), default=600, help="at most this many frames")
    p.add_argument("--total-pixels", type=positive_int, default=9_000_000, help="pixel budget for all frames together")
    p.add_argument("--max-new-tokens", type=positive_int, default=256, help="length limit of the answer")
    p.add_argument("--temperature", type=non_negative, default=0.0, help="0 = greedy")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.set_defaults(func=cmd_describe)


def cmd_describe(args):
    import preprocess
    import vlm

    model = vlm.load(args.model)
    video = preprocess.read_video(args.video, fps=args.fps, max_frames=args.max_frames)
    sample = model.encode([video, args.prompt], total_pixels=args.total_pixels)
    [text] = model.generate([sample], max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                            seed=args.seed)
    print(text)


# ----------------------------------------------------------------------------------------------------------------
# shots / select: shot detection and the choice of temporally rich videos (shots.py; docs/method.md)


def add_detector_options(p):
    p.add_argument("--colour-threshold", type=ranged(float, above=0, high=1), default=0.2, help="a cut: the colour histograms of two frames differ by this much (0..1) ...")
    p.add_argument("--layout-threshold", type=ranged(float, above=0, high=2), default=0.3, help="... or their layouts (coarse grey grids, 0..2) by this much ...")
    p.add_argument("--ratio", type=positive, default=3.0, help="... and by this many times the local level of that change")
    p.add_argument("--window", type=positive_int, default=12, help="frames on each side for the local level")
    p.add_argument("--flash-frames", type=count, default=4, help="a jump whose old picture returns within this many frames is a flash")
    p.add_argument("--min-shot-frames", type=positive_int, default=7, help="no two cuts closer than this")
    p.add_argument("--fade-frames", type=count, default=16, help="window each side for dissolves (0 = hard cuts only)")
    p.add_argument("--fade-threshold", type=positive, default=1.5, help="a dissolve: the windows' mean pictures differ by this many times what a cut needs")
    p.add_argument("--min-grey-range", type=ranged(int, low=0, high=255), default=10, help="a frame whose grey levels span less than this is blank (black, white, a uniform fade); select drops shots of blank frames")


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
    p.add_argument("--min-shot-seconds", type=non_negative, default=0.2, help="cleaning: drop shots shorter than this")
    p.add_argument("--min-shot-len", type=count, default=8, help="cleaning: drop shots of fewer frames")
    p.add_argument("--min-shots", type=positive_int, default=4, help="keep videos with at least this many shots")
    p.add_argument("--max-shots", type=positive_int, default=32, help="... and at most this many")
    p.add_argument("--max-shot-seconds", type=positive, default=16.0, help="... and no shot longer than this")
    p.add_argument("--group-threshold", type=ranged(float, low=0, high=1), default=0.8, help="shots more similar than this (1 - histogram distance of middle frames) join one group")
    p.add_argument("--min-clips", type=positive_int, default=4, help="keep videos with at least this many clips (runs of one group)")
    p.add_argument("--max-runs", type=positive_int, default=3, help="a group may come back in at most min(this, clips // 3) runs")
    p.set_defaults(func=cmd_select)


def cmd_select(args):
    if args.min_shots > args.max_shots:
        raise ValueError(f"--min-shots {args.min_shots} is more than --max-shots {args.max_shots}")
    options = dict(detector_options(args), min_shot_seconds=args.min_shot_seconds, min_shot_len=args.min_shot_len,
                   min_shots=args.min_shots, max_shots=args.max_shots, max_shot_seconds=args.max_shot_seconds,
                   group_threshold=args.group_threshold, min_clips=args.min_clips, max_runs=args.max_runs)
    if os.path.isfile(args.out):
        raise ValueError(f"--out {args.out}: is a file; --out is the directory videos.jsonl goes in (e.g. --out "
                         f"{os.path.dirname(args.out) or '.'})")
    datafiles.check_output_dir(args.out, "--out")
    out = os.path.join(args.out, "videos.jsonl")
    records, given, before = jobs.select_videos(args.inputs, out, args.workers, args.retry_errors, **options)
    print(f"{out}: {jobs.selection_summary(given, ' given')}")
    if before:
        print(f"  {before} of them were recorded before, not selected again (--retry-errors runs the errors again)")
    if len(records) > len(given):
        print(f"{out} holds {len(records)} videos in all")


# ----------------------------------------------------------------------------------------------------------------
# captions / pairs / view / export: the self-generated preference pairs (captions.py, caption_jobs.py)


def add_generation_options(p, max_new_tokens):
    p.add_argument("--model", default=RELEASED_MODEL, help="directory, cached hub id or tiny / tiny-qwen2.5 / tiny-qwen3 (the same model makes captions and pairs)")
    p.add_argument("--prompts", default=None, metavar="FILE", help="the prompts as JSON, as `temple.py prompts` prints them (None = ours)")
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
    import caption_jobs
    import distributed
    import vlm

    videos = datafiles.kept_videos(args.videos)  # an empty selection fails here, before the model loads
    prompts = prompt_texts.read(args.prompts)
    world = distributed.from_environment()
    out = args.out or os.path.join(os.path.dirname(args.videos), "captions.jsonl")
    settings = caption_jobs.caption_settings(args.model, args.max_new_tokens, keyframe_pixel_options(args), prompts)
    jobs.check_settings(out, settings, "--out")  # before the model loads
    model = vlm.load(args.model, device=world.device)
    records = caption_jobs.caption_videos(model, videos, out, batch_size=args.batch_size,
                                          max_new_tokens=args.max_new_tokens, rank=world.rank, world_size=world.size,
                                          prompts=prompts, **keyframe_pixel_options(args))
    if records is not None:  # rank 0; nothing captioned at all is an error (captions.jsonl holds the reasons)
        print(caption_jobs.caption_summary(args.videos, out, records))


def add_pairs(sub):
    p = sub.add_parser("pairs", help="describe clean and perturbed clip lists; write the filtered pairs per r",
                       formatter_class=Defaults)
    p.add_argument("--captions", default="data/captions.jsonl", help="captions.jsonl (the frames route also takes videos.jsonl)")
    p.add_argument("--out-dir", default=None, help="where descriptions.jsonl and pairs_r{R}.jsonl go (None = beside --captions)")
    p.add_argument("-r", "--r", type=positive_int, nargs="+", default=[16, 8, 4, 2], help="difficulties (larger = stronger perturbation); write -r under torchrun")
    p.add_argument("--kinds", nargs="+", default=list(perturb.KINDS), choices=perturb.ALL_KINDS, help="perturbations: the released drop / shuffle / reverse, and swap / repeat / speed (perturb.py)")
    p.add_argument("--perturb-input", default="captions", choices=["captions", "frames"], help="perturb the caption list (released code) or the keyframe sequence (paper wording)")
    add_generation_options(p, max_new_tokens=8192)
    p.add_argument("--total-pixels", type=positive_int, default=9_000_000, help="frames route: pixel budget for all keyframes")
    p.add_argument("--temperature", type=non_negative, default=0.7, help="sampling temperature (0 = greedy)")
    p.add_argument("--top-k", type=count, default=None, help="sample from the k likeliest tokens (0 = all); None = the model's generation_config.json, as the released run (Qwen2/2.5-VL: 1, greedy in effect), else 0")
    p.add_argument("--top-p", type=ranged(float, above=0, high=1), default=None, help="nucleus sampling mass; None = the model's generation_config.json (Qwen2/2.5-VL: 0.001), else 1.0")
    p.add_argument("--repetition-penalty", type=positive, default=1.05, help="penalty on repeated tokens")
    p.add_argument("--seed", type=int, default=0, help="seeds perturbations, sampling and instructions (with the video path)")
    p.add_argument("--max-length-ratio", type=ranged(float, low=1), default=1.5, help="pairs of the kinds other than drop and speed whose answers differ more in length are dropped")
    p.set_defaults(func=cmd_pairs)


def cmd_pairs(args):
    import caption_jobs
    import captions
    import distributed
    import vlm

    route = args.perturb_input
    out_dir = args.out_dir or os.path.dirname(args.captions) or "."
    prompts = prompt_texts.read(args.prompts)
    chosen = dict(kinds=args.kinds, seed=args.seed, max_length_ratio=args.max_length_ratio,
                  instructions=prompts["instructions"])
    caption_jobs.check_pairs_settings(out_dir, args.r, route, **chosen)
    videos = datafiles.pair_inputs(args.captions, need_captions=route == "captions")
    world = distributed.from_environment()
    pixels = {**keyframe_pixel_options(args), "total_pixels": args.total_pixels} if route == "frames" else {}
    top_k, top_p, origin = captions.sample_filters(args.model, args.top_k, args.top_p)
    settings = caption_jobs.description_settings(args.model, route, args.seed, args.temperature, top_k, top_p,
                                                 args.repetition_penalty, args.max_new_tokens, pixels, prompts)
    jobs.check_settings(caption_jobs.descriptions_path(out_dir, route), settings, "--out-dir")  # before loading
    if origin and world.main:
        print(f"descriptions: temperature {args.temperature}, top_k {top_k}, top_p {top_p} ({origin}, as the "
              f"released run; --top-k 0 --top-p 1.0 samples from every token)", file=sys.stderr)
    model = vlm.load(args.model, device=world.device)
    descriptions = caption_jobs.describe_videos(
        model, videos, caption_jobs.descriptions_path(out_dir, route), args.r, args.kinds, route,
        batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
        top_k=top_k, top_p=top_p, repetition_penalty=args.repetition_penalty, seed=args.seed, rank=world.rank,
        world_size=world.size, prompts=prompts, **pixels)
    if descriptions is None:  # rank > 0: rank 0 writes the pairs
        return
    for path, stats in caption_jobs.write_pairs(descriptions, out_dir, args.r, route, **chosen):
        print(caption_jobs.summary_line(path, stats))


def add_prompts(sub):
    p = sub.add_parser("prompts", help="print every prompt captions and pairs give the model, as JSON (edit it, pass it back with --prompts)",
                       formatter_class=Defaults)
    p.set_defaults(func=cmd_prompts)


def cmd_prompts(args):
    print(json.dumps(prompt_texts.PROMPTS, indent=2, ensure_ascii=False))


def add_view(sub):
    p = sub.add_parser("view", help="one static HTML page to look at pairs before training", formatter_class=Defaults)
    p.add_argument("pairs", help="a pairs_r{R}.jsonl file")
    p.add_argument("--out", default=None, help="HTML file (None = the pairs file with .html)")
    p.add_argument("--captions", default=None, help="captions.jsonl for thumbnails and clip captions (None = beside the pairs)")
    p.add_argument("--limit", type=count, default=30, help="show a random sample of this many pairs (0 = all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample")
    p.add_argument("--thumb-height", type=positive_int, default=64, help="keyframe thumbnail height in pixels")
    p.set_defaults(func=cmd_view)


def cmd_view(args):
    out = args.out or os.path.splitext(args.pairs)[0] + ".html"
    rows = views.pair_page(args.pairs, out, args.captions, args.limit, args.seed, args.thumb_height,
                           warn=lambda line: print(f"temple.py view: warning: {line}", file=sys.stderr))
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


def add_video_options(p):
    """How a model sees a video in training and eval: the released run's settings (docs/method.md, "Training")."""
    p.add_argument("--video-root", default=None, help="directory that relative video paths in the data start from")
    p.add_argument("--fps", type=positive, default=1.0, help="video frames per second")
    p.add_argument("--max-frames", type=ranged(int, low=2), default=600, help="at most this many frames per video")
    p.add_argument("--total-pixels", type=positive_int, default=9_000_000, help="pixel budget per video")
    p.add_argument("--max-length", type=positive_int, default=16384, help="tokens per sequence")
    p.add_argument("--truncation", default="delete", choices=["delete", "right"], help="an example over --max-length: delete = left out (ms-swift's default, the released run), right = its answer's end cut")
    p.add_argument("--attn", default="sdpa", choices=ATTENTION, help="attention implementation")


def add_training_options(p, lr, lora_alpha, lora_dropout):
    """The options dpo, curriculum and sft share; defaults = the released run (docs/method.md, "Training")."""
    p.add_argument("--model", default=RELEASED_MODEL, help="base model: directory, cached hub id or tiny / tiny-qwen2.5 / tiny-qwen3")
    p.add_argument("--model-seed", type=int, default=0, help="seed of a built-in tiny model's random weights")
    p.add_argument("--runs", default="runs", help="directory holding the run directories")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.add_argument("--lora-r", type=positive_int, default=32, help="LoRA rank")
    p.add_argument("--lora-alpha", type=positive, default=lora_alpha, help="LoRA alpha (scaling alpha / r)")
    p.add_argument("--lora-dropout", type=share, default=lora_dropout, help="dropout on the LoRA input" + (
        " (0: ms-swift and TRL switch dropout off in DPO, disable_dropout)" if lora_dropout == 0 else ""))
    p.add_argument("--lr", type=positive, default=lr, help="peak learning rate (AdamW)")
    p.add_argument("--warmup-ratio", type=share, default=0.05, help="share of steps with linear warmup, then cosine")
    p.add_argument("--epochs", type=positive, default=1.0, help="passes over the data")
    p.add_argument("--global-batch", type=positive_int, default=16, help="examples per optimizer step over all processes")
    p.add_argument("--micro-batch", type=positive_int, default=1, help="examples per forward on one process")
    p.add_argument("--weight-decay", type=non_negative, default=0.1, help="AdamW weight decay")
    p.add_argument("--max-grad-norm", type=positive, default=1.0, help="gradient clipping")
    p.add_argument("--save-every", type=positive_int, default=500, help="optimizer steps between checkpoints")
    p.add_argument("--max-steps", type=count, default=0, help="train this many optimizer steps, the data repeated as needed (HF's meaning: it overrides --epochs; 0 = as many as --epochs give)")
    p.add_argument("--seed", type=int, default=42, help="seed of the data order, dropout and sampling")
    p.add_argument("--grad-ckpt", action=argparse.BooleanOptionalAction, default=True,
                   help="non-reentrant activation checkpointing: recompute activations in backward (a real pair needs it)")
    p.add_argument("--workers", type=count, default=2, help="data-loading processes per GPU (video decoding)")
    add_video_options(p)


def add_dpo_options(p):
    add_training_options(p, lr=5e-6, lora_alpha=64, lora_dropout=0.0)
    p.add_argument("--data-dir", default="data", help="where pairs_r{R}.jsonl are")
    p.add_argument("--beta", type=positive, default=0.1, help="DPO temperature")
    p.add_argument("--loss-type", default="sigmoid", choices=["sigmoid", "ipo", "hinge"], help="DPO loss")
    p.add_argument("--nll-weight", type=non_negative, default=1.0, help="weight of the NLL of the chosen answer")
    p.add_argument("--precompute-ref", action="store_true", help="score the reference once per stage and cache it")
    p.add_argument("--eval-pairs", default=None, metavar="FILE", help="held-out pairs whose preference accuracy is measured during training")
    p.add_argument("--heldout", type=count, default=0, metavar="N", help="set N videos aside for that, every pair of theirs, chosen from --seed and their paths; a later stage holds out the videos its start held out")
    p.add_argument("--eval-every", type=positive_int, default=50, metavar="STEPS", help="optimizer steps between held-out evaluations (and one at the end)")
    p.add_argument("--adaptive", action="store_true", help="end a stage when held-out accuracy stops improving or reaches the ceiling (--epochs, or --max-steps, is then the cap)")
    p.add_argument("--plateau-delta", type=non_negative, default=0.01, help="adaptive: a gain of at most this much is no gain")
    p.add_argument("--plateau-evals", type=positive_int, default=3, help="adaptive: evaluations without gain before a stage ends")
    p.add_argument("--accuracy-ceiling", type=ranged(float, above=0, high=1), default=0.98, help="adaptive: a stage ends once held-out accuracy reaches this")


def add_dpo(sub):
    p = sub.add_parser("dpo", help="train one DPO curriculum stage", formatter_class=Defaults)
    p.add_argument("-r", "--r", type=positive_int, required=True, help="difficulty of this stage (16, 8, 4, 2); write -r under torchrun")
    p.add_argument("--data", default=None, help="pairs file, ours (.jsonl) or ms-swift (.json/.jsonl); default DATA_DIR/pairs_r{R}.jsonl")
    p.add_argument("--out", default=None, help="run directory; default RUNS/dpo_r{R}")
    p.add_argument("--init", default=None, help="start from this finished run (merged), or 'base'; default RUNS/dpo_r{2R} for R < 16")
    add_dpo_options(p)
    p.set_defaults(func=cmd_dpo)


def cmd_dpo(args):
    import recipes

    recipes.run_stage(args)


def add_curriculum(sub):
    p = sub.add_parser("curriculum", help="run the DPO stages r = 16, 8, 4, 2 in order, skipping finished ones",
                       formatter_class=Defaults)
    p.add_argument("--stages", type=positive_int, nargs="+", default=[16, 8, 4, 2], help="the r of each stage, in order")
    p.add_argument("--init", default=None, help="the finished run the first stage starts from, or 'base'; default RUNS/dpo_r{2R} when the first stage's R is under 16, else the base model")
    add_dpo_options(p)
    p.set_defaults(func=cmd_curriculum)


def cmd_curriculum(args):
    import recipes

    recipes.run_curriculum(args)


def add_merge(sub):
    p = sub.add_parser("merge", help="fold a run's adapters into its base model and save a transformers model",
                       formatter_class=Defaults)
    p.add_argument("run", help="a finished run directory")
    p.add_argument("--out", required=True, help="output directory (weights, config, tokenizer)")
    p.add_argument("--model", default=None, help="base model, if it moved since training (default: as recorded)")
    p.set_defaults(func=cmd_merge)


def cmd_merge(args):
    import runs

    print(f"merged model written to {runs.merge_run(args.run, args.out, args.model)}")


# ----------------------------------------------------------------------------------------------------------------
# sft: instruction tuning after the DPO curriculum (sft.py)


def add_sft(sub):
    p = sub.add_parser("sft", help="instruction tuning (after DPO: --init runs/dpo_r2)", formatter_class=Defaults)
    p.add_argument("--data", required=True, help="LLaVA-Video-178K-style or ms-swift conversations (.json or .jsonl)")
    p.add_argument("--init", default=None, help="start from this finished run, merged (e.g. runs/dpo_r2); default: the base")
    p.add_argument("--out", default=None, help="run directory; default RUNS/sft")
    p.add_argument("--freeze-vit", action="store_true", help="no LoRA on the vision tower (the released SFT trains it)")
    p.add_argument("--tokens-across-ranks", action="store_true", help="divide the summed NLL by the answer tokens of the global batch (exact, independent of the GPU count); default: by this process's accumulation window, as the released run did")
    add_training_options(p, lr=1e-4, lora_alpha=32, lora_dropout=0.05)
    p.set_defaults(func=cmd_sft)


def cmd_sft(args):
    import recipes

    recipes.run_sft(args)


# ----------------------------------------------------------------------------------------------------------------
# eval: multiple-choice video QA, preference accuracy, Vinoground: all by likelihood (evaluate.py)


def add_eval(sub):
    p = sub.add_parser("eval", help="multiple-choice video QA, preference accuracy, Vinoground scores; JSON report and a table",
                       formatter_class=Defaults)
    p.add_argument("--mcq", nargs="+", default=[], metavar="FILE", help="multiple-choice JSONL: video, question, options, answer (the option's text, its letter A, B, ... or its 0-based index)[, category]")
    p.add_argument("--pairs", nargs="+", default=[], metavar="FILE", help="held-out preference pairs, ours (pairs_r{R}.jsonl) or ms-swift (.json/.jsonl)")
    p.add_argument("--vinoground", nargs="+", default=[], metavar="FILE", help="Vinoground items: the released vinoground.csv (clips in vinoground_videos/ beside it, or under --video-root) or JSONL: pos_video, pos_caption, neg_video, neg_caption[, category]")
    p.add_argument("--model", default=None, help=f"base model or merged directory (directory, cached hub id or tiny / tiny-qwen2.5 / tiny-qwen3); None = the run's base model, else {RELEASED_MODEL}")
    p.add_argument("--model-seed", type=int, default=0, help="seed of a built-in tiny model's random weights (with --run: as recorded)")
    p.add_argument("--run", "--run-dir", default=None, help="a finished run directory: its adapter on its base model with the runs before it merged in (None = no adapter; --run-dir under torchrun)")
    p.add_argument("--out", default=None, help="JSON report (None = the first data file with .eval.json)")
    p.add_argument("--normalize", action="store_true", help="MCQ and Vinoground: compare mean log-probs per token, not sums")
    p.add_argument("--beta", type=positive, default=0.1, help="pairs: DPO temperature of the reward margin beta * (r+ - r-)")
    add_video_options(p)
    p.set_defaults(func=cmd_eval)


def cmd_eval(args):
    import evaluate

    args.model = args.model or (None if args.run else RELEASED_MODEL)  # a run knows its base model
    evaluate.run(args)


# ----------------------------------------------------------------------------------------------------------------
# plot: training curves of one or several runs, end to end, as a PNG (train.py)


def add_plot(sub):
    p = sub.add_parser("plot", help="loss, rewards/accuracies and rewards/margins of runs against step, as a PNG",
                       formatter_class=Defaults)
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (or metrics.jsonl files), drawn end to end in this order")
    p.add_argument("--out", default="runs/curves.png", help="PNG file")
    p.add_argument("--width", type=ranged(int, low=200), default=960, help="image width in pixels")
    p.add_argument("--panel-height", type=ranged(int, low=80), default=220, help="height of each of the three panels in pixels")
    p.set_defaults(func=cmd_plot)


def cmd_plot(args):
    image_format = views.image_format(args.out, "--out")
    curves = views.read_curves(args.runs)
    image = views.plot_curves(curves, args.width, args.panel_height)
    datafiles.write_atomic(args.out, views.image_bytes(image, image_format))
    steps = ", ".join(f"{name} {len(records)}" for name, records, _ in curves)
    print(f"{args.out}: {len(curves)} run(s), steps: {steps}")


# ----------------------------------------------------------------------------------------------------------------
# demo: the whole pipeline on a built-in tiny model and synthetic videos, in about 20 s on 2 CPU cores


def add_demo(sub):
    p = sub.add_parser("demo", help="the whole pipeline on the tiny model and synthetic videos (about 20 s on 2 CPU cores)",
                       formatter_class=Defaults)
    p.add_argument("--out", default="demo", help="work directory; a re-run skips the stages already done")
    p.add_argument("--videos", type=positive_int, default=6, help="synthetic videos with cuts to make (one more, a single shot, is there to be rejected)")
    p.add_argument("--steps", type=positive_int, default=3, help="optimizer steps per curriculum stage and for SFT")
    p.add_argument("--model", default="tiny", choices=["tiny", "tiny-qwen2.5", "tiny-qwen3"], help="built-in tiny model")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args):
    import demo

    demo.run(args, command=run_command)


def run_command(argv):
    """Run another subcommand in this process, its options parsed (and defaulted) as on the command line."""
    args = parse(argv)
    args.func(args)


# ----------------------------------------------------------------------------------------------------------------


def build_parser():
    parser = Parser(prog="temple.py", description=__doc__.split("\n\n")[1], formatter_class=Defaults)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_describe(sub)
    add_shots(sub)
    add_select(sub)
    add_captions(sub)
    add_pairs(sub)
    add_prompts(sub)
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


def parse(argv):
    """The command line as build_parser reads it; an option the subcommand does not know is named by the subcommand
    (argparse's own message would name temple.py and show the top-level usage)."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
        commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def leave_process_group():
    """Under torchrun, leave the process group once the command is done."""
    dist = sys.modules.get("torch.distributed")  # only where the command loaded torch
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def exit_without_teardown(code):
    """End a torchrun process that has done its work (its files written and closed) with `code`, skipping the
    interpreter's teardown, where gloo's threads can still abort it (SIGABRT, about 1 run in 25 on 2 CPU processes:
    torchrun would report a finished run as failed; docs/stack.md, "torchrun and gloo")."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def close_progress_bars():
    """End the progress bars a failed command left open, so that its one line starts a line of its own."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", [])):
        bar.close()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    try:
        code = args.func(args) or 0
        leave_process_group()
        return code
    except (OSError, ValueError) as e:  # expected: bad files, bad names, bad data, a full disk
        if os.environ.get("TEMPLE_DEBUG"):
            raise
        close_progress_bars()
        if os.environ.get("RANK", "0") == "0" or not getattr(e, "known_to_every_rank", False):
            full = isinstance(e, OSError) and e.errno in jobs.NO_SPACE
            print(jobs.no_space_line(args.command, argv, e) if full else f"temple.py {args.command}: error: {e}",
                  file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # Ctrl-C: one line, from rank 0 only, not a traceback per process
        if os.environ.get("TEMPLE_DEBUG"):
            raise
        close_progress_bars()
        if os.environ.get("RANK", "0") == "0":
            print(jobs.interrupted_line(args.command, argv, e), file=sys.stderr)
        return 130  # the shell's code for "stopped by SIGINT"


if __name__ == "__main__":
    exit_code = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        exit_without_teardown(exit_code)
    sys.exit(exit_code)
