"""tiny.py - the built-in tiny models: Qwen2-VL, Qwen2.5-VL and Qwen3-VL with 2 layers, 64 wide, random weights.

Tests and the demo need a real model class without a download: these are the transformers classes of the three
families, built from a small config, with a byte-level tokenizer made in-process that carries Qwen's special
tokens and chat template. The same seed gives the same weights. Standalone (torch and transformers only). A
merged tiny model also gets the processor files a hub checkpoint carries (processor_files).

    model, tokenizer = tiny.build("tiny-qwen3", seed=0)       # or vlm.load("tiny-qwen3"), as any model
"""

import torch
from transformers import AutoConfig, AutoModelForImageTextToText, Qwen2Tokenizer

TINY_MODELS = {"tiny": "qwen2_vl", "tiny-qwen2.5": "qwen2_5_vl", "tiny-qwen3": "qwen3_vl"}
# Qwen's special tokens, as its tokenizers name them (vlm.SPECIAL_TOKENS looks their ids up in any Qwen tokenizer)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]


CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'video' %}"
    "<|vision_start|><|video_pad|><|vision_end|>{% elif part['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def byte_alphabet():
    """GPT-2's printable stand-in character for each byte (what byte-level BPE vocabularies are written in)."""
    printable = set(range(33, 127)) | set(range(161, 173)) | set(range(174, 256))
    extra = iter(range(256, 512))
    return {b: chr(b) if b in printable else chr(next(extra)) for b in range(256)}


def tiny_tokenizer():
    """A byte-level BPE tokenizer with Qwen's special tokens: 256 bytes + a few merges, built without files."""
    alphabet = byte_alphabet()
    vocab = {alphabet[b]: b for b in range(256)}
    merges = []
    for word in ["the", "video", "clip", "and", "then", "with", "person", "scene", "in", "of", "a", "to", "is"]:
        pieces = [alphabet[32]] + list(word)  # "Ġword": merged left to right
        while len(pieces) > 1:
            merges.append((pieces[0], pieces[1]))
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
            vocab.setdefault(pieces[0], len(vocab))
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, extra_special_tokens=SPECIAL_TOKENS[1:])
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_config(model_type, tokenizer, text_overrides=None, vision_overrides=None):
    """A 2-layer, 64-wide model of the given family, with the tokenizer's special-token ids (benchmarks pass
    overrides to get realistic sizes: vocab_size=151_669, hidden_size=1536, ...)."""
    ids = dict(zip(["image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"],
                   tokenizer.convert_tokens_to_ids(["<|image_pad|>", "<|video_pad|>", "<|vision_start|>",
                                                    "<|vision_end|>"])))
    text = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
                pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"), bos_token_id=None,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    if model_type == "qwen3_vl":
        text.update(head_dim=16, rope_parameters={**text["rope_parameters"], "mrope_interleaved": True})
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=16,
                      num_position_embeddings=64, deepstack_visual_indexes=[1])
    elif model_type == "qwen2_5_vl":
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                      fullatt_block_indexes=[1], window_size=56)
    else:
        vision = dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2)
    text.update(text_overrides or {})
    half = text.get("head_dim", text["hidden_size"] // text["num_attention_heads"]) // 2
    text["rope_parameters"]["mrope_section"] = [half // 4, half * 3 // 8, half - half // 4 - half * 3 // 8]  # Qwen's split
    out_dim = "hidden_size" if model_type == "qwen2_vl" else "out_hidden_size"  # the merger's output width
    vision.update({out_dim: text["hidden_size"]}, **(vision_overrides or {}))
    return AutoConfig.for_model(model_type, text_config=text, vision_config=vision, **ids)


def build(name, seed=0):
    """A built-in tiny model with random weights, identical for the same seed."""
    tokenizer = tiny_tokenizer()
    config = tiny_config(TINY_MODELS[name], tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config)
    return model, tokenizer


def processor_files(processor):
    """{file name: content} of the processor files a checkpoint of this family carries (preprocessor_config.json and
    video_preprocessor_config.json, as on the hub), made from a vlm.Processor: what a merged built-in tiny model
    needs so that AutoProcessor, vLLM and lmms-eval load its directory as a real checkpoint's. The chat template is
    the tokenizer's own file."""
    family = processor.family
    common = {"processor_class": family.processor_class, "patch_size": processor.patch,
              "temporal_patch_size": processor.temporal_patch, "merge_size": processor.merge,
              "size": {"shortest_edge": processor.min_pixels, "longest_edge": processor.max_pixels},
              "image_mean": list(family.mean), "image_std": list(family.std), "do_resize": True, "do_rescale": True,
              "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True, "resample": 3}
    return {"preprocessor_config.json": {"image_processor_type": "Qwen2VLImageProcessor", **common},
            "video_preprocessor_config.json": {"video_processor_type": family.video_processor_class, **common}}
