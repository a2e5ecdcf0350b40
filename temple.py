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


def build_parser():
    parser = argparse.ArgumentParser(prog="temple.py", description=__doc__.split("\n\n")[1],
                                     formatter_class=Defaults)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_describe(sub)
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
