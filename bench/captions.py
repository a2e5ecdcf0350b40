"""Clip captioning throughput: clips from several videos batched into one generate call vs one clip at a time.

Runs caption_jobs.caption_videos end to end (keyframe decoding, preprocessing, prompts, generation, writing the
records) on synthetic videos with the built-in tiny model, once with --batch-size 8 and once with 1, and checks that
both give the same captions (greedy decoding: batching must not change the text).

    python bench/captions.py          # ~45 s on 2 CPU cores
Last line: RESULT speedup=<batched/single> batched_clips_per_s=... single_clips_per_s=... (goal: speedup >= 3).
"""

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
import caption_jobs  # noqa: E402
import vlm  # noqa: E402
from media import scene_frames, write_video  # noqa: E402

VIDEOS, CLIPS, FRAMES_PER_CLIP = 4, 8, 8
MAX_NEW_TOKENS = 48  # real captions run to hundreds of tokens: decoding, not the prompt, dominates
REPEATS = 5
PIXELS = dict(min_pixels=56 * 84, max_pixels=112 * 168)  # 2-frame clips of 56x84 .. 112x168 pixels


def make_videos(directory):
    records = []
    for k in range(VIDEOS):
        path = write_video(os.path.join(directory, f"v{k}.mp4"), scene_frames(CLIPS, FRAMES_PER_CLIP, 96, 144, seed=k),
                           fps=8)
        clips = [[FRAMES_PER_CLIP * i, FRAMES_PER_CLIP * (i + 1)] for i in range(CLIPS)]
        records.append({"path": path, "clips": clips, "keyframes": [[s + 2, s + 5] for s, _ in clips],
                        "status": "kept"})
    return records


def run(model, videos, directory, batch_size):
    """(seconds, records) of captioning every clip, from a fresh output file."""
    out = os.path.join(directory, f"captions_b{batch_size}_{time.perf_counter_ns()}.jsonl")
    start = time.perf_counter()
    records = caption_jobs.caption_videos(model, videos, out, batch_size=batch_size, max_new_tokens=MAX_NEW_TOKENS,
                                          **PIXELS)
    return time.perf_counter() - start, records


def main():
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    model = vlm.load("tiny")
    clips = VIDEOS * CLIPS
    with tempfile.TemporaryDirectory() as directory:
        videos = make_videos(directory)
        run(model, videos, directory, 8)  # warm-up
        # Interleaved repeats, best time of each: other processes on a shared machine only ever slow a run down.
        times, captioned = {8: [], 1: []}, {}
        for _ in range(REPEATS):
            for batch_size in times:
                seconds, captioned[batch_size] = run(model, videos, directory, batch_size)
                times[batch_size].append(seconds)
        batched_s, single_s = min(times[8]), min(times[1])
    assert captioned[8] == captioned[1], "batched captions differ from one-at-a-time captions"
    batched_rate, single_rate = clips / batched_s, clips / single_s
    print(f"{clips} clips ({VIDEOS} videos x {CLIPS}), {MAX_NEW_TOKENS} new tokens each, device {model.device}")
    print(f"batch 8: {batched_s:.2f} s   one at a time: {single_s:.2f} s")
    print(f"RESULT speedup={batched_rate / single_rate:.1f} batched_clips_per_s={batched_rate:.1f} "
          f"single_clips_per_s={single_rate:.1f}")


if __name__ == "__main__":
    main()
