"""examples.py - one training or evaluation example made ready for the model, and what happens when one cannot be.

Real data has bad examples: a video that no longer decodes, one too thin for Qwen's preprocessing, an answer that
makes the sequence longer than --max-length. Each is a BadItem with the reason's kind; training leaves it out and
the next usable example takes its place in the step (so every GPU runs the same steps and a resume meets the same
substitutes), and eval skips it, counted by kind.

    video = examples.prepared_video(model, "clip.mp4", {"fps": 1.0, "max_frames": 600, "total_pixels": 9_000_000})
    sample = examples.truncated(model.encode([video, "Describe it."], response="..."), 16384, "clip.mp4")
"""

import sys

import torch

import preprocess
import vlm


class BadItem(ValueError):
    """An example that cannot be used: training leaves it out (another takes its place), eval skips it. `kind` is
    the reason's heading the counts go by: "unreadable video", "unusable video" or "over --max-length"."""

    def __init__(self, message, kind):
        super().__init__(message)
        self.kind = kind


def video_options(args):
    """How a stage or eval shows a video to the model, from the command line (temple.add_video_options)."""
    return {"fps": args.fps, "max_frames": args.max_frames, "total_pixels": args.total_pixels}


def prepared_video(model, path, video_options):
    """The video at `path` read and prepared for `model` (a vlm.VideoLM or vlm.Processor) with a stage's fps,
    max_frames and total_pixels. A video that cannot be used raises BadItem."""
    try:
        video = preprocess.read_video(path, fps=video_options["fps"], max_frames=video_options["max_frames"])
    except preprocess.BAD_VIDEO as e:  # a vanished, unreadable or too thin video (preprocess.ExtremeShape)
        kind = "unusable video" if isinstance(e, preprocess.ExtremeShape) else "unreadable video"
        raise BadItem(str(e), kind) from None
    return model.prepare(video, total_pixels=video_options["total_pixels"])  # its errors are the settings'


def truncated(sample, max_length, where, strategy="delete"):
    """vlm.truncate; a sample it may not cut raises BadItem."""
    try:
        return vlm.truncate(sample, max_length, where, strategy)
    except vlm.TooLong as e:
        raise BadItem(str(e), "over --max-length") from None


class Examples(torch.utils.data.Dataset):
    """Micro-batches of encoded examples; encoding (video decoding, preprocessing) runs in loader workers.
    describe(index) names an example in messages (e.g. its file:line), None: by its index."""

    def __init__(self, batches, encode, num_items, describe):
        self.batches, self.encode, self.num_items, self.describe = batches, encode, num_items, describe

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, i):
        """(encoded examples, how many were left out for them)."""
        encoded = [self.encode_or_substitute(index) for index in self.batches[i]]
        return [item for item, _ in encoded], sum(skipped for _, skipped in encoded)

    def encode_or_substitute(self, index):
        """An unusable example is left out and the next usable one takes its place: every rank still runs the same
        number of micro-batches (DDP waits for all of them), and a resumed run meets the same substitutes."""
        for k in range(self.num_items):
            candidate = (index + k) % self.num_items
            try:
                return self.encode(candidate), k
            except BadItem as e:
                name = self.describe(candidate) if self.describe else f"example {candidate}"
                print(f"left out {name}: {e}", file=sys.stderr)
        raise ValueError(f"none of the {self.num_items} examples could be used (reasons above)")


def keep_as_is(items):
    """The loader's collate_fn: a micro-batch stays as Examples made it (a module-level function pickles)."""
    return items
