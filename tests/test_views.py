"""views.py and its commands: the pair page (`view`), `export`'s output, the curves PNG (`plot`); what each does with a
wrong path before any work."""

import json
import os
import re
from html.parser import HTMLParser

import pytest

import datafiles
import temple
import views
from media import scene_frames, write_video

PAIR = {"instruction": "Describe.", "chosen": "first red, then blue", "rejected": "first blue, then red",
        "kind": "shuffle", "r": 2}


def everything_in(directory):
    """Every path under `directory`, hidden files included: what a failed command must leave as it found it."""
    return sorted(os.path.relpath(os.path.join(root, name), directory)
                  for root, dirs, files in os.walk(directory) for name in dirs + files)


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
                                              (["export", "data/pairs_r2.jsonl"], "pairs_r16.swift.json")])
def test_a_directory_as_out_is_one_line_and_leaves_nothing(tmp_path, capsys, command, example):
    """Was: "[Errno 21] Is a directory" after the work."""
    (tmp_path / "data").mkdir()
    pairs_with_video(tmp_path / "data", clips=2)
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


def test_write_atomic_writes_bytes_and_text_alike(tmp_path):
    datafiles.write_atomic(tmp_path / "a.bin", b"\x89PNG\x00\xff")
    datafiles.write_atomic(tmp_path / "a.txt", "gr\u00fcn\n")
    assert (tmp_path / "a.bin").read_bytes() == b"\x89PNG\x00\xff"
    assert (tmp_path / "a.txt").read_bytes() == "gr\u00fcn\n".encode("utf-8")

