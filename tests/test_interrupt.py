"""Ctrl-C and NaN stops: one line saying what is kept and how to go on; the checkpoint left behind is a good one."""

import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import dpo
import recipes
import runs
from test_dpo import read_metrics, stage_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LONG_RUN = ["dpo", "-r", "16", "--model", "tiny", "--epochs", "100", "--global-batch", "2", "--workers", "0",
            "--save-every", "2", "--max-frames", "4", "--total-pixels", str(64 * 96 * 4)]


def interrupt_after(argv, cwd, steps):
    """Start a command, press Ctrl-C (SIGINT to its process group, as a terminal does) once `steps` steps are logged."""
    process = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, env={**os.environ, "PYTHONPATH": ROOT})
    metrics = os.path.join(cwd, "runs", "dpo_r16", "metrics.jsonl")
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if os.path.exists(metrics) and len(open(metrics).readlines()) >= steps:
            break
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=120)
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and "dpo_r16:" not in line]
    return process.returncode, lines


def test_ctrl_c_prints_one_line_with_the_checkpoint_and_the_resume_command(data_dir, tmp_path):
    argv = [*LONG_RUN, "--data-dir", str(data_dir)]
    code, lines = interrupt_after([sys.executable, os.path.join(ROOT, "temple.py"), *argv], tmp_path, steps=5)
    assert code == 130 and len(lines) == 1, lines
    [line] = lines
    kept, resume = line.split(". Resume: ")
    assert kept.startswith("temple.py dpo: interrupted; runs/dpo_r16/checkpoint holds step ")
    saved = int(kept.rsplit(" ", 1)[1])
    state = torch.load(tmp_path / "runs" / "dpo_r16" / "checkpoint" / "train_state.pt", weights_only=True)
    assert saved == state["step"] >= 4
    assert shlex.split(resume) == ["python", "temple.py", *argv, "--resume"]


def test_ctrl_c_under_torchrun_stops_every_rank_with_one_line(data_dir, tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    argv = [torchrun, "--standalone", "--nproc_per_node", "2", os.path.join(ROOT, "temple.py"), *LONG_RUN,
            "--data-dir", str(data_dir)]
    code, lines = interrupt_after(argv, tmp_path, steps=5)
    ours = [line for line in lines if line.startswith("temple.py")]
    assert ours == [ours[0]] and ours[0].endswith("Resume: the same torchrun command with --resume")
    # the only traceback is torchrun's own (its agent reports the signal it got); none from the ranks
    tracebacks = [i for i, line in enumerate(lines) if line.startswith("Traceback")]
    assert len(tracebacks) <= 1 and all("torchrun" in lines[i + 1] for i in tracebacks)


def test_a_nan_stop_leaves_a_checkpoint_whose_loss_was_finite(data_dir, tmp_path, monkeypatch):
    """The loss turns NaN at step 5, computed from the weights after 4 updates, which were due for a checkpoint: the
    checkpoint left is the one of step 2, whose weights gave a finite loss (step 3's); the resume, with a lower
    --lr, is recorded beside the first settings."""
    original = dpo.dpo_step
    calls = {"n": 0}

    def nan_at_step_five(*args, **kwargs):  # global batch 2, micro-batch 1: two calls per step
        calls["n"] += 1
        loss, metrics = original(*args, **kwargs)
        return (loss * math.nan if calls["n"] in (9, 10) else loss), metrics

    monkeypatch.setattr(dpo, "dpo_step", nan_at_step_five)
    args = stage_args(data_dir, tmp_path, epochs=4, save_every=2)
    with pytest.raises(ValueError) as stop:
        recipes.run_stage(args)
    run = os.path.join(tmp_path, "dpo_r16")
    assert str(stop.value).startswith("step 5: the loss is nan; stopped before updating the weights. ")
    assert f"{run}/checkpoint holds step 2, whose weights gave a finite loss" in str(stop.value)
    assert torch.load(os.path.join(run, "checkpoint", "train_state.pt"), weights_only=True)["step"] == 2
    monkeypatch.setattr(dpo, "dpo_step", original)
    args.resume, args.lr = True, 1e-4
    recipes.run_stage(args)
    config = runs.read_run_config(run)
    assert config["train"]["lr"] == 1e-3 and config["resumes"] == [{"step": 2, "changed": {"lr": [1e-3, 1e-4]}}]
    assert [m["step"] for m in read_metrics(run)] == list(range(1, 9))
    assert {m["learning_rate"] <= 1e-4 for m in read_metrics(run)[2:]} == {True}
    args.data = str(data_dir / "pairs_r8.jsonl")
    with pytest.raises(ValueError, match="started with another data; a resume may change how it trains"):
        recipes.run_stage(args)


def test_lr_1e30_stops_at_step_2_without_leaving_the_blown_up_weights(data_dir, tmp_path):
    args = stage_args(data_dir, tmp_path, epochs=4, save_every=1, lr=1e30, warmup_ratio=0)
    with pytest.raises(ValueError, match=r"step 2: the loss is nan.* no checkpoint yet \(one every 1 steps\), so "
                                         r"--resume starts from step 0"):
        recipes.run_stage(args)
    assert not os.path.exists(os.path.join(tmp_path, "dpo_r16", "checkpoint"))


def test_a_metrics_line_cut_short_by_a_kill_is_dropped_on_resume(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 0.69}\n{"step": 2, "loss": 0.68}\n{"step": 3, "lo')
    runs.trim_metrics(str(path), 2)
    assert path.read_text() == '{"step": 1, "loss": 0.69}\n{"step": 2, "loss": 0.68}\n'
    runs.trim_metrics(str(path), 1)
    assert path.read_text() == '{"step": 1, "loss": 0.69}\n'
    path.write_text('{"step": 1, "loss": 0.69}\nnot json\n{"step": 2, "loss": 0.68}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not a metrics line"):
        runs.trim_metrics(str(path), 2)
