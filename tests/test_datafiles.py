"""datafiles.py: JSON lines with file:line errors, atomic writes, and pairs files in our and ms-swift's format."""

import json
import os
import re

import pytest

import datafiles
import temple

GOOD_PAIR = {"video": "good.mp4", "instruction": "Describe the video in detail.", "chosen": "a", "rejected": "b",
             "kind": "drop", "r": 2, "order": [0]}
INSTRUCTIONS = ("Describe the video in detail.", "Describe the sequence of events.", "Walk me through it.")


@pytest.fixture
def pairs_dir(tmp_path):
    """Four pairs over two (empty) video files, in our JSONL format."""
    for name in ("v0.mp4", "v1.mp4"):
        (tmp_path / name).write_bytes(b"")
    pairs = [{"video": str(tmp_path / f"v{i % 2}.mp4"), "instruction": "Describe the video.", "chosen": f"good {i}",
              "rejected": f"bad {i}", "kind": "shuffle", "r": 16, "order": [1, 0]} for i in range(4)]
    datafiles.write_jsonl(tmp_path / "pairs_r16.jsonl", pairs)
    return tmp_path


# ---- JSON lines and JSON lists ------------------------------------------------------------------------------------


def test_read_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "records.jsonl"
    datafiles.write_jsonl(path, [{"a": 1}, {"b": "é"}])
    assert datafiles.read_jsonl(path) == [{"a": 1}, {"b": "é"}]
    path.write_text('{"a": 1}\n\n{"b": oops}\n')
    with pytest.raises(ValueError, match=rf"{path}:3: invalid JSON"):
        datafiles.read_jsonl(path)
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(ValueError, match=rf"{path}:2: expected a JSON object"):
        datafiles.read_jsonl(path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        datafiles.read_jsonl(tmp_path / "missing.jsonl")


def test_numbered_jsonl_can_set_bad_lines_aside(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"a": 1}\n\n[1]\n{"b": oops}\n{"c": 3}\n')
    bad = []
    assert datafiles.numbered_jsonl(path, bad) == [(f"{path}:1", {"a": 1}), (f"{path}:5", {"c": 3})]
    assert bad == [(f"{path}:3", "expected a JSON object, got list"), (f"{path}:4", "invalid JSON (Expecting value)")]
    with pytest.raises(ValueError, match=rf"{path}:3: expected a JSON object, got list"):
        datafiles.numbered_jsonl(path)


def test_read_records_takes_a_json_list_or_json_lines(tmp_path):
    lines, listing = tmp_path / "records.jsonl", tmp_path / "records.json"
    datafiles.write_jsonl(lines, [{"a": 1}, {"b": 2}])
    listing.write_text('[{"a": 1}, {"b": 2}]')
    assert datafiles.read_records(lines) == [(f"{lines}:1", {"a": 1}), (f"{lines}:2", {"b": 2})]
    assert datafiles.read_records(listing) == [(f"{listing}: record 1", {"a": 1}), (f"{listing}: record 2", {"b": 2})]
    listing.write_text('{"a": 1}')
    with pytest.raises(ValueError, match=rf"{listing}: expected a JSON list of pairs"):
        datafiles.read_records(listing, "pairs")
    listing.write_text('[{"a": 1},\n oops]')
    with pytest.raises(ValueError, match=rf"{listing}:2: invalid JSON"):
        datafiles.read_records(listing)
    with pytest.raises(FileNotFoundError, match="missing.json: no such file"):
        datafiles.read_records(tmp_path / "missing.json")


def test_write_atomic_leaves_no_temporary_file_and_the_usual_mode(tmp_path, monkeypatch):
    umask = os.umask(0o027)  # an unusual one, so that the mode is seen to follow it
    try:
        def no_umask(mask):  # setting the umask to read it races with other threads: it must not be called
            raise AssertionError("os.umask called")

        monkeypatch.setattr(os, "umask", no_umask)
        datafiles.write_atomic(tmp_path / "a" / "out.txt", "text")
        assert datafiles.usual_file_mode(str(tmp_path)) == 0o640
    finally:
        monkeypatch.undo()
        os.umask(umask)
    assert os.listdir(tmp_path / "a") == ["out.txt"] and (tmp_path / "a" / "out.txt").read_text() == "text"
    assert os.stat(tmp_path / "a" / "out.txt").st_mode & 0o777 == 0o640 and os.listdir(tmp_path) == ["a"]
    with pytest.raises(IsADirectoryError):
        datafiles.write_atomic(tmp_path / "a", "text")  # a failure leaves no temporary file behind
    assert os.listdir(tmp_path / "a") == ["out.txt"] and os.listdir(tmp_path) == ["a"]


# ---- pairs: ours and ms-swift's -------------------------------------------------------------------------------------


def test_read_pairs_takes_ours_and_swift_and_lists_missing_videos(pairs_dir):
    ours, skipped = datafiles.read_pairs(str(pairs_dir / "pairs_r16.jsonl"))
    assert len(ours) == 4 and skipped == []
    assert ours[0] == {**{k: ours[0][k] for k in datafiles.PAIR_TEXTS}, "kind": "shuffle", "r": 16, "order": [1, 0],
                       "where": f"{pairs_dir / 'pairs_r16.jsonl'}:1", "video_in_data": ours[0]["video"]}
    swift = datafiles.swift_records([{**p, "video": os.path.basename(p["video"])} for p in ours])
    swift.append({**swift[0], "videos": ["gone.mp4"]})
    (pairs_dir / "swift.json").write_text(json.dumps(swift))
    loaded, skipped = datafiles.read_pairs(str(pairs_dir / "swift.json"), video_root=str(pairs_dir))
    assert skipped == [(f"{pairs_dir / 'swift.json'}: record 5", f"video missing: {pairs_dir / 'gone.mp4'}")]
    assert [(p["instruction"], p["chosen"], p["rejected"], p["video"]) for p in loaded] == \
        [(p["instruction"], p["chosen"], p["rejected"], p["video"]) for p in ours]
    assert loaded[0]["video_in_data"] == os.path.basename(ours[0]["video"])  # as the file has it, before the root
    everything, _ = datafiles.read_pairs(str(pairs_dir / "swift.json"), need_video=False)  # view, export
    assert len(everything) == 5 and everything[4]["video"] == "gone.mp4"


def test_read_pairs_errors_name_the_file_and_record(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"video": "a.mp4", "instruction": "x", "chosen": "y"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: missing or non-text field\(s\) rejected"):
        datafiles.read_pairs(str(tmp_path / "bad.jsonl"))
    (tmp_path / "broken.jsonl").write_text('{"video": \n')
    with pytest.raises(ValueError, match=r"broken.jsonl:1: invalid JSON"):
        datafiles.read_pairs(str(tmp_path / "broken.jsonl"))
    with pytest.raises(FileNotFoundError, match="nothing.jsonl: no such file"):
        datafiles.read_pairs(str(tmp_path / "nothing.jsonl"))
    swift = {"messages": [{"role": "user", "content": "<video>Describe."}, {"role": "assistant", "content": "a"}],
             "rejected_response": "b", "videos": ["v.mp4"]}
    for change, problem in [({"videos": [5]}, r"non-text field\(s\) video"), ({"rejected_response": 7}, "rejected"),
                            ({"messages": [{"role": "user", "content": 3}]}, "an ms-swift record needs"),
                            ({"messages": "hi"}, "an ms-swift record needs")]:
        datafiles.write_jsonl(tmp_path / "swift.jsonl", [swift, {**swift, **change}])
        with pytest.raises(ValueError, match=rf"swift.jsonl:2: .*{problem}"):
            datafiles.read_pairs(str(tmp_path / "swift.jsonl"), need_video=False)


def test_read_pairs_skip_bad_lists_malformed_records_instead_of_raising(pairs_dir, tmp_path):
    good = (pairs_dir / "pairs_r16.jsonl").read_text().splitlines()
    records = [good[0], '{"video": "a.mp4", "instruction": "x", "chosen": "y"}', "", good[1], '{"messages": []}',
               '{"video": ']
    (tmp_path / "mixed.jsonl").write_text("\n".join(records) + "\n")
    pairs, skipped = datafiles.read_pairs(str(tmp_path / "mixed.jsonl"), skip_bad=True)
    assert len(pairs) == 2
    where = str(tmp_path / "mixed.jsonl")
    assert sorted(skipped) == [(f"{where}:2", "missing or non-text field(s) rejected"),
                               (f"{where}:5", "an ms-swift record needs messages (user + assistant), "
                                              "rejected_response and videos"),
                               (f"{where}:6", "invalid JSON (Expecting value)")]
    (tmp_path / "list.json").write_text('[1, "two"]')
    assert datafiles.read_pairs(str(tmp_path / "list.json"), skip_bad=True)[1][1][1] == \
        "expected a JSON object, got str"
    with pytest.raises(ValueError, match=r"list.json: record 1: expected a JSON object, got int"):
        datafiles.read_pairs(str(tmp_path / "list.json"))


def test_export_then_read_round_trip(tmp_path):
    pairs = [{"video": f"v{k}.mp4", "instruction": INSTRUCTIONS[k], "chosen": f"good {k}",
              "rejected": f"bad {k} <video>", "kind": "drop", "r": 16, "order": [k]} for k in range(3)]
    path = tmp_path / "pairs_r16.jsonl"
    datafiles.write_jsonl(path, pairs)
    assert temple.main(["export", "--format", "swift", str(path)]) == 0
    with open(tmp_path / "pairs_r16.swift.json") as f:
        swift = json.load(f)
    assert isinstance(swift, list) and set(swift[0]) == {"messages", "rejected_response", "videos"}
    assert swift[0]["messages"] == [{"role": "user", "content": "<video>" + INSTRUCTIONS[0]},
                                    {"role": "assistant", "content": "good 0"}]
    for p in pairs:
        (tmp_path / p["video"]).write_bytes(b"")
    loaded, skipped = datafiles.read_pairs(str(tmp_path / "pairs_r16.swift.json"), video_root=str(tmp_path))
    keep = ("instruction", "chosen", "rejected")
    assert skipped == [] and [{k: p[k] for k in keep} for p in loaded] == [{k: p[k] for k in keep} for p in pairs]
    assert [p["video"] for p in loaded] == [str(tmp_path / p["video"]) for p in pairs]


@pytest.mark.parametrize("bad, problem", [
    ({"video": "good.mp4", "chosen": 5}, "missing or non-text field(s) instruction, chosen, rejected"),
    ({**GOOD_PAIR, "chosen": 5}, "missing or non-text field(s) chosen"),
    ({**GOOD_PAIR, "video": None}, "missing or non-text field(s) video"),
    ({**GOOD_PAIR, "order": "zz"}, "'order' must be a list of clip indices"),
    ({**GOOD_PAIR, "order": [0, -1]}, "'order' must be a list of clip indices"),
    ({**GOOD_PAIR, "order": [0, True]}, "'order' must be a list of clip indices"),
])
def test_view_and_export_name_the_bad_pairs_line(tmp_path, capsys, bad, problem):
    path = tmp_path / "bad.jsonl"
    datafiles.write_jsonl(path, [GOOD_PAIR, bad])
    with pytest.raises(ValueError, match=r"bad.jsonl:2: " + re.escape(problem)):
        datafiles.read_pairs(str(path), need_video=False)
    for command in (["view", str(path), "--out", str(tmp_path / "x.html")], ["export", str(path)]):
        assert temple.main(command) == 1
        err = capsys.readouterr().err
        assert f"{path}:2: {problem}" in err and "Traceback" not in err
    assert not (tmp_path / "x.html").exists() and not (tmp_path / "bad.swift.json").exists()


def test_pairs_without_order_kind_or_r_are_fine(tmp_path):
    path = tmp_path / "pairs_r2.jsonl"
    plain = {k: GOOD_PAIR[k] for k in datafiles.PAIR_TEXTS}
    datafiles.write_jsonl(path, [plain, {**plain, "order": None}])
    pairs, _ = datafiles.read_pairs(str(path), need_video=False)
    assert pairs == [{**plain, "kind": "", "r": 0, "order": None, "where": f"{path}:{line}",
                      "video_in_data": plain["video"]} for line in (1, 2)]
    assert temple.main(["view", str(path), "--out", str(tmp_path / "x.html")]) == 0
    assert datafiles.export_pairs(str(path))[1] == 2
