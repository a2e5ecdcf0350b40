"""captions.py - TEMPLE's self-generated preference pairs: clip captions, video descriptions, pair filters.

The model makes its own training data (docs/method.md, "Captions, descriptions, pairs"; the released code's
generate_meta_data.py, generate_dpo_data.py and convert_to_swift.py):
    A. clip captions   the model captions every clip from its two keyframes; clip i >= 2 is shown with clip i-1 as
                       context ("describe, relate, then caption"); the answer's last line is kept and cleaned.
    B. descriptions    the model turns the list of clip captions into one video description (text only, sampled):
                       the clean list gives "chosen", the list perturbed at difficulty r (perturb.py: drop, shuffle,
                       reverse, and the new swap, repeat, speed) gives "rejected".
    C. pairs           the released filters (substring, a shortened video must give a shorter answer, 1.5x length
                       ratio, video present), a caption instruction drawn from six, and the count of every pair
                       dropped and why.

    python temple.py captions --videos data/videos.jsonl --model M         -> data/captions.jsonl
    python temple.py pairs --captions data/captions.jsonl -r 16 8 4 2 --model M
                                      -> data/descriptions.jsonl, data/pairs_r{16,8,4,2}.jsonl (+ .stats.json)

`pairs --perturb-input frames` perturbs the keyframe sequence itself and lets the model describe it (the paper's
wording) instead of the caption list (the released code); its files are named descriptions_frames.jsonl and
pairs_frames_r{r}.jsonl so the two routes can be compared.

Both generation steps are batch jobs (jobs.py): batched across clips and videos, resumable, and sharded under
torchrun (each rank takes every WORLD_SIZE-th video; rank 0 merges). Randomness (perturbation, sampling,
instruction) is derived from --seed and the video path, and every description is sampled with its own generator, so
a re-run, a resume, another batch size or another number of GPUs gives the same data.
"""

import hashlib
import json
import os
import random
import re
import sys
from collections import Counter
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

import datafiles
import hub
import jobs
import preprocess
import prompts as prompt_texts
from perturb import KINDS, perturb

# ----------------------------------------------------------------------------------------------------------------
# Settings (the prompts are prompts.py's)

# Clip captions: the released code passes no sampling arguments, so the checkpoint's generation_config decides:
# Qwen2-VL's and Qwen2.5-VL's (top_k 1, repetition_penalty 1.05) make it greedy with that penalty, as here.
CAPTION_REPETITION_PENALTY = 1.05
FILTER_REASONS = ("video_error", "video_missing", "unperturbed", "empty", "chosen_in_rejected", "drop_not_shorter",
                  "speed_not_shorter", "length_ratio")
SHORTENING = ("drop", "speed")  # kinds that show fewer clips: their description must come out shorter


# ----------------------------------------------------------------------------------------------------------------
# Records in: videos.jsonl (select) and captions.jsonl (step A)


def read_keyframes(path, keyframes):
    """A Video of the 2N keyframes, clip after clip."""
    return preprocess.read_frames(path, [k for pair in keyframes for k in pair])


# ----------------------------------------------------------------------------------------------------------------
# The same inputs give the same data: randomness derived from --seed, settings stored beside each output


def derived_seed(seed, *parts):
    """A 63-bit seed from --seed and e.g. (video, kind, r): the same inputs always give the same randomness."""
    digest = hashlib.sha256(json.dumps([seed, *parts]).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def caption_settings(model_name, max_new_tokens, pixel_options, prompts=prompt_texts.PROMPTS):
    """What captions.jsonl is made with (stored beside it: a resume with other settings is refused)."""
    return {"model": model_name, "max_new_tokens": max_new_tokens, **pixel_options,
            "prompts": {key: prompts[key] for key in prompt_texts.CAPTION_KEYS}}


def description_settings(model_name, route, seed, temperature, top_k, top_p, repetition_penalty, max_new_tokens,
                         pixel_options, prompts=prompt_texts.PROMPTS):
    """What descriptions.jsonl is made with (stored beside it: a resume with other settings is refused)."""
    keys = ("description", "description_caption_line") if route == "captions" else ("description_frames",)
    return dict(model=model_name, route=route, seed=seed, temperature=temperature, top_k=top_k, top_p=top_p,
                repetition_penalty=repetition_penalty, max_new_tokens=max_new_tokens, **pixel_options,
                prompts={key: prompts[key] for key in keys})


def sample_filters(model_name, top_k=None, top_p=None):
    """(top_k, top_p, where they came from) for the descriptions: the options when given, else what the model's
    generation_config.json sets, else no filter (0, 1.0). The released generate call passes do_sample, temperature
    and repetition_penalty but neither of these, so the checkpoint's own decide: Qwen2-VL's and Qwen2.5-VL's
    (top_k 1, top_p 0.001) made its sampled descriptions greedy in effect."""
    config = hub.generation_config(model_name) if top_k is None or top_p is None else None
    from_config = [name for name, given in (("top_k", top_k), ("top_p", top_p))
                   if given is None and getattr(config, name, None) is not None]
    top_k = top_k if top_k is not None else getattr(config, "top_k", None) or 0
    top_p = top_p if top_p is not None else getattr(config, "top_p", None) or 1.0
    return top_k, top_p, f"{' and '.join(from_config)} from {model_name}'s generation_config.json" if from_config else None


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


@dataclass
class ClipJob:
    record: dict  # the captions.jsonl record being filled in
    clips: list  # the video's clips, preprocessed once (clip i is also clip i+1's context)
    index: int


def open_clips(model, video, pixel_options):
    """(captions record, prepared clips); the record says status "error" with a reason if the video is unusable."""
    record = {"video": video["path"], "clips": video.get("clips"), "keyframes": video.get("keyframes"),
              "source": caption_source(video)}
    try:
        record["clips"], record["keyframes"] = datafiles.clips_and_keyframes(video)
        frames = read_keyframes(video["path"], record["keyframes"])
    except (*preprocess.BAD_VIDEO, datafiles.BadRecord) as e:
        return {**record, "status": "error", "reason": str(e).removeprefix(f"{video['path']}: ")}, None
    clips = [model.prepare(preprocess.Video(frames.frames[2 * i:2 * i + 2], frames.times[2 * i:2 * i + 2]), **pixel_options)
             for i in range(len(record["keyframes"]))]
    return {**record, "captions": [None] * len(clips), "status": "ok"}, clips


def caption_source(video):
    return jobs.fingerprint([video.get("clips"), video.get("keyframes")])


def caption_key(record):
    return record["video"], record.get("source")


def caption_batch(model, batch, journal, max_new_tokens, prompts):
    samples = [model.encode(clip_prompt(job.clips, job.index, prompts)) for job in batch]
    texts = model.generate(samples, max_new_tokens=max_new_tokens, temperature=0.0,
                           repetition_penalty=CAPTION_REPETITION_PENALTY)
    for job, text in zip(batch, texts):
        job.record["captions"][job.index] = clean_caption(text)
        if None not in job.record["captions"]:  # the video's last clip: the record is finished
            journal.append(job.record)


def caption_videos(model, videos, out_path, batch_size=8, max_new_tokens=2048, rank=0, world_size=1,
                   prompts=prompt_texts.PROMPTS, **pixel_options):
    """Step A over kept videos.jsonl records; rank 0 returns the merged captions.jsonl records (others: None).

    Clips from several videos share a generate call; a video's keyframes are decoded and preprocessed once and
    only when the queue needs more clips, so memory holds about one batch of videos.
    """
    settings = caption_settings(model.name, max_new_tokens, pixel_options, prompts)
    journal = jobs.Journal(out_path, key=caption_key, rank=rank, world_size=world_size, settings=settings)
    done = journal.done()  # a video whose clips changed since (a new `select`) is captioned again
    mine = [v for v in videos[rank::world_size] if (v["path"], caption_source(v)) not in done]
    finished = sum(caption_key({"video": v["path"], "source": caption_source(v)}) in done for v in videos)
    if rank == 0 and finished:
        print(f"resuming: {finished} videos already captioned", file=sys.stderr)
    progress = tqdm(total=sum(len(v.get("clips") or []) for v in mine), unit="clip", desc="clip captions",
                    disable=rank != 0)

    def clip_jobs():  # a video's keyframes are read only when the next batch needs its clips
        for video in mine:
            record, clips = open_clips(model, video, pixel_options)
            if clips is None:  # unreadable: its record says why
                journal.append(record)
                progress.update(len(video.get("clips") or []))
                continue
            yield [ClipJob(record, clips, i) for i in range(len(clips))]

    for batch in jobs.in_batches(clip_jobs(), batch_size):
        caption_batch(model, batch, journal, max_new_tokens, prompts)
        progress.update(len(batch))
    progress.close()
    return journal.merge([(v["path"], caption_source(v)) for v in videos])


def caption_summary(videos_path, out, records):
    """What `temple.py captions` prints once captions.jsonl is written: the count and every skipped video's reason.
    If not one video could be captioned it is an error instead, so a run over a broken videos.jsonl does not
    exit 0 (the error records stay in `out`, with their reasons)."""
    failed = [r for r in records if r["status"] != "ok"]
    retry = ("they are tried again when captions runs again" +
             (f"; relative paths start from the directory it runs in, {os.getcwd()}"
              if any(not os.path.isabs(r["video"]) for r in failed) else ""))
    if records and len(failed) == len(records):
        first = failed[0]
        raise ValueError(f"{videos_path}: nothing could be captioned, {len(failed)} of {len(records)} videos are "
                         f"errors (first: {first['video']}: {first['reason']}; all reasons in {out}; {retry})")
    return (f"{out}: {len(records) - len(failed)} videos captioned, {len(failed)} skipped" + (f" ({retry})" if failed else "")
            + "".join(f"\n  {r['video']}: {r['reason']}" for r in failed))


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


@dataclass
class DescriptionJob:
    video: str
    kind: str
    r: int | None
    order: list
    source: str  # description_source of the video
    prompt: list  # what VideoLM.encode takes


def description_key(record):
    return record["video"], record["kind"], record["r"]


def description_source(video, route):
    """What a video's descriptions are made from: its captions, or for the frames route its keyframes."""
    return jobs.fingerprint(video["captions"] if route == "captions" else [video["clips"], video["keyframes"]])


def journal_key(record):
    """Descriptions on disk count as done only while their source is unchanged."""
    return *description_key(record), record.get("source")


def frames_prompt(keyframes, order, prompts=prompt_texts.PROMPTS):
    """The frames route: the keyframes of the clips in `order` as one video; shown times are renumbered like the
    captions, so a perturbed sequence looks like an ordinary video."""
    frames = np.concatenate([keyframes.frames[2 * i:2 * i + 2] for i in order])
    return prompt_texts.with_videos(prompts["description_frames"], [preprocess.Video(frames, keyframes.times[:len(frames)])])


def open_description_jobs(video, rs, kinds, seed, route, done, prompts=prompt_texts.PROMPTS):
    """The video's unfinished jobs, or (for the frames route) error records if its keyframes cannot be read."""
    source = description_source(video, route)
    todo = [j for j in description_jobs(video, rs, kinds, seed) if (video["video"], j[0], j[1], source) not in done]
    if route == "captions":
        texts = [[prompt_texts.description(prompts, [video["captions"][i] for i in order])] for _, _, order in todo]
        return [DescriptionJob(video["video"], kind, r, order, source, prompt)
                for (kind, r, order), prompt in zip(todo, texts)], []
    try:
        keyframes = read_keyframes(video["video"], datafiles.clips_and_keyframes(video)[1]) if todo else None
    except (*preprocess.BAD_VIDEO, datafiles.BadRecord) as e:
        reason = str(e).removeprefix(f"{video['video']}: ")
        return [], [{"video": video["video"], "kind": kind, "r": r, "order": order, "source": source,
                     "status": "error", "reason": reason} for kind, r, order in todo]
    return [DescriptionJob(video["video"], kind, r, order, source, frames_prompt(keyframes, order, prompts))
            for kind, r, order in todo], []


def describe_batch(model, batch, journal, settings, pixel_options):
    samples = [model.encode(job.prompt, **pixel_options) for job in batch]
    seeds = [derived_seed(settings["seed"], job.video, "sample", job.kind, job.r) for job in batch]
    texts = model.generate(samples, max_new_tokens=settings["max_new_tokens"], temperature=settings["temperature"],
                           top_k=settings["top_k"], top_p=settings["top_p"],
                           repetition_penalty=settings["repetition_penalty"], seeds=seeds)
    for job, text in zip(batch, texts):
        journal.append({"video": job.video, "kind": job.kind, "r": job.r, "order": job.order, "source": job.source,
                        "text": strip_reasoning(text)})


def describe_videos(model, videos, out_path, rs, kinds=KINDS, route="captions", batch_size=8, max_new_tokens=8192,
                    temperature=0.7, top_k=0, top_p=1.0, repetition_penalty=1.05, seed=0, rank=0, world_size=1,
                    prompts=prompt_texts.PROMPTS, **pixel_options):
    """Step B: one clean and len(kinds) x len(rs) perturbed descriptions per video, resumable: a clean description
    made for `--r 16` is reused by a later `--r 8`. Rank 0 returns the merged records (others: None). top_k 0 and
    top_p 1.0 are no filter (sample_filters gives what the released run's generate call used)."""
    settings = description_settings(model.name, route, seed, temperature, top_k, top_p, repetition_penalty,
                                    max_new_tokens, pixel_options, prompts)
    journal = jobs.Journal(out_path, key=journal_key, rank=rank, world_size=world_size, settings=settings)
    done = journal.done()
    mine = videos[rank::world_size]
    todo_count = sum(1 for v in mine for kind, r, _ in description_jobs(v, rs, kinds, seed)
                     if (v["video"], kind, r, description_source(v, route)) not in done)
    progress = tqdm(total=todo_count, unit="description", desc="descriptions", disable=rank != 0)

    def video_jobs():  # the frames route reads a video's keyframes only when the next batch needs them
        for video in mine:
            todo, errors = open_description_jobs(video, rs, kinds, seed, route, done, prompts)
            for record in errors:  # unreadable keyframes: the records say why
                journal.append(record)
            progress.update(len(errors))
            yield todo

    for batch in jobs.in_batches(video_jobs(), batch_size):
        describe_batch(model, batch, journal, settings, pixel_options)
        progress.update(len(batch))
    progress.close()
    wanted = [(v["video"], kind, r, description_source(v, route))
              for v in videos for kind, r, _ in description_jobs(v, rs, kinds, seed)]
    # descriptions for other r stay for later runs; one made from an input that has changed since goes
    slots = {key[:3] for key in wanted}
    return journal.merge(wanted, keep=lambda record: description_key(record) not in slots)


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


def pair_reason(video, clean, perturbed, kind, max_length_ratio):
    if clean is None or perturbed is None or "error" in (clean.get("status"), perturbed.get("status")):
        return "video_error"
    if not os.path.exists(video):
        return "video_missing"
    if perturbed["order"] == clean["order"]:  # e.g. a one-clip video: nothing was perturbed
        return "unperturbed"
    return filter_reason(clean["text"], perturbed["text"], kind, max_length_ratio)


def descriptions_path(out_dir, route="captions"):
    return os.path.join(out_dir, "descriptions.jsonl" if route == "captions" else f"descriptions_{route}.jsonl")


def pairs_path(out_dir, r, route="captions"):
    return os.path.join(out_dir, f"pairs_r{r}.jsonl" if route == "captions" else f"pairs_{route}_r{r}.jsonl")


def pairs_settings(kinds=KINDS, seed=0, max_length_ratio=1.5, instructions=prompt_texts.PROMPTS["instructions"]):
    """What decides which pairs a pairs file holds, besides its descriptions: stored in its .stats.json."""
    return {"kinds": sorted(kinds), "seed": seed, "max_length_ratio": max_length_ratio,
            "instructions": list(instructions)}


def check_pairs_settings(out_dir, rs, route="captions", **settings):
    """Pairs made with other kinds, filters or instructions are not replaced silently: a stage that reads them would
    train on something else than before. Called before the model loads; settings as pairs_settings takes them."""
    wanted = pairs_settings(**settings)
    for r in rs:
        path = pairs_path(out_dir, r, route)
        if not os.path.exists(path) or not os.path.exists(datafiles.stats_path(path)):
            continue
        with open(datafiles.stats_path(path), encoding="utf-8") as f:
            before = {**pairs_settings(), **json.load(f)}  # a setting the file does not name had its default
        before["kinds"] = sorted(before["kinds"])
        changed = ", ".join(datafiles.changes({k: before.get(k) for k in wanted}, wanted))
        if changed:
            raise ValueError(f"{path} holds pairs made with other settings ({changed}); give another --out-dir, or "
                             f"delete it to make it anew")


def write_pairs(descriptions, out_dir, rs, route="captions", **settings):
    """pairs_r{r}.jsonl and pairs_r{r}.stats.json for every r; settings as pairs_settings takes them. Returns
    [(path, stats)]."""
    written = []
    for r in rs:
        pairs, stats = make_pairs(descriptions, r, **settings)
        stats.update(perturb_input=route, **pairs_settings(**settings))
        path = pairs_path(out_dir, r, route)
        datafiles.write_jsonl(path, pairs)
        datafiles.write_atomic(datafiles.stats_path(path), json.dumps(stats, indent=2) + "\n")
        written.append((path, stats))
    return written


def summary_line(path, stats):
    reasons = ", ".join(f"{n} {reason}" for reason, n in stats["dropped"].items() if n) or "none"
    return f"{path}: {stats['kept']} of {stats['candidates']} pairs kept (dropped: {reasons})"
