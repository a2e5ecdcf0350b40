"""reference_cache.py - the reference model's log-probs of a stage's pairs, computed once and kept beside the data
(--precompute-ref). A speed-up only: each step then runs the policy alone.

The reference is the stage's starting weights with LoRA off, fixed for the whole stage, so its log-probs of each pair
are too. The cache file's name carries a hash of everything they depend on, so other pairs, another start or other
video settings never read a stale cache.

    python temple.py dpo -r 16 --precompute-ref       # data/pairs_r16.ref-<hash>.json
"""

import hashlib
import json
import os
import sys
from dataclasses import dataclass

import torch
from tqdm import tqdm

import datafiles
import distributed
import dpo
import examples
import lora


def attach(model, encode, data_path, pairs, meta, world):
    """`encode` (a dpo.PairEncoder) with each pair's reference log-probs added as "ref", from the cache beside the
    pairs file, computed first (the stage's start with LoRA off) when it is not there."""
    distributed.check_shared_directory(os.path.dirname(os.path.abspath(data_path)), world,
                                       "the reference cache's directory")
    path = reference_cache_path(data_path, pairs, meta)
    with lora.disable_lora(model.hf_model):
        references = precompute_reference(model, encode, len(pairs), path, world)
    return WithReferences(encode, references, path)


@dataclass
class WithReferences:
    """encode(index) with the pair's cached reference log-probs, [chosen, rejected], as "ref"."""
    encode: object  # dpo.PairEncoder
    references: list  # per pair [chosen, rejected]; None for a pair unreadable when the cache was made
    path: str

    def __call__(self, index):
        encoded = self.encode(index)
        if self.references[index] is None:
            raise examples.BadItem(f"no cached reference (its video was unreadable when {self.path} was made; "
                                   f"delete it to recompute)", "unreadable video")
        return {**encoded, "ref": self.references[index]}

    def where(self, index):
        return self.encode.where(index)


def reference_cache_path(data_path, pairs, meta):
    """The cache file's name carries a hash of everything the reference log-probs depend on: the pairs in use, in
    order, with their resolved video paths (the cache is a list by position); the base model and its seed; the
    content of the adapter merged before this stage (a stage re-trained in place is another reference); the
    video and length settings."""
    start = meta["start"] and meta["start"]["adapter_sha256"]  # content, not place: a moved run is the same start
    used = [{k: v for k, v in pair.items() if k != "where"} for pair in pairs]  # not where the file lies
    h = hashlib.sha256(json.dumps(used, sort_keys=True).encode())
    h.update(json.dumps({**{k: meta.get(k) for k in ("model_seed", "video", "max_length", "truncation")},
                         "base_model": meta.get("base_model_id") or meta["base_model"], "start": start},
                        sort_keys=True).encode())
    return f"{os.path.splitext(data_path)[0]}.ref-{h.hexdigest()[:12]}.json"


def precompute_reference(model, encode, num_items, path, world):
    """[[ref chosen, ref rejected], ...] for every pair (None for a pair whose video cannot be read; training
    uses another in its place): each rank scores its share, rank 0 writes the cache."""
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    mine = {}
    for index in tqdm(range(world.rank, num_items, world.size), desc="reference log-probs", disable=not world.main):
        try:
            rows = encode(index)["rows"]
        except examples.BadItem as e:
            print(f"left out {encode.where(index)}: {e}", file=sys.stderr)
            mine[index] = None
            continue
        batch = model.to_device(dpo.collate_pairs(model, [rows]))
        with torch.no_grad():
            logps, _ = model.response_logps(batch)
        mine[index] = logps.tolist()
    merged = {k: v for part in distributed.all_gather(world, mine) for k, v in part.items()}
    values = [merged[i] for i in range(num_items)]
    distributed.on_main(world, lambda: datafiles.write_atomic(path, json.dumps(values)))
    return values
