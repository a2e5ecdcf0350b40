"""captions.py and caption_jobs.py: clip captions, descriptions, pair filters, resume and sharding, the HTML viewer,
ms-swift export."""

import json
import os
import random
import re
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pytest
import torch

import caption_jobs
import captions
import datafiles
import jobs
import temple
import vlm
import views
from media import scene_frames, write_video
from perturb import ALL_KINDS, CURRICULUM, KINDS, perturb
from prompts import PROMPTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = dict(min_pixels=32 * 32, max_pixels=64 * 64)  # a 2-frame clip becomes a handful of tokens


@pytest.fixture(scope="module")
def tiny():
    return vlm.load("tiny")


def video_record(path, num_clips, frames_per_clip=6, status="kept"):
    clips = [[frames_per_clip * i, frames_per_clip * (i + 1)] for i in range(num_clips)]
    return {"path": str(path), "fps": 6, "num_frames": frames_per_clip * num_clips, "shots": clips, "clips": clips,
            "keyframes": [[s + 1, e - 2] for s, e in clips], "status": status, "reason": None}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """videos.jsonl with three good videos, a rejected one, a vanished file, a broken file, a malformed record."""
    root = tmp_path_factory.mktemp("videos")
    records = []
    for k, num_clips in enumerate([4, 5, 3]):
        path = write_video(root / f"good{k}.mp4", scene_frames(num_clips, 6, 32, 48, seed=k), fps=6)
        records.append(video_record(path, num_clips))
    records.append(video_record(root / "boring.mp4", 4, status="rejected"))
    records.append(video_record(root / "vanished.mp4", 4))
    (root / "broken.mp4").write_bytes(b"this is not a video")
    records.append(video_record(root / "broken.mp4", 4))
    records.append({**video_record(records[0]["path"].replace("good0", "odd"), 4), "keyframes": [[1, 2]]})
    path = root / "videos.jsonl"
    datafiles.write_jsonl(path, records)
    return str(path)


def caption(tiny, dataset, out, **kw):
    return caption_jobs.caption_videos(tiny, datafiles.kept_videos(dataset), str(out), max_new_tokens=8,
                                       **{"batch_size": 8, **kw, **SMALL})


@pytest.fixture(scope="module")
def captioned(tiny, dataset, tmp_path_factory):
    return caption(tiny, dataset, tmp_path_factory.mktemp("captions") / "captions.jsonl")


def fake_videos(num_clips=(4, 6, 5), root="/nonexistent"):
    """Captioned videos with distinct, known captions (no model needed to make them)."""
    return [{"video": f"{root}/v{k}.mp4", "clips": [[i, i + 1] for i in range(n)],
             "keyframes": [[i, i] for i in range(n)], "captions": [f"event {k}.{i} happens" for i in range(n)]}
            for k, n in enumerate(num_clips)]


def echo_captions(model, samples, *args, **kwargs):
    """Stands in for VideoLM.generate: answers with the captions the prompt lists, in the order listed."""
    texts = [model.tokenizer.decode(s.input_ids, skip_special_tokens=True) for s in samples]
    return [" then ".join(re.findall(r"- Caption \d+: (.*)", t)) for t in texts]


# ---- step A: clip captions -------------------------------------------------------------------------------------


def test_clean_caption_follows_the_released_post_processing():
    answer = ("Video clip 2 shows a man.\n\nThe clips are related.\n"
              "**Caption:** \"In video clip 2, the man from video clip 1 opens the door.\"")
    assert captions.clean_caption(answer) == "In this video clip, the man from the previous clip opens the door."
    assert captions.clean_caption("Detailed caption: Video clip 2 begins.") == "This video clip begins."
    assert captions.clean_caption("<think>hmm\nCaption: x</think>\nA dog runs.") == "A dog runs."
    assert captions.clean_caption("") == ""


def test_prompts_show_the_previous_clip_as_context():
    clips = ["clip0", "clip1", "clip2"]
    first = captions.clip_prompt(clips, 0)
    assert first[:2] == ["", "clip0"] and first[2].startswith("Describe this video clip in detail") and len(first) == 3
    prompt = captions.clip_prompt(clips, 2)
    assert prompt[1] == "clip1" and prompt[3] == "clip2" and "caption for video clip 2" in prompt[-1]
    assert "<vid>" not in "".join(part for part in prompt if isinstance(part, str))


def test_captions_for_kept_videos_and_bad_entries_recorded(captioned, dataset):
    kept = [r for r in datafiles.read_jsonl(dataset) if r["status"] == "kept"]
    assert [r["video"] for r in captioned] == [r["path"] for r in kept]  # input order, rejected one left out
    ok = [r for r in captioned if r["status"] == "ok"]
    assert len(ok) == 3
    for record in ok:
        assert len(record["captions"]) == len(record["clips"]) == len(record["keyframes"])
        assert all(isinstance(c, str) and "\n" not in c for c in record["captions"])
    reasons = {os.path.basename(r["video"]): r["reason"] for r in captioned if r["status"] == "error"}
    assert set(reasons) == {"vanished.mp4", "broken.mp4", "odd.mp4"}
    assert "no such file" in reasons["vanished.mp4"] and "not a readable video" in reasons["broken.mp4"]
    assert "malformed" in reasons["odd.mp4"]


def test_a_video_too_thin_for_qwen_is_recorded_not_fatal(tiny, tmp_path):
    thin = write_video(tmp_path / "thin.mp4", np.random.default_rng(0).integers(0, 255, (10, 2, 404, 3)), fps=5)
    video = {"path": thin, "status": "kept", "clips": [[0, 5], [5, 10]], "keyframes": [[1, 3], [6, 8]]}
    record, clips = caption_jobs.open_clips(tiny, video, {})
    assert clips is None and record["status"] == "error" and record["reason"] == "aspect ratio 202 is over 200"


def test_batched_captions_equal_one_at_a_time(tiny, dataset, captioned, tmp_path):
    assert caption(tiny, dataset, tmp_path / "one.jsonl", batch_size=1) == captioned


def test_resume_after_an_interrupted_run(tiny, dataset, captioned, tmp_path, monkeypatch):
    out = tmp_path / "captions.jsonl"
    generate, calls = vlm.VideoLM.generate, []

    def dies_on_third_call(self, samples, **kw):
        calls.append(len(samples))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return generate(self, samples, **kw)

    monkeypatch.setattr(vlm.VideoLM, "generate", dies_on_third_call)
    with pytest.raises(KeyboardInterrupt):
        caption(tiny, dataset, out, batch_size=3)
    part = str(out) + ".part0of1"
    finished = datafiles.read_jsonl(part)
    assert not out.exists() and 1 <= len(finished) < len(captioned)
    with open(part, "a") as f:
        f.write('{"video": "half a line')  # killed in the middle of a write
    calls.clear()
    monkeypatch.setattr(vlm.VideoLM, "generate", lambda self, samples, **kw: calls.append(len(samples)) or
                        generate(self, samples, **kw))
    assert caption(tiny, dataset, out, batch_size=3) == captioned
    clips_done_before = sum(len(r["clips"]) for r in finished if r["status"] == "ok")
    assert sum(calls) == sum(len(r["clips"]) for r in captioned if r["status"] == "ok") - clips_done_before
    assert datafiles.read_jsonl(out) == captioned and not os.path.exists(part)
    calls.clear()
    assert caption(tiny, dataset, out) == captioned and calls == []  # all done: nothing is generated again


def test_two_ranks_share_the_videos_and_rank0_merges(tiny, dataset, captioned, tmp_path):
    out = tmp_path / "captions.jsonl"
    assert caption(tiny, dataset, out, rank=1, world_size=2) is None
    rank1 = datafiles.read_jsonl(str(out) + ".part1of2")
    kept = datafiles.kept_videos(dataset)
    assert sorted(r["video"] for r in rank1) == sorted(v["path"] for v in kept[1::2])  # in order of completion
    assert caption(tiny, dataset, out, rank=0, world_size=2) == captioned
    assert datafiles.read_jsonl(out) == captioned and not list(tmp_path.glob("*.part*"))


def test_resuming_with_other_settings_is_an_error(tiny, dataset, tmp_path):
    out = tmp_path / "captions.jsonl"
    caption(tiny, dataset, out)
    with pytest.raises(ValueError, match="other settings"):
        caption_jobs.caption_videos(tiny, datafiles.kept_videos(dataset), str(out), max_new_tokens=9, **SMALL)


def test_a_video_whose_clips_changed_is_captioned_again(tiny, dataset, captioned, tmp_path, monkeypatch):
    out = tmp_path / "captions.jsonl"
    caption(tiny, dataset, out)
    videos = datafiles.kept_videos(dataset)
    videos[1] = {**videos[1], "keyframes": [[s, e - 1] for s, e in videos[1]["clips"]]}  # a new `select`
    generate, calls = vlm.VideoLM.generate, []
    monkeypatch.setattr(vlm.VideoLM, "generate", lambda self, samples, **kw: calls.append(len(samples)) or
                        generate(self, samples, **kw))
    again = caption_jobs.caption_videos(tiny, videos, str(out), max_new_tokens=8, batch_size=8, **SMALL)
    assert sum(calls) == len(videos[1]["clips"])  # only that video's clips
    assert again[1]["keyframes"] == videos[1]["keyframes"] and again[0] == captioned[0]
    assert datafiles.read_jsonl(out) == again  # the stale record is gone from the file


def test_clip_records_as_lists_or_dicts():
    as_lists = {"clips": [[0, 6], [6, 12]], "keyframes": [[1, 4], [7, 10]]}
    as_dicts = {"clips": [{"start": 0, "end": 6, "keyframes": [1, 4]}, {"start": 6, "end": 12, "keyframes": [7, 10]}]}
    assert datafiles.clips_and_keyframes(as_lists) == datafiles.clips_and_keyframes(as_dicts) == tuple(as_lists.values())
    for bad in [{}, {"clips": [[0, 6]], "keyframes": []}, {"clips": [[0, 6]], "keyframes": [[1, "x"]]}]:
        with pytest.raises(ValueError, match="malformed"):
            datafiles.clips_and_keyframes(bad)


# ---- step B + C: descriptions and pairs ----------------------------------------------------------------------


def test_row_sampler_is_seeded_per_row_and_respects_top_k_and_top_p():
    scores = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    pick = lambda seeds, **kw: vlm.RowSampler(seeds, kw.get("temperature", 1.0), kw.get("top_k", 0),  # noqa
                                              kw.get("top_p", 1.0), "cpu")(None, scores.clone()).argmax(-1).tolist()
    out = vlm.RowSampler([1, 2, 3], 1.0, 0, 1.0, "cpu")(None, scores.clone())
    assert ((out == 0).sum(-1) == 1).all() and torch.isinf(out).sum() == 3 * 49  # one allowed token per row
    assert pick([1, 2, 3]) == pick([1, 2, 3])
    assert [pick([s, 0, 0])[0] for s in range(20)] != [pick([1, 0, 0])[0]] * 20  # the seed matters
    assert pick([4, 5, 6], top_p=1e-6) == scores.argmax(-1).tolist()  # the nucleus holds the top token only
    assert pick([4, 5, 6], temperature=1e-4) == scores.argmax(-1).tolist()
    assert pick([4, 5, 6], top_k=1) == scores.argmax(-1).tolist()  # Qwen's generation_config: greedy in effect
    top3 = scores.topk(3, dim=-1).indices.tolist()
    for seed in range(10):
        assert all(token in allowed for token, allowed in zip(pick([seed, seed + 1, seed + 2], top_k=3), top3))



def check_pairs_files(out_dir, videos, rs, route="captions"):
    """Every pairs file is well formed and its stats add up; returns {r: pairs}."""
    by_video = {v["video"]: v for v in videos}
    found = {}
    for r in rs:
        path = caption_jobs.pairs_path(out_dir, r, route)
        pairs = datafiles.read_jsonl(path) if os.path.getsize(path) else []
        with open(datafiles.stats_path(path)) as f:
            stats = json.load(f)
        assert stats["candidates"] == len(videos) * len(KINDS)
        assert stats["kept"] + sum(stats["dropped"].values()) == stats["candidates"]
        assert stats["kept"] == len(pairs) and set(stats["dropped"]) == set(captions.FILTER_REASONS)
        for pair in pairs:
            assert set(pair) == {"video", "instruction", "chosen", "rejected", "kind", "r", "order"}
            assert pair["r"] == r and pair["kind"] in KINDS and pair["instruction"] in PROMPTS["instructions"]
            assert isinstance(pair["chosen"], str) and isinstance(pair["rejected"], str)
            n = len(by_video[pair["video"]]["clips"])
            assert pair["order"] != list(range(n)) and sorted(set(pair["order"])) == sorted(pair["order"])
            assert all(0 <= i < n for i in pair["order"])
        found[r] = pairs
    return found


def test_pairs_end_to_end_with_the_tiny_model(tiny, dataset, captioned, tmp_path):
    videos = datafiles.pair_inputs(write_captions(captioned, tmp_path))
    descriptions = caption_jobs.describe_videos(tiny, videos, str(tmp_path / "descriptions.jsonl"), CURRICULUM,
                                                max_new_tokens=8)
    assert len(descriptions) == len(videos) * (1 + 3 * len(CURRICULUM))
    written = caption_jobs.write_pairs(descriptions, str(tmp_path), CURRICULUM)
    assert [os.path.basename(p) for p, _ in written] == [f"pairs_r{r}.jsonl" for r in CURRICULUM]
    check_pairs_files(str(tmp_path), videos, CURRICULUM)


def write_captions(records, directory):
    path = directory / "captions.jsonl"
    datafiles.write_jsonl(path, records)
    return str(path)


def test_pairs_kept_when_answers_follow_the_input(tiny, tmp_path, monkeypatch):
    for k in range(3):
        (tmp_path / f"v{k}.mp4").write_bytes(b"")  # the filter only checks that the video exists
    videos = fake_videos(root=str(tmp_path))
    monkeypatch.setattr(vlm.VideoLM, "generate", echo_captions)
    descriptions = caption_jobs.describe_videos(tiny, videos, str(tmp_path / "d.jsonl"), CURRICULUM)
    caption_jobs.write_pairs(descriptions, str(tmp_path), CURRICULUM)
    found = check_pairs_files(str(tmp_path), videos, CURRICULUM)
    for r, pairs in found.items():
        assert len(pairs) == 3 * len(videos)  # distinct captions: every filter passes
        for pair in pairs:
            video = next(v for v in videos if v["video"] == pair["video"])
            assert pair["chosen"] == " then ".join(video["captions"])
            assert pair["rejected"] == " then ".join(video["captions"][i] for i in pair["order"])
            seed = captions.derived_seed(0, pair["video"], pair["kind"], r)
            assert pair["order"] == perturb(range(len(video["clips"])), pair["kind"], r, random.Random(seed))[1]


def test_filters_of_the_released_code():
    reason = captions.filter_reason
    assert reason("a long chosen answer", "a long chosen answer, and more", "shuffle") == "chosen_in_rejected"
    assert reason("abc", "xyzw", "drop") == "drop_not_shorter" and reason("abcd", "wxyz", "drop") == "drop_not_shorter"
    assert reason("abcdef", "xyz", "drop") is None
    assert reason("a" * 10, "b" * 16, "reverse") == "length_ratio" and reason("a" * 10, "b" * 15, "reverse") is None
    assert reason("a" * 16, "b" * 10, "shuffle") == "length_ratio"
    assert reason("something", "", "drop") == "empty" and reason("", "x", "shuffle") == "empty"
    # ours: speed shows fewer clips, as drop does; swap and repeat as many, as shuffle and reverse do
    assert reason("abc", "xyzw", "speed") == "speed_not_shorter" and reason("abcdef", "xyz", "speed") is None
    assert reason("a" * 10, "b" * 16, "swap") == "length_ratio" == reason("a" * 16, "b" * 10, "repeat")
    assert reason("a" * 10, "b" * 15, "repeat") is None


def test_pairs_of_all_six_kinds_with_their_counts(tiny, tmp_path, monkeypatch):
    for k in range(3):
        (tmp_path / f"v{k}.mp4").write_bytes(b"")
    videos = fake_videos(root=str(tmp_path))
    monkeypatch.setattr(vlm.VideoLM, "generate", echo_captions)
    descriptions = caption_jobs.describe_videos(tiny, videos, str(tmp_path / "d.jsonl"), [4], kinds=ALL_KINDS)
    [(path, stats)] = caption_jobs.write_pairs(descriptions, str(tmp_path), [4], kinds=ALL_KINDS)
    pairs = datafiles.read_jsonl(path)
    assert stats["candidates"] == 6 * len(videos) and set(stats["kept_by_kind"]) <= set(ALL_KINDS)
    assert sum(stats["dropped"].values()) + stats["kept"] == stats["candidates"]
    for pair in pairs:
        video = next(v for v in videos if v["video"] == pair["video"])
        seed = captions.derived_seed(0, pair["video"], pair["kind"], 4)
        assert pair["order"] == perturb(range(len(video["clips"])), pair["kind"], 4, random.Random(seed))[1]
        assert pair["rejected"] == " then ".join(video["captions"][i] for i in pair["order"])
    assert {"swap", "repeat", "speed"} <= {p["kind"] for p in pairs}
    page = tmp_path / "p.html"
    views.pair_page(path, str(page))
    assert "kept, by kind" in page.read_text() and "<td>speed</td>" in page.read_text()
    parser = temple.build_parser()
    assert parser.parse_args(["pairs", "--kinds", "swap", "repeat", "speed"]).kinds == ["swap", "repeat", "speed"]
    assert parser.parse_args(["pairs"]).kinds == ["drop", "shuffle", "reverse"]  # the released three by default


def test_pairs_of_other_kinds_do_not_replace_earlier_pairs(tiny, tmp_path, monkeypatch, capsys):
    for k in range(3):
        (tmp_path / f"v{k}.mp4").write_bytes(b"")
    monkeypatch.setattr(vlm.VideoLM, "generate", echo_captions)
    descriptions = caption_jobs.describe_videos(tiny, fake_videos(root=str(tmp_path)), str(tmp_path / "d.jsonl"), [4],
                                                kinds=ALL_KINDS)
    [(path, _)] = caption_jobs.write_pairs(descriptions, str(tmp_path), [4])
    caption_jobs.check_pairs_settings(str(tmp_path), [4], kinds=["reverse", "drop", "shuffle"])  # another order
    caption_jobs.check_pairs_settings(str(tmp_path), [8], kinds=["swap"])  # no pairs_r8 yet
    with pytest.raises(ValueError, match=r'pairs_r4.jsonl holds pairs made with other settings \(kinds: \["drop", '
                                         r'"reverse", "shuffle"\] -> \["repeat", "speed", "swap"\]\); give another '
                                         r'--out-dir'):
        caption_jobs.check_pairs_settings(str(tmp_path), [4], kinds=["swap", "repeat", "speed"])
    with pytest.raises(ValueError, match=r"max_length_ratio: 1.5 -> 2.0"):
        caption_jobs.check_pairs_settings(str(tmp_path), [4], max_length_ratio=2.0)
    assert temple.main(["pairs", "--captions", str(tmp_path / "none.jsonl"), "--out-dir", str(tmp_path), "-r", "4",
                        "--kinds", "swap", "--model", "tiny"]) == 1
    assert "pairs_r4.jsonl holds pairs made with other settings" in capsys.readouterr().err  # before anything is read


def test_clean_description_is_made_once_and_reused_for_the_next_r(tiny, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(vlm.VideoLM, "generate", lambda model, samples, **options: calls.extend(options["seeds"]) or
                        echo_captions(model, samples))
    videos, out = fake_videos(), str(tmp_path / "descriptions.jsonl")
    caption_jobs.describe_videos(tiny, videos, out, [16])
    assert len(calls) == 4 * len(videos)
    calls.clear()
    later = caption_jobs.describe_videos(tiny, videos, out, [8])
    assert len(calls) == 3 * len(videos)  # no new clean description
    assert {d["r"] for d in later} == {None, 8}
    assert {d["r"] for d in datafiles.read_jsonl(out)} == {None, 16, 8}  # the r=16 descriptions stay in the file


def test_descriptions_are_made_again_when_the_captions_changed(tiny, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(vlm.VideoLM, "generate", lambda model, samples, **options: calls.extend(options["seeds"]) or
                        echo_captions(model, samples))
    videos, out = fake_videos(), str(tmp_path / "descriptions.jsonl")
    caption_jobs.describe_videos(tiny, videos, out, [16])
    caption_jobs.describe_videos(tiny, videos, out, [8])
    videos[2]["captions"] = [c.replace("happens", "occurs") for c in videos[2]["captions"]]  # captions made again
    calls.clear()
    later = caption_jobs.describe_videos(tiny, videos, out, [8])
    assert len(calls) == 4  # video 2: the clean description and one per kind at r=8
    assert all("occurs" in d["text"] for d in later if d["video"] == videos[2]["video"] and d["order"])
    on_disk = datafiles.read_jsonl(out)
    assert len(on_disk) == len(videos) * 7  # clean + 3 kinds x (16, 8); the stale r=8 and clean ones replaced
    assert {d["source"] for d in on_disk if d["video"] == videos[2]["video"] and d["r"] != 16} == \
        {caption_jobs.description_source(videos[2], "captions")}


def test_sampling_does_not_depend_on_the_batch(tiny, tmp_path):
    videos = fake_videos((4, 5))
    run = lambda name, **kw: [d["text"] for d in caption_jobs.describe_videos(  # noqa: E731
        tiny, videos, str(tmp_path / name), [16, 2], max_new_tokens=12, **kw)]
    one, five = run("a.jsonl", batch_size=1), run("b.jsonl", batch_size=5)
    assert one == five
    assert run("c.jsonl", seed=1) != one  # the seed matters
    assert len(set(one)) > 1


def test_frames_route_perturbs_the_keyframes(tiny, dataset, tmp_path):
    videos = datafiles.pair_inputs(dataset, need_captions=False)
    assert len(videos) == 6  # the kept records; the frames route needs no captions
    with pytest.raises(ValueError, match="captions"):
        datafiles.pair_inputs(dataset)
    out = str(tmp_path / caption_jobs.descriptions_path("", "frames"))
    descriptions = caption_jobs.describe_videos(tiny, videos, out, [2], route="frames", max_new_tokens=6, **SMALL)
    errors = [d for d in descriptions if d.get("status") == "error"]
    assert {os.path.basename(d["video"]) for d in errors} == {"vanished.mp4", "broken.mp4", "odd.mp4"}
    # a text for every job (the random tiny model may sample an empty one: the pair filters drop those)
    assert len(descriptions) == 6 * 4 and all(isinstance(d.get("text"), str) for d in descriptions if d not in errors)
    caption_jobs.write_pairs(descriptions, str(tmp_path), [2], route="frames")
    check_pairs_files(str(tmp_path), videos, [2], route="frames")
    with open(tmp_path / "pairs_frames_r2.stats.json") as f:
        assert json.load(f)["dropped"]["video_error"] == 3 * 3


# ---- viewer and export -------------------------------------------------------------------------------------------


class Rows(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self.thumbs = 0, 0

    def handle_starttag(self, tag, attrs):
        classes = (dict(attrs).get("class") or "").split()
        self.rows += tag == "tr" and "pair" in classes
        self.thumbs += tag == "span" and "t" in classes


def test_view_writes_one_row_per_pair(captioned, tmp_path, monkeypatch):
    good = [r for r in captioned if r["status"] == "ok"]
    captions_file = write_captions(captioned, tmp_path)
    monkeypatch.setattr(vlm.VideoLM, "generate", echo_captions)
    videos = datafiles.pair_inputs(captions_file)
    descriptions = caption_jobs.describe_videos(vlm.load("tiny"), videos, str(tmp_path / "d.jsonl"), [2])
    [(path, stats)] = caption_jobs.write_pairs(descriptions, str(tmp_path), [2])
    pairs = datafiles.read_jsonl(path)
    assert pairs
    page = tmp_path / "pairs.html"
    assert views.pair_page(path, str(page), limit=0) == len(pairs)
    parser = Rows()
    parser.feed(page.read_text())
    assert parser.rows == len(pairs)
    clips = {r["video"]: len(r["clips"]) for r in good}
    assert parser.thumbs == sum(clips[p["video"]] + len(p["order"]) for p in pairs)  # clean + perturbed strips
    assert page.read_text().count("base64,") == sum(clips[v] for v in {p["video"] for p in pairs})
    assert f"{stats['kept']} of {stats['candidates']}" in page.read_text()
    parser = Rows()
    views.pair_page(path, str(page), limit=2)
    parser.feed(page.read_text())
    assert parser.rows == 2


# ---- command line ----------------------------------------------------------------------------------------------


def test_empty_selection_and_malformed_lines_exit_nonzero(tmp_path, capsys):
    path = tmp_path / "videos.jsonl"
    datafiles.write_jsonl(path, [{"path": "a.mp4", "status": "rejected"}, {"path": "b.mp4", "status": "error"}])
    assert temple.main(["captions", "--videos", str(path), "--model", "tiny"]) == 1
    assert "no video with status 'kept'" in capsys.readouterr().err
    path.write_text('{"path": "a.mp4", "status": "kept"}\n{"path": broken\n')
    assert temple.main(["captions", "--videos", str(path), "--model", "tiny"]) == 1
    assert f"{path}:2: invalid JSON" in capsys.readouterr().err
    assert temple.main(["pairs", "--captions", str(tmp_path / "none.jsonl"), "--model", "tiny"]) == 1
    assert "no such file" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_under_two_ranks(dataset, tmp_path):
    """Two processes with torchrun's environment: each captions its share, rank 0 merges."""
    out = tmp_path / "captions.jsonl"
    command = [sys.executable, os.path.join(ROOT, "temple.py"), "captions", "--videos", dataset, "--out", str(out),
               "--model", "tiny", "--max-new-tokens", "4", "--min-pixels", "1024", "--max-pixels", "4096"]
    procs = [subprocess.Popen(command, env={**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": "0"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (1, 0)]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    records = datafiles.read_jsonl(out)
    assert len(records) == len(datafiles.kept_videos(dataset)) and "videos captioned" in results[1][0]


def test_nothing_captioned_is_an_error_but_the_reasons_are_written(tiny, dataset, captioned, tmp_path):
    path = tmp_path / "videos.jsonl"
    datafiles.write_jsonl(path, [{"path": "x.mp4", "clips": "x", "status": "kept"}])
    out = tmp_path / "captions.jsonl"
    records = caption_jobs.caption_videos(tiny, datafiles.kept_videos(str(path)), str(out), max_new_tokens=4, **SMALL)
    assert [r["status"] for r in datafiles.read_jsonl(out)] == ["error"]
    with pytest.raises(ValueError, match=re.escape(f"{path}: nothing could be captioned, 1 of 1 videos are errors")):
        caption_jobs.caption_summary(str(path), str(out), records)
    assert temple.main(["captions", "--videos", str(path), "--model", "tiny"]) == 1  # the command exits non-zero
    failed = sum(r["status"] != "ok" for r in captioned)  # some captioned, some not: a summary, no error
    assert 0 < failed < len(captioned)
    summary = caption_jobs.caption_summary(dataset, "captions.jsonl", captioned)
    assert summary.startswith(f"captions.jsonl: {len(captioned) - failed} videos captioned, {failed} skipped")


def test_rank_0_stops_when_another_rank_finished_other_inputs(tmp_path):
    """Rank 1's node had a videos.jsonl without one video: it finished its share of that list, and the records
    rank 0 waits for will never come. Rank 0 stops with one line instead of waiting forever."""
    path, key = str(tmp_path / "captions.jsonl"), lambda record: record["video"]
    first, second = jobs.Journal(path, key, rank=0, world_size=2), jobs.Journal(path, key, rank=1, world_size=2)
    first.append({"video": "a.mp4"})
    assert second.merge(["a.mp4", "c.mp4"]) is None  # rank 1 read a list without b.mp4
    with pytest.raises(ValueError, match=r"captions.jsonl: rank 1 finished its share of other inputs than rank "
                                         r"0's, and 2 records will never come \(first: b.mp4\); every node needs"):
        first.merge(["a.mp4", "b.mp4", "c.mp4"], poll_seconds=0.01)

    for rank, journal in ((1, second), (0, first)):  # the same inputs: rank 0 merges once rank 1's records are in
        journal.append({"video": "b.mp4"} if rank == 1 else {"video": "c.mp4"})
    assert second.merge(["a.mp4", "b.mp4", "c.mp4"]) is None
    merged = first.merge(["a.mp4", "b.mp4", "c.mp4"], poll_seconds=0.01)
    assert merged == [{"video": "a.mp4"}, {"video": "b.mp4"}, {"video": "c.mp4"}]
    assert sorted(os.listdir(tmp_path)) == ["captions.jsonl"]  # parts and notes removed


# ---- the released run's generation settings and prompts ---------------------------------------------------------


def model_with_generation_config(directory, **config):
    """The built-in tiny model saved as a checkpoint directory whose generation_config.json sets `config`."""
    model = vlm.load("tiny")
    model.hf_model.save_pretrained(directory)
    model.tokenizer.save_pretrained(directory)
    with open(os.path.join(directory, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": model.ids["im_end"], "pad_token_id": model.ids["pad"], **config}, f)
    return str(directory)


def clean_descriptions(out_dir):
    return {d["video"]: d["text"] for d in datafiles.read_jsonl(os.path.join(out_dir, "descriptions.jsonl"))
            if d["kind"] == "none"}


def test_descriptions_take_top_k_and_top_p_from_the_checkpoint_as_the_released_run_did(tmp_path, capsys):
    """Qwen2/2.5-VL-7B-Instruct ship top_k 1, top_p 0.001: the released generate call (do_sample, T 0.7) was greedy in
    effect, so --seed changes nothing; --top-k 0 --top-p 1.0 samples for real."""
    qwen_like = model_with_generation_config(tmp_path / "model", do_sample=True, temperature=0.01, top_k=1,
                                             top_p=0.001, repetition_penalty=1.05)
    videos = fake_videos(root=str(tmp_path))
    path = write_captions(videos, tmp_path)

    def pairs(out, seed, *extra):
        assert temple.main(["pairs", "--captions", path, "--model", qwen_like, "--out-dir", str(tmp_path / out), "-r",
                            "4", "--max-new-tokens", "12", "--seed", str(seed), *extra]) == 0
        return clean_descriptions(tmp_path / out)

    assert pairs("a", 1) == pairs("b", 2)
    assert "top_k and top_p from" in capsys.readouterr().err
    settings = json.load(open(tmp_path / "a" / "descriptions.settings.json"))
    assert (settings["top_k"], settings["top_p"], settings["temperature"]) == (1, 0.001, 0.7)
    assert pairs("c", 1, "--top-k", "0", "--top-p", "1.0") != pairs("d", 2, "--top-k", "0", "--top-p", "1.0")
    assert captions.sample_filters("tiny") == (0, 1.0, None)  # no generation_config: plain T 0.7 sampling
    assert captions.sample_filters(qwen_like, top_k=5)[:2] == (5, 0.001)


def changed_prompts(tmp_path, capsys):
    """`temple.py prompts` with every string changed (the markers kept), written to a file."""
    assert temple.main(["prompts"]) == 0
    prompts = json.loads(capsys.readouterr().out)
    changed = {key: ("NEW " + value if isinstance(value, str) else [f"NEW {i}" for i in value])
               for key, value in prompts.items()}
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps(changed))
    return str(path), changed


def test_pairs_and_captions_use_the_prompts_given(tiny, dataset, tmp_path, capsys, monkeypatch):
    path, changed = changed_prompts(tmp_path, capsys)
    for k in range(3):
        (tmp_path / f"v{k}.mp4").write_bytes(b"")
    seen = []

    def echo(model, samples, *args, **kwargs):
        seen.extend(model.tokenizer.decode(s.input_ids, skip_special_tokens=True) for s in samples)
        return echo_captions(model, samples)

    monkeypatch.setattr(vlm.VideoLM, "generate", echo)
    captions_file = write_captions(fake_videos(root=str(tmp_path)), tmp_path)
    assert temple.main(["pairs", "--captions", captions_file, "--model", "tiny", "-r", "4", "--prompts", path]) == 0
    pairs = datafiles.read_jsonl(tmp_path / "pairs_r4.jsonl")
    assert pairs and {p["instruction"] for p in pairs} <= set(changed["instructions"])
    assert all(text.startswith("system\nYou are a helpful assistant.\nuser\nNEW You will be given") for text in seen)
    assert "NEW - Caption 1: event 0.0 happens" in seen[0]
    assert json.load(open(tmp_path / "pairs_r4.stats.json"))["instructions"] == changed["instructions"]
    # the pairs and descriptions record what they were made with: going on with other prompts is refused
    assert temple.main(["pairs", "--captions", captions_file, "--model", "tiny", "-r", "4"]) == 1
    assert "pairs_r4.jsonl holds pairs made with other settings (instructions: " in capsys.readouterr().err
    os.remove(tmp_path / "pairs_r4.stats.json")  # the descriptions, too, remember their prompts
    assert temple.main(["pairs", "--captions", captions_file, "--model", "tiny", "-r", "4"]) == 1
    assert "descriptions.jsonl was made with other settings (prompts.description: " in capsys.readouterr().err

    seen.clear()
    out = tmp_path / "captions_new.jsonl"
    assert temple.main(["captions", "--videos", dataset, "--model", "tiny", "--out", str(out), "--prompts", path,
                        "--max-new-tokens", "4", "--max-pixels", str(64 * 64), "--min-pixels", str(32 * 32)]) == 0
    assert any("NEW <vid>Describe" not in t and t.startswith("system\nYou are a helpful assistant.\nuser\nNEW ")
               for t in seen)
    assert sum("NEW Here are two consecutive clips" in t for t in seen) == sum(
        len(r["clips"]) - 1 for r in datafiles.read_jsonl(out) if r["status"] == "ok")


@pytest.mark.parametrize("edit, message", [
    (lambda p: p.pop("description"), 'missing key "description"'),
    (lambda p: p.update(extra="x"), 'unknown key "extra"'),
    (lambda p: p.update(instructions="Describe."), '"instructions" must be a list of one or more texts'),
    (lambda p: p.update(description=["x"]), '"description" must be a text, got list'),
    (lambda p: p.update(caption_with_context="Clip 1: <vid>"), '"caption_with_context" must contain <vid> 2 times'),
    (lambda p: p.update(description="no list here"), '"description" must contain {captions} once'),
])
def test_a_wrong_prompts_file_is_one_line_naming_the_key(tmp_path, capsys, edit, message):
    prompts = json.loads(json.dumps(PROMPTS))
    edit(prompts)
    (tmp_path / "p.json").write_text(json.dumps(prompts))
    assert temple.main(["pairs", "--captions", "none.jsonl", "--prompts", str(tmp_path / "p.json")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"temple.py pairs: error: {tmp_path / 'p.json'}: {message}") and err.count("\n") == 1
    assert os.listdir(tmp_path) == ["p.json"]  # caught before anything was read or written
