"""lora.py - LoRA from scratch (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models",
https://arxiv.org/abs/2106.09685), with adapters saved in PEFT's on-disk format.

A frozen linear layer W (out x in) learns only a low-rank update B A, with A (r x in) and B (out x r), r << in:

        x ---+------------> [ W  (frozen) ] ---------------> (+) ---> y = W x + (alpha/r) * B A x
             |                                                ^
             +--> dropout --> [ A  r x in ] --> [ B  out x r ] --> * alpha/r

(r here is LoRA's rank, not TEMPLE's difficulty r.) B starts at zero, so a new adapter changes nothing: the model
with its adapters switched off *is* the base model (the DPO reference costs no second copy of the weights). Training
touches r * (in + out) numbers per layer instead of in * out; merging folds W + (alpha/r) B A back into one plain
weight.

    names = apply_lora(model, r=32, alpha=64)      # wrap the language model's linears, freeze everything else
    with disable_lora(model): reference = model(**batch)           # the base model, adapters off
    save_adapter(model, "runs/x", base_model="Qwen/Qwen2.5-VL-7B-Instruct")   # loads with peft.PeftModel too
    load_adapter(model, "runs/x"); merge_lora(model); model.save_pretrained("runs/merged")

Every stage trains these (docs/method.md, "Training": rank 32, alpha 64 for DPO; `python temple.py dpo -r 16`).
Standalone on purpose (torch, safetensors and the standard library only): copy it into your own project.
"""

import contextlib
import json
import math
import os
import re
from collections import Counter

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

# apply_lora's defaults. A module whose path matches VISION belongs to the vision encoder or to the projector that
# feeds it into the language model (Qwen2/2.5/3-VL "model.visual", LLaVA "vision_tower" + "multi_modal_projector",
# Idefics "vision_model"); the DPO stages keep it frozen. OUTPUT_LAYERS are never wrapped: the vocabulary projection
# is huge and PEFT's "all-linear" skips it too. Everything else that is an nn.Linear gets an adapter.
VISION = r"visual|vision|projector"
OUTPUT_LAYERS = ("lm_head",)

PREFIX = "base_model.model."  # what PEFT puts before a module path in adapter_model.safetensors
KEY = re.compile(r"base_model\.model\.(.+)\.lora_([AB])(?:\.default)?\.weight")  # ".default": PEFT's in-memory name


class LoRALinear(nn.Module):
    """y = W x + b + scaling * B A dropout(x), with W and b frozen; a drop-in replacement for an nn.Linear.

    W and b are the wrapped layer's own Parameters, so `q_proj.weight` keeps its state_dict key."""

    def __init__(self, linear, r, alpha, dropout=0.0, rslora=False):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        for p in linear.parameters():
            p.requires_grad_(False)
        self.r, self.alpha, self.rslora = r, alpha, rslora
        # The adapter is kept in float32 even when the base is bf16 ("master weights"): training updates and merges
        # stay exact; forward casts it to the activations' dtype, like torch.autocast would.
        dtype = torch.promote_types(self.weight.dtype, torch.float32)
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, device=self.weight.device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, device=self.weight.device, dtype=dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's own init, as in PEFT; B = 0: a no-op
        self.dropout = nn.Dropout(dropout)  # on the LoRA input only; with p = 0 it returns x itself, no copy
        self.disabled = False  # True: the base layer alone (the DPO reference); the adapter is not computed at all
        self.merged = False
        self.train(linear.training)  # a model already in eval() mode must not get dropout-active adapters

    @property
    def scaling(self):
        return self.alpha / math.sqrt(self.r) if self.rslora else self.alpha / self.r  # rsLoRA: stable at high r

    def forward(self, x):
        y = F.linear(x, self.weight, self.bias)
        if self.merged:  # W already holds W + scaling * B A
            if self.disabled:
                raise RuntimeError("a merged adapter cannot be disabled; unmerge() it first")
            return y
        if self.disabled:
            return y
        h = F.linear(self.dropout(x), self.lora_A.to(x.dtype))  # (..., r)
        # y + scaling * h B^T as one GEMM that accumulates into a copy of y: no out-wide temporary, no extra add
        out = torch.addmm(y.reshape(-1, self.out_features), h.reshape(-1, self.r), self.lora_B.to(x.dtype).t(),
                          alpha=self.scaling)
        return out.view_as(y)

    def delta_weight(self):
        """scaling * B A in float32 (or wider): a bf16 product would round every element before the add."""
        dtype = torch.promote_types(self.weight.dtype, torch.float32)
        return (self.lora_B.to(dtype) @ self.lora_A.to(dtype)) * self.scaling

    @torch.no_grad()
    def merge(self):
        """W <- W + scaling * B A, summed in float32 and rounded to W's dtype once."""
        if not self.merged:
            delta = self.delta_weight()
            self.weight.copy_(self.weight.to(delta.dtype) + delta)
            self.merged = True

    @torch.no_grad()
    def unmerge(self):
        """W <- W - scaling * B A: exact up to float32 rounding (bf16 weights round once more)."""
        if self.merged:
            delta = self.delta_weight()
            self.weight.copy_(self.weight.to(delta.dtype) - delta)
            self.merged = False

    def as_linear(self):
        """A plain nn.Linear sharing this layer's (possibly merged) weight and bias."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        linear.weight, linear.bias = self.weight, self.bias
        return linear

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}, "
                f"alpha={self.alpha}, rslora={self.rslora}, dropout={self.dropout.p}")


# ----------------------------------------------------------------------------------------------------------------
# Wrapping, switching off, merging


def matches(name, pattern):
    """PEFT's target_modules rule: a string is a regex that must match the whole module name; a list matches a
    name equal to an entry or ending in "." + entry ("q_proj" matches "model.layers.0.self_attn.q_proj")."""
    if isinstance(pattern, str):
        return re.fullmatch(pattern, name) is not None
    return any(name == entry or name.endswith("." + entry) for entry in pattern)


def lora_modules(model):
    """{module name: LoRALinear} of every adapter in the model."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def output_layer_names(model):
    names = {name for name, _ in model.named_modules() if name.rpartition(".")[2] in OUTPUT_LAYERS}
    get_output = getattr(model, "get_output_embeddings", None)  # transformers' name for the vocabulary projection
    output = get_output() if get_output else None
    return names | {name for name, m in model.named_modules() if output is not None and m is output}


def replace_module(model, name, new):
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def freeze_all_but_lora(model):
    for p in model.parameters():
        p.requires_grad_(False)
    for m in lora_modules(model).values():
        m.lora_A.requires_grad_(True)
        m.lora_B.requires_grad_(True)


def apply_lora(model, r, alpha, dropout=0.0, target=None, exclude=None, rslora=False, include_vision=False):
    """Wrap linear layers in LoRALinear, freeze every other parameter; returns the wrapped module names.

    target: None = every nn.Linear; or a full-match regex / a list of names or suffixes (PEFT's rules, `matches`).
    exclude: same rules. Output layers (OUTPUT_LAYERS, get_output_embeddings()) are never wrapped, and neither is
    the vision encoder (VISION) unless include_vision=True (the SFT stage trains the ViT too)."""
    if lora_modules(model):
        raise ValueError("the model already has LoRA adapters; merge_lora(model) first to stack another one")
    skip = output_layer_names(model)
    names = [name for name, m in model.named_modules()
             if isinstance(m, nn.Linear) and name not in skip
             and (target is None or matches(name, target))
             and not (exclude is not None and matches(name, exclude))
             and (include_vision or not re.search(VISION, name))]
    if not names:
        raise ValueError(f"no linear layer matches target={target!r} (exclude={exclude!r}, "
                         f"include_vision={include_vision})")
    for name in names:
        replace_module(model, name, LoRALinear(model.get_submodule(name), r, alpha, dropout, rslora))
    freeze_all_but_lora(model)
    return names


@contextlib.contextmanager
def disable_lora(model):
    """Inside the block every adapter is off: the model computes exactly the base model (the DPO reference)."""
    modules = list(lora_modules(model).values())
    before = [m.disabled for m in modules]
    for m in modules:
        m.disabled = True
    try:
        yield model
    finally:
        for m, state in zip(modules, before):
            m.disabled = state


def merge_lora(model):
    """Fold every adapter into its weight and put plain nn.Linear layers back: `model.save_pretrained` then writes
    a normal checkpoint with the base model's keys. Returns the merged module names."""
    modules = lora_modules(model)
    for name, m in modules.items():
        m.merge()
        replace_module(model, name, m.as_linear())
    return list(modules)


# ----------------------------------------------------------------------------------------------------------------
# PEFT's format: adapter_model.safetensors + adapter_config.json


def minimal_suffixes(wrapped, others):
    """PEFT's compact target_modules: for each wrapped module the shortest name suffix no other module ends with."""
    def suffixes(name):
        parts = name.split(".")
        return [".".join(parts[i:]) for i in reversed(range(len(parts)))]  # "q_proj", "self_attn.q_proj", ...

    taken = {s for name in others for s in suffixes(name)}
    chosen = set()
    for name in sorted(wrapped):
        if not matches(name, chosen):
            chosen.add(next((s for s in suffixes(name) if s not in taken), name))
    return sorted(chosen)


def most_common(values):
    return Counter(values).most_common(1)[0][0]


def save_atomically(path, data):
    """Write `data` (bytes) to a file beside `path`, then rename it to `path`: readers never see half a file; a failure
    leaves no temporary file and names `path` (docs/stack.md, "Writing files")."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        if os.path.exists(tmp):
            os.unlink(tmp)
        with open(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666), "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_adapter(model, path, base_model=None, task_type="CAUSAL_LM", readme=None):
    """Write the adapters as PEFT does: `peft.PeftModel.from_pretrained(base, path)` loads them. Module paths are
    the live model's, so load with the same transformers version (model layouts move between versions). `readme`:
    the text of a README.md beside them (e.g. what the adapter must be loaded on)."""
    modules = lora_modules(model)
    if not modules:
        raise ValueError("the model has no LoRA adapters to save")
    tensors = {}
    for name, m in modules.items():
        tensors[f"{PREFIX}{name}.lora_A.weight"] = m.lora_A.detach().cpu().contiguous()
        tensors[f"{PREFIX}{name}.lora_B.weight"] = m.lora_B.detach().cpu().contiguous()
    others = [n for n, _ in model.named_modules() if n not in modules and n.rpartition(".")[0] not in modules]
    base_model = base_model or getattr(getattr(model, "config", None), "_name_or_path", None) or None
    config = peft_config(
        base_model, task_type, minimal_suffixes(modules, others), {n: m.r for n, m in modules.items()},
        {n: m.alpha for n, m in modules.items()}, most_common(m.rslora for m in modules.values()),
        most_common(m.dropout.p for m in modules.values()))
    write_adapter(path, tensors, config)
    if readme:
        save_atomically(os.path.join(path, "README.md"), readme.encode())


def peft_config(base_model, task_type, target_modules, ranks, alphas, rslora=False, dropout=0.0):
    """adapter_config.json: the most common rank and alpha, and per-module exceptions as full names."""
    r, alpha = most_common(ranks.values()), most_common(alphas.values())
    return {
        "peft_type": "LORA", "task_type": task_type, "base_model_name_or_path": base_model,
        "r": r, "lora_alpha": alpha, "use_rslora": rslora, "lora_dropout": dropout, "target_modules": target_modules,
        "rank_pattern": {n: v for n, v in ranks.items() if v != r},
        "alpha_pattern": {n: v for n, v in alphas.items() if v != alpha},
        "bias": "none", "fan_in_fan_out": False, "use_dora": False, "modules_to_save": None,
        "init_lora_weights": True, "inference_mode": True,
    }


def write_adapter(path, tensors, config):
    """The config first, the weights last: a directory with adapter_model.safetensors holds a whole adapter."""
    os.makedirs(path, exist_ok=True)
    save_atomically(os.path.join(path, "adapter_config.json"), (json.dumps(config, indent=2) + "\n").encode())
    save_atomically(os.path.join(path, "adapter_model.safetensors"),
                    safetensors_bytes(tensors, metadata={"format": "pt"}))


def pattern_value(patterns, name, default):
    """PEFT's rank_pattern / alpha_pattern lookup: the first key that matches the end of the module name."""
    return next((v for k, v in patterns.items() if re.match(rf"(.*\.)?({k})$", name)), default)


def read_adapter(model, path):
    """Config and {module name: (A, B)} of an adapter directory, all checked before the model changes. Every error
    names the offending key: an adapter that loads is an adapter that is used (never silently inactive)."""
    with open(os.path.join(path, "adapter_config.json")) as f:
        config = json.load(f)
    for field, wanted in [("peft_type", "LORA"), ("bias", "none"), ("use_dora", False), ("fan_in_fan_out", False)]:
        if config.get(field, wanted) != wanted:
            raise ValueError(f"{path}: adapter_config.json has {field}={config[field]!r}; only {wanted!r} is supported")
    tensors = load_file(os.path.join(path, "adapter_model.safetensors"))
    modules = dict(model.named_modules())
    found = {}  # module name -> {"A": key, "B": key}
    for key in sorted(tensors):
        match = KEY.fullmatch(key)
        if not match:
            raise ValueError(f"{path}: key '{key}' is not a LoRA weight (base_model.model.<module>.lora_A.weight)")
        name, which = match.groups()
        module = modules.get(name)
        if not isinstance(module, (nn.Linear, LoRALinear)):
            raise ValueError(f"{path}: key '{key}' matches no linear layer of this model (no module '{name}'); "
                             f"was the adapter made for another architecture or transformers version?")
        if isinstance(module, LoRALinear) and module.merged:
            raise ValueError(f"{path}: '{name}' holds a merged adapter; merge_lora(model) before loading another")
        # existing adapters (resuming) must have the saved rank; new ones get the config's
        r = module.r if isinstance(module, LoRALinear) else pattern_value(
            config.get("rank_pattern") or {}, name, config.get("r", 8))
        shape = (r, module.in_features) if which == "A" else (module.out_features, r)
        if tuple(tensors[key].shape) != shape:
            raise ValueError(f"{path}: key '{key}' has shape {tuple(tensors[key].shape)}, "
                             f"module '{name}' needs {shape}")
        found.setdefault(name, {})[which] = key
    for name, keys in found.items():
        for which, partner in [("A", "B"), ("B", "A")]:
            if which in keys and partner not in keys:
                raise ValueError(f"{path}: key '{keys[which]}' has no lora_{partner} partner")
    pairs = {name: (tensors[keys["A"]], tensors[keys["B"]]) for name, keys in found.items()}
    missing = [name for name in lora_modules(model) if name not in pairs]
    if missing:
        raise ValueError(f"{path}: the model has a LoRA adapter on '{missing[0]}' but the file has no weights for it")
    return config, pairs


def load_adapter(model, path):
    """Load a PEFT-format LoRA adapter (written here or by PEFT): wrap the modules it names (or fill the existing
    adapters, when resuming), copy its weights, freeze everything else. Returns the adapted module names."""
    config, pairs = read_adapter(model, path)
    for name, (a, b) in pairs.items():
        module = model.get_submodule(name)
        if not isinstance(module, LoRALinear):
            module = LoRALinear(module, a.shape[0], 1.0, config.get("lora_dropout", 0.0))
            replace_module(model, name, module)
        module.alpha = pattern_value(config.get("alpha_pattern") or {}, name, config.get("lora_alpha", 8))
        module.rslora = bool(config.get("use_rslora", False))
        with torch.no_grad():
            module.lora_A.copy_(a)
            module.lora_B.copy_(b)
    freeze_all_but_lora(model)
    return list(pairs)


# ----------------------------------------------------------------------------------------------------------------
# Adapters as weight updates: stacking the stages of a curriculum into one adapter, merging without a model wrapper


def adapter_updates(path):
    """{module name: (A, B)} of an adapter directory with its scaling folded into B, so B @ A is the module's update
    exactly as a loaded adapter would add it. Read from the files alone: no model needed."""
    with open(os.path.join(path, "adapter_config.json")) as f:
        config = json.load(f)
    tensors = load_file(os.path.join(path, "adapter_model.safetensors"))
    factors = {}
    for key, tensor in tensors.items():
        match = KEY.fullmatch(key)
        if not match:
            raise ValueError(f"{path}: key '{key}' is not a LoRA weight (base_model.model.<module>.lora_A.weight)")
        factors.setdefault(match.group(1), {})[match.group(2)] = tensor
    updates = {}
    for name, pair in factors.items():
        if set(pair) != {"A", "B"}:
            raise ValueError(f"{path}: module '{name}' has lora_{''.join(pair)} only")
        r = pair["A"].shape[0]
        alpha = pattern_value(config.get("alpha_pattern") or {}, name, config.get("lora_alpha", 8))
        scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
        updates[name] = (pair["A"], pair["B"] * scaling)
    return updates, config


def stack_adapters(paths, out, base_model=None):
    """One adapter whose update is the sum of the given adapters' updates, written to `out` in PEFT's format.

    The factors are concatenated: [B1 | B2] @ [A1; A2] = B1 A1 + B2 A2, so the ranks add up and nothing is
    approximated. Each B carries its own scaling, and alpha = rank makes the stacked scaling 1. A curriculum stage
    trains its adapter on the base with the earlier stages merged in; stacked with them, it loads on the plain base
    model (peft.PeftModel.from_pretrained too) and gives exactly the model the curriculum made. Module order in
    the stack follows `paths`, so the last adapter's rows are the last rows of every module it adapts."""
    parts = [adapter_updates(path) for path in paths]
    stacked = {}
    for updates, _ in parts:
        for name, (a, b) in updates.items():
            earlier_a, earlier_b = stacked.get(name, (a[:0], b[:, :0]))
            stacked[name] = (torch.cat([earlier_a, a.to(earlier_a.dtype)]), torch.cat([earlier_b, b.to(earlier_b.dtype)], 1))
    targets = [config.get("target_modules") for _, config in parts]
    if all(isinstance(t, list) for t in targets):  # each list matches its adapter's modules: the union matches all
        target_modules = sorted({entry for t in targets for entry in t})
    else:  # a regex: name every module instead
        target_modules = sorted(stacked)
    tensors = {}
    for name, (a, b) in stacked.items():
        tensors[f"{PREFIX}{name}.lora_A.weight"] = a.contiguous()
        tensors[f"{PREFIX}{name}.lora_B.weight"] = b.contiguous()
    ranks = {name: a.shape[0] for name, (a, _) in stacked.items()}
    base_model = base_model or parts[0][1].get("base_model_name_or_path")
    write_adapter(out, tensors, peft_config(base_model, parts[0][1].get("task_type", "CAUSAL_LM"), target_modules,
                                            ranks, ranks))


@torch.no_grad()
def merge_updates(model, updates):
    """W <- W + B @ A for every module in `updates` (from adapter_updates), summed in float32 and rounded once."""
    modules = dict(model.named_modules())
    for name, (a, b) in updates.items():
        module = modules.get(name)
        if not isinstance(module, nn.Linear):
            raise ValueError(f"cannot merge an update into '{name}': no such linear layer in this model")
        dtype = torch.promote_types(module.weight.dtype, torch.float32)
        delta = b.to(module.weight.device, dtype) @ a.to(module.weight.device, dtype)
        module.weight.copy_(module.weight.to(dtype) + delta)
