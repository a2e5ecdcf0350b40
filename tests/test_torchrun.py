"""The multi-GPU commands as users type them: through torchrun's own argument parser, and through torchrun itself.

torchrun parses every option on its command line, the ones after the script too, and resolves abbreviations of its
own options there: `temple.py dpo --r 16` dies in torchrun as an ambiguous `--rdzv-*` / `--role` / `--redirects`
(pytorch #120601). These tests hold every option of every subcommand, and every torchrun line of the README and of
docs/commands.md, against the parser of the installed torch, and run the documented `dpo` and `curriculum` lines
with 2 gloo processes.
"""

import argparse
import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
import torch
from torch.distributed.run import get_args_parser

import datafiles
import temple
from media import scene_frames, write_video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def torchrun_script_args(argv):
    """What torchrun would hand the script (script + its arguments), or None when its parser rejects the line."""
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            parsed = get_args_parser().parse_args(argv)
        except SystemExit:
            return None
    return [parsed.training_script, *parsed.training_script_args]


def subcommands():
    parser = temple.build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


def test_every_option_of_every_command_passes_through_torchrun():
    """An option torchrun rejects (--r, --run) must have another spelling on the same option that it passes."""
    rejected = {}
    for command, parser in subcommands().items():
        for action in parser._actions:
            spellings = [s for s in action.option_strings if s not in ("-h", "--help")]
            passing = [s for s in spellings
                       if torchrun_script_args(["--nproc_per_node", "2", "temple.py", command, s, "X"])
                       == ["temple.py", command, s, "X"]]
            if spellings and not passing:
                pytest.fail(f"temple.py {command} {'/'.join(spellings)}: no spelling passes torchrun's parser")
            if len(passing) < len(spellings):
                rejected[f"{command} {action.dest}"] = (sorted(set(spellings) - set(passing)), passing)
    # the known cases, each with its documented spelling (README; docs/commands.md, dpo section)
    assert rejected == {"pairs r": (["--r"], ["-r"]), "dpo r": (["--r"], ["-r"]),
                        "eval run": (["--run"], ["--run-dir"])}
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    commands = open(os.path.join(ROOT, "docs", "commands.md"), encoding="utf-8").read()
    assert "write `-r 16`, not `--r 16`" in readme and "write `-r 16`, not `--r 16`" in commands
    assert "`--run-dir`" in commands


def test_single_process_spelling_is_unchanged():
    parser = temple.build_parser()
    assert parser.parse_args(["dpo", "--r", "16"]).r == parser.parse_args(["dpo", "-r", "16"]).r == 16
    assert parser.parse_args(["pairs", "--r", "16", "8"]).r == [16, 8]
    assert parser.parse_args(["eval", "--run", "x"]).run == parser.parse_args(["eval", "--run-dir", "x"]).run == "x"


def readme_torchrun_lines():
    """Every torchrun command in the code blocks of the README and of docs/commands.md (the README's reference),
    continuation lines joined, comments dropped."""
    readme = "".join(open(os.path.join(ROOT, name), encoding="utf-8").read()
                     for name in ("README.md", os.path.join("docs", "commands.md")))
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return [shlex.split(line, comments=True) for line in lines if line.startswith("torchrun ")]


def test_readme_torchrun_lines_reach_temple_py_as_written():
    """Single- and multi-node lines: torchrun's own flags before the script, temple.py gets the rest untouched and
    its parser accepts them (a trailing `...` stands for options the reader fills in)."""
    lines = readme_torchrun_lines()
    assert {line[line.index("temple.py") + 1] for line in lines} >= {"captions", "dpo", "curriculum", "sft"}
    assert any("--nnodes" in line for line in lines)
    for line in lines:
        script = line.index("temple.py")
        assert torchrun_script_args(line[1:]) == line[script:], line
        words = line[script + 1:]
        arguments = [w for previous, w in zip([""] + words, words) if w != "..." or previous.startswith("--")]
        temple.build_parser().parse_args(arguments)  # exits (fails the test) on an option temple.py lacks


# ---- torchrun itself: 2 gloo processes, the tiny model, the README's lines ----------------------------------------


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    """Four pairs over two short synthetic videos for every r of the curriculum."""
    root = tmp_path_factory.mktemp("torchrun_data")
    videos = [write_video(root / f"v{i}.mp4", scene_frames(4, 5, seed=i), fps=5) for i in range(2)]
    answers = [("the person walks in and then sits", "a person"), ("then the scene is dark", "the video"),
               ("a clip of the scene with a person", "is in"), ("the video ends with the person", "and then")]
    pairs = [{"video": videos[i % 2], "instruction": "Describe the video.", "chosen": c, "rejected": r,
              "kind": "shuffle", "r": 16, "order": [1, 0]} for i, (c, r) in enumerate(answers)]
    for r in (16, 8, 4, 2):
        datafiles.write_jsonl(root / f"pairs_r{r}.jsonl", pairs)
    return root


def readme_line(command):
    """The first single-node torchrun line of `command` in the README (its headline example)."""
    return next(line for line in readme_torchrun_lines()
                if line[line.index("temple.py") + 1] == command and "--nnodes" not in line)


def run_torchrun(line, cwd, *extra):
    """The README line with 2 processes instead of 8, a free port (--standalone), the tiny model, a small run."""
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    launcher = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    line = ["2" if previous == "--nproc_per_node" else word for previous, word in zip([""] + line, line)]
    line = [os.path.join(ROOT, "temple.py") if word == "temple.py" else word for word in line]
    line = ["tiny" if previous == "--model" else word for previous, word in zip([""] + line, line)]
    argv = launcher + ["--standalone"] + line[1:] + list(extra)
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def check_trained_by_two_ranks(run_dir, steps):
    config = json.load(open(run_dir / "config.json"))
    state = torch.load(run_dir / "checkpoint" / "train_state.pt", weights_only=True)
    metrics = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    assert config["world_size"] == 2 and state["world"] == 2 and len(state["rng"]) == 2  # every rank checkpointed
    assert [m["step"] for m in metrics] == list(range(1, steps + 1)) and (run_dir / "adapter_model.safetensors").exists()


SMALL_RUN = ["--max-steps", "2", "--global-batch", "2", "--workers", "0", "--fps", "2", "--max-frames", "4",
             "--total-pixels", str(4 * 56 * 56), "--lr", "1e-3"]


def test_readme_dpo_line_trains_under_torchrun(pairs_dir, tmp_path):
    line = readme_line("dpo")
    assert line[line.index("dpo") + 1] == "-r"
    result = run_torchrun(line, tmp_path, "--data-dir", str(pairs_dir), *SMALL_RUN)
    assert result.returncode == 0, result.stderr[-3000:]
    check_trained_by_two_ranks(tmp_path / "runs" / "dpo_r16", steps=2)
    assert result.stdout.count("stage r=16: 4 pairs") == 1  # rank 0 reports


def test_readme_curriculum_line_trains_every_stage_under_torchrun(pairs_dir, tmp_path):
    result = run_torchrun(readme_line("curriculum"), tmp_path, "--data-dir", str(pairs_dir), *SMALL_RUN,
                          "--max-steps", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    for r in (16, 8, 4, 2):
        check_trained_by_two_ranks(tmp_path / "runs" / f"dpo_r{r}", steps=1)
    again = run_torchrun(readme_line("curriculum"), tmp_path, "--data-dir", str(pairs_dir), *SMALL_RUN,
                         "--max-steps", "1")
    assert again.returncode == 0 and again.stdout.count("is finished, skipped") == 4  # once, not once per rank


def test_an_error_every_rank_meets_is_printed_once(pairs_dir, tmp_path):
    result = run_torchrun(readme_line("dpo"), tmp_path, "--data-dir", str(pairs_dir), *SMALL_RUN, "--heldout", "64")
    assert result.returncode != 0
    said = [line for line in result.stderr.splitlines() if line.startswith("temple.py dpo: error:")]
    assert said == ["temple.py dpo: error: --heldout 64: the data has pairs on 2 video(s); set aside between 1 and 1 "
                    "(every pair of a held-out video is held out)"]
    result = run_torchrun(readme_line("dpo"), tmp_path, "--data-dir", str(pairs_dir), *SMALL_RUN, "--global-batch", "3")
    said = [line for line in result.stderr.splitlines() if line.startswith("temple.py dpo: error:")]
    assert said == ["temple.py dpo: error: --global-batch 3 is not a multiple of world size 2 x --micro-batch 1"]
    assert "Loading weights" not in result.stderr and not os.path.exists(tmp_path / "runs")  # before the model loads
