"""captions.py - TEMPLE's self-generated preference pairs: clip captions, video descriptions, pair filters.

The model makes its own training data (docs/method.md, "Captions, descriptions, pairs"; the released code's
generate_meta_data.py, generate_dpo_data.py and convert_to_swift.py):
    A. clip captions   the model captions every clip from its two keyframes; clip i >= 2 is shown with clip i-1 as
                       context ("describe, relate, then caption"); the answer's last line is kept and cleaned.
    B. descriptions    the model turns the list of clip captions into one video description (text only, sampled at
                       T 0.7 under the checkpoint's own top_k / top_p): the clean list gives "chosen", the list
                       perturbed at difficulty r (perturb.py) gives "rejected".
    C. pairs           the released filters (substring, a shortened video must give a shorter answer, 1.5x length
                       ratio, video present), a caption instruction drawn from six, and the count of every pair
                       dropped and why.
`frames_prompt` is the paper's wording of B (the keyframe sequence itself perturbed and described) beside the
released code's caption list: `pairs --perturb-input frames`.

Randomness (perturbation, sampling, instruction) is derived from --seed and the video's path (`derived_seed`), so
the same inputs give the same pairs whatever the batch size or number of GPUs. caption_jobs.py runs these steps over
many videos (batched, resumable, sharded under torchrun):

    python temple.py captions --videos data/videos.jsonl --model M         -> data/captions.jsonl
    python temple.py pairs --captions data/captions.jsonl -r 16 8 4 2 --model M
                                      -> data/descriptions.jsonl, data/pairs_r{16,8,4,2}.jsonl (+ .stats.json)
"""

import hashlib
import json
import os
import random
import re
from collections import Counter

import numpy as np

import hub
import preprocess
import prompts as prompt_texts
from perturb import KINDS, perturb

# the released captions: greedy, with the penalty of Qwen2/2.5-VL's generation_config (docs/stack.md, "Generation
# configs", for this and the descriptions' top_k / top_p)
CAPTION_REPETITION_PENALTY = 1.05
FILTER_REASONS = ("video_error", "video_missing", "unperturbed", "empty", "chosen_in_rejected", "drop_not_shorter",
                  "speed_not_shorter", "length_ratio")
SHORTENING = ("drop", "speed")  # kinds that show fewer clips: their description must come out shorter


def derived_seed(seed, *parts):
    """A 63-bit seed from --seed and e.g. (video, kind, r): the same inputs always give the same randomness."""
    digest = hashlib.sha256(json.dumps([seed, *parts]).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def sample_filters(model_name, top_k=None, top_p=None):
    """(top_k, top_p, where they came from) for the descriptions: the options when given, else what the model's
    generation_config.json sets, as in the released run, which set neither, else no filter (0, 1.0)."""
    config = hub.generation_config(model_name) if top_k is None or top_p is None else None
    from_config = [name for name, given in (("top_k", top_k), ("top_p", top_p))
                   if given is None and getattr(config, name, None) is not None]
    top_k = top_k if top_k is not None else getattr(config, "top_k", None) or 0
    top_p = top_p if top_p is not None else getattr(config, "top_p", None) or 1.0
    origin = f"{' and '.join(from_config)} from {model_name}'s generation_config.json" if from_config else None
    return top_k, top_p, origin


# ----------------------------------------------------------------------------------------------------------------
# A. Clip captions: two keyframes per clip, the previous clip as context


def strip_reasoning(text):
    """Keep what follows a reasoning model's </think> (MiMo-VL)."""
    return text.split("</think>")[-1].strip()


def with_case_of(word, replacement):
    return replacement[0].upper() + replacement[1:] if word[0].isupper() else replacement


def clean_caption(text):
    """Step A's clean-up: keep the answer's last line; drop '**', a 'Caption:' label and quotes; name the clips
    in prose."""
    lines = [line.strip() for line in strip_reasoning(text).splitlines() if line.strip()]
    caption = lines[-1] if lines else ""
    caption = re.sub(r"^[*#\s]*(?:detailed\s+)?caption(?:\s+for\s+video\s+clip\s*2)?\s*[:：]\s*\**\s*", "", caption,
                     flags=re.IGNORECASE)
    caption = caption.strip("* ").strip()
    if len(caption) >= 2 and caption[0] in "\"'“" and caption[-1] in "\"'”":
        caption = caption[1:-1].strip()
    caption = re.sub(r"\bvideo clip 2\b", lambda m: with_case_of(m.group(), "this video clip"), caption, flags=re.I)
    caption = re.sub(r"\bvideo clip 1\b", lambda m: with_case_of(m.group(), "the previous clip"), caption, flags=re.I)
    return caption


def clip_prompt(clips, index, prompts=prompt_texts.PROMPTS):
    """The prompt for clip `index` (0-based); `clips` are the video's clips, each a prepared 2-frame video."""
    if index == 0:
        return prompt_texts.with_videos(prompts["caption_first_clip"], [clips[0]])
    return prompt_texts.with_videos(prompts["caption_with_context"], clips[index - 1:index + 1])


def keyframe_clips(model, keyframes, pixel_options):
    """A video's clips for step A: each clip's two keyframes as a 2-frame video, prepared for the model once (clip i
    is shown again as clip i+1's context)."""
    return [model.prepare(preprocess.Video(keyframes.frames[i:i + 2], keyframes.times[i:i + 2]), **pixel_options)
            for i in range(0, len(keyframes.frames), 2)]


def caption(model, prompts, max_new_tokens):
    """Step A's generation for a batch of clip prompts: greedy, with the released repetition penalty; each answer
    cleaned to its caption."""
    texts = model.generate([model.encode(prompt) for prompt in prompts], max_new_tokens=max_new_tokens,
                           temperature=0.0, repetition_penalty=CAPTION_REPETITION_PENALTY)
    return [clean_caption(text) for text in texts]


# ----------------------------------------------------------------------------------------------------------------
# B. Video descriptions: the clean and the perturbed caption lists (or keyframe sequences), sampled


def description_jobs(video, rs, kinds, seed):
    """(kind, r, order) for the clean input (kind "none", r None) and every kind x r, perturbations seeded by
    (seed, video, kind, r) so a resume recomputes the very same orders."""
    n = len(video["clips"] or [])  # a malformed record (frames route) gets its error records under these keys
    orders = [("none", None, list(range(n)))]
    for r in rs:
        for kind in kinds:
            _, order = perturb(range(n), kind, r, random.Random(derived_seed(seed, video["video"], kind, r)))
            orders.append((kind, r, order))
    return orders


def description_prompt(captions, order, prompts=prompt_texts.PROMPTS):
    """The released route: the clip captions in `order` as one numbered list to describe (text only)."""
    return [prompt_texts.description(prompts, [captions[i] for i in order])]


def frames_prompt(keyframes, order, prompts=prompt_texts.PROMPTS):
    """The frames route: the keyframes of the clips in `order` as one video; shown times are renumbered like the
    captions, so a perturbed sequence looks like an ordinary video."""
    frames = np.concatenate([keyframes.frames[2 * i:2 * i + 2] for i in order])
    video = preprocess.Video(frames, keyframes.times[:len(frames)])
    return prompt_texts.with_videos(prompts["description_frames"], [video])


def describe(model, prompts, seeds, max_new_tokens, temperature, top_k, top_p, repetition_penalty, **pixel_options):
    """Step B's generation for a batch of description prompts, each sampled with its own generator (`seeds`)."""
    texts = model.generate([model.encode(prompt, **pixel_options) for prompt in prompts], max_new_tokens=max_new_tokens,
                           temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty,
                           seeds=seeds)
    return [strip_reasoning(text) for text in texts]


# ----------------------------------------------------------------------------------------------------------------
# C. Pairs: clean = chosen, perturbed = rejected, after the released filters


def filter_reason(chosen, rejected, kind, max_length_ratio=1.5):
    """Why the released convert_to_swift.py would drop this pair (plus: an empty answer), or None to keep it. The
    released rule for drop (dropped clips must lose content) holds for speed too, which also shows fewer clips; the
    other kinds show as many and must keep the answer's length within max_length_ratio."""
    if not chosen.strip() or not rejected.strip():
        return "empty"
    if chosen in rejected:
        return "chosen_in_rejected"
    if kind in SHORTENING and len(chosen) <= len(rejected):
        return f"{kind}_not_shorter"
    if kind not in SHORTENING and max(len(chosen), len(rejected)) > max_length_ratio * min(len(chosen), len(rejected)):
        return "length_ratio"
    return None


def make_pairs(descriptions, r, kinds=KINDS, seed=0, max_length_ratio=1.5,
               instructions=prompt_texts.PROMPTS["instructions"]):
    """(pairs, stats) for one r: a pair per video and kind unless a filter drops it, with an instruction drawn from
    `instructions`; stats count every reason, so kept + sum(dropped) == candidates."""
    by_key = {description_key(d): d for d in descriptions}
    videos = list(dict.fromkeys(d["video"] for d in descriptions))
    dropped, pairs = Counter({reason: 0 for reason in FILTER_REASONS}), []
    for video in videos:
        clean = by_key.get((video, "none", None))
        for kind in kinds:
            perturbed = by_key.get((video, kind, r))
            reason = pair_reason(video, clean, perturbed, kind, max_length_ratio)
            if reason:
                dropped[reason] += 1
                continue
            rng = random.Random(derived_seed(seed, video, "instruction", kind, r))
            pairs.append({"video": video, "instruction": rng.choice(instructions), "chosen": clean["text"],
                          "rejected": perturbed["text"], "kind": kind, "r": r, "order": perturbed["order"]})
    stats = {"r": r, "videos": len(videos), "candidates": len(videos) * len(kinds), "kept": len(pairs),
             "dropped": dict(dropped), "kept_by_kind": dict(Counter(p["kind"] for p in pairs))}
    return pairs, stats


def description_key(record):
    return record["video"], record["kind"], record["r"]


def pair_reason(video, clean, perturbed, kind, max_length_ratio):
    if clean is None or perturbed is None or "error" in (clean.get("status"), perturbed.get("status")):
        return "video_error"
    if not os.path.exists(video):
        return "video_missing"
    if perturbed["order"] == clean["order"]:  # e.g. a one-clip video: nothing was perturbed
        return "unperturbed"
    return filter_reason(clean["text"], perturbed["text"], kind, max_length_ratio)


