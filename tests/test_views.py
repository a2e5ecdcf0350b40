"""views.py and its commands: the pair page (`view`), `export`'s output, the curves PNG (`plot`); what each does with a
wrong path before any work."""

import io
import json
import os
import re
from html.parser import HTMLParser

import pytest
from PIL import Image

import datafiles
import runs
import temple
import views
from media import scene_frames, write_video

PAIR = {"instruction": "Describe.", "chosen": "first red, then blue", "rejected": "first blue, then red",
        "kind": "shuffle", "r": 2}


def everything_in(directory):
    """Every path under `directory`, hidden files included: what a failed command must leave as it found it."""
    return sorted(os.path.relpath(os.path.join(root, name), directory)
                  for root, dirs, files in os.walk(directory) for name in dirs + files)


def rgb(hex_colour):
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))


def pixels_of(image, colour, box):
    """[(x, y)] of the pixels of `colour` inside box (left, top, right, bottom) of an RGB image."""
    left, top, right, bottom = box
    data = image.load()
    return [(x, y) for x in range(left, right) for y in range(top, bottom) if data[x, y] == colour]


def write_metrics(run_dir, records):
    os.makedirs(run_dir, exist_ok=True)
    datafiles.write_jsonl(os.path.join(run_dir, "metrics.jsonl"), records)
    return str(run_dir)


def pairs_with_video(directory, clips=6, height=64, width=96):
    """pairs_r2.jsonl, its .stats.json and a captions.jsonl beside it, over one video of `clips` clips."""
    video = write_video(directory / "v.mp4", scene_frames(clips, 2, height=height, width=width), fps=2)
    datafiles.write_jsonl(directory / "captions.jsonl", [
        {"video": video, "clips": [[2 * i, 2 * i + 2] for i in range(clips)],
         "keyframes": [[2 * i, 2 * i + 1] for i in range(clips)], "captions": [f"c{i}" for i in range(clips)],
         "status": "ok"}])
    datafiles.write_jsonl(directory / "pairs_r2.jsonl", [{**PAIR, "video": video, "order": list(range(clips))[::-1]}])
    (directory / "pairs_r2.stats.json").write_text(json.dumps({
        "kept": 1, "candidates": 3, "videos": 1, "dropped": {"empty": 0, "length_ratio": 2},
        "kept_by_kind": {"shuffle": 1}, "kinds": ["drop", "reverse", "shuffle"]}))
    return str(directory / "pairs_r2.jsonl")


# ---- the pair page -----------------------------------------------------------------------------------------------


class Strips(HTMLParser):
    """The thumbnails (span.t) and the element each sits in."""

    def __init__(self):
        super().__init__()
        self.open, self.parents = [], []

    def handle_starttag(self, tag, attrs):
        classes = (dict(attrs).get("class") or "").split()
        if tag == "span" and "t" in classes:
            self.parents.append(self.open[-1])
        self.open.append((tag, classes))

    def handle_endtag(self, tag):
        while self.open and self.open.pop()[0] != tag:
            pass


def style_rule(page, selector):
    style = page[page.index("<style>"):page.index("</style>")]
    return re.search(re.escape(selector) + r" \{([^}]*)\}", style).group(1)


def test_the_clip_strip_wraps_real_size_thumbnails_instead_of_hiding_them(tmp_path):
    """1280x720 clips at --thumb-height 64 are 114 px wide: six of them are wider than the first column at a 1400 px
    window. The strip wraps onto more lines (and a thumbnail wider than the column shrinks, its aspect kept), where a
    nowrap strip scrolled and hid the last clips behind a scrollbar."""
    pairs = pairs_with_video(tmp_path, clips=6, height=720, width=1280)
    page_file = tmp_path / "p.html"
    assert temple.main(["view", pairs, "--out", str(page_file)]) == 0
    page = page_file.read_text()
    style = page[page.index("<style>"):page.index("</style>")]
    assert "nowrap" not in style and "overflow" not in style.replace("overflow-wrap", "")
    assert "flex-wrap: wrap" in style_rule(page, ".cells") and "max-width: 100%" in style_rule(page, ".t")
    assert style_rule(page, ".v0") == " width: 114px; aspect-ratio: 114 / 64; "  # its height follows a shrunk width
    parser = Strips()
    parser.feed(page)
    assert len(parser.parents) == 12 and all(parent == ("div", ["cells"]) for parent in parser.parents)


def test_kept_by_kind_lists_every_kind_with_its_zeros(tmp_path):
    """Like "dropped because", which lists every reason: a kind with no pair kept is a row with 0, not missing."""
    pairs = pairs_with_video(tmp_path, clips=2)
    views.pair_page(pairs, str(tmp_path / "p.html"))
    page = (tmp_path / "p.html").read_text()
    kept = page[page.index("kept, by kind"):page.index("dropped because")]
    assert re.findall(r"<td>(\w+)</td><td>(\d+)</td>", kept) == [("drop", "0"), ("reverse", "0"), ("shuffle", "1")]
    assert "<td>empty</td><td>0</td>" in page


def test_a_broken_captions_file_beside_the_pairs_is_a_warning_one_given_is_an_error(tmp_path, capsys):
    """view reads the captions.jsonl beside the pairs unasked: where that one is broken or missing, the page comes
    without thumbnails and one warning names the file; a --captions FILE given that is bad is an error naming it."""
    pairs = pairs_with_video(tmp_path, clips=2)
    neighbour, page = tmp_path / "captions.jsonl", tmp_path / "p.html"
    assert temple.main(["view", pairs, "--out", str(page)]) == 0  # the good neighbour: thumbnails
    assert "base64," in page.read_text() and capsys.readouterr().err == ""
    neighbour.write_text('{"video": broken\n')
    assert temple.main(["view", pairs, "--out", str(page)]) == 0
    err = capsys.readouterr().err
    assert err == (f"temple.py view: warning: no thumbnails: {neighbour}:1: invalid JSON (Expecting value); pass "
                   f"--captions FILE (the captions.jsonl the pairs were made from)\n")
    assert "base64," not in page.read_text() and "(no thumbnails)" in page.read_text()
    neighbour.unlink()
    assert temple.main(["view", pairs, "--out", str(page)]) == 0
    assert f"no thumbnails: {neighbour}: no such file; pass --captions FILE" in capsys.readouterr().err
    page.unlink()
    (tmp_path / "given.jsonl").write_text('{"video": broken\n')
    (tmp_path / "v.jpg").write_bytes(b"\xff\xd8\xff\xe0 not text")
    for given, error in (("given.jsonl", "given.jsonl:1: invalid JSON (Expecting value)"),
                         ("v.jpg", "v.jpg: not UTF-8 text (a JSON-lines file expected)"),
                         ("none.jsonl", "--captions none.jsonl: no such file; give the captions.jsonl the pairs were "
                                        "made from, e.g. --captions data/captions.jsonl")):
        assert temple.main(["view", pairs, "--captions", given, "--out", str(page)]) == 1
        assert error in capsys.readouterr().err and not page.exists()


def test_a_broken_stats_file_beside_the_pairs_is_a_warning(tmp_path, capsys):
    pairs = pairs_with_video(tmp_path, clips=2)
    (tmp_path / "pairs_r2.stats.json").write_text("[1,")
    assert temple.main(["view", pairs, "--out", "p.html"]) == 0
    assert f"warning: no filter counts: {tmp_path / 'pairs_r2.stats.json'}:1: invalid JSON" in capsys.readouterr().err
    assert "filter counts unknown" in (tmp_path / "p.html").read_text()


def test_view_row_when_the_order_does_not_fit_the_captions():
    """A captions.jsonl made again since the pairs may have fewer clips than the order names: a note, no crash."""
    pair = {"video": "good.mp4", "instruction": "Describe.", "chosen": "a", "rejected": "b", "kind": "drop", "r": 2,
            "order": [5, 0]}
    row = views.pair_row(1, pair, {"clips": [[0, 6], [6, 12]], "captions": ["one", "two"]}, "v0")
    assert "clip order: 6 1 (the captions file has 2 clips for this video)" in row
    assert "clip order: 6 1 (no thumbnails)" in views.pair_row(1, pair, None, None)


def test_view_wraps_a_long_unbroken_answer(tmp_path):
    """One 3000-character word must not push the rejected column off the page: fixed columns, wrap anywhere."""
    pairs = [{"video": "a.mp4", "instruction": "Describe.", "chosen": "fine", "rejected": "x" * 3000,
              "kind": "drop", "r": 16, "order": [0]}]
    datafiles.write_jsonl(tmp_path / "pairs_r16.jsonl", pairs)
    views.pair_page(str(tmp_path / "pairs_r16.jsonl"), str(tmp_path / "p.html"), warn=lambda line: None)
    page = (tmp_path / "p.html").read_text()
    style = page[page.index("<style>"):page.index("</style>")]
    assert "table-layout: fixed" in style and "overflow-wrap: anywhere" in style and "x" * 3000 in page


# ---- wrong paths: found before any work, nothing left behind ------------------------------------------------------


@pytest.mark.parametrize("command, example", [(["view", "data/pairs_r2.jsonl"], "pairs.html"),
                                              (["export", "data/pairs_r2.jsonl"], "pairs_r16.swift.json"),
                                              (["plot", "run"], "curves.png")])
def test_a_directory_as_out_is_one_line_and_leaves_nothing(tmp_path, capsys, command, example):
    """Was: "[Errno 21] Is a directory" after the work, and for plot a runs.partial.png beside it."""
    (tmp_path / "data").mkdir()
    pairs_with_video(tmp_path / "data", clips=2)
    write_metrics(tmp_path / "run", [{"step": 1, "loss": 0.5}])
    (tmp_path / "out").mkdir()
    before = everything_in(tmp_path)
    assert temple.main([*command, "--out", "out"]) == 1
    assert capsys.readouterr().err == (f"temple.py {command[0]}: error: --out out: is a directory; give a file name, "
                                       f"e.g. --out {os.path.join('out', example)}\n")
    assert everything_in(tmp_path) == before


@pytest.mark.parametrize("command", ["view", "export"])
def test_a_pairs_file_that_is_a_directory_or_missing_says_what_to_give(tmp_path, capsys, command):
    (tmp_path / "data").mkdir()
    for given, error in (("data", "data: is a directory; give a pairs file, e.g. data/pairs_r16.jsonl"),
                         ("pairs_r3.jsonl", "pairs_r3.jsonl: no such file; give a pairs file, e.g. "
                                            "data/pairs_r16.jsonl")):
        assert temple.main([command, given]) == 1
        assert capsys.readouterr().err == f"temple.py {command}: error: {error}\n"
    assert everything_in(tmp_path) == ["data"]


def test_plot_writes_its_png_whole_and_refuses_an_ending_pillow_cannot_write(tmp_path, capsys, monkeypatch):
    run = write_metrics(tmp_path / "run", [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.4}])
    assert temple.main(["plot", run, "--out", "c.pngx"]) == 1
    assert "--out c.pngx: pillow writes no .pngx images; give a .png file name" in capsys.readouterr().err

    def full_disk(source, destination):
        raise OSError(28, "No space left on device")

    before = everything_in(tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", full_disk)
        assert temple.main(["plot", run, "--out", "c.png"]) == 1
    assert capsys.readouterr().err.startswith("temple.py plot: error: no space left on the device of c.png;")
    assert everything_in(tmp_path) == before
    assert temple.main(["plot", run, "--out", "c.png"]) == 0
    assert everything_in(tmp_path) == sorted([*before, "c.png"])
    Image.open(tmp_path / "c.png").verify()


def test_write_atomic_writes_bytes_and_text_alike(tmp_path):
    datafiles.write_atomic(tmp_path / "a.bin", b"\x89PNG\x00\xff")
    datafiles.write_atomic(tmp_path / "a.txt", "gr\u00fcn\n")
    assert (tmp_path / "a.bin").read_bytes() == b"\x89PNG\x00\xff"
    assert (tmp_path / "a.txt").read_bytes() == "gr\u00fcn\n".encode("utf-8")


# ---- the curves --------------------------------------------------------------------------------------------------


def panel_box(k, width=600, panel_height=220):
    """The frame of panel k in plot_curves' layout (a legend 30 px high on top)."""
    top = 30 + k * panel_height
    return 70, top + 24, width - 20, top + panel_height - 28


def test_plot_writes_a_png_with_every_run(tmp_path, capsys):
    dpo_run = write_metrics(tmp_path / "dpo_r16", [
        {"step": s, "loss": 0.7 - 0.05 * s, "rewards/accuracies": s / 4, "rewards/margins": 0.1 * s} for s in (1, 2, 3, 4)])
    sft_run = write_metrics(tmp_path / "sft", [{"step": s, "loss": 2.0 / s, "nll": 2.0 / s} for s in (1, 2, 3)])
    out = tmp_path / "plots" / "curves.png"
    assert temple.main(["plot", dpo_run, sft_run, "--out", str(out), "--width", "600"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(out.read_bytes()))
    image.verify()
    image = Image.open(out).convert("RGB")
    assert image.width == 600
    colours = {colour for _, colour in image.getcolors(maxcolors=1 << 20)}
    for hex_colour in views.PLOT_COLOURS[:2]:  # both runs drew something
        assert rgb(hex_colour) in colours
    assert "dpo_r16 4, sft 3" in capsys.readouterr().out
    curves = views.read_curves([dpo_run, sft_run])
    assert [r["x"] for r in curves[1][1]] == [5, 6, 7]  # the second run continues after the first


def test_plot_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.jsonl: no such file"):
        views.read_curves([str(tmp_path)])
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n{"step": \n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: invalid JSON"):
        views.read_curves([str(tmp_path)])
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="no metrics yet"):
        views.read_curves([str(tmp_path)])
    write_metrics(tmp_path, [{"step": 1, "loss": 0.5}])
    (tmp_path / "config.json").write_text('{"stopped": \n')
    with pytest.raises(ValueError, match=r"config.json:2: invalid JSON"):
        views.read_curves([str(tmp_path)])


def test_nice_axis_ranges():
    assert views.nice_range(0.03, 0.97) == pytest.approx((0.0, 1.0, 0.2))
    assert views.nice_range(0, 17) == (0, 20, 5)
    low, high, step = views.nice_range(0.5, 0.5)  # a flat line still gets an axis
    assert low < 0.5 < high and step > 0
    assert views.tick_values(0.0, 1.0, 0.2) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert views.tick_values(0, 11, 2) == [0, 2, 4, 6, 8, 10]  # none past the end


def test_the_step_axis_ends_at_the_last_step_and_every_point_is_whole(tmp_path):
    """11 steps: an axis to 11 (it went on to the next round tick, 15), the last point close to the right edge and,
    like the first, the lowest and the highest, drawn whole inside the frame (it sat on the edge, half cut off)."""
    low, high, step = views.step_axis(11)
    assert low == 0 and 11 <= high <= 12 and step == int(step)
    records = [{"step": s, "loss": 1.0 - 0.05 * s, "rewards/accuracies": s / 11, "rewards/margins": 0.1 * s}
               for s in range(1, 12)]
    image = views.plot_curves(views.read_curves([write_metrics(tmp_path / "run", records)]), 600, 220)
    for k in range(len(views.PLOT_METRICS)):
        left, top, right, bottom = panel_box(k)
        drawn = pixels_of(image.convert("RGB"), rgb(views.PLOT_COLOURS[0]), (left - 10, top - 10, right + 10,
                                                                             bottom + 10))
        xs, ys = [x for x, _ in drawn], [y for _, y in drawn]
        assert left < min(xs) and max(xs) < right and top < min(ys) and max(ys) < bottom
        assert max(xs) > right - 15  # the last step at the end of the axis, not two thirds along it


def test_plot_marks_where_an_adaptive_stage_stopped(tmp_path):
    """config.json's "stopped" (runs.record_stop): a dashed line at that step, in STOP_COLOUR, in every panel."""
    records = [{"step": s, "loss": 0.7, "rewards/accuracies": 0.5, "rewards/margins": 0.1} for s in (1, 2, 3, 4)]
    first, second = (write_metrics(tmp_path / name, records) for name in ("dpo_r16", "dpo_r8"))
    for run in (first, second):
        (tmp_path / run / "config.json").write_text(json.dumps({"base_model": "tiny", "start": None}))
    image = views.plot_curves(views.read_curves([first, second]), 600, 220).convert("RGB")
    assert not pixels_of(image, rgb(views.STOP_COLOUR), (0, 0, 600, image.height))  # no stop, no mark
    runs.record_stop(first, 3, "held-out eval/rewards/accuracies 1.000 reached the ceiling 0.98")
    curves = views.read_curves([first, second])
    assert [stop for _, _, stop in curves] == [
        {"step": 3, "reason": "held-out eval/rewards/accuracies 1.000 reached the ceiling 0.98", "x": 3}, None]
    image = views.plot_curves(curves, 600, 220).convert("RGB")
    rows = {}  # the first run's flat loss line is 2 px high, its dots (one per step) 5 px: find the dots' columns
    for x, _ in pixels_of(image, rgb(views.PLOT_COLOURS[0]), panel_box(0)):
        rows[x] = rows.get(x, 0) + 1
    dots = []
    for x in sorted(x for x, n in rows.items() if n >= 4):
        if dots and x == dots[-1][-1] + 1:
            dots[-1].append(x)
        else:
            dots.append([x])
    assert len(dots) == 4
    step_3 = sum(dots[2]) / len(dots[2])
    for k in range(len(views.PLOT_METRICS)):
        left, top, right, bottom = panel_box(k)
        marks = pixels_of(image, rgb(views.STOP_COLOUR), panel_box(k))
        assert len(marks) > (bottom - top) / 3  # a dashed line down the panel
        assert all(abs(x - step_3) <= 1.5 for x, _ in marks)
    assert pixels_of(image, rgb(views.STOP_COLOUR), (0, 0, 600, 30))  # and in the legend
