"""The LoRA adapters' overhead: one forward + backward of a rank-32 wrapped model vs the same model plain.

The model: decoder layers of Qwen2-VL-2B's language model (hidden 1536, MLP 8960, 12 heads, 2 KV heads, sdpa
attention, RMSNorm, rotary; random weights; float32 on CPU, bf16 on a GPU), fed `--tokens` input embeddings.
At this size the seven projections of each layer are most of the work, which is where an adapter can cost.

    plain  every weight frozen; the input embeddings require grad and backward runs to them (what a frozen
           layer costs in training: activation gradients, no weight gradients)
    lora   the same weights with lora.apply_lora(r=32, alpha=64) on all seven projections (B random, as after
           training); backward also computes the adapters' gradients

Time: --repeats rounds of (plain, lora), who goes first alternating, after one warm-up round. time_ratio is the
median over rounds of lora / plain within the round: a neighbour that slows the machine for a while slows both.
Memory: activation memory, the bytes autograd keeps for backward (distinct storages seen by saved_tensors_hooks,
parameters excluded): exact, deterministic, and the part of training memory LoRA adds to (each adapter keeps its
layer's input for the gradient of A). A CPU process has no allocator counter to trust (glibc keeps freed blocks,
so resident-memory peaks understate); on a GPU the torch.cuda.max_memory_allocated peak is printed as well.

CPU threads: one by default. On a machine shared with other jobs every multi-threaded op ends at a barrier that
waits for any descheduled thread, and the adapters add several small ops per projection: on our busy 2-core box
two threads made both sides ~2x slower than one thread and the ratio swung from 1.15 to 1.5 between runs.

    python bench/lora.py                 # ~1 min on 2 CPU cores; --threads 2 to use both
Last line: RESULT time_ratio=<lora/plain> mem_ratio=<lora/plain>
"""

import argparse
import copy
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import lora  # noqa: E402


def build(layers, device, dtype):
    from transformers import Qwen2Config, Qwen2Model

    config = Qwen2Config(hidden_size=1536, intermediate_size=8960, num_hidden_layers=layers, num_attention_heads=12,
                         num_key_value_heads=2, vocab_size=1024, attn_implementation="sdpa")
    torch.manual_seed(0)
    model = Qwen2Model(config).to(device=device, dtype=dtype)
    model.requires_grad_(False)
    return model


def step(model, embeds, grad):
    """Forward + backward to the input; returns the bytes autograd saved for backward (activations only)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    model.zero_grad(set_to_none=True)  # as after an optimizer step: the adapters' gradients start from None
    x = embeds.detach().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(inputs_embeds=x, use_cache=False).last_hidden_state
    out.backward(grad)
    return sum(saved.values())


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (see the docstring)")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    plain = build(args.layers, device, dtype)
    adapted = copy.deepcopy(plain)
    names = lora.apply_lora(adapted, r=args.rank, alpha=2 * args.rank)
    for m in lora.lora_modules(adapted).values():  # a trained adapter, not the all-zero B of a fresh one
        torch.nn.init.normal_(m.lora_B, std=0.02)
    g = torch.Generator(device=device).manual_seed(0)
    embeds = torch.randn(1, args.tokens, 1536, device=device, dtype=dtype, generator=g)
    grad = torch.randn(1, args.tokens, 1536, device=device, dtype=dtype, generator=g)
    trainable = sum(p.numel() for p in adapted.parameters() if p.requires_grad)
    print(f"{args.layers} layers of hidden 1536 / MLP 8960, {args.tokens} tokens, {dtype}, {device} "
          f"({torch.get_num_threads()} threads); "
          f"{len(names)} adapters of rank {args.rank}: {trainable / 1e6:.1f} M trainable parameters")

    models = {"plain": plain, "lora": adapted}
    times, memory, peaks = {k: [] for k in models}, {}, {}
    for repeat in range(args.repeats + 1):  # the first round warms up
        for name in (["plain", "lora"] if repeat % 2 else ["lora", "plain"]):  # who goes first alternates
            model = models[name]
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            seconds, memory[name] = timed(lambda: step(model, embeds, grad), device)
            if device.type == "cuda":
                peaks[name] = torch.cuda.max_memory_allocated() - base
            if repeat:
                times[name].append(seconds)
    t = {k: statistics.median(v) for k, v in times.items()}
    ratios = [a / b for a, b in zip(times["lora"], times["plain"])]
    for name in models:
        spread = f"{min(times[name]):.3f}-{max(times[name]):.3f}"
        peak = f", GPU peak above weights {peaks[name] / 2 ** 20:.0f} MiB" if peaks else ""
        print(f"{name:5s}  {t[name]:.3f} s (range {spread})  activations kept for backward "
              f"{memory[name] / 2 ** 20:.0f} MiB{peak}")
    peak_ratio = f" gpu_peak_ratio={peaks['lora'] / peaks['plain']:.2f}" if peaks else ""
    print(f"lora / plain per round: {' '.join(f'{r:.3f}' for r in ratios)}")
    print(f"RESULT time_ratio={statistics.median(ratios):.3f} mem_ratio={memory['lora'] / memory['plain']:.2f}"
          f"{peak_ratio}")


if __name__ == "__main__":
    main()
