"""Response-only logits vs full logits: time and peak memory of scoring one DPO pair.

A pair = the same video prompt (32 frames of 224x224 -> 1,024 video tokens) with a chosen and a rejected answer,
on a model with Qwen's real vocabulary size (151,669). Full logits cost batch x sequence x vocabulary floats;
vlm.VideoLM.response_logps computes them only at the answer positions. Both variants run forward + backward.

    python bench/logps.py            # ~100 s on 2 CPU cores
Last line: RESULT time_ratio=<ours/full> mem_ratio=<ours/full> (smaller is better).
"""

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tiny  # noqa: E402
import preprocess  # noqa: E402
import vlm  # noqa: E402
from common import measure, mib  # noqa: E402

VOCAB = 151_669


def build(device):
    from transformers import AutoModelForImageTextToText

    tokenizer = tiny.tiny_tokenizer()
    config = tiny.tiny_config("qwen2_vl", tokenizer, text_overrides=dict(vocab_size=VOCAB, hidden_size=256,
                                                                         intermediate_size=512))
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(config).to(device)
    return vlm.VideoLM(model, tokenizer, "bench")


def full_logits_logps(model, batch):
    """The naive way: logits for every position, log_softmax over the whole (B, L, V) tensor, then gather."""
    logits = model.hf_model(**model.model_inputs(batch), use_cache=False).logits[:, :-1]
    targets = batch["labels"][:, 1:]
    mask = targets != vlm.IGNORE
    token_logps = logits.log_softmax(-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (token_logps * mask).sum(-1)


def main():
    device = vlm.default_device()
    model = build(device)
    rng = np.random.default_rng(0)
    video = preprocess.Video(rng.integers(0, 256, (32, 224, 224, 3), dtype=np.uint8), [float(i) for i in range(32)])
    words = "the person walks into the scene and then picks up a clip of video with the other hand ".split()
    answer = lambda n: " ".join(rng.choice(words, n))  # noqa: E731
    pair = [model.encode([video, "Describe the video in detail."], response=answer(150), min_pixels=224 * 224)
            for _ in range(2)]
    batch = model.to_device(model.collate(pair))
    print(f"sequence {batch['input_ids'].shape[1]} tokens, answer tokens {(batch['labels'] != -100).sum().item()}, "
          f"vocabulary {VOCAB}")

    def ours():
        model.hf_model.zero_grad(set_to_none=True)
        model.response_logps(batch)[0].sum().backward()

    def full():
        model.hf_model.zero_grad(set_to_none=True)
        full_logits_logps(model, batch).sum().backward()

    with torch.no_grad():
        assert torch.allclose(model.response_logps(batch)[0], full_logits_logps(model, batch), atol=1e-3)
    t_ours, m_ours = measure(ours)
    t_full, m_full = measure(full)
    print(f"response-only: {t_ours:.3f} s, peak +{mib(m_ours)}")
    print(f"full logits:   {t_full:.3f} s, peak +{mib(m_full)}")
    print(f"RESULT time_ratio={t_ours / t_full:.2f} mem_ratio={m_ours / m_full:.2f}")


if __name__ == "__main__":
    main()
