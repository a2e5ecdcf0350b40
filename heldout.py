"""heldout.py - held-out preference accuracy during training, and the adaptive curriculum that stops a stage on it.

Ours, not in the released code (docs/method.md, "Where this implementation differs"). --heldout N sets N videos
aside, every pair of theirs: all kinds and r of one video share one chosen description, which the NLL term trains on
directly, so a pair held out while its video is trained on would be tested on its own training answer. Every
--eval-every steps the stage measures how often the implicit reward beta * (r+ - r-) of a held-out pair is positive
against its reference, as `temple.py eval --pairs --run` computes it after training. With --adaptive a stage ends
once that accuracy stops improving (a gain must be more than one held-out pair) or reaches a ceiling.

    python temple.py curriculum --heldout 32 --adaptive --epochs 3
"""

import hashlib
import os
import sys
from dataclasses import dataclass, field

import torch

import distributed
import dpo
import examples
import runs
import train


def heldout_videos(pairs, count, seed):
    """The `count` videos a stage sets aside, every pair of theirs: a held-out pair must share no chosen answer with
    a trained one, and all kinds and r of a video share one chosen description. Ranked by a hash of --seed and the
    path as the data has it, so every rank and every resume sets aside the same videos."""
    videos = sorted({pair["video_in_data"] for pair in pairs})
    if not 0 < count < len(videos):
        raise ValueError(f"--heldout {count}: the data has pairs on {len(videos)} video(s); set aside between 1 and "
                         f"{len(videos) - 1} (every pair of a held-out video is held out)")
    rank = {video: hashlib.sha256(f"heldout {seed} {video}".encode()).hexdigest() for video in videos}
    return sorted(sorted(videos, key=rank.get)[:count])


def split_off(pairs, videos):
    """(pairs on other videos, pairs on `videos`); videos are compared as the data names them."""
    aside = {os.path.normpath(v) for v in videos}
    held = [os.path.normpath(pair["video_in_data"]) in aside for pair in pairs]
    return [p for p, h in zip(pairs, held) if not h], [p for p, h in zip(pairs, held) if h]


def stage_heldout_videos(args, init, pairs):
    """(videos, note) for --heldout N: the videos the run this stage starts from held out, which its whole chain kept
    out of training, else N chosen from this stage's data (heldout_videos); ([], note) without --heldout. The note
    (or None) says where the chain did not keep them apart."""
    earlier = runs.read_run_config(init).get("heldout_videos", []) if init else []
    if not args.heldout:
        return [], earlier and (f"note: {init} held out {len(earlier)} video(s); without --heldout {len(earlier)} this "
                                f"stage trains on them")
    if not earlier:
        return heldout_videos(pairs, args.heldout, args.seed), init and (
            f"note: {init} held out no video, so the stages before this one trained on the videos held out now")
    if len(earlier) != args.heldout:
        raise ValueError(f"--heldout {args.heldout}: {init}, which this stage starts from, held out {len(earlier)} "
                         f"video(s); hold out the same ones (--heldout {len(earlier)}) so that no stage trains on them")
    return earlier, None


@dataclass
class HeldOutAccuracy:
    """measure() for train.Evaluation: how often the implicit reward beta * (r+ - r-) of a held-out pair is positive,
    against the stage's reference (its adapters off), as `temple.py eval --pairs --run` computes it after training.
    Each rank scores its share of the pairs and the margins are gathered. The pairs are decoded again at every
    evaluation, a batch at a time: keeping them encoded would hold ~100 MB of patches per pair at 9 M pixels."""
    model: object  # vlm.VideoLM with the stage's adapters
    pairs: list
    video_options: dict
    max_length: int
    beta: float
    world: object  # distributed.World
    batch_size: int = 1
    truncation: str = "delete"
    left_out: set = field(default_factory=set)  # indices of pairs that failed (reported once, then skipped)

    def measure(self):
        mine = range(self.world.rank, len(self.pairs), self.world.size)
        training = self.model.hf_model.training
        self.model.hf_model.eval()  # no dropout while measuring
        margins = []
        with torch.no_grad():
            for first in range(0, len(mine), self.batch_size):
                rows = [r for r in (self.encode(i) for i in mine[first:first + self.batch_size]) if r is not None]
                if not rows:
                    continue
                batch = self.model.to_device(dpo.collate_pairs(self.model, rows))
                policy, reference, _ = dpo.policy_and_reference(self.model, None, batch)
                n = len(rows)
                margins += (self.beta * ((policy[:n] - reference[:n]) - (policy[n:] - reference[n:]))).tolist()
        self.model.hf_model.train(training)
        margins = [m for part in distributed.all_gather(self.world, margins) for m in part]
        if not margins:
            raise ValueError("no held-out pair could be scored (each was left out, for the reasons above)")
        return {"eval/rewards/accuracies": sum(m > 0 for m in margins) / len(margins),
                "eval/rewards/margins": sum(margins) / len(margins), "eval/pairs": len(margins)}

    def encode(self, index):
        if index in self.left_out:
            return None
        try:
            return dpo.encode_pair(self.model, self.pairs[index], self.video_options, self.max_length, self.truncation)
        except examples.BadItem as e:  # an unreadable video, or a pair over --max-length: this pair only
            print(f"held-out pair {self.pairs[index]['where']} left out: {e}", file=sys.stderr)
            self.left_out.add(index)
            return None


def evaluation(args, model, pairs, video, world):
    """The train.Evaluation of a stage (None without held-out pairs); with --adaptive it may end the stage early."""
    if not pairs:
        if args.adaptive:
            raise ValueError("no held-out pair is left to decide on (their videos are missing, or this stage's data "
                             "has no pair on the held-out videos), so --adaptive cannot run")
        return None
    measure = HeldOutAccuracy(model, pairs, video, args.max_length, args.beta, world, args.micro_batch,
                              args.truncation).measure
    stop = plateau("eval/rewards/accuracies", args.plateau_delta, args.plateau_evals, args.accuracy_ceiling,
                   count="eval/pairs") if args.adaptive else None
    return train.Evaluation(args.eval_every, measure, stop)


def plateau(key, delta, evaluations, ceiling, count=None):
    """A stop rule for Evaluation (an adaptive curriculum stage): stop once `key` reaches `ceiling`, or once the last
    `evaluations` evaluations gained no more than `delta` over the best one before them. With `count` (the history's
    key for the number of items measured, n), a gain must also be more than one item, 1 / n: a single held-out pair
    changing its mind is noise, not progress (with 64 pairs one is 0.016, more than the default delta 0.01)."""
    def stop(history):
        values = [h[key] for h in history]
        if values[-1] >= ceiling:
            return f"held-out {key} {values[-1]:.3f} reached the ceiling {ceiling}"
        items = history[-1].get(count) if count else None
        least = max(delta, 1 / items) if items else delta
        if len(values) > evaluations and max(values[-evaluations:]) - max(values[:-evaluations]) <= least:
            unit = f" (one of {items} held-out pairs)" if least > delta else ""
            return (f"held-out {key} gained no more than {least:.3g}{unit} in {evaluations} evaluations (best "
                    f"{max(values):.3f})")
        return None
    return stop
