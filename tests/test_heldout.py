"""Held-out preference accuracy during training, and the adaptive curriculum that stops a stage on it."""

import os

import pytest

import datafiles
import distributed
import dpo
import recipes
import heldout
import evaluate
import runs
import temple
import vlm
from media import scene_frames, write_video
from test_dpo import read_metrics, stage_args


def test_heldout_videos_are_the_same_on_every_call_with_every_pair_of_theirs():
    pairs = [{"video": f"/root/v{i}.mp4", "video_in_data": f"v{i}.mp4", "kind": kind}
             for i in range(10) for kind in ("drop", "shuffle", "reverse")]
    videos = heldout.heldout_videos(pairs, 3, seed=42)
    assert videos == heldout.heldout_videos(pairs[::-1], 3, seed=42)  # every rank, every resume, any order of the data
    assert len(videos) == 3 and videos == sorted(videos) and set(videos) <= {p["video_in_data"] for p in pairs}
    train_pairs, held = heldout.split_off(pairs, videos)
    assert len(held) == 9 and len(train_pairs) == 21  # every kind of a held-out video
    assert not {p["video_in_data"] for p in held} & {p["video_in_data"] for p in train_pairs}
    assert heldout.heldout_videos(pairs, 3, seed=7) != videos
    # a stage whose data lacks some videos ranks the others the same way: the choice depends on seed and path only
    fewer = [p for p in pairs if p["video_in_data"] not in videos[1:]]
    assert heldout.heldout_videos(fewer, 1, seed=42) == videos[:1]
    for bad in (0, 10):
        with pytest.raises(ValueError, match=rf"--heldout {bad}: the data has pairs on 10 video\(s\); set aside "
                                             r"between 1 and 9 \(every pair of a held-out video is held out\)"):
            heldout.heldout_videos(pairs, bad, seed=42)


def test_metrics_get_the_heldout_accuracy_that_eval_reports(data_dir, tmp_path):
    """eval/rewards/* of the last step equal what `temple.py eval --pairs --run` computes on the same pairs."""
    run = recipes.run_stage(stage_args(data_dir, tmp_path, epochs=2, max_steps=3, global_batch=1, heldout=1,
                                       eval_every=2))
    metrics = read_metrics(run)
    assert [("eval/rewards/accuracies" in m) for m in metrics] == [False, True, True]  # every 2 steps and the end
    config = runs.read_run_config(run)
    assert config["heldout"] == {"videos": 1, "file": None, "every": 2} and len(config["heldout_videos"]) == 1
    pairs, _ = datafiles.read_pairs(str(data_dir / "pairs_r16.jsonl"))
    _, held = heldout.split_off(pairs, config["heldout_videos"])
    assert len(held) == 2 and metrics[-1]["eval/pairs"] == 2  # the data's 4 pairs are on 2 videos
    datafiles.write_jsonl(tmp_path / "heldout.jsonl", held)
    args = temple.build_parser().parse_args(["eval", "--run", run, "--pairs", str(tmp_path / "heldout.jsonl"),
                                             "--max-frames", "4", "--total-pixels", str(64 * 96 * 4)])
    report = evaluate.run(args)["pairs"][0]["groups"]["all"]
    assert report["pairs"] == 2
    assert metrics[-1]["eval/rewards/accuracies"] == pytest.approx(report["accuracy"])
    assert metrics[-1]["eval/rewards/margins"] == pytest.approx(report["mean_margin"], abs=1e-5)


def curriculum_data(directory):
    """pairs_r16 on 4 videos, pairs_r8 on 3 of them (its filters dropped every pair of the fourth)."""
    videos = [write_video(directory / f"v{i}.mp4", scene_frames(4, 5, seed=i), fps=5) for i in range(4)]
    pair = lambda video, kind: {"video": os.path.basename(video), "instruction": "Describe the video.",  # noqa
                                "chosen": "the person walks in and then sits", "rejected": "a person", "kind": kind}
    datafiles.write_jsonl(directory / "pairs_r16.jsonl", [pair(v, k) for v in videos for k in ("drop", "reverse")])
    datafiles.write_jsonl(directory / "pairs_r8.jsonl", [pair(v, k) for v in videos[1:] for k in ("drop", "reverse")])


def test_a_curriculum_holds_out_the_same_videos_in_every_stage_and_never_trains_on_them(tmp_path, monkeypatch,
                                                                                        capsys):
    curriculum_data(tmp_path)
    trained = {}
    encode = dpo.PairEncoder.__call__

    def recorded(self, index):  # the videos each stage's encoder is asked for (kept alive: ids stay unique)
        trained.setdefault(id(self), (self, set()))[1].add(self.pairs[index]["video_in_data"])
        return encode(self, index)

    monkeypatch.setattr(dpo.PairEncoder, "__call__", recorded)
    args = ["curriculum", "--model", "tiny", "--stages", "16", "8", "--data-dir", str(tmp_path), "--runs",
            str(tmp_path / "runs"), "--video-root", str(tmp_path), "--heldout", "2", "--seed", "1", "--workers", "0",
            "--max-steps", "2", "--global-batch", "2", "--max-frames", "4", "--total-pixels", str(64 * 96 * 4),
            "--eval-every", "1"]
    assert temple.main(args) == 0
    held = [runs.read_run_config(tmp_path / "runs" / f"dpo_r{r}")["heldout_videos"] for r in (16, 8)]
    assert held[0] == held[1] and len(held[0]) == 2
    assert held[0] != heldout.heldout_videos(datafiles.read_pairs(str(tmp_path / "pairs_r8.jsonl"))[0], 2, seed=1)
    assert len(trained) == 2 and all(videos and not videos & set(held[0]) for _, videos in trained.values())
    with pytest.raises(ValueError, match=r"--heldout 1: .*dpo_r16, which this stage starts from, held out 2 "
                                         r"video\(s\); hold out the same ones \(--heldout 2\)"):
        recipes.run_stage(stage_args(tmp_path, tmp_path / "runs", r=8, out=str(tmp_path / "other"), heldout=1,
                                     video_root=str(tmp_path), max_steps=1))


def test_adaptive_stage_ends_early_on_pairs_it_learns_quickly(data_dir, tmp_path, capsys, monkeypatch):
    args = stage_args(data_dir, tmp_path, epochs=20, global_batch=2, lr=2e-3, eval_every=1, adaptive=True,
                      eval_pairs=str(data_dir / "pairs_r16.jsonl"), accuracy_ceiling=0.98)
    run = recipes.run_stage(args)
    stopped = runs.read_run_config(run)["stopped"]
    metrics = read_metrics(run)
    assert stopped["step"] == len(metrics) < 40  # 4 pairs x 20 epochs / 2 per step = 40 planned
    assert stopped["reason"].startswith("held-out eval/rewards/accuracies 1.000 reached the ceiling 0.98")
    assert metrics[-1]["eval/rewards/accuracies"] == 1.0 and runs.finished(run)
    assert f"dpo_r16: {stopped['reason']}; the stage ends at step {stopped['step']} of 40" in capsys.readouterr().out

    args.resume, args.max_steps = True, stopped["step"] + 1  # a stopped stage may go on: its stop becomes history
    real_step = dpo.dpo_step

    def interrupted(*step_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(dpo, "dpo_step", interrupted)
    with pytest.raises(runs.Interrupted):  # Ctrl-C in its first step on
        recipes.run_stage(args)
    monkeypatch.setattr(dpo, "dpo_step", real_step)
    # while it trains on it is not finished: curriculum would skip it and the next stage chain from the old weights
    assert not runs.finished(run) and os.path.exists(os.path.join(run, "checkpoint"))
    recipes.run_stage(args)
    config = runs.read_run_config(run)
    assert config["resumes"] == [{"step": stopped["step"], "changed": {"max_steps": [0, stopped["step"] + 1]},
                                  "after_stop": stopped}]
    assert "stopped" not in config and len(read_metrics(run)) == stopped["step"] + 1


def test_adaptive_decision_survives_a_resume(data_dir, tmp_path, monkeypatch):
    """A plateau rule that can only fire at the third evaluation: an uninterrupted stage and one stopped during
    step 3 and resumed both end at step 3: the resumed one continued from the checkpoint of step 1, which
    remembered evaluation 1, and measured 2 and 3 again."""
    def args(out):
        return stage_args(data_dir, tmp_path / out, epochs=10, global_batch=2, eval_every=1, save_every=1,
                          adaptive=True, eval_pairs=str(data_dir / "pairs_r8.jsonl"), plateau_delta=1.0,
                          plateau_evals=2, accuracy_ceiling=2.0)

    whole = recipes.run_stage(args("whole"))
    assert runs.read_run_config(whole)["stopped"]["step"] == 3

    class Interrupt(Exception):
        pass

    original, calls = dpo.dpo_step, {"n": 0}

    def stop_in_step_three(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:  # two micro-batches per step: the fifth is the first of step 3
            raise Interrupt()
        return original(*a, **k)

    monkeypatch.setattr(dpo, "dpo_step", stop_in_step_three)
    interrupted = args("resumed")
    with pytest.raises(Interrupt):
        recipes.run_stage(interrupted)
    monkeypatch.setattr(dpo, "dpo_step", original)
    interrupted.resume = True
    resumed = recipes.run_stage(interrupted)
    assert runs.read_run_config(resumed)["stopped"]["step"] == 3
    assert [m["step"] for m in read_metrics(resumed)] == [1, 2, 3]


def test_adaptive_needs_heldout_pairs(data_dir, tmp_path):
    with pytest.raises(ValueError, match="--adaptive decides on held-out preference accuracy: give --heldout N"):
        recipes.run_stage(stage_args(data_dir, tmp_path, adaptive=True, max_steps=1))
    assert not os.path.exists(tmp_path / "dpo_r16" / "adapter_model.safetensors")


def test_plateau_rule_on_fixed_numbers():
    stop = heldout.plateau("acc", delta=0.01, evaluations=2, ceiling=0.98)
    history = lambda *values: [{"acc": v} for v in values]  # noqa: E731
    assert stop(history(0.5)) is None and stop(history(0.5, 0.6)) is None
    assert stop(history(0.5, 0.6, 0.605)) is None  # 0.605 over the best before (0.5): a gain
    assert stop(history(0.5, 0.6, 0.605, 0.6)) == "held-out acc gained no more than 0.01 in 2 evaluations (best 0.605)"
    assert stop(history(0.5, 0.99)) == "held-out acc 0.990 reached the ceiling 0.98"


def test_plateau_rule_ignores_one_pair_changing_its_mind():
    """On 64 held-out pairs one pair is 1/64 = 0.016, more than --plateau-delta 0.01: a gain of one pair is noise."""
    stop = heldout.plateau("acc", delta=0.01, evaluations=2, ceiling=0.98, count="n")
    history = lambda *right: [{"acc": k / 64, "n": 64} for k in right]  # noqa: E731
    assert stop(history(40, 41, 40)) == ("held-out acc gained no more than 0.0156 (one of 64 held-out pairs) in 2 "
                                         "evaluations (best 0.641)")
    assert stop(history(40, 42, 40)) is None  # two pairs more: a gain
    assert stop([{"acc": 0.5, "n": 500}, {"acc": 0.6, "n": 500}, {"acc": 0.6, "n": 500}]) is None  # 1/500 < delta
    assert stop([{"acc": 0.6, "n": 500}, {"acc": 0.605, "n": 500}, {"acc": 0.608, "n": 500}]).startswith(
        "held-out acc gained no more than 0.01 in 2")


def test_a_pair_too_long_to_score_leaves_the_other_pairs_of_its_video_in(data_dir):
    """Pairs on one video get different instructions: one may be over --max-length while the others fit."""
    model = vlm.load("tiny")
    fits = datafiles.read_pairs(str(data_dir / "pairs_r16.jsonl"))[0][0]
    too_long = {**fits, "instruction": "Describe the video. " * 200}
    video = {"fps": 1.0, "max_frames": 4, "total_pixels": 64 * 96 * 4}
    max_length = max(len(row.input_ids) for row in dpo.encode_pair(model, fits, video, 4096)) + 5
    measure = heldout.HeldOutAccuracy(model, [too_long, fits], video, max_length, 0.1, distributed.World())
    assert measure.measure()["eval/rewards/accuracies"] in (0.0, 1.0)  # the pair that fits, scored
    assert measure.left_out == {0}
