"""What held-out evaluation during training costs: a DPO stage with --eval-every 50 on 64 held-out pairs vs the same
stage without it (goal: at most 10 % more time).

Both sides train the built-in tiny model for 50 optimizer steps of 16 pairs (the released global batch) on the same
32 pairs over 8 short synthetic videos; the evaluated side also scores 64 pairs on 8 other videos (policy and
reference, no gradient, their videos decoded and encoded again at each evaluation) after step 50. The sides run in turns
(A, B, A, B) and are compared by their fastest turn, so that load from other processes hits both alike.

    python bench/heldout.py          # ~3 min on 2 CPU cores
Last line: RESULT time_ratio=<with / without> eval_s=<one evaluation of 64 pairs> step_s=<one optimizer step>
"""

import argparse
import os
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
import datafiles  # noqa: E402
import distributed  # noqa: E402
import heldout  # noqa: E402
import recipes  # noqa: E402
import temple  # noqa: E402
from media import scene_frames, write_video  # noqa: E402

STEPS, GLOBAL_BATCH, TRAIN_PAIRS, HELDOUT_PAIRS, VIDEOS = 50, 16, 32, 64, 8
WORDS = "the person walks into the scene and then picks up a clip of video with the other hand".split()


def make_pairs(directory):
    videos = [write_video(os.path.join(directory, f"v{k}.mp4"), scene_frames(4, 4, 48, 64, seed=k), fps=4)
              for k in range(2 * VIDEOS)]
    pairs = [{"video": videos[i % VIDEOS + (VIDEOS if i >= TRAIN_PAIRS else 0)], "instruction": "Describe the video.",
              "chosen": " ".join(WORDS[i % 5:i % 5 + 8]), "rejected": " ".join(WORDS[(i + 2) % 7:(i + 2) % 7 + 6]),
              "kind": "shuffle", "r": 16} for i in range(TRAIN_PAIRS + HELDOUT_PAIRS)]
    datafiles.write_jsonl(os.path.join(directory, "train.jsonl"), pairs[:TRAIN_PAIRS])
    datafiles.write_jsonl(os.path.join(directory, "heldout.jsonl"), pairs[TRAIN_PAIRS:])


def stage(directory, name, evaluate):
    """Seconds of one stage, from a fresh run directory."""
    argv = ["dpo", "-r", "16", "--model", "tiny", "--data", os.path.join(directory, "train.jsonl"),
            "--out", os.path.join(directory, name), "--max-steps", str(STEPS), "--epochs", "100",
            "--global-batch", str(GLOBAL_BATCH), "--workers", "0", "--fps", "2", "--max-frames", "4",
            "--total-pixels", str(4 * 56 * 56), "--save-every", "1000", "--lr", "1e-4"]
    if evaluate:
        argv += ["--eval-pairs", os.path.join(directory, "heldout.jsonl"), "--eval-every", "50"]
    args = temple.build_parser().parse_args(argv)
    start = time.perf_counter()
    recipes.run_stage(args)
    return time.perf_counter() - start


def one_evaluation(directory):
    """Seconds of one more evaluation of the held-out pairs (decoding, encoding and scoring them), on the model of
    the last evaluated run; the first call warms up."""
    import runs
    model = runs.load_run(os.path.join(directory, "with_0"))
    pairs, _ = datafiles.read_pairs(os.path.join(directory, "heldout.jsonl"))
    args = argparse.Namespace(max_length=16384, beta=0.1, micro_batch=1)
    video = {"fps": 2.0, "max_frames": 4, "total_pixels": 4 * 56 * 56}
    measure = heldout.HeldOutAccuracy(model, pairs, video, args.max_length, args.beta, distributed.World())
    measure.measure()  # warm-up: first forward passes, video files in the page cache
    start = time.perf_counter()
    measure.measure()
    return time.perf_counter() - start


def main():
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    torch.set_num_threads(1)  # the tiny model: a second thread only adds waiting
    with tempfile.TemporaryDirectory() as directory:
        make_pairs(directory)
        times = {"with": [], "without": []}
        for turn in range(2):
            for side in ("without", "with"):
                times[side].append(stage(directory, f"{side}_{turn}", side == "with"))
                print(f"turn {turn}: {side} evaluation {times[side][-1]:.1f} s", flush=True)
        best = {side: min(t) for side, t in times.items()}
        eval_s = one_evaluation(directory)
    print(f"RESULT time_ratio={best['with'] / best['without']:.3f} eval_s={eval_s:.2f} "
          f"step_s={best['without'] / STEPS:.3f}")


if __name__ == "__main__":
    main()
