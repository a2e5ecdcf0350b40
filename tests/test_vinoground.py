"""evaluate.py, Vinoground: reading the released CSV and the plain JSONL, the text / video / group tests on hand-made
2x2 matrices (ties are wrong), the per-category report, and a run with the tiny model on synthetic clips.

The fixtures (tests/fixtures/vinoground/, described in its README.md: CSV has no comment lines) hold four items in
both formats; no videos are stored, the tests write them."""

import json
import math
import os
import shutil
from types import SimpleNamespace

import pytest

import evaluate as vino
import preprocess
import vlm
from media import scene_frames, write_video
from evaluate import skip

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "vinoground")
CSV, JSONL = os.path.join(FIXTURES, "vinoground.csv"), os.path.join(FIXTURES, "vinoground.jsonl")
CATEGORIES = [["action", "interaction"], ["object"], ["action", "cyclical", "contextual"], ["viewpoint", "spatial"]]
HEADER = "index,major,minor,pos_vid,pos_start,pos_end,pos_cap,neg_vid,neg_start,neg_end,neg_cap\n"
pytestmark = pytest.mark.usefixtures("one_thread")


def clip_paths(root, count=4):
    return [os.path.join(root, "vinoground_videos", f"{i}_{side}.mp4") for i in range(count) for side in ("pos", "neg")]


def placeholder_clips(root, count=4):
    """Empty files where the clips belong: reading items only checks that they exist."""
    os.makedirs(os.path.join(root, "vinoground_videos"), exist_ok=True)
    for path in clip_paths(root, count):
        open(path, "wb").close()


# ---- reading ----------------------------------------------------------------------------------------------------


def test_the_csv_and_the_jsonl_give_the_same_items(tmp_path):
    placeholder_clips(tmp_path)
    from_csv, skipped_csv = vino.read_vinoground(CSV, str(tmp_path))
    from_jsonl, skipped_jsonl = vino.read_vinoground(JSONL, str(tmp_path))
    assert skipped_csv == [] and skipped_jsonl == []
    assert [item["where"] for item in from_csv] == [f"{CSV}:{line}" for line in (2, 3, 4, 5)]
    assert [item["where"] for item in from_jsonl] == [f"{JSONL}:{line}" for line in (1, 2, 3, 4)]
    assert [item["categories"] for item in from_csv] == CATEGORIES  # major, then the ";"-split minors, none empty
    paths = clip_paths(str(tmp_path))
    assert [item["videos"] for item in from_csv] == [paths[i:i + 2] for i in range(0, 8, 2)]
    assert from_csv[0]["captions"] == ["a man waves at a dog, then the dog jumps on him",
                                       "the dog jumps on a man, then he waves at it"]  # quoted commas stay
    strip = lambda items: [{k: v for k, v in item.items() if k != "where"} for item in items]  # noqa: E731
    assert strip(from_csv) == strip(from_jsonl)


def test_csv_clips_are_found_beside_the_csv_by_default(tmp_path):
    shutil.copy(CSV, tmp_path / "vinoground.csv")
    placeholder_clips(tmp_path, count=3)  # 3_pos and 3_neg are not there
    items, skipped = vino.read_vinoground(str(tmp_path / "vinoground.csv"))
    assert [item["videos"][0] for item in items] == clip_paths(str(tmp_path), 3)[::2]
    assert skipped == [skip(f"{tmp_path / 'vinoground.csv'}:5",
                            f"video missing: {tmp_path / 'vinoground_videos' / '3_pos.mp4'}")]


def test_bad_csv_rows_are_skipped_with_file_line_and_reason(tmp_path):
    placeholder_clips(tmp_path, count=7)
    os.remove(tmp_path / "vinoground_videos" / "6_neg.mp4")
    lines = [HEADER,
             "0,action,,x,0,1,the cat sits then jumps,x,2,3,the cat jumps then sits\n",  # line 2: fine
             "1,action,,x,0,1,the cat sits then jumps,x,2,3,\n",  # 3: no negative caption
             "2,action,,x,0,1,too few fields\n",  # 4
             '3,object,,x,0,1,"a caption over\ntwo lines",x,2,3,the other order\n',  # 5-6: fine
             "\n",  # 7: blank, not an item
             ",object,,x,0,1,a then b,x,2,3,b then a\n",  # 8: no index
             "5,object,,x,0,1,a then b,x,2,3, a then b \n",  # 9: the same caption twice
             "6,object,,x,0,1,a then b,x,2,3,b then a\n"]  # 10: a clip missing
    (tmp_path / "v.csv").write_text("".join(lines))
    items, skipped = vino.read_vinoground(str(tmp_path / "v.csv"), str(tmp_path))
    assert [item["where"].rsplit(":", 1)[1] for item in items] == ["2", "5"]
    assert items[1]["captions"][0] == "a caption over\ntwo lines"
    where = {s["where"].rsplit(":", 1)[1]: s["reason"] for s in skipped}
    assert where == {"3": "missing field: neg_cap", "4": "7 fields, the header has 11", "8": "missing field: index",
                     "9": "the two captions are the same",
                     "10": f"video missing: {tmp_path / 'vinoground_videos' / '6_neg.mp4'}"}
    assert all(s["where"].startswith(f"{tmp_path / 'v.csv'}:") for s in skipped)


def test_a_file_that_is_not_the_vinoground_csv_is_an_error(tmp_path):
    (tmp_path / "other.csv").write_text("index,major,minor,caption\n0,action,,a then b\n")
    with pytest.raises(ValueError, match=r"other.csv: not a Vinoground CSV: no column\(s\) pos_cap, neg_cap"):
        vino.read_vinoground(str(tmp_path / "other.csv"))
    with pytest.raises(FileNotFoundError, match="none.csv: no such file"):
        vino.read_vinoground(str(tmp_path / "none.csv"))


def pair(video="vinoground_videos/0_pos.mp4", **extra):
    return {"pos_video": video, "pos_caption": "a then b", "neg_video": "vinoground_videos/0_neg.mp4",
            "neg_caption": "b then a", **extra}


def test_bad_jsonl_lines_are_skipped_with_file_line_and_reason(tmp_path):
    placeholder_clips(tmp_path, count=1)
    lines = [json.dumps(pair(category="action")),
             '{"pos_video": ',
             json.dumps({k: v for k, v in pair().items() if k != "neg_caption"}),
             json.dumps(pair(pos_caption="  ")),
             json.dumps(pair(neg_caption="a then b")),
             json.dumps(pair(video="gone.mp4")),
             "[1, 2]",
             json.dumps(pair())]
    (tmp_path / "v.jsonl").write_text("\n".join(lines) + "\n")
    items, skipped = vino.read_vinoground(str(tmp_path / "v.jsonl"), str(tmp_path))
    assert [(item["where"].rsplit(":", 1)[1], item["categories"]) for item in items] == [("1", ["action"]), ("8", [])]
    where = {s["where"].rsplit(":", 1)[1]: s["reason"] for s in skipped}
    assert where["2"].startswith("invalid JSON") and where["3"] == "missing field: neg_caption (a text)"
    assert where["4"] == "missing field: pos_caption (a text)" and where["5"] == "the two captions are the same"
    assert where["6"] == f"video missing: {tmp_path / 'gone.mp4'}" and where["7"] == "expected a JSON object, got list"


# ---- the tests of an item: s[video][caption], 0 = pos, 1 = neg -------------------------------------------------

MATRICES = [  # s, text, video, group (worked out by hand)
    ([[-1, -3], [-4, -2]], True, True, True),  # each video its caption, each caption its video
    ([[-1, -2], [-0.5, -0.4]], True, False, False),  # the neg clip is likelier for both captions
    ([[-2, -1.5], [-3, -1]], False, True, False),  # the pos clip prefers the neg caption
    ([[-3, -1], [-2, -4]], False, False, False),  # everything swapped
    ([[-1, -1], [-3, -0.5]], False, True, False),  # the pos clip cannot choose: a tie is wrong
    ([[-1, -2], [-1, -0.5]], True, False, False),  # the pos caption cannot choose
    ([[0, 0], [0, 0]], False, False, False),  # a model blind to order
]


@pytest.mark.parametrize("s, text, video, group", MATRICES)
def test_text_video_and_group_tests(s, text, video, group):
    assert (vino.text_correct(s), vino.video_correct(s), vino.group_correct(s)) == (text, video, group)


# ---- the report ---------------------------------------------------------------------------------------------------


def result(where, categories, sums, means):
    return {"where": where, "categories": categories, "logp_sum": sums, "logp_mean": means}


def hand_results():
    passes, text_only, video_only, swapped = (MATRICES[i][0] for i in range(4))
    return [result("f:1", ["action", "interaction"], passes, swapped), result("f:2", ["object"], text_only, passes),
            result("f:3", ["action"], swapped, video_only)]


def test_report_overall_and_per_category():
    skipped = [skip("f:4", "video missing: x.mp4"), skip("f:5", "unreadable video: y.mp4: empty file (0 bytes)")]
    report = vino.vinoground_report("f", hand_results(), skipped, rule="sum")
    assert report["rule"] == "higher sum log-prob" and report["evaluated"] == 3
    assert (report["text"], report["video"], report["group"]) == pytest.approx((2 / 3, 1 / 3, 1 / 3))
    assert report["by_category"] == {  # an item counts for each of its categories
        "action": {"items": 2, "text": 0.5, "video": 0.5, "group": 0.5},
        "interaction": {"items": 1, "text": 1.0, "video": 1.0, "group": 1.0},
        "object": {"items": 1, "text": 1.0, "video": 0.0, "group": 0.0}}
    assert [(r["text"], r["video"], r["group"]) for r in report["items"]] == [(True,) * 3, (True, False, False),
                                                                              (False,) * 3]
    assert report["skipped"] == 2 and report["skipped_by_reason"] == {"video missing": 1, "unreadable video": 1}
    assert report["skipped_items"] == skipped
    table = "\n".join(vino.vinoground_table([report]))
    assert "all (higher sum log-prob)" in table and "interaction" in table
    assert "video missing: 1, unreadable video: 1" in table

    by_mean = vino.vinoground_report("f", hand_results(), [], rule="mean")
    assert (by_mean["text"], by_mean["video"], by_mean["group"]) == pytest.approx((1 / 3, 2 / 3, 1 / 3))
    empty = vino.vinoground_report("f", [], [], rule="sum")
    assert empty["evaluated"] == 0 and empty["text"] is None and empty["by_category"] == {}


# ---- a run with the tiny model ------------------------------------------------------------------------------------


def eval_args(root, normalize=False):
    return SimpleNamespace(video_root=str(root), fps=2, max_frames=4, total_pixels=4 * 56 * 56, max_length=4096,
                           truncation="delete", normalize=normalize)


def test_tiny_model_run_scores_each_clip_with_one_vision_pass(tmp_path):
    for seed, path in enumerate(clip_paths(str(tmp_path))):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_video(path, scene_frames(4, 5, 48, 64, seed=seed), fps=5)
    model = vlm.load("tiny")
    patches = []
    model.vision_tower.patch_embed.register_forward_hook(lambda m, args, out: patches.append(len(args[0])))

    report = vino.evaluate_vinoground(model, CSV, eval_args(tmp_path))
    assert report["evaluated"] == 4 and report["skipped"] == 0 and report["rule"] == "higher sum log-prob"
    assert sorted(report["by_category"]) == sorted({c for cs in CATEGORIES for c in cs})
    assert report["by_category"]["action"]["items"] == 2
    clip = model.prepare(preprocess.read_video(clip_paths(str(tmp_path))[7], fps=2, max_frames=4), total_pixels=4 * 56 * 56)
    assert patches == [math.prod(clip.grid)] * 8  # each of the 8 clips through the tower once, on its own
    for item in report["items"]:
        sums, means = item["logp_sum"], item["logp_mean"]
        assert len(sums) == len(means) == 2 and all(len(row) == 2 for row in sums + means)
        assert all(math.isfinite(x) and x < 0 for row in sums + means for x in row)
        assert (item["text"], item["video"], item["group"]) == (vino.text_correct(sums), vino.video_correct(sums),
                                                                vino.group_correct(sums))
    assert sums[0] != sums[1]  # the clip matters

    # one entry the plain way: the neg clip (row 1) and the pos caption (column 0) of the last item
    caption = "the camera shows the street first and the room second"
    batch = model.to_device(model.collate([model.encode([clip, vino.CAPTION_PROMPT], response=caption)]))
    assert model.response_logps(batch)[0].item() == pytest.approx(sums[1][0], abs=1e-4)

    # the JSONL gives the same matrices; --normalize judges by the means; a broken clip is skipped, not fatal
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    lines = open(JSONL).read().splitlines()
    lines.append(json.dumps({**json.loads(lines[0]), "neg_video": "broken.mp4"}))
    (tmp_path / "v.jsonl").write_text("\n".join(lines) + "\n")
    by_mean = vino.evaluate_vinoground(model, str(tmp_path / "v.jsonl"), eval_args(tmp_path, normalize=True))
    assert by_mean["rule"] == "higher mean log-prob" and by_mean["evaluated"] == 4
    for ours, theirs in zip(by_mean["items"], report["items"]):
        assert sum(ours["logp_sum"], []) == pytest.approx(sum(theirs["logp_sum"], []), abs=1e-4)
        assert ours["text"] == vino.text_correct(ours["logp_mean"])
    [broken] = by_mean["skipped_items"]
    assert broken["where"] == f"{tmp_path / 'v.jsonl'}:5" and broken["reason"].startswith("unreadable video")
