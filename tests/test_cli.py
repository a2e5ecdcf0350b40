"""Messages of the command line that a new user meets: each says what is wrong and how to fix it, in one line."""

import json
import os

import temple
from prompts import PROMPTS
from media import scene_frames, write_video


def run(capsys, *argv):
    code = temple.main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def test_select_with_a_mistyped_directory_is_an_error_and_writes_nothing(tmp_path, capsys):
    write_video(tmp_path / "a.mp4", scene_frames(2, 5), fps=5)
    code, err = run(capsys, "select", str(tmp_path / "a.mp4"), str(tmp_path / "vidz"), "--out", str(tmp_path / "data"))
    assert code == 1 and err == f"temple.py select: error: {tmp_path / 'vidz'}: no such file or directory"
    assert not os.path.exists(tmp_path / "data")


def test_other_settings_name_the_option_before_the_model_loads(tmp_path, capsys):
    """The settings check comes first: with a model that does not exist, the message is about the settings."""
    videos = tmp_path / "videos.jsonl"
    videos.write_text(json.dumps({"path": "a.mp4", "status": "kept", "clips": [[0, 4]], "keyframes": [[1, 2]]}) + "\n")
    (tmp_path / "captions.jsonl").write_text("")
    settings = {"model": "tiny", "max_new_tokens": 2048, "max_pixels": 401408,
                "prompts": {key: PROMPTS[key] for key in ("caption_first_clip", "caption_with_context")}}
    (tmp_path / "captions.settings.json").write_text(json.dumps(settings))
    code, err = run(capsys, "captions", "--videos", str(videos), "--model", "no-such-model")
    assert code == 1 and 'was made with other settings (model: "tiny" -> "no-such-model")' in err
    assert err.endswith("give another --out, or delete it and its .part files to start over")
    captions = tmp_path / "captions.jsonl"
    captions.write_text(json.dumps({"video": "a.mp4", "captions": ["x"], "clips": [[0, 4]], "keyframes": [[1, 2]]}))
    (tmp_path / "descriptions.settings.json").write_text("{}")
    (tmp_path / "descriptions.jsonl").write_text("")
    code, err = run(capsys, "pairs", "--captions", str(captions), "--model", "no-such-model")
    assert code == 1 and "give another --out-dir" in err and "was not found" not in err


def test_an_offline_hub_is_not_blamed_on_the_network(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, err = run(capsys, "describe", "x.mp4", "--model", "someone/missing-model")
    assert code == 1 and "HF_HUB_OFFLINE is set" in err and "unreachable" not in err
    assert "(built-in: tiny, tiny-qwen2.5, tiny-qwen3)" in err  # the names the README gives


def test_view_export_plot_and_shots_run_without_importing_torch(tmp_path):
    """The commands that need no model start in a moment: torch and transformers stay out of the process."""
    import subprocess
    import sys

    import datafiles
    from media import scene_frames, write_video

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    video = write_video(tmp_path / "a.mp4", scene_frames(2, 10), fps=10)
    pairs = tmp_path / "pairs_r16.jsonl"
    datafiles.write_jsonl(pairs, [{"video": video, "instruction": "Describe.", "chosen": "a", "rejected": "b"}])
    (tmp_path / "run").mkdir()
    datafiles.write_jsonl(tmp_path / "run" / "metrics.jsonl", [{"step": 1, "loss": 0.5}])
    script = ("import sys, temple\ncode = temple.main(sys.argv[1:])\n"
              "heavy = sorted({'torch', 'transformers'} & set(sys.modules))\n"
              "assert not heavy, f'imported {heavy}'\nsys.exit(code)")
    for argv in (["export", str(pairs)], ["view", str(pairs), "--out", str(tmp_path / "p.html")],
                 ["plot", str(tmp_path / "run"), "--out", str(tmp_path / "c.png")], ["shots", video]):
        result = subprocess.run([sys.executable, "-c", script, *argv], cwd=tmp_path, capture_output=True, text=True,
                                env={**os.environ, "PYTHONPATH": root})
        assert result.returncode == 0, (argv, result.stderr[-500:])
