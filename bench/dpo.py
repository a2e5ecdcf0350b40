"""One DPO step, ours vs the naive layout: time and peak memory; vision tower passes per step; and peak memory with
vs without --grad-ckpt.

The pair: a 32-frame 224x224 video (1,024 video tokens) with two ~300-token answers, on a Qwen2-VL-layout model
with Qwen's real vocabulary size (151,669) and random weights, LoRA rank 32 on the language model. Its vision tower
costs per patch about a tenth of what the language model costs per token, as Qwen2-VL-7B's does.

    naive    chosen and rejected as two separate sequences, each with its own copy of the video, each run through
             the policy (kept for backward) and again through the reference; full-vocabulary logits everywhere
    per-row  our step as it was before the vision tower ran once per pair: one forward for chosen + rejected, but
             every row's copy of the video encoded again in the policy and in the reference pass (4 videos)
    ours     dpo.dpo_step: chosen + rejected in one forward, the video preprocessed once and encoded once for both
             rows and the reference pass (vision_cache.shared), logits only at answer positions, the
             reference pass under no_grad with LoRA switched off
    ours, --precompute-ref   the same with the reference log-probs read from the cache (no reference pass)

All four are timed in turns (A, B, C, D, A, B, ...) and compared by their fastest turn, so that load from other
processes hits every side alike; peak memory comes from one more run of each. On the CPU model the 151k-vocabulary
head dominates a step, so one tower pass instead of four barely shows there (vision_time_ratio ~ 1). With the 2B
sizes one pass of the tower over the 4,096 patches (2 x 0.67 G parameters x 4,096 ~ 5.5 TFLOP) costs about as much
as the language model's forward over the pair (2 x 1.5 G x 1,429 x 2 rows ~ 8.6 TFLOP).

    python bench/dpo.py                 # ~4 min on 2 CPU cores
    python bench/dpo.py --gpu-size 2b   # on a GPU: real Qwen2-VL-2B dimensions in bf16 (random weights)
Last line: RESULT time_ratio=<ours/naive> mem_ratio=<ours/naive> precomputed_time_ratio=... ckpt_mem_ratio=...
           vit_passes=<tower passes per step, ours> vit_videos=<videos encoded per step, ours> per_row_vit_videos=...
           naive_vit_passes=... vision_time_ratio=<ours/per-row, fastest turns>
"""

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dpo  # noqa: E402
import lora  # noqa: E402
import train  # noqa: E402
import tiny  # noqa: E402
import vision_cache  # noqa: E402
import preprocess  # noqa: E402
import vlm  # noqa: E402
from common import measure, mib  # noqa: E402

VOCAB = 151_669
SIZES = {  # text / vision overrides of tiny.tiny_config
    "cpu": (dict(vocab_size=VOCAB, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2), dict(depth=4, embed_dim=80, num_heads=2)),
    "2b": (dict(vocab_size=VOCAB, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True),
           dict(depth=32, embed_dim=1280, num_heads=16)),
}


def build(size, device):
    from transformers import AutoModelForImageTextToText

    tokenizer = tiny.tiny_tokenizer()
    text, vision = SIZES[size]
    config = tiny.tiny_config("qwen2_vl", tokenizer, text_overrides=text, vision_overrides=vision)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = AutoModelForImageTextToText.from_config(config).to(device=device, dtype=dtype)
    lora.apply_lora(model, r=32, alpha=64)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    return vlm.VideoLM(model, tokenizer, size)


def naive_step(model, video, instruction, chosen, rejected, beta=0.1):
    """Separate sequences, separate videos, a second forward for the reference, full logits."""
    def full_logps(module_call, answer):
        sample = model.encode([video, instruction], response=answer, total_pixels=10 ** 9)
        batch = model.to_device(model.collate([sample]))
        logits = module_call(**model.model_inputs(batch)).logits[:, :-1].float()
        targets = batch["labels"][:, 1:]
        logps = logits.log_softmax(-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return (logps * (targets != vlm.IGNORE)).sum(-1)

    policy_c, policy_r = full_logps(model.hf_model, chosen), full_logps(model.hf_model, rejected)
    with torch.no_grad(), lora.disable_lora(model.hf_model):
        ref_c, ref_r = full_logps(model.hf_model, chosen), full_logps(model.hf_model, rejected)
    losses, _, _ = dpo.dpo_loss(policy_c, policy_r, ref_c, ref_r, beta=beta)
    nll = -policy_c.sum() / (len(chosen))  # same amount of work as ours' NLL term
    return losses.mean() + nll


def per_row_step(model, pair, settings):
    """Our step with every forward encoding each row's video itself (no shared vision features)."""
    encode, vision_cache.encode = vision_cache.encode, lambda model, batch: None
    try:
        return dpo.dpo_step(model, model.hf_model, [pair], settings)[0]
    finally:
        vision_cache.encode = encode


def vision_passes(model, fn):
    """(tower passes, patches encoded) during fn(): the patch embedding runs once per pass, on all its videos."""
    patches = []
    hook = model.vision_tower.patch_embed.register_forward_hook(lambda m, args, out: patches.append(len(args[0])))
    try:
        fn()
    finally:
        hook.remove()
    return len(patches), sum(patches)


def fastest_in_turns(*fns, turns=3):
    """Fastest of `turns` runs of each function, run in turns (a, b, c, a, b, c, ...) after one warm-up each: load
    from other processes then slows every side alike."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(turns):
        for fn, spent in zip(fns, times):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            spent.append(time.perf_counter() - start)
    return [min(spent) for spent in times]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gpu-size", default=None, choices=["2b"], help="model dimensions on a GPU")
    parser.add_argument("--frames", type=int, default=32)
    args = parser.parse_args()
    device = vlm.default_device()
    size = args.gpu_size if device.type == "cuda" and args.gpu_size else "cpu"
    model = build(size, device)
    model.hf_model.train()
    rng = np.random.default_rng(0)
    video = preprocess.Video(rng.integers(0, 256, (args.frames, 224, 224, 3), dtype=np.uint8),
                             [float(i) for i in range(args.frames)], fps=1.0)
    words = "the person walks into the scene and then picks up a clip of video with the other hand".split()
    chosen, rejected = (" ".join(rng.choice(words, 150)) for _ in range(2))
    instruction = "Describe the video in detail."
    prepared = model.prepare(video, total_pixels=10 ** 9)  # as dpo.encode_pair: one video for both rows
    pair = {"rows": [model.encode([prepared, instruction], response=a) for a in (chosen, rejected)]}
    settings = {"beta": 0.1, "loss_type": "sigmoid", "nll_weight": 1.0, "precomputed": False}
    batch = model.collate(pair["rows"])
    print(f"{size} model, sequence {batch['input_ids'].shape[1]} tokens, answers "
          f"{(batch['labels'] != vlm.IGNORE).sum().item()} tokens, vocabulary {VOCAB}, device {device}")
    with torch.no_grad(), lora.disable_lora(model.hf_model):
        pair["ref"] = model.response_logps(model.to_device(batch))[0].tolist()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else \
        torch.autocast("cpu", enabled=False)

    def run(step):
        def fn():
            model.hf_model.zero_grad(set_to_none=True)
            with autocast:
                loss = step()
            loss.backward()
        return fn

    ours = run(lambda: dpo.dpo_step(model, model.hf_model, [pair], settings)[0])
    per_row = run(lambda: per_row_step(model, pair, settings))
    cached = run(lambda: dpo.dpo_step(model, model.hf_model, [pair], {**settings, "precomputed": True})[0])
    naive = run(lambda: naive_step(model, video, instruction, chosen, rejected))
    video_patches = int(batch["video_grid_thw"][0].prod())
    passes = {name: vision_passes(model, fn) for name, fn in [("ours", ours), ("per-row", per_row), ("naive", naive)]}
    t_ours, t_per_row, t_cached, t_naive = fastest_in_turns(ours, per_row, cached, naive)
    m_ours, m_cached, m_naive = (measure(fn, repeats=1)[1] for fn in (ours, cached, naive))
    train.enable_activation_checkpointing(model.hf_model)
    t_ckpt, m_ckpt = measure(ours, repeats=1)
    train.disable_activation_checkpointing(model.hf_model)
    tokens = batch["input_ids"].numel()
    print(f"naive:                 {t_naive:.3f} s  peak +{mib(m_naive)}")
    print(f"ours:                  {t_ours:.3f} s  peak +{mib(m_ours)}  ({tokens / t_ours:.0f} tokens/s)")
    print(f"per-row vision:        {t_per_row:.3f} s  (times: the fastest of 3 turns each)")
    print(f"ours, precomputed ref: {t_cached:.3f} s  peak +{mib(m_cached)}")
    print(f"ours, --grad-ckpt:     {t_ckpt:.3f} s  peak +{mib(m_ckpt)}")
    for name, (calls, patches) in passes.items():
        print(f"vision tower, {name + ':':9s} {calls} pass(es) per step, {patches // video_patches} video(s) encoded")
    if device.type == "cuda":
        params = sum(p.numel() for p in model.hf_model.parameters())
        # policy forward 2PT; its backward computes input gradients only (the base is frozen; LoRA's weight
        # gradients are negligible), another 2PT rather than the usual 4PT; the reference forward 2PT
        flops = (2 + 2 + 2) * params * tokens
        peak = torch.cuda.get_device_properties(device).name
        print(f"model FLOP utilisation ~ {flops / t_ours / 989e12:.1%} of 989 TFLOP/s bf16 dense ({peak}); "
              f"peak GPU memory {mib(torch.cuda.max_memory_allocated())}")
    print(f"RESULT time_ratio={t_ours / t_naive:.2f} mem_ratio={m_ours / m_naive:.2f} "
          f"precomputed_time_ratio={t_cached / t_naive:.2f} precomputed_mem_ratio={m_cached / m_naive:.2f} "
          f"ckpt_mem_ratio={m_ckpt / m_ours:.2f} vit_passes={passes['ours'][0]} "
          f"vit_videos={passes['ours'][1] // video_patches} per_row_vit_videos={passes['per-row'][1] // video_patches} "
          f"naive_vit_passes={passes['naive'][0]} vision_time_ratio={t_ours / t_per_row:.2f}")


if __name__ == "__main__":
    main()
