"""caption_jobs.py - captions.py's steps run over many videos: batched, resumable, sharded under torchrun.

`temple.py captions` and `temple.py pairs` call caption_videos, describe_videos and write_pairs. Clips and
descriptions of several videos share a generate call; a video's keyframes are read only when the next batch needs
them, so memory holds about one batch of videos. Every record goes to a journal (jobs.Journal) as soon as it is
made: a stopped run resumes where it stopped, each rank takes every WORLD_SIZE-th video and rank 0 merges. The
settings a file was made with are stored beside it, and a resume with other settings is refused; a record whose
input changed since (a new `select`, new captions) is made again.

    python temple.py captions --videos data/videos.jsonl --model M         -> data/captions.jsonl
    python temple.py pairs --captions data/captions.jsonl -r 16 8 4 2 --model M
"""

import json
import os
import sys
from dataclasses import dataclass

from tqdm import tqdm

import captions
import datafiles
import jobs
import preprocess
import prompts as prompt_texts
from perturb import KINDS


def read_keyframes(path, keyframes):
    """A Video of the 2N keyframes, clip after clip."""
    return preprocess.read_frames(path, [k for pair in keyframes for k in pair])


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
    clips = captions.keyframe_clips(model, frames, pixel_options)
    return {**record, "captions": [None] * len(clips), "status": "ok"}, clips


def caption_source(video):
    return jobs.fingerprint([video.get("clips"), video.get("keyframes")])


def caption_key(record):
    return record["video"], record.get("source")


def caption_batch(model, batch, journal, max_new_tokens, prompts):
    texts = captions.caption(model, [captions.clip_prompt(job.clips, job.index, prompts) for job in batch],
                             max_new_tokens)
    for job, text in zip(batch, texts):
        job.record["captions"][job.index] = text
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
    return (f"{out}: {len(records) - len(failed)} videos captioned, {len(failed)} skipped"
            + (f" ({retry})" if failed else "")
            + "".join(f"\n  {r['video']}: {r['reason']}" for r in failed))


@dataclass
class DescriptionJob:
    video: str
    kind: str
    r: int | None
    order: list
    source: str  # description_source of the video
    prompt: list  # what VideoLM.encode takes


def description_source(video, route):
    """What a video's descriptions are made from: its captions, or for the frames route its keyframes."""
    return jobs.fingerprint(video["captions"] if route == "captions" else [video["clips"], video["keyframes"]])


def journal_key(record):
    """Descriptions on disk count as done only while their source is unchanged."""
    return *captions.description_key(record), record.get("source")


def open_description_jobs(video, rs, kinds, seed, route, done, prompts=prompt_texts.PROMPTS):
    """The video's unfinished jobs, or (for the frames route) error records if its keyframes cannot be read."""
    source = description_source(video, route)
    todo = [(kind, r, order) for kind, r, order in captions.description_jobs(video, rs, kinds, seed)
            if (video["video"], kind, r, source) not in done]
    if route == "captions":
        return [DescriptionJob(video["video"], kind, r, order, source,
                               captions.description_prompt(video["captions"], order, prompts))
                for kind, r, order in todo], []
    try:
        keyframes = read_keyframes(video["video"], datafiles.clips_and_keyframes(video)[1]) if todo else None
    except (*preprocess.BAD_VIDEO, datafiles.BadRecord) as e:
        reason = str(e).removeprefix(f"{video['video']}: ")
        return [], [{"video": video["video"], "kind": kind, "r": r, "order": order, "source": source,
                     "status": "error", "reason": reason} for kind, r, order in todo]
    return [DescriptionJob(video["video"], kind, r, order, source, captions.frames_prompt(keyframes, order, prompts))
            for kind, r, order in todo], []


def describe_batch(model, batch, journal, settings, pixel_options):
    seeds = [captions.derived_seed(settings["seed"], job.video, "sample", job.kind, job.r) for job in batch]
    texts = captions.describe(model, [job.prompt for job in batch], seeds, settings["max_new_tokens"],
                              settings["temperature"], settings["top_k"], settings["top_p"],
                              settings["repetition_penalty"], **pixel_options)
    for job, text in zip(batch, texts):
        journal.append({"video": job.video, "kind": job.kind, "r": job.r, "order": job.order, "source": job.source,
                        "text": text})


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
    todo_count = sum(1 for v in mine for kind, r, _ in captions.description_jobs(v, rs, kinds, seed)
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
              for v in videos for kind, r, _ in captions.description_jobs(v, rs, kinds, seed)]
    # descriptions for other r stay for later runs; one made from an input that has changed since goes
    slots = {key[:3] for key in wanted}
    return journal.merge(wanted, keep=lambda record: captions.description_key(record) not in slots)


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
        pairs, stats = captions.make_pairs(descriptions, r, **settings)
        stats.update(perturb_input=route, **pairs_settings(**settings))
        path = pairs_path(out_dir, r, route)
        datafiles.write_jsonl(path, pairs)
        datafiles.write_atomic(datafiles.stats_path(path), json.dumps(stats, indent=2) + "\n")
        written.append((path, stats))
    return written


def summary_line(path, stats):
    reasons = ", ".join(f"{n} {reason}" for reason, n in stats["dropped"].items() if n) or "none"
    return f"{path}: {stats['kept']} of {stats['candidates']} pairs kept (dropped: {reasons})"
