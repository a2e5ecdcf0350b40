"""Held-out preference accuracy during training, and the adaptive curriculum that stops a stage on it."""

import os

import pytest

import datafiles
import dpo
import evaluate
import runs
import temple
import train
import vlm
from test_dpo import read_metrics, stage_args


def test_heldout_pairs_are_the_same_on_every_call_and_never_trained_on():
    pairs = [{"video": f"v{i}.mp4"} for i in range(10)]
    train_pairs, heldout = dpo.heldout_split(pairs, 3, seed=42)
    assert (train_pairs, heldout) == dpo.heldout_split(pairs, 3, seed=42)  # every rank, every resume
    assert len(heldout) == 3 and len(train_pairs) == 7 and not {p["video"] for p in heldout} & \
        {p["video"] for p in train_pairs}
    assert dpo.heldout_split(pairs, 3, seed=7)[1] != heldout
    for bad in (0, 10):
        with pytest.raises(ValueError, match=f"--heldout {bad}: the data has 10 pairs"):
            dpo.heldout_split(pairs, bad, seed=42)


def test_metrics_get_the_heldout_accuracy_that_eval_reports(data_dir, tmp_path):
    """eval/rewards/* of the last step equal what `temple.py eval --pairs --run` computes on the same pairs."""
    run = dpo.run_stage(stage_args(data_dir, tmp_path, epochs=2, max_steps=3, global_batch=1, heldout=2,
                                   eval_every=2))
    metrics = read_metrics(run)
    assert [("eval/rewards/accuracies" in m) for m in metrics] == [False, True, True]  # every 2 steps and the end
    pairs, _ = datafiles.read_pairs(str(data_dir / "pairs_r16.jsonl"))
    _, heldout = dpo.heldout_split(pairs, 2, seed=42)
    datafiles.write_jsonl(tmp_path / "heldout.jsonl", heldout)
    args = temple.build_parser().parse_args(["eval", "--run", run, "--pairs", str(tmp_path / "heldout.jsonl"),
                                             "--max-frames", "4", "--total-pixels", str(64 * 96 * 4)])
    report = evaluate.run(args)["pairs"][0]["groups"]["all"]
    assert report["pairs"] == 2
    assert metrics[-1]["eval/rewards/accuracies"] == pytest.approx(report["accuracy"])
    assert metrics[-1]["eval/rewards/margins"] == pytest.approx(report["mean_margin"], abs=1e-5)
    assert runs.read_run_config(run)["heldout"] == {"pairs": 2, "file": None, "every": 2}


def test_adaptive_stage_ends_early_on_pairs_it_learns_quickly(data_dir, tmp_path, capsys, monkeypatch):
    args = stage_args(data_dir, tmp_path, epochs=20, global_batch=2, lr=2e-3, eval_every=1, adaptive=True,
                      eval_pairs=str(data_dir / "pairs_r16.jsonl"), accuracy_ceiling=0.98)
    run = dpo.run_stage(args)
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
    with pytest.raises(train.Interrupted):  # Ctrl-C in its first step on
        dpo.run_stage(args)
    monkeypatch.setattr(dpo, "dpo_step", real_step)
    # while it trains on it is not finished: curriculum would skip it and the next stage chain from the old weights
    assert not runs.finished(run) and os.path.exists(os.path.join(run, "checkpoint"))
    dpo.run_stage(args)
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

    whole = dpo.run_stage(args("whole"))
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
        dpo.run_stage(interrupted)
    monkeypatch.setattr(dpo, "dpo_step", original)
    interrupted.resume = True
    resumed = dpo.run_stage(interrupted)
    assert runs.read_run_config(resumed)["stopped"]["step"] == 3
    assert [m["step"] for m in read_metrics(resumed)] == [1, 2, 3]


def test_adaptive_needs_heldout_pairs(data_dir, tmp_path):
    with pytest.raises(ValueError, match="--adaptive decides on held-out preference accuracy: give --heldout N"):
        dpo.run_stage(stage_args(data_dir, tmp_path, adaptive=True, max_steps=1))
    assert not os.path.exists(tmp_path / "dpo_r16" / "adapter_model.safetensors")


def test_plateau_rule_on_fixed_numbers():
    stop = train.plateau("acc", delta=0.01, evaluations=2, ceiling=0.98)
    history = lambda *values: [{"acc": v} for v in values]  # noqa: E731
    assert stop(history(0.5)) is None and stop(history(0.5, 0.6)) is None
    assert stop(history(0.5, 0.6, 0.605)) is None  # 0.605 over the best before (0.5): a gain
    assert stop(history(0.5, 0.6, 0.605, 0.6)) == "held-out acc gained no more than 0.01 in 2 evaluations (best 0.605)"
    assert stop(history(0.5, 0.99)) == "held-out acc 0.990 reached the ceiling 0.98"


def test_a_pair_too_long_to_score_leaves_the_other_pairs_of_its_video_in(data_dir):
    """Pairs on one video get different instructions: one may be over --max-length while the others fit."""
    model = vlm.load("tiny")
    fits = datafiles.read_pairs(str(data_dir / "pairs_r16.jsonl"))[0][0]
    too_long = {**fits, "instruction": "Describe the video. " * 200}
    video = {"fps": 1.0, "max_frames": 4, "total_pixels": 64 * 96 * 4}
    max_length = max(len(row.input_ids) for row in dpo.encode_pair(model, fits, video, 4096)) + 5
    measure = dpo.HeldOutAccuracy(model, [too_long, fits], video, max_length, 0.1, train.World())
    assert measure.measure()["eval/rewards/accuracies"] in (0.0, 1.0)  # the pair that fits, scored
    assert measure.left_out == {0}
