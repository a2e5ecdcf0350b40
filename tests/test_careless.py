"""The careless user: a wrong option, a wrong path, a second try. Every mistake is one line before any work, and
nothing it leaves behind blocks the corrected command."""

import argparse
import json
import os

import pytest

import datafiles
import recipes
import runs
import temple
import vlm
from test_dpo import read_metrics, stage_args

SEEDS = {"seed", "model_seed"}  # any integer seeds a generator


def subcommands():
    parser = temple.build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


def test_every_numeric_option_has_a_range():
    """A bare int or float type would let --epochs 0, --beta 0 or --micro-batch 0 through to a traceback or a run
    that trains nothing."""
    for command, parser in subcommands().items():
        for action in parser._actions:
            if action.dest not in SEEDS:
                assert action.type not in (int, float), f"temple.py {command} {action.option_strings}: no range"


@pytest.mark.parametrize("argv, message", [
    (["dpo", "-r", "16", "--epochs", "0"], "argument --epochs: must be a number > 0, got 0"),
    (["dpo", "-r", "16", "--max-steps", "-1"], "argument --max-steps: must be an integer >= 0, got -1"),
    (["dpo", "-r", "16", "--micro-batch", "0"], "argument --micro-batch: must be an integer >= 1, got 0"),
    (["dpo", "-r", "16", "--global-batch", "0"], "argument --global-batch: must be an integer >= 1, got 0"),
    (["dpo", "-r", "16", "--save-every", "0"], "argument --save-every: must be an integer >= 1, got 0"),
    (["dpo", "-r", "16", "--lora-r", "0"], "argument --lora-r: must be an integer >= 1, got 0"),
    (["dpo", "-r", "16", "--lora-alpha", "0"], "argument --lora-alpha: must be a number > 0, got 0"),
    (["dpo", "-r", "16", "--beta", "0"], "argument --beta: must be a number > 0, got 0"),
    (["dpo", "-r", "16", "--fps", "0"], "argument --fps: must be a number > 0, got 0"),
    (["dpo", "-r", "16", "--warmup-ratio", "1"], "argument --warmup-ratio: must be a number >= 0 and < 1, got 1"),
    (["pairs", "--top-p", "0"], "argument --top-p: must be a number > 0 and <= 1, got 0"),
    (["sft", "--data", "x.json", "--lr", "fast"], "argument --lr: must be a number > 0, got 'fast'"),
    (["dpo", "-r", "16", "--bogus", "1"], "unrecognized arguments: --bogus 1"),
])
def test_a_bad_option_is_one_line_from_its_subcommand_and_nothing_is_made(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as stop:
        temple.main(argv)
    command = argv[0]
    assert stop.value.code == 2 and os.listdir(tmp_path) == []
    assert capsys.readouterr().err == f"temple.py {command}: error: {message} (see temple.py {command} --help)\n"


def test_select_wants_min_shots_no_more_than_max_shots(tmp_path, capsys):
    (tmp_path / "v.mp4").write_bytes(b"")
    assert temple.main(["select", str(tmp_path / "v.mp4"), "--min-shots", "9", "--max-shots", "4",
                        "--out", str(tmp_path / "data")]) == 1
    assert capsys.readouterr().err == "temple.py select: error: --min-shots 9 is more than --max-shots 4\n"
    assert not os.path.exists(tmp_path / "data")


def test_max_steps_is_the_number_of_steps_whatever_the_epochs_give(data_dir, tmp_path):
    """HF's and ms-swift's meaning: --max-steps 3 on 4 pairs at a global batch of 4 is 3 steps, the data repeated."""
    run = recipes.run_stage(stage_args(data_dir, tmp_path, global_batch=4, max_steps=3))
    assert [m["step"] for m in read_metrics(run)] == [1, 2, 3]


def test_a_run_that_stopped_before_its_first_checkpoint_does_not_block_the_corrected_command(data_dir, tmp_path,
                                                                                             capsys):
    with pytest.raises(ValueError, match="the loss is (nan|inf)"):
        recipes.run_stage(stage_args(data_dir, tmp_path, max_steps=3, lr=1e30))
    run = tmp_path / "dpo_r16"
    assert os.path.exists(run / "config.json") and not runs.resumable(str(run))
    assert recipes.run_stage(stage_args(data_dir, tmp_path, max_steps=2)) == str(run)  # the corrected command
    assert runs.finished(str(run)) and "resumes" not in runs.read_run_config(str(run))
    assert len(read_metrics(run)) == 2
    # and --resume on such a directory starts over with what it is given, even other LoRA settings
    other = tmp_path / "other"
    with pytest.raises(ValueError, match="the loss is (nan|inf)"):
        recipes.run_stage(stage_args(data_dir, tmp_path, out=str(other), max_steps=3, lr=1e30, lora_r=4))
    recipes.run_stage(stage_args(data_dir, tmp_path, out=str(other), max_steps=2, lora_r=8, resume=True))
    assert runs.read_run_config(str(other))["lora"]["r"] == 8


def test_resuming_a_finished_run_says_it_was_finished(data_dir, tmp_path, capsys):
    run = recipes.run_stage(stage_args(data_dir, tmp_path, max_steps=2))
    before = open(os.path.join(run, "config.json")).read(), os.path.getmtime(os.path.join(run, "adapter_model.safetensors"))
    capsys.readouterr()
    assert recipes.run_stage(stage_args(data_dir, tmp_path, max_steps=2, resume=True)) == run
    assert capsys.readouterr().out == f"stage r=16: {run} was already finished (step 2); nothing to resume\n"
    assert (open(os.path.join(run, "config.json")).read(),
            os.path.getmtime(os.path.join(run, "adapter_model.safetensors"))) == before
    recipes.run_stage(stage_args(data_dir, tmp_path, max_steps=3, resume=True))  # more steps: it trains on
    assert len(read_metrics(run)) == 3


def test_a_file_where_the_run_directory_goes_is_one_line(data_dir, tmp_path):
    (tmp_path / "dpo_r16").write_text("")
    with pytest.raises(ValueError, match=r"dpo_r16: is a file, not a run directory; give another --out \(or --runs\)"):
        recipes.run_stage(stage_args(data_dir, tmp_path, max_steps=1))


def test_missing_videos_name_the_first_path_and_the_video_root(data_dir, tmp_path, monkeypatch, capsys):
    pairs = datafiles.read_jsonl(data_dir / "pairs_r16.jsonl")
    relative = [{**p, "video": os.path.join("videos", os.path.basename(p["video"]))} for p in pairs]
    datafiles.write_jsonl(tmp_path / "pairs_r16.jsonl", relative)
    monkeypatch.chdir(tmp_path)
    assert temple.main(["dpo", "-r", "16", "--model", "tiny", "--data-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        f"temple.py dpo: error: {tmp_path / 'pairs_r16.jsonl'}: no usable pairs: 4 pair(s) whose video file is "
        f"missing, the first videos/v0.mp4 (relative paths start from the directory you run in, {tmp_path}; "
        f"--video-root DIR starts them there)\n")


def test_merge_replaces_only_what_an_earlier_merge_wrote_and_refuses_other_places(data_dir, tmp_path, capsys):
    run = recipes.run_stage(stage_args(data_dir, tmp_path / "runs", max_steps=1))
    out = tmp_path / "merged"
    runs.merge_run(run, str(out))
    (out / "notes.txt").write_text("my eval notes")
    (out / "model-00002-of-00002.safetensors").write_bytes(b"a shard of an earlier, other sharding")
    runs.merge_run(run, str(out))
    names = set(os.listdir(out))
    assert "notes.txt" in names and "model-00002-of-00002.safetensors" not in names and "merged_from.json" in names
    assert not os.path.exists(str(out) + ".partial")
    for place, problem in ((data_dir / "pairs_r16.jsonl", "is a file, not a directory"),
                           (run, "holds a training run"), (tmp_path / "model", "holds a model that merge did not write")):
        if place == tmp_path / "model":
            vlm.load("tiny").hf_model.save_pretrained(place)
        before = sorted(os.listdir(os.path.dirname(place)))
        assert temple.main(["merge", run, "--out", str(place)]) == 1
        err = capsys.readouterr().err.splitlines()[-1]
        assert err.startswith(f"temple.py merge: error: --out {place}: {problem}")
        assert sorted(os.listdir(os.path.dirname(place))) == before  # refused before the model loaded


@pytest.mark.parametrize("model", ["tiny", "tiny-qwen2.5", "tiny-qwen3"])
def test_a_merged_built_in_model_carries_the_processor_files_a_checkpoint_has(data_dir, tmp_path, model):
    from transformers import Qwen2VLImageProcessorPil

    run = recipes.run_stage(stage_args(data_dir, tmp_path / "runs", model=model, max_steps=1))
    out = runs.merge_run(run, str(tmp_path / "merged"))
    processor = vlm.load(model).processor
    loaded = Qwen2VLImageProcessorPil.from_pretrained(out)  # what AutoProcessor reads (its video side needs torchvision)
    assert (loaded.patch_size, loaded.merge_size, loaded.temporal_patch_size) == (
        processor.patch, processor.merge, processor.temporal_patch)
    assert (loaded.size["shortest_edge"], loaded.size["longest_edge"]) == (processor.min_pixels, processor.max_pixels)
    assert tuple(loaded.image_mean) == processor.family.mean
    video = json.load(open(os.path.join(out, "video_preprocessor_config.json")))
    assert video["video_processor_type"] == processor.family.video_processor_class
    assert os.path.exists(os.path.join(out, "chat_template.jinja"))


def test_a_full_disk_while_a_checkpoint_is_written_is_one_line_and_resume_goes_on(data_dir, tmp_path, capsys,
                                                                                  monkeypatch):
    """torch.save on a full disk raises an unnamed RuntimeError ("unexpected pos ..."); the checkpoint's files are
    written by our own writes, so the error names the file, and the line says what is kept and how to go on."""
    real, calls = datafiles.write_atomic, []

    def fills_up(path, data):
        if path.endswith("train_state.pt"):
            calls.append(path)
            if len(calls) == 2:  # the second checkpoint finds the disk full: a write raises, naming no file
                with datafiles.named(path):
                    raise OSError(28, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(datafiles, "write_atomic", fills_up)
    out = tmp_path / "run"
    argv = ["dpo", "-r", "16", "--model", "tiny", "--data-dir", str(data_dir), "--out", str(out), "--max-steps", "3",
            "--save-every", "1", "--global-batch", "1", "--workers", "0", "--max-frames", "4", "--total-pixels",
            str(64 * 96 * 4)]
    assert temple.main(argv) == 1
    err = capsys.readouterr().err.splitlines()[-1]
    assert err == (f"temple.py dpo: error: no space left on the device of {out / 'checkpoint.tmp' / 'train_state.pt'}; "
                   f"{out}/checkpoint holds step 1. Free some space, then resume: python temple.py "
                   f"{' '.join(argv)} --resume")
    assert not os.path.exists(out / "checkpoint.tmp")  # the half-written checkpoint gave its space back
    monkeypatch.setattr(datafiles, "write_atomic", real)
    assert temple.main([*argv, "--resume"]) == 0
    assert [m["step"] for m in read_metrics(out)] == [1, 2, 3] and runs.finished(str(out))


def test_a_part_file_cut_inside_a_character_by_a_full_disk_reads_up_to_its_last_whole_line(tmp_path):
    import jobs
    line = json.dumps({"video": "a.mp4", "captions": ["un café"]}, ensure_ascii=False).encode()
    (tmp_path / "c.jsonl.part0of1").write_bytes(line + b"\n" + line[:line.index("é".encode()) + 1])
    assert jobs.read_part(str(tmp_path / "c.jsonl.part0of1")) == [json.loads(line)]
    with pytest.raises(OSError) as failed, datafiles.named(tmp_path / "x"):
        raise OSError(28, "No space left on device")  # what a write on a full disk raises: no file named
    assert failed.value.filename == str(tmp_path / "x") and failed.value.errno == 28


def test_captions_run_from_the_wrong_directory_are_tried_again_from_the_right_one(tmp_path, monkeypatch, capsys):
    from media import scene_frames, write_video

    project = tmp_path / "project"
    os.makedirs(project / "videos")
    clips = [[6 * i, 6 * (i + 1)] for i in range(4)]
    records = []
    for k in range(2):
        write_video(project / "videos" / f"v{k}.mp4", scene_frames(4, 6, 32, 48, seed=k), fps=6)
        records.append({"path": f"videos/v{k}.mp4", "status": "kept", "clips": clips,
                        "keyframes": [[s + 1, e - 2] for s, e in clips]})
    datafiles.write_jsonl(project / "videos.jsonl", records)
    argv = ["captions", "--videos", str(project / "videos.jsonl"), "--model", "tiny", "--max-new-tokens", "4",
            "--max-pixels", str(64 * 64), "--min-pixels", str(32 * 32)]
    monkeypatch.chdir(tmp_path)  # the wrong directory: videos/v0.mp4 is not here
    assert temple.main(argv) == 1
    err = capsys.readouterr().err.splitlines()[-1]
    assert "nothing could be captioned, 2 of 2 videos are errors (first: videos/v0.mp4: " in err
    assert err.endswith(f"they are tried again when captions runs again; relative paths start from the directory "
                        f"it runs in, {tmp_path})")
    monkeypatch.chdir(project)
    assert temple.main(argv) == 0
    assert "2 videos captioned, 0 skipped" in capsys.readouterr().out
    assert [r["status"] for r in datafiles.read_jsonl(project / "captions.jsonl")] == ["ok", "ok"]
