"""temple.py demo: the whole pipeline end to end on the tiny model and the videos it makes, then a resumed re-run."""

import json
import os

import pytest
import torch

import datafiles
import runs
import selection
import temple

STAGES = ("dpo_r16", "dpo_r8", "dpo_r4", "dpo_r2", "sft")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    assert temple.main(["demo", "--out", str(out), "--steps", "1"]) == 0
    return out


def test_demo_videos_pass_the_selection_rules(demo):
    records = datafiles.read_jsonl(demo / "data" / "videos.jsonl")
    kept = [r for r in records if r["status"] == "kept"]
    assert len(kept) == 6 and all(len(r["clips"]) == 5 for r in kept)
    [rejected] = [r for r in records if r["status"] == "rejected"]
    assert rejected["path"].endswith("one_shot.mp4") and rejected["reason"].startswith("too few shots")
    assert selection.select_video(str(demo / kept[0]["path"]))["status"] == "kept"  # the default rules, not the demo's
    # made with an absolute --out, the records hold paths relative to the demo directory: it can move as a whole
    assert [r["path"] for r in records] == [f"videos/demo_{k}.mp4" for k in range(6)] + ["videos/one_shot.mp4"]


def test_demo_makes_pairs_for_every_r_and_a_page_for_each(demo):
    for r in (16, 8, 4, 2):
        pairs = datafiles.read_jsonl(demo / "data" / f"pairs_r{r}.jsonl")
        assert pairs and {p["r"] for p in pairs} == {r}
        assert (demo / "data" / f"pairs_r{r}.html").read_text().count('<tr class="pair">') == min(len(pairs), 30)
    kinds = {p["kind"] for r in (16, 8, 4, 2) for p in datafiles.read_jsonl(demo / "data" / f"pairs_r{r}.jsonl")}
    assert kinds >= {"swap", "repeat", "speed"}  # the demo makes pairs of all six kinds


def test_demo_trains_every_stage_and_chains_them(demo):
    run_dirs = demo / "runs"
    assert all(runs.finished(run_dirs / name) for name in STAGES)
    assert runs.read_run_config(run_dirs / "dpo_r2")["start"]["stages"] == ["dpo_r16", "dpo_r8", "dpo_r4"]
    assert runs.read_run_config(run_dirs / "sft")["start"]["stages"] == ["dpo_r16", "dpo_r8", "dpo_r4", "dpo_r2"]
    for name in STAGES:
        assert len(datafiles.read_jsonl(run_dirs / name / "metrics.jsonl")) == 1  # --steps 1
    held = [runs.read_run_config(run_dirs / name)["heldout_videos"] for name in STAGES[:4]]
    assert len(held[0]) == 1 and held == [held[0]] * 4  # one video held out of every stage, the same one
    for name in STAGES[:4]:  # measured at every step
        config = runs.read_run_config(run_dirs / name)
        assert config["heldout"]["videos"] == 1 and config["adaptive"]["plateau_evals"] == 2
        assert "eval/rewards/accuracies" in datafiles.read_jsonl(run_dirs / name / "metrics.jsonl")[-1]


def test_demo_evaluates_and_plots(demo):
    reports = {name: json.load(open(demo / f"eval_{name}.json")) for name in ("base", "dpo_r2", "sft")}
    for report in reports.values():
        [mcq] = report["mcq"]
        assert mcq["evaluated"] == 18 and mcq["skipped"] == 0
        assert set(mcq["by_category"]) == {"first", "last", "after"}
        [order] = report["vinoground"]
        assert order["evaluated"] == 2 and set(order["by_category"]) == {"colour order"}
        assert {test: 0 <= order[test] <= 1 for test in ("text", "video", "group")} == dict.fromkeys(
            ("text", "video", "group"), True)
    pairs = reports["dpo_r2"]["pairs"]
    assert [os.path.basename(p["file"]) for p in pairs] == [f"pairs_r{r}.jsonl" for r in (16, 8, 4, 2)]
    assert all(p["measure"].startswith("implicit reward") and p["evaluated"] for p in pairs)
    assert (demo / "runs" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_rerun_skips_what_is_done(demo, capsys):
    stamps = {name: os.path.getmtime(demo / "runs" / name / "adapter_model.safetensors") for name in STAGES}
    threads = torch.get_num_threads()
    assert temple.main(["demo", "--out", str(demo), "--steps", "1"]) == 0
    printed = capsys.readouterr().out
    assert "is finished, skipped" in printed and "eval_base.json exists, skipped" in printed
    assert stamps == {name: os.path.getmtime(demo / "runs" / name / "adapter_model.safetensors") for name in STAGES}
    assert torch.get_num_threads() == threads  # the demo's one-thread setting does not leak
