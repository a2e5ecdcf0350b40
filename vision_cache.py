"""vision_cache.py - one pass of the vision tower per batch, shared by every forward over it. A speed-up only.

A DPO pair's video goes to the model three times (the chosen row, the rejected row, the reference pass), a question's
video once per option. When the tower is frozen (DPO leaves it without adapters) all of these get the same
features, so collate stores each distinct video once (`video_slots` say where it is shown) and the tower runs once:

    with vision_cache.shared(model, batch):          # the tower runs here, once, without gradient
        policy, _ = model.response_logps(batch)      # the forwards over `batch` take its features
        with torch.no_grad(), lora.disable_lora(model.hf_model):
            reference, _ = model.response_logps(batch)

Without a shared block each forward still encodes a video that several of its rows show just once. With a tower
that has trainable parameters (SFT with LoRA on the ViT, or such a run evaluated with its adapters on and off)
every forward runs the tower itself, so gradients and adapters act as they would without this module.
"""

import contextlib
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class VisionFeatures:
    """What the vision tower made of a batch's videos: each distinct video encoded once, then laid out for every
    video of the batch in order."""
    output_type: type  # the class of the tower's own output
    pooled: torch.Tensor  # (video tokens of the batch, hidden): merged patch features, placed at the video tokens
    deepstack: list | None  # Qwen3-VL: features of early ViT layers, added after the first decoder layers
    grids: torch.Tensor  # (t, h, w) of every video of the batch: what the model's forward asks the tower for

    def output(self):
        """A fresh output object as the tower returns it (the model splits its fields in place: one per forward)."""
        extra = {} if self.deepstack is None else {"deepstack_features": list(self.deepstack)}
        return self.output_type(pooler_output=self.pooled, **extra)


def slot_rows(sizes, slots):
    """Indices of the rows of blocks `slots`, in that order, in a tensor that stores blocks of `sizes` rows one after
    another (the patches or merged features of a batch's distinct videos)."""
    sizes = [int(n) for n in sizes]
    starts = np.cumsum([0] + sizes)
    return torch.cat([torch.arange(starts[s], starts[s] + sizes[s]) for s in slots.tolist()])


def trainable(model):
    return any(p.requires_grad for p in model.vision_tower.parameters())


def encode(model, batch):
    """The batch's distinct videos through the tower once, without gradient, laid out for every video of the batch;
    None when the batch has no video, or when gradients are on and the tower has trainable parameters (its
    features must keep their graph: each forward then runs the tower itself)."""
    if "pixel_values_videos" not in batch or (torch.is_grad_enabled() and trainable(model)):
        return None
    tower, grids = model.vision_tower, batch["video_grid_thw"]
    slots = batch.get("video_slots", torch.arange(len(grids), device=grids.device))
    with torch.no_grad():
        output = tower(batch["pixel_values_videos"].type(tower.dtype), grid_thw=grids)
    rows = slot_rows(grids.prod(-1) // model.merge ** 2, slots).to(output.pooler_output.device)
    deepstack = getattr(output, "deepstack_features", None)
    return VisionFeatures(type(output), output.pooler_output[rows],
                          None if deepstack is None else [f[rows] for f in deepstack], grids[slots])


@contextlib.contextmanager
def shared(model, batch):
    """Inside the block every forward of `model` over `batch` takes one set of features, made here: the policy
    rows and the reference pass of a DPO step alike, which is right while the tower has no trainable parameters
    (switching LoRA off then changes nothing in it). A tower that has them is left to run per forward."""
    model.shared_vision = None if trainable(model) else (batch, encode(model, batch))
    try:
        yield
    finally:
        model.shared_vision = None


def for_batch(model, batch):
    """The features a forward over `batch` uses: the shared ones (shared), else its own single pass (encode)."""
    if model.shared_vision is not None and model.shared_vision[0] is batch:
        return model.shared_vision[1]
    return encode(model, batch)


@contextlib.contextmanager
def forward_inputs(model, batch):
    """The keyword arguments of a forward over `batch` (model.model_inputs); inside the block the forward takes its
    videos' features from one tower pass: the shared one (shared), else the batch's distinct videos encoded once."""
    features = for_batch(model, batch)
    with reuse(model, features):
        yield model.model_inputs(batch, videos_once=features is not None)


@contextlib.contextmanager
def reuse(model, features):
    """Inside the block the vision tower hands back `features` instead of running, and the model's own forward places
    them (with Qwen3-VL's deepstack features) exactly as if it had just encoded the pixels: one mechanism for the
    three families and the transformers versions we run on (docs/stack.md, "Vision features")."""
    if features is None:
        yield
        return
    tower = model.vision_tower

    def encoded(pixels, grid_thw=None, **kwargs):
        if grid_thw.tolist() != features.grids.tolist():
            raise RuntimeError("the model asked the vision tower for other videos than the features were made of")
        return features.output()

    tower.forward = encoded  # an instance attribute shadows the class's forward until deleted
    try:
        yield
    finally:
        del tower.forward
