"""Tests for lora.py: LoRA layers, apply / disable / merge, PEFT-format save / load.

PEFT itself is not a dependency. tests/fixtures/peft_lora/ is an adapter written by PEFT 0.21.2 (with the PEFT model's
outputs beside it) for the small `Toy` model below, made by tests/fixtures/make_peft_lora.py; the tests marked with
`needs_peft` check both directions against a live PEFT and are skipped when it is not installed.
"""

import ast
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from unittest import mock

import numpy as np
import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn

import lora
import preprocess
import vlm

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
PEFT_KEY = re.compile(r"base_model\.model\.[\w.]+\.lora_[AB]\.weight")
pytestmark = pytest.mark.usefixtures("one_thread")
PROJECT_MODULES = {"vlm", "temple", "train", "dpo", "sft", "captions", "shots", "perturb"}


# ---- helpers ----------------------------------------------------------------------------------------------------


class ToyMLP(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.up_proj, self.down_proj = nn.Linear(d, hidden, bias=False), nn.Linear(hidden, d, bias=False)

    def forward(self, x):
        return self.down_proj(torch.relu(self.up_proj(x)))


class ToyLayer(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.self_attn = nn.Module()
        self.self_attn.q_proj = nn.Linear(d, d)
        self.mlp = ToyMLP(d, 2 * d)

    def forward(self, h):
        h = h + self.self_attn.q_proj(h)
        return h + self.mlp(h)


class Toy(nn.Module):
    """A VLM's layout in miniature (model.visual, model.language_model.layers.N, lm_head) without transformers, so
    the committed PEFT fixture does not depend on the tiny models' random init."""

    def __init__(self, d=8, image=6, vocab=11):
        super().__init__()
        self.model = nn.Module()
        self.model.visual = nn.Module()
        self.model.visual.blocks = nn.ModuleList([ToyMLP(image, 2 * image)])
        self.model.visual.merger = nn.Linear(image, d)
        self.model.language_model = nn.Module()
        self.model.language_model.layers = nn.ModuleList([ToyLayer(d) for _ in range(2)])
        self.lm_head = nn.Linear(d, vocab, bias=False)

    def forward(self, image, x):
        for block in self.model.visual.blocks:
            image = image + block(image)
        h = x + self.model.visual.merger(image)
        for layer in self.model.language_model.layers:
            h = layer(h)
        return self.lm_head(h)


def toy_model():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return Toy()


def toy_inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(5, 6, generator=g), torch.randn(5, 8, generator=g)


def randomize_adapters(model, seed=1):
    """Non-zero B (a trained adapter): the tests below must see the adapters' effect."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in lora.lora_modules(model).values():
            m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.1)


def video_batch(model):
    frames = np.random.default_rng(0).integers(0, 256, (4, 56, 56, 3), dtype=np.uint8)
    video = model.encode([preprocess.Video(frames, [0.0, 1.0, 2.0, 3.0]), "What happens?"], response="A cat sits.",
                         min_pixels=32 * 32)
    text = model.encode("Say hi.", response="Hi there.")
    batch = model.collate([video, text])
    batch.pop("labels")
    return batch


def logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


@pytest.fixture(scope="module")
def tiny():
    """A loader of fresh tiny models (same seed: same weights) and one video + text batch."""
    model = vlm.load("tiny")
    return lambda: vlm.load("tiny").hf_model, video_batch(model)


# ---- the layer --------------------------------------------------------------------------------------------------


def test_new_adapter_is_an_exact_no_op(tiny):
    load, batch = tiny
    base, model = load(), load()
    lora.apply_lora(model, r=8, alpha=16, dropout=0.1)
    model.train(), base.train()  # dropout active: it must touch the LoRA branch only
    assert torch.equal(logits(model, batch), logits(base, batch))


def test_layer_init_scaling_and_dropout_on_the_lora_input_only():
    torch.manual_seed(0)  # fixed numbers: float32 sums of random ones now and then exceed atol
    linear = nn.Linear(64, 32)
    layer = lora.LoRALinear(linear, r=4, alpha=8, dropout=0.5)
    assert layer.lora_A.shape == (4, 64) and layer.lora_B.shape == (32, 4)
    assert torch.count_nonzero(layer.lora_B) == 0 and layer.lora_A.abs().max() <= 1 / math.sqrt(64)  # kaiming a=√5
    assert layer.scaling == 2.0 and lora.LoRALinear(nn.Linear(64, 32), 16, 8, rslora=True).scaling == 2.0
    assert layer.weight is linear.weight and not layer.weight.requires_grad  # same Parameter: same state_dict key
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 64)
    torch.manual_seed(0)
    y = layer(x)  # training mode: dropout on
    torch.manual_seed(0)
    expected = linear(x) + layer.scaling * nn.functional.dropout(x, 0.5) @ layer.lora_A.T @ layer.lora_B.T
    assert torch.allclose(y, expected, atol=1e-5)
    layer.eval()
    assert torch.allclose(layer(x), linear(x) + 2.0 * x @ layer.lora_A.T @ layer.lora_B.T, atol=1e-5)
    assert torch.allclose(layer(x[0]), layer(x)[0]) and layer(x[None]).shape == (1, 3, 32)  # any leading dims


def test_merge_equals_unmerged_and_unmerge_restores_the_weight():
    layer = lora.LoRALinear(nn.Linear(64, 32), r=8, alpha=16)
    with torch.no_grad():
        layer.lora_B.normal_()
    x, original = torch.randn(5, 64), layer.weight.detach().clone()
    unmerged = layer(x)
    layer.merge()
    assert layer.merged and not torch.equal(layer.weight, original)
    assert torch.allclose(layer(x), unmerged, atol=1e-5)
    layer.merge()  # a second merge does nothing
    assert torch.allclose(layer(x), unmerged, atol=1e-5)
    layer.unmerge()
    assert torch.allclose(layer.weight, original, atol=1e-6) and torch.allclose(layer(x), unmerged, atol=1e-5)


def test_bf16_merge_sums_in_float32_and_rounds_once():
    torch.manual_seed(0)
    layer = lora.LoRALinear(nn.Linear(256, 256).to(torch.bfloat16), r=8, alpha=16)
    assert layer.lora_A.dtype == torch.float32  # fp32 master weights beside a bf16 base
    with torch.no_grad():
        layer.lora_B.normal_(std=1e-3)
    w = layer.weight.detach().clone()
    delta = (layer.lora_B @ layer.lora_A) * layer.scaling
    layer.merge()
    assert torch.equal(layer.weight, (w.float() + delta).bfloat16())
    assert not torch.equal(layer.weight, w + delta.bfloat16())  # the naive bf16 sum rounds twice and differs
    x = torch.randn(4, 256, dtype=torch.bfloat16)
    layer.unmerge()
    assert layer(x).dtype == torch.bfloat16  # the adapter runs in the activations' dtype


def test_disabled_adapter_computes_nothing():
    layer = lora.LoRALinear(nn.Linear(16, 16), r=4, alpha=4)
    with torch.no_grad():
        layer.lora_A.fill_(float("nan"))  # any LoRA compute would poison the output
    x = torch.randn(2, 16)
    layer.disabled = True
    assert torch.equal(layer(x), nn.functional.linear(x, layer.weight, layer.bias))
    layer.disabled = False
    assert layer(x).isnan().all()


# ---- applying, switching off, merging -----------------------------------------------------------------------------


def test_default_targets_are_the_language_model_linears(tiny):
    load, _ = tiny
    model = load()
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    names = lora.apply_lora(model, r=4, alpha=8)
    assert names == [n for n in linears if n.startswith("model.language_model.")]
    assert len(names) == 14 and "lm_head" not in names  # 2 layers x (q, k, v, o, gate, up, down)
    assert not any(m.training for m in lora.lora_modules(model).values())  # the model's eval() mode is kept
    assert set(lora.lora_modules(model)) == set(names)
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        lora.apply_lora(model, r=4, alpha=8)

    with_vision = lora.apply_lora(load(), r=4, alpha=8, include_vision=True)
    assert with_vision == [n for n in linears if n != "lm_head"] and any("visual.merger" in n for n in with_vision)


def test_regex_and_list_targets_follow_peft_rules():
    model = toy_model()
    assert lora.apply_lora(model, 2, 4, target=["q_proj", "mlp.down_proj"]) == [
        "model.language_model.layers.0.self_attn.q_proj", "model.language_model.layers.0.mlp.down_proj",
        "model.language_model.layers.1.self_attn.q_proj", "model.language_model.layers.1.mlp.down_proj"]
    # a list entry matches a whole name component: "proj" is not a suffix of "q_proj"; lm_head is never wrapped
    with pytest.raises(ValueError, match="no linear layer matches"):
        lora.apply_lora(toy_model(), 2, 4, target=["proj", "lm_head"])
    # a string is a regex matching the whole name ("q_proj" alone matches nothing)
    with pytest.raises(ValueError, match="no linear layer matches"):
        lora.apply_lora(toy_model(), 2, 4, target="q_proj")
    assert lora.apply_lora(toy_model(), 2, 4, target=r".*layers\.1\..*_proj") == [
        "model.language_model.layers.1.self_attn.q_proj", "model.language_model.layers.1.mlp.up_proj",
        "model.language_model.layers.1.mlp.down_proj"]
    assert lora.apply_lora(toy_model(), 2, 4, exclude=["self_attn.q_proj"], include_vision=True) == [
        "model.visual.blocks.0.up_proj", "model.visual.blocks.0.down_proj", "model.visual.merger",
        "model.language_model.layers.0.mlp.up_proj", "model.language_model.layers.0.mlp.down_proj",
        "model.language_model.layers.1.mlp.up_proj", "model.language_model.layers.1.mlp.down_proj"]


def test_only_lora_parameters_train_and_each_gets_a_gradient(tiny):
    load, batch = tiny
    model = load()
    lora.apply_lora(model, r=4, alpha=8, include_vision=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(re.fullmatch(r".+\.lora_[AB]", n) for n in trainable)
    assert len(trainable) == 2 * len(lora.lora_modules(model))
    model(**batch).logits.sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n in trainable)
    assert all(p.grad is None for n, p in model.named_parameters() if n not in trainable)


def test_disable_lora_gives_the_base_model_and_restores_the_adapters(tiny):
    load, batch = tiny
    base, model = load(), load()
    lora.apply_lora(model, r=4, alpha=8)
    randomize_adapters(model)
    adapted = logits(model, batch)
    assert not torch.allclose(adapted, logits(base, batch), atol=1e-3)
    with lora.disable_lora(model):
        assert torch.equal(logits(model, batch), logits(base, batch))
    assert torch.equal(logits(model, batch), adapted)
    with pytest.raises(KeyError), lora.disable_lora(model):
        raise KeyError  # an exception inside the block still switches the adapters back on
    assert not any(m.disabled for m in lora.lora_modules(model).values())


def test_merge_lora_leaves_a_plain_transformers_model(tiny, tmp_path):
    from transformers import AutoModelForImageTextToText

    load, batch = tiny
    model = load()
    base_keys = set(model.state_dict())
    names = lora.apply_lora(model, r=4, alpha=8, include_vision=True)
    randomize_adapters(model)
    adapted = logits(model, batch)
    assert lora.merge_lora(model) == names
    assert not lora.lora_modules(model) and all(type(model.get_submodule(n)) is nn.Linear for n in names)
    assert set(model.state_dict()) == base_keys
    assert torch.allclose(logits(model, batch), adapted, atol=1e-4)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path)
    assert torch.allclose(logits(reloaded, batch), adapted, atol=1e-4)


def test_gradients_are_the_same_under_non_reentrant_checkpointing():
    """Activation checkpointing recomputes the LoRA branch, dropout included, in backward."""
    from torch.utils.checkpoint import checkpoint

    grads = []
    for checkpointed in (False, True):
        model = toy_model()
        torch.manual_seed(0)
        lora.apply_lora(model, 2, 4, dropout=0.3)
        randomize_adapters(model)
        model.train()
        inputs = toy_inputs()
        out = checkpoint(model, *inputs, use_reentrant=False) if checkpointed else model(*inputs)
        out.square().sum().backward()
        grads.append([p.grad for p in model.parameters() if p.requires_grad])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads)) and any(g.abs().sum() > 0 for g in grads[0])


def test_ddp_policy_and_reference_steps(tiny, tmp_path):
    """DPO's pattern under DDP (one process, same Reducer checks): a policy pass with gradient, a reference pass with
    the adapters off; with find_unused_parameters=False a LoRA parameter without gradient fails the second step."""
    load, batch = tiny
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        model = load()
        lora.apply_lora(model, r=4, alpha=8, include_vision=True)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        ddp = nn.parallel.DistributedDataParallel(model)
        for _ in range(2):
            policy = ddp(**batch).logits
            with torch.no_grad(), lora.disable_lora(model):
                reference = model(**batch).logits
            (policy - reference).square().mean().backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    finally:
        dist.destroy_process_group()


# ---- PEFT's format ------------------------------------------------------------------------------------------------


def test_save_load_round_trip_in_peft_format(tiny, tmp_path):
    load, batch = tiny
    model = load()
    names = lora.apply_lora(model, r=4, alpha=16, dropout=0.05, rslora=True)
    randomize_adapters(model)
    umask = os.umask(0o027)
    try:
        with mock.patch("os.umask", side_effect=AssertionError("os.umask races with other threads")):
            lora.save_adapter(model, tmp_path, base_model="Qwen/Qwen2-VL-2B-Instruct")
    finally:
        os.umask(umask)
    assert sorted(os.listdir(tmp_path)) == ["adapter_config.json", "adapter_model.safetensors"]  # no temp files
    assert os.stat(tmp_path / "adapter_model.safetensors").st_mode & 0o777 == 0o640  # the umask's, not 0600

    tensors = load_file(tmp_path / "adapter_model.safetensors")
    assert all(PEFT_KEY.fullmatch(k) for k in tensors) and len(tensors) == 2 * len(names)
    name = "model.language_model.layers.0.mlp.down_proj"  # in 128 -> out 64
    assert tensors[f"base_model.model.{name}.lora_A.weight"].shape == (4, 128)
    assert tensors[f"base_model.model.{name}.lora_B.weight"].shape == (64, 4)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config == {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": "Qwen/Qwen2-VL-2B-Instruct",
        "r": 4, "lora_alpha": 16, "use_rslora": True, "lora_dropout": 0.05,
        "target_modules": ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"],
        "rank_pattern": {}, "alpha_pattern": {}, "bias": "none", "fan_in_fan_out": False, "use_dora": False,
        "modules_to_save": None, "init_lora_weights": True, "inference_mode": True}

    fresh = load()
    assert lora.load_adapter(fresh, tmp_path) == sorted(names)
    assert torch.equal(logits(fresh, batch), logits(model, batch))
    loaded = lora.lora_modules(fresh)[name]
    assert (loaded.r, loaded.alpha, loaded.rslora, loaded.dropout.p) == (4, 16, True, 0.05)
    # resuming: loading into existing adapters of the same shape fills them
    lora.load_adapter(model, tmp_path)
    assert torch.equal(logits(model, batch), logits(fresh, batch))


def test_target_modules_never_reach_the_vision_tower(tmp_path):
    """Qwen2.5-VL's ViT also has gate/up/down_proj: bare suffixes would make PEFT adapt it; the saved list must
    select exactly the wrapped modules under PEFT's own matching rule."""
    model = vlm.load("tiny-qwen2.5").hf_model
    names = lora.apply_lora(model, r=4, alpha=8)
    lora.save_adapter(model, tmp_path)
    targets = json.loads((tmp_path / "adapter_config.json").read_text())["target_modules"]
    assert "layers.0.mlp.gate_proj" in targets and "gate_proj" not in targets
    plain = vlm.load("tiny-qwen2.5").hf_model
    assert [n for n, _ in plain.named_modules() if lora.matches(n, targets)] == names


def test_adapter_for_another_model_fails_naming_the_first_bad_key(tmp_path):
    model = vlm.load("tiny-qwen2.5").hf_model
    lora.apply_lora(model, r=4, alpha=8, include_vision=True)
    lora.save_adapter(model, tmp_path)
    other = vlm.load("tiny").hf_model  # Qwen2-VL's ViT has fc1 / fc2 where Qwen2.5-VL has gate / up / down_proj
    before = {k: v.clone() for k, v in other.state_dict().items()}
    key = "base_model.model.model.visual.blocks.0.mlp.down_proj.lora_A.weight"  # the first in sorted order
    with pytest.raises(ValueError, match=re.escape(f"key '{key}' matches no linear layer")):
        lora.load_adapter(other, tmp_path)
    assert not lora.lora_modules(other)  # checked before anything changed
    assert all(torch.equal(v, before[k]) for k, v in other.state_dict().items())

    # the same model under pre-4.52 module names (no "language_model."): an error, not an inactive adapter
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    save_file({k.replace("model.language_model.", "model."): v for k, v in tensors.items() if "visual" not in k},
              tmp_path / "adapter_model.safetensors")
    with pytest.raises(ValueError, match=re.escape(
            "key 'base_model.model.model.layers.0.mlp.down_proj.lora_A.weight' matches no linear layer")):
        lora.load_adapter(vlm.load("tiny-qwen2.5").hf_model, tmp_path)

    # the PEFT fixture was made for Toy: its names exist in the tiny model, its shapes do not
    with pytest.raises(ValueError, match=re.escape(
            "key 'base_model.model.model.language_model.layers.0.mlp.down_proj.lora_A.weight' has shape (2, 16), "
            "module 'model.language_model.layers.0.mlp.down_proj' needs (2, 128)")):
        lora.load_adapter(vlm.load("tiny").hf_model, os.path.join(FIXTURES, "peft_lora"))


def test_load_rejects_incomplete_or_unsupported_adapters(tmp_path):
    model = toy_model()
    lora.apply_lora(model, 2, 4)
    lora.save_adapter(model, tmp_path)
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    b_key = "base_model.model.model.language_model.layers.1.self_attn.q_proj.lora_B.weight"
    save_file({k: v for k, v in tensors.items() if k != b_key}, tmp_path / "adapter_model.safetensors")
    with pytest.raises(ValueError, match=re.escape(f"key '{b_key.replace('lora_B', 'lora_A')}' has no lora_B")):
        lora.load_adapter(toy_model(), tmp_path)
    extra = {**tensors, "base_model.model.lm_head.weight": torch.zeros(11, 8)}  # a full weight, not LoRA
    save_file(extra, tmp_path / "adapter_model.safetensors")
    with pytest.raises(ValueError, match=re.escape("key 'base_model.model.lm_head.weight' is not a LoRA weight")):
        lora.load_adapter(toy_model(), tmp_path)
    save_file(tensors, tmp_path / "adapter_model.safetensors")
    other = toy_model()
    lora.apply_lora(other, 2, 4, include_vision=True)  # adapters the file has no weights for
    with pytest.raises(ValueError, match="adapter on 'model.visual.blocks.0.up_proj' but the file has no weights"):
        lora.load_adapter(other, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    (tmp_path / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(ValueError, match="use_dora=True"):
        lora.load_adapter(toy_model(), tmp_path)


def test_an_adapter_written_by_peft_loads_and_matches_peft_outputs(tmp_path):
    """tests/fixtures/peft_lora: PEFT 0.21.2's own files (rank_pattern, alpha_pattern, vision modules included)."""
    fixture = os.path.join(FIXTURES, "peft_lora")
    config = json.load(open(os.path.join(fixture, "adapter_config.json")))
    assert config["peft_version"] == "0.21.2" and config["rank_pattern"] and config["alpha_pattern"]
    expected = load_file(os.path.join(fixture, "expected_output.safetensors"))["output"]
    model = toy_model()
    base = model(*toy_inputs())
    names = lora.load_adapter(model, fixture)
    assert "model.visual.blocks.0.up_proj" in names and len(names) == 8
    assert not torch.allclose(base, expected, atol=1e-3)  # the adapter matters
    assert torch.allclose(model(*toy_inputs()), expected, atol=1e-6)
    # PEFT's in-memory spelling with the adapter name (".lora_A.default.weight") loads the same
    shutil.copy(os.path.join(fixture, "adapter_config.json"), tmp_path)
    tensors = load_file(os.path.join(fixture, "adapter_model.safetensors"))
    save_file({k.replace(".weight", ".default.weight"): v for k, v in tensors.items()},
              tmp_path / "adapter_model.safetensors")
    model = toy_model()
    lora.load_adapter(model, tmp_path)
    assert torch.allclose(model(*toy_inputs()), expected, atol=1e-6)


# ---- stacking adapters (a curriculum's stages as one adapter) ------------------------------------------------------


def test_stacked_adapters_equal_the_stages_merged_one_after_another(tmp_path):
    """Stage 1 (rank 4, alpha 8, language linears only) merged, then stage 2 (rank 2, rsLoRA, vision too) on top:
    one stacked adapter on the plain model gives the same outputs, and merge_updates the same weights."""
    stage_model = toy_model()
    lora.apply_lora(stage_model, r=4, alpha=8)
    randomize_adapters(stage_model, seed=1)
    lora.save_adapter(stage_model, tmp_path / "one")
    lora.merge_lora(stage_model)
    lora.apply_lora(stage_model, r=2, alpha=3, rslora=True, include_vision=True)
    randomize_adapters(stage_model, seed=2)
    lora.save_adapter(stage_model, tmp_path / "two")
    expected = stage_model(*toy_inputs())

    lora.stack_adapters([tmp_path / "one", tmp_path / "two"], tmp_path / "stacked", base_model="toy")
    config = json.load(open(tmp_path / "stacked" / "adapter_config.json"))
    assert config["r"] == config["lora_alpha"] == 6 and not config["use_rslora"]  # scaling 1: B carries it
    assert set(config["rank_pattern"].values()) == {2} and config["rank_pattern"] == config["alpha_pattern"]
    plain = toy_model()
    lora.load_adapter(plain, tmp_path / "stacked")
    assert torch.allclose(plain(*toy_inputs()), expected, atol=1e-5)
    merged = toy_model()
    lora.merge_updates(merged, lora.adapter_updates(tmp_path / "stacked")[0])
    assert torch.allclose(merged(*toy_inputs()), expected, atol=1e-5)
    assert not torch.allclose(toy_model()(*toy_inputs()), expected, atol=1e-3)
    with pytest.raises(ValueError, match="no such linear layer"):
        lora.merge_updates(nn.Sequential(nn.Linear(6, 6)), lora.adapter_updates(tmp_path / "stacked")[0])


needs_peft = pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="PEFT is not installed (not a dependency)")


@needs_peft
@pytest.mark.parametrize("name", ["tiny", "tiny-qwen2.5"])
def test_peft_loads_our_adapter_with_the_same_outputs(name, tmp_path):
    import warnings

    from peft import PeftModel

    model = vlm.load(name)
    batch = video_batch(model)
    names = lora.apply_lora(model.hf_model, r=4, alpha=12, rslora=True, include_vision=(name == "tiny"))
    randomize_adapters(model.hf_model)
    lora.save_adapter(model.hf_model, tmp_path, base_model=name)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*missing adapter keys.*")
        peft_model = PeftModel.from_pretrained(vlm.load(name).hf_model, tmp_path)
    peft_names = [n.removeprefix("base_model.model.").removesuffix(".lora_A") for n, _ in peft_model.named_modules()
                  if n.endswith(".lora_A")]
    assert peft_names == names
    assert (logits(peft_model, batch) - logits(model.hf_model, batch)).abs().max() < 1e-4


@needs_peft
def test_we_load_a_live_peft_adapter_with_the_same_outputs(tmp_path):
    from peft import LoraConfig, get_peft_model

    model = vlm.load("tiny-qwen2.5")
    batch = video_batch(model)
    config = LoraConfig(r=4, lora_alpha=12, use_rslora=True, target_modules="all-linear", init_lora_weights=False,
                        task_type="CAUSAL_LM")
    torch.manual_seed(0)  # init_lora_weights=False: random A and B
    peft_model = get_peft_model(model.hf_model, config)
    peft_model.save_pretrained(tmp_path)
    ours = vlm.load("tiny-qwen2.5").hf_model
    assert len(lora.load_adapter(ours, tmp_path)) == 26
    # not bit-equal: PEFT scales B A x after B, lora.py before it (on the narrower r-wide activation)
    assert (logits(ours, batch) - logits(peft_model, batch)).abs().max() < 1e-4
    assert (logits(ours, batch) - logits(vlm.load("tiny-qwen2.5").hf_model, batch)).abs().max() > 0.1


# ---- standing alone -------------------------------------------------------------------------------------------------


def test_lora_py_imports_nothing_from_this_project():
    source = open(lora.__file__).read()
    imported = {alias.name.split(".")[0] for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom)}
    assert imported - sys.stdlib_module_names <= {"torch", "safetensors"}
    with tempfile.TemporaryDirectory() as alone:  # lora.py by itself, in a directory with nothing else
        shutil.copy(lora.__file__, alone)
        script = (f"import sys; sys.path.insert(0, {alone!r}); import lora, torch\n"
                  f"new = lambda: torch.nn.Sequential(torch.nn.Linear(4, 4))\n"
                  f"m = new(); lora.apply_lora(m, 2, 4); lora.save_adapter(m, {alone!r} + '/a')\n"
                  f"lora.load_adapter(new(), {alone!r} + '/a')\n"
                  f"print(sorted(set(sys.modules) & {PROJECT_MODULES!r}))")
        result = subprocess.run([sys.executable, "-I", "-c", script], cwd=alone, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
