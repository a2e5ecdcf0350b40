"""hub.py - where a model's files are: a local directory, the local Hugging Face cache, or the hub when it answers.

It loads a checkpoint without waiting on a hub that does not answer, and says in one line why a model was not
found; and it answers the questions a run asks about a base model before (or without) loading it: is the hub
reachable, what does the checkpoint's generation_config.json say, which base model is this whatever it was called
(a hub id and its snapshot on disk are one model), and where is one of its files.

    hub.model_identity("Qwen/Qwen2.5-VL-7B-Instruct")     # {"config_sha256": ..., "weights": {name: size}} or None
"""

import hashlib
import os
import socket

from huggingface_hub import hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
from transformers import AutoModelForImageTextToText, AutoTokenizer, GenerationConfig

import tiny


def reachable(timeout=3):
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def generation_config(name):
    """The checkpoint's generation_config.json (a GenerationConfig), or None for a built-in tiny model or a model
    without one: what its generate() uses for every setting a call leaves out. Read without loading the model."""
    if name in tiny.TINY_MODELS:
        return None
    try:
        return GenerationConfig.from_pretrained(name, local_files_only=os.path.isdir(name) or not reachable())
    except OSError:
        return None


WEIGHT_FILES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")


def model_identity(name, seed=0):
    """What a base model is, whatever it is called (a hub id, its snapshot in the cache, a copy on another disk): a
    built-in tiny model is its name and seed, any other the hash of its config.json and the names and sizes of its
    weight files. None when its files are not here to look at (a hub id not in the local cache)."""
    if name in tiny.TINY_MODELS:
        return {"tiny": name, "seed": seed}
    directory = name if os.path.isdir(name) else None
    if directory is None:
        cached = try_to_load_from_cache(name, "config.json")
        directory = os.path.dirname(cached) if isinstance(cached, str) else None
    if directory is None or not os.path.isfile(os.path.join(directory, "config.json")):
        return None
    with open(os.path.join(directory, "config.json"), "rb") as f:
        config = hashlib.sha256(f.read()).hexdigest()
    weights = {n: os.path.getsize(os.path.join(directory, n)) for n in sorted(os.listdir(directory))
               if n.endswith(WEIGHT_FILES)}
    return {"config_sha256": config, "weights": weights}


UNCHECKED = object()  # base_model_file: the file may exist, but neither the cache nor the hub could tell


def base_model_file(base_model, name, ask_hub):
    """A file of the base model: its path, None when the base model has no such file, or UNCHECKED. Looked up in
    the model's directory, else in the local Hugging Face cache of a hub id, else, when ask_hub() says the hub
    answers, downloaded from it."""
    if base_model in tiny.TINY_MODELS:
        return None  # built in: no files
    if os.path.isdir(base_model):
        path = os.path.join(base_model, name)
        return path if os.path.isfile(path) else None
    cached = try_to_load_from_cache(base_model, name)  # a path, None (unknown), or a marker: known to be absent
    if isinstance(cached, str):
        return cached
    if cached is not None:  # the cache remembers that the hub has no such file
        return None
    if not ask_hub():
        return UNCHECKED
    try:
        return hf_hub_download(base_model, name)
    except LocalEntryNotFoundError:  # the download failed (docs/stack.md, "The Hugging Face cache")
        return UNCHECKED
    except EntryNotFoundError:  # the hub answered: the model has no such file
        return None
    except OSError:
        return UNCHECKED


def load_pretrained(name, dtype, attn_implementation):
    """(transformers model, tokenizer) of a local directory or hub id: from the local cache, or downloaded when the
    hub answers (HF_HUB_OFFLINE=1 forbids that); a model that cannot be had is a ValueError saying why."""
    local = os.path.isdir(name)
    if local and os.path.exists(os.path.join(name, "adapter_config.json")) and \
            not os.path.exists(os.path.join(name, "config.json")):
        raise ValueError(f"{name} holds a LoRA adapter (a training run), not a model: evaluate it with "
                         f"`temple.py eval --run {name}`, or make a model of it with `temple.py merge {name} "
                         f"--out DIR` and pass --model DIR")
    cached_only = local or not reachable()  # no long retries against a hub that does not answer
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=cached_only)
        model = AutoModelForImageTextToText.from_pretrained(
            name, dtype=dtype, attn_implementation=attn_implementation, local_files_only=cached_only)
    except OSError:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0")
        hint = "the directory has no model files" if local else (
            "no such directory and not in the local Hugging Face cache; HF_HUB_OFFLINE is set, so the hub was "
            "not asked (unset it to download, or pass a local directory with --model PATH)" if offline else
            "no such directory, not in the local Hugging Face cache, and the hub is unreachable; download it "
            "on a machine with internet and pass its directory with --model PATH" if cached_only else
            "no such directory, and the hub has no such (public) model")
        raise ValueError(f"model '{name}' was not found: {hint} (built-in: {', '.join(tiny.TINY_MODELS)})") from None
    except ImportError as e:  # e.g. flash_attention_2 without the flash-attn package
        raise ValueError(f"model '{name}' with --attn {attn_implementation}: {e}") from None
    return model, tokenizer
