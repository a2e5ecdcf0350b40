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
import os
import sys


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
# dpo / curriculum / merge: preference training, stage by stage (dpo.py, train.py)

RELEASED_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"


def add_training_options(p, lr, lora_alpha, lora_dropout):
    """The options dpo, curriculum and sft share; defaults = the released run (spec.md sections 5 and 6)."""
    p.add_argument("--model", default=RELEASED_MODEL, help="base model: directory, cached hub id or tiny / tiny-qwen2.5 / tiny-qwen3")
    p.add_argument("--model-seed", type=int, default=0, help="seed of a built-in tiny model's random weights")
    p.add_argument("--runs", default="runs", help="directory holding the run directories")
    p.add_argument("--video-root", default=None, help="directory that relative video paths in the data start from")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.add_argument("--lora-r", type=int, default=32, help="LoRA rank")
    p.add_argument("--lora-alpha", type=float, default=lora_alpha, help="LoRA alpha (scaling alpha / r)")
    p.add_argument("--lora-dropout", type=float, default=lora_dropout, help="dropout on the LoRA input")
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
    p.add_argument("--grad-ckpt", action="store_true", help="non-reentrant activation checkpointing (less memory)")
    p.add_argument("--workers", type=int, default=2, help="data-loading processes per GPU (video decoding)")
    p.add_argument("--attn", default="sdpa", help="attention implementation (sdpa, flash_attention_2, eager)")
    p.add_argument("--fps", type=float, default=1.0, help="video frames per second")
    p.add_argument("--max-frames", type=int, default=600, help="at most this many frames per video")
    p.add_argument("--total-pixels", type=int, default=9_000_000, help="pixel budget per video")
    p.add_argument("--max-length", type=int, default=16384, help="tokens per sequence; longer answers are cut")


def add_dpo_options(p):
    add_training_options(p, lr=5e-6, lora_alpha=64, lora_dropout=0.05)
    p.add_argument("--data-dir", default="data", help="where pairs_r{R}.jsonl are")
    p.add_argument("--beta", type=float, default=0.1, help="DPO temperature")
    p.add_argument("--loss-type", default="sigmoid", choices=["sigmoid", "ipo", "hinge"], help="DPO loss")
    p.add_argument("--nll-weight", type=float, default=1.0, help="weight of the NLL of the chosen answer")
    p.add_argument("--precompute-ref", action="store_true", help="score the reference once per stage and cache it")


def add_dpo(sub):
    p = sub.add_parser("dpo", help="train one DPO curriculum stage", formatter_class=Defaults)
    p.add_argument("--r", type=positive_int, required=True, help="difficulty of this stage (16, 8, 4, 2)")
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

    previous = None
    for r in args.stages:
        run_dir = os.path.join(args.runs, f"dpo_r{r}")
        if train.finished(run_dir):
            print(f"stage r={r}: {run_dir} is finished, skipped")
        else:
            stage = argparse.Namespace(**vars(args), r=r, data=None, out=run_dir,
                                       init=previous, resume=args.resume or os.path.isdir(run_dir))
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


def positive_int(text):
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


# ----------------------------------------------------------------------------------------------------------------


def build_parser():
    parser = argparse.ArgumentParser(prog="temple.py", description=__doc__.split("\n\n")[1],
                                     formatter_class=Defaults)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_describe(sub)
    add_dpo(sub)
    add_curriculum(sub)
    add_merge(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (OSError, ValueError) as e:  # expected: bad files, bad names, bad data
        if os.environ.get("TEMPLE_DEBUG"):
            raise
        print(f"temple.py {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
