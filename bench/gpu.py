"""The GPU check: one DPO step and one SFT step at real Qwen2.5-VL-7B dimensions, as the released run takes them.

Random weights in bf16 (the dimensions, not the values, set time and memory), Qwen's 152,064-token vocabulary, and
one 2-minute video at 1 fps (120 frames of 1280x720) resized into the released pixel budget (9,000,000 pixels:
280x504 frames, 60 temporal patches of 10 x 18 merged patches, 10,800 video tokens per row) with two ~300-token
answers:

    dpo   LoRA rank 32 / alpha 64 on the language model; chosen + rejected in one forward, the ViT run once without
          gradient, the reference pass with LoRA off, AdamW step on the adapters (dpo.dpo_step)
    sft   LoRA rank 32 / alpha 32 on the language model and the ViT (the merger frozen); the ViT runs with gradient

Each step is measured with activation checkpointing (the default) and without; a configuration that does not fit
is reported as "oom". Without checkpointing the 7B pair needs far more than the card has (ms-swift turns it on by
default for this reason), so the quarter-budget video (2,250,000 pixels) measures both and gives their memory ratio.
Model FLOPs count the linear layers (2 x params x tokens per forward; a frozen base's backward computes input
gradients only, 2 x params x tokens more) and causal attention (2 x layers x tokens^2 x width per forward, twice
that backward); recomputation is not counted. MFU divides by 989 TFLOP/s, the H100/H200 dense bf16 peak.

It needs only torch, transformers and PyAV (vlm.py imports it; no video is decoded). On the lent H200 (torch 2.11,
transformers 5.17 preinstalled, PyAV not), from the repository root, with the av wheel for CPython 3.12 fetched
here into .whl/ (the GPU machine has no package index; `pip download --no-deps --only-binary=:all:
--python-version 3.12 --platform manylinux_2_17_x86_64 -d .whl av==18.1.0`):

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && PYTHONPATH=/tmp/site \\
        python3 bench/gpu.py          # a few minutes on one H200, by arithmetic (not yet run on one)
    python bench/gpu.py --size tiny   # the same code path on a CPU at toy dimensions, a few seconds

Last line: RESULT dpo_step_s=... dpo_peak_gib=... dpo_tokens_per_s=... dpo_mfu=... dpo_no_ckpt_peak_gib=<or oom>
           quarter_dpo_ckpt_mem_ratio=<ckpt / no ckpt> sft_step_s=... sft_peak_gib=... sft_tokens_per_s=...
           sft_mfu=... sft_no_ckpt_peak_gib=... quarter_sft_ckpt_mem_ratio=...
"""

import argparse
import gc
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dpo  # noqa: E402
import lora  # noqa: E402
import sft  # noqa: E402
import train  # noqa: E402
import tiny  # noqa: E402
import preprocess  # noqa: E402
import vlm  # noqa: E402

PEAK_FLOPS = 989e12  # H100 / H200 SXM dense bf16
SIZES = {  # tiny.tiny_config overrides: Qwen2.5-VL-7B-Instruct's config.json, and a toy for a CPU dry run
    "7b": (dict(vocab_size=152_064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128_000,
                tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0}),
           dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                window_size=112, fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2)),
    "tiny": (dict(vocab_size=152_064), dict(tokens_per_second=2)),
}
VIDEO = {"7b": (120, 720, 1280, 9_000_000), "tiny": (8, 72, 128, 20_000)}  # frames, height, width, total pixels
ANSWER_TOKENS = {"7b": 300, "tiny": 40}


def build(size, device):
    from transformers import AutoModelForImageTextToText

    tokenizer = tiny.tiny_tokenizer()
    text, vision = SIZES[size]
    config = tiny.tiny_config("qwen2_5_vl", tokenizer, text_overrides=text, vision_overrides=vision)
    config._attn_implementation = "sdpa"
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):  # random init straight on the GPU: minutes faster than on the CPU
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    return vlm.VideoLM(model.eval(), tokenizer, f"qwen2.5-vl-{size}")


def answer(model, tokens, seed):
    """A text of about `tokens` tokens."""
    words = "the person walks into the scene and then picks up a clip of video with the other hand".split()
    rng = np.random.default_rng(seed)
    text = ""
    while len(model.tokenizer.encode(text)) < tokens:
        text += " " + " ".join(rng.choice(words, 8))
    return text.strip()


def video(size, budget_scale=1.0):
    frames, height, width, pixels = VIDEO[size]
    rng = np.random.default_rng(0)
    clip = preprocess.Video(rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8), [float(i) for i in
                     range(frames)], fps=1.0)
    return clip, int(pixels * budget_scale)


def flops(model, tokens_per_row, rows, vit_patches, vit_backward, passes):
    """Model FLOPs of a step: `passes` forward-equivalents of the language model over `rows` rows (forward 1, input
    gradients 1 more), the ViT forward once (and its backward when it trains)."""
    text = model.hf_model.config.get_text_config()
    lm_params = sum(p.numel() for n, p in model.hf_model.named_parameters() if ".visual." not in n and "lm_head" not in n)
    vit_params = sum(p.numel() for n, p in model.hf_model.named_parameters() if ".visual." in n)
    per_row = 2 * lm_params * tokens_per_row + 2 * text.num_hidden_layers * tokens_per_row ** 2 * text.hidden_size
    return passes * rows * per_row + 2 * vit_params * vit_patches * (2 if vit_backward else 1)


def dpo_pair(model, size, budget_scale):
    clip, pixels = video(size, budget_scale)
    prepared = model.prepare(clip, total_pixels=pixels)
    rows = [model.encode([prepared, "Describe the video in detail."], response=answer(model, ANSWER_TOKENS[size], s))
            for s in (1, 2)]
    return [{"rows": rows}], prepared


def measure_step(step, device, repeats=2):
    """(fastest seconds, peak GiB) of step() after one warm-up; ("oom", "oom") when it does not fit. A CPU dry run
    has no allocator to ask: its peak is "n/a"."""
    try:
        step()
        times, peak = [], 0 if device.type == "cuda" else "n/a"
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
                peak = max(peak, torch.cuda.max_memory_allocated() / 2 ** 30)
            times.append(time.perf_counter() - start)
        return min(times), peak
    except torch.OutOfMemoryError:
        return "oom", "oom"
    finally:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def with_checkpointing(model, on, step, device):
    if on:
        train.enable_activation_checkpointing(model.hf_model)
    try:
        return measure_step(step, device)
    finally:
        if on:
            train.disable_activation_checkpointing(model.hf_model)


def adapter_step(model, loss_fn, lr):
    """One optimizer step on the adapters: what the training loop does once per step (one micro-batch)."""
    trainable = [p for p in model.hf_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, betas=(0.9, 0.95), weight_decay=0.1)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(model.device):
            loss = loss_fn()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
    return step


def autocast(device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else \
        torch.autocast("cpu", enabled=False)


def fp32_adapters(model):
    for p in model.hf_model.parameters():
        if p.requires_grad:
            p.data = p.data.float()  # as train.set_up: adapters train in fp32 on a bf16 base


def run_dpo(model, size, device, results):
    lora.apply_lora(model.hf_model, r=32, alpha=64)
    fp32_adapters(model)
    model.hf_model.train()
    settings = {"beta": 0.1, "loss_type": "sigmoid", "nll_weight": 1.0, "precomputed": False}
    for scale, prefix in ((1.0, "dpo"), (0.25, "quarter_dpo")):
        encoded, prepared = dpo_pair(model, size, scale)
        step = adapter_step(model, lambda: dpo.dpo_step(model, model.hf_model, encoded, settings)[0], 5e-6)
        with_ckpt = with_checkpointing(model, True, step, device)
        without = with_checkpointing(model, False, step, device)
        tokens = len(encoded[0]["rows"][0].input_ids)
        patches = len(prepared.pixels)
        print(f"{prefix}: {2 * tokens} tokens per pair ({patches} patches), checkpointing {with_ckpt}, "
              f"without {without}", flush=True)
        if prefix == "dpo":
            seconds, peak = with_ckpt
            # policy forward + input gradients (2) and the reference forward (1) over both rows; the ViT once
            model_flops = flops(model, tokens, 2, patches, vit_backward=False, passes=3)
            results.update(dpo_step_s=seconds, dpo_peak_gib=peak, dpo_tokens_per_s=2 * tokens / seconds,
                           dpo_mfu=model_flops / seconds / PEAK_FLOPS, dpo_no_ckpt_peak_gib=without[1])
        else:
            results["quarter_dpo_ckpt_mem_ratio"] = ratio(with_ckpt[1], without[1])
    lora.merge_lora(model.hf_model)  # back to plain linears (random weights: merging changes nothing that matters)


def run_sft(model, size, device, results):
    lora.apply_lora(model.hf_model, r=32, alpha=32, dropout=0.05, include_vision=True, exclude=vlm.ALIGNER)
    fp32_adapters(model)
    model.hf_model.train()
    for scale, prefix in ((1.0, "sft"), (0.25, "quarter_sft")):
        clip, pixels = video(size, scale)
        sample = model.encode([clip, "Describe the video in detail."], response=answer(model, ANSWER_TOKENS[size], 3),
                              total_pixels=pixels)
        count = sft.answer_tokens([sample])
        step = adapter_step(model, lambda: sft.sft_step(model, model.hf_model, [sample])[0] / count, 1e-4)
        with_ckpt = with_checkpointing(model, True, step, device)
        without = with_checkpointing(model, False, step, device)
        tokens, patches = len(sample.input_ids), len(sample.pixels[0])
        print(f"{prefix}: {tokens} tokens ({patches} patches), checkpointing {with_ckpt}, without {without}",
              flush=True)
        if prefix == "sft":
            seconds, peak = with_ckpt
            model_flops = flops(model, tokens, 1, patches, vit_backward=True, passes=2)
            results.update(sft_step_s=seconds, sft_peak_gib=peak, sft_tokens_per_s=tokens / seconds,
                           sft_mfu=model_flops / seconds / PEAK_FLOPS, sft_no_ckpt_peak_gib=without[1])
        else:
            results["quarter_sft_ckpt_mem_ratio"] = ratio(with_ckpt[1], without[1])


def ratio(a, b):
    return next((x for x in (a, b) if isinstance(x, str)), None) or a / b


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="7b")
    args = parser.parse_args()
    device = vlm.default_device()
    if args.size == "7b" and device.type != "cuda":
        raise SystemExit("bench/gpu.py: --size 7b needs a GPU (use --size tiny for a dry run on the CPU)")
    start = time.perf_counter()
    model = build(args.size, device)
    import transformers
    print(f"{model.name} on {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, torch "
          f"{torch.__version__}, transformers {transformers.__version__}, built in {time.perf_counter() - start:.0f} s",
          flush=True)
    results = {}
    run_dpo(model, args.size, device, results)
    run_sft(model, args.size, device, results)
    print(f"total {time.perf_counter() - start:.0f} s")
    print("RESULT " + " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in results.items()))


if __name__ == "__main__":
    main()
