"""temple.py eval: option scoring, preference accuracy with and without a reference, bad input."""

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import datafiles
import recipes
import evaluate
import temple
import preprocess
import vlm
from media import scene_frames, write_video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIDEO = ["--fps", "2", "--max-frames", "4", "--total-pixels", str(4 * 56 * 56)]
OPTIONS = ["a dog runs across the park", "a cat sleeps", "the person walks in and then sits", "rain"]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_videos")
    return [write_video(root / f"v{i}.mp4", scene_frames(4, 5, 48, 64, seed=i), fps=5) for i in range(2)]


def eval_args(*argv):
    return temple.build_parser().parse_args(["eval", *argv, *VIDEO])


def run_eval(*argv):
    """cmd_eval in this process; returns the JSON report."""
    args = eval_args(*argv)
    args.func(args)
    return json.load(open(evaluate.report_path(args)))


# ---- answers and items ------------------------------------------------------------------------------------------


def test_answer_may_be_the_text_a_letter_or_an_index():
    options = ["red", "green", "blue"]
    assert [evaluate.answer_index(a, options) for a in ["blue", "C", "c", "(C)", "C.", 2]] == [2] * 6
    assert [evaluate.answer_index(a, options) for a in ["D", 3, -1, "purple", None, True, 1.0]] == [None] * 7
    assert evaluate.answer_index("A", ["B", "A"]) == 1  # an option's own text wins over its letter


# ---- multiple choice --------------------------------------------------------------------------------------------


def mcq_record(video, answer, question="What happens in the video?", **extra):
    return {"video": video, "question": question, "options": OPTIONS, "answer": answer, **extra}


def score(model, video, question):
    prepared = model.prepare(preprocess.read_video(video, fps=2, max_frames=4), total_pixels=4 * 56 * 56)
    item = {"question": question, "options": OPTIONS, "where": "test"}
    return evaluate.mcq_scores(model, prepared, item, 4096)


def teach(model, video, question, answer, steps=40):
    """Some optimizer steps on one answer (all weights): afterwards the model must rank it first."""
    prepared = model.prepare(preprocess.read_video(video, fps=2, max_frames=4), total_pixels=4 * 56 * 56)
    batch = model.to_device(model.collate([model.encode([prepared, evaluate.mcq_prompt(question, OPTIONS)],
                                                        response=answer)]))
    optimizer = torch.optim.Adam(model.hf_model.parameters(), lr=3e-3)
    for _ in range(steps):
        (-model.response_logps(batch)[0].sum()).backward()
        optimizer.step()
        optimizer.zero_grad()
    model.hf_model.eval()


def test_scoring_picks_the_option_the_model_was_taught(videos, tmp_path, monkeypatch):
    model = vlm.load("tiny")
    question = "What happens in the video?"
    sums, means = score(model, videos[0], question)
    liked = {evaluate.argmax(sums), evaluate.argmax(means)}  # what the untrained model picks by either rule
    target = min((i for i in range(len(OPTIONS)) if i not in liked), key=sums.__getitem__)
    teach(model, videos[0], question, OPTIONS[target])
    sums, means = score(model, videos[0], question)
    assert evaluate.argmax(sums) == target and evaluate.argmax(means) == target

    # the same through the command: answers given as text, letter and index, two categories
    letter = "ABCD"[target]
    records = [mcq_record(videos[0], OPTIONS[target], category="taught"), mcq_record(videos[0], letter, category="taught"),
               mcq_record(videos[0], (target + 1) % 4, category="other")]
    datafiles.write_jsonl(tmp_path / "mcq.jsonl", records)
    monkeypatch.setattr(evaluate, "load_eval_model", lambda args: (model, False))
    report = run_eval("--model", "tiny", "--mcq", str(tmp_path / "mcq.jsonl"))
    [part] = report["mcq"]
    assert part["evaluated"] == 3 and part["skipped"] == 0
    assert [item["predicted_sum"] for item in part["items"]] == [target] * 3
    assert part["accuracy"] == pytest.approx(2 / 3) and part["accuracy_mean"] == pytest.approx(2 / 3)
    assert part["by_category"] == {"other": {"items": 1, "accuracy": 0.0}, "taught": {"items": 2, "accuracy": 1.0}}
    assert os.path.exists(tmp_path / "mcq.eval.json")  # the default report lies beside the data


def test_normalize_picks_by_mean_log_prob(videos, tmp_path):
    record = mcq_record(videos[0], 0)
    datafiles.write_jsonl(tmp_path / "mcq.jsonl", [record])
    for flag, rule in [([], "sum"), (["--normalize"], "mean")]:
        report = run_eval("--model", "tiny", "--mcq", str(tmp_path / "mcq.jsonl"), "--out",
                          str(tmp_path / f"{rule}.json"), *flag)
        [item] = report["mcq"][0]["items"]
        assert item["correct"] == (item[f"predicted_{rule}"] == 0)
        assert item[f"predicted_{rule}"] == evaluate.argmax(item[f"logp_{rule}"])
        assert report["mcq"][0]["rule"] == f"highest {rule} log-prob"


def test_bad_items_are_skipped_and_counted_with_file_and_line(videos, tmp_path, capsys):
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    lines = [json.dumps(mcq_record(videos[0], "rain")),
             '{"video": "x.mp4", "question": ',
             json.dumps({**mcq_record(videos[0], "rain"), "options": ["rain"]}),
             json.dumps(mcq_record(videos[0], "snow")),
             json.dumps(mcq_record(str(tmp_path / "gone.mp4"), "rain")),
             json.dumps(mcq_record(str(tmp_path / "broken.mp4"), "rain")),
             json.dumps({"video": videos[0], "options": OPTIONS, "answer": 0}),
             "[1, 2]"]
    (tmp_path / "mcq.jsonl").write_text("\n".join(lines) + "\n")
    report = run_eval("--model", "tiny", "--mcq", str(tmp_path / "mcq.jsonl"), "--out", str(tmp_path / "r.json"))
    [part] = report["mcq"]
    assert part["evaluated"] == 1 and part["skipped"] == 7
    where = {s["where"].rsplit(":", 1)[1]: s["reason"] for s in part["skipped_items"]}
    assert where["2"].startswith("invalid JSON") and where["3"] == "options: 1 given (need 2 to 26)"
    assert where["4"] == "answer not among options: 'snow'" and where["5"].startswith("video missing")
    assert where["6"].startswith("unreadable video") and where["7"] == "missing field: question (a text)"
    assert where["8"] == "expected a JSON object, got list"
    assert all(s["where"].startswith(str(tmp_path / "mcq.jsonl") + ":") for s in part["skipped_items"])
    table = capsys.readouterr().out
    assert "skipped" in table and "answer not among options: 1" in table


def test_nothing_evaluable_is_an_error_with_exit_1(tmp_path):
    datafiles.write_jsonl(tmp_path / "mcq.jsonl", [mcq_record(str(tmp_path / "gone.mp4"), "rain")])
    with pytest.raises(ValueError, match=rf"nothing could be evaluated: every item was skipped \(1 item\(s\) whose "
                                         rf"video file is missing, the first {tmp_path / 'gone.mp4'}; all reasons in "):
        run_eval("--model", "tiny", "--mcq", str(tmp_path / "mcq.jsonl"))
    assert json.load(open(tmp_path / "mcq.eval.json"))["mcq"][0]["skipped"] == 1  # the report says why
    with pytest.raises(ValueError, match="mcq.eval.json: holds an earlier report of tiny; give another --out FILE"):
        run_eval("--model", "tiny", "--mcq", str(tmp_path / "mcq.jsonl"))  # before the model loads
    with pytest.raises(ValueError, match="nothing to evaluate"):
        run_eval("--model", "tiny")
    result = subprocess.run([sys.executable, os.path.join(ROOT, "temple.py"), "eval", "--model", "tiny", "--mcq",
                             str(tmp_path / "none.jsonl")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stderr.strip().endswith("none.jsonl: no such file")
    assert "Traceback" not in result.stderr


def test_eval_under_torchrun_with_several_processes_is_refused(tmp_path, monkeypatch):
    datafiles.write_jsonl(tmp_path / "mcq.jsonl", [mcq_record(str(tmp_path / "gone.mp4"), "rain")])
    monkeypatch.setenv("WORLD_SIZE", "8")
    with pytest.raises(ValueError, match="eval runs in one process: .* with 8 processes each would evaluate"):
        run_eval("--model", "tiny", "--mcq", str(tmp_path / "mcq.jsonl"))
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun --nproc_per_node 1
    with pytest.raises(ValueError, match="nothing could be evaluated"):
        run_eval("--model", "tiny", "--mcq", str(tmp_path / "mcq.jsonl"))


# ---- preference accuracy ----------------------------------------------------------------------------------------

SHORT, TAIL = "the person walks in", " and then the scene is dark and the video ends with a clip of the person"


def write_pairs(path, videos, pairs):
    """pairs: (chosen, rejected, kind, r) tuples."""
    datafiles.write_jsonl(path, [{"video": videos[i % len(videos)], "instruction": "Describe the video.", "chosen": c,
                            "rejected": r, "kind": kind, "r": rr} for i, (c, r, kind, rr) in enumerate(pairs)])


def test_base_model_preference_is_the_raw_log_prob(videos, tmp_path):
    # A longer answer that starts like the shorter one costs every extra token's log-prob: the short one is likelier.
    write_pairs(tmp_path / "pairs.jsonl", videos, [(SHORT, SHORT + TAIL, "drop", 16), (SHORT, SHORT + TAIL, "drop", 16),
                                                   (SHORT + TAIL, SHORT, "shuffle", 16), (SHORT, SHORT + TAIL, "shuffle", 8)])
    report = run_eval("--model", "tiny", "--pairs", str(tmp_path / "pairs.jsonl"))
    [part] = report["pairs"]
    assert part["measure"].startswith("raw log-prob")
    groups = part["groups"]
    assert list(groups) == ["all", "drop r=16", "shuffle r=16", "shuffle r=8"]
    assert set(groups["all"]) == {"pairs", "accuracy", "mean_margin", "per_token_accuracy"}
    assert groups["all"]["pairs"] == 4 and groups["all"]["accuracy"] == 0.75
    assert groups["drop r=16"]["accuracy"] == 1.0 and groups["shuffle r=16"]["accuracy"] == 0.0
    assert groups["shuffle r=8"]["mean_margin"] > 0 > groups["shuffle r=16"]["mean_margin"]
    # a sum favours the shorter answer; beside it, the mean log-prob per token of each answer
    for item in part["items"]:
        assert item["logp_margin"] == pytest.approx(item["logps"][0] - item["logps"][1])
        assert item["tokens"][0] != item["tokens"][1]
        assert item["per_token_margin"] == pytest.approx(item["logps"][0] / item["tokens"][0] -
                                                         item["logps"][1] / item["tokens"][1])
        assert "reward_margin" not in item
    assert groups["all"]["per_token_accuracy"] == sum(i["per_token_margin"] > 0 for i in part["items"]) / 4


def test_an_item_over_max_length_is_skipped_as_such_not_as_an_unreadable_video(videos, tmp_path):
    write_pairs(tmp_path / "pairs.jsonl", videos, [(SHORT, SHORT + TAIL, "drop", 16),
                                                   (SHORT, SHORT + TAIL * 40, "drop", 16)])
    datafiles.write_jsonl(tmp_path / "mcq.jsonl", [mcq_record(videos[0], "rain"),
                                                   mcq_record(videos[0], "rain", options=[*OPTIONS, "x" + TAIL * 40])])
    report = run_eval("--model", "tiny", "--pairs", str(tmp_path / "pairs.jsonl"), "--mcq", str(tmp_path / "mcq.jsonl"),
                      "--max-length", "400")
    for part in report["pairs"] + report["mcq"]:
        assert part["evaluated"] == 1 and part["skipped_by_reason"] == {"over --max-length": 1}
        assert part["skipped_items"][0]["where"].endswith(":2")
    cut = run_eval("--model", "tiny", "--pairs", str(tmp_path / "pairs.jsonl"), "--mcq", str(tmp_path / "mcq.jsonl"),
                   "--max-length", "400", "--truncation", "right", "--out", str(tmp_path / "cut.json"))
    # the pair's long answer is cut; the question lists the long option, so its prompt alone is too long
    assert [part["evaluated"] for part in cut["pairs"] + cut["mcq"]] == [2, 1]


def test_a_bad_pair_record_is_skipped_and_counted(videos, tmp_path, capsys):
    write_pairs(tmp_path / "pairs.jsonl", videos, [(SHORT, SHORT + TAIL, "drop", 16)] * 2)
    records = datafiles.read_jsonl(tmp_path / "pairs.jsonl")
    del records[1]["rejected"]
    datafiles.write_jsonl(tmp_path / "pairs.jsonl", records)
    with open(tmp_path / "pairs.jsonl", "a") as f:
        f.write('{"video": \n')  # an interrupted write
    [part] = run_eval("--model", "tiny", "--pairs", str(tmp_path / "pairs.jsonl"))["pairs"]
    assert part["evaluated"] == 1 and part["skipped"] == 2
    assert part["skipped_items"] == [{"where": f"{tmp_path / 'pairs.jsonl'}:3", "reason": "invalid JSON (Expecting value)"},
                                     {"where": f"{tmp_path / 'pairs.jsonl'}:2",
                                      "reason": "missing or non-text field(s) rejected"}]
    assert "missing or non-text field(s) rejected: 1" in capsys.readouterr().out


def dpo_args(data_dir, runs, **overrides):
    parser = argparse.ArgumentParser()
    temple.add_dpo_options(parser)
    args = parser.parse_args(["--model", "tiny", "--runs", str(runs), "--data-dir", str(data_dir), "--workers", "0",
                              "--fps", "2", "--max-frames", "4", "--total-pixels", str(4 * 56 * 56),
                              "--lora-dropout", "0", "--nll-weight", "0", "--warmup-ratio", "0"])
    settings = dict(r=16, data=None, out=None, init=None, epochs=12, global_batch=4, micro_batch=2, lr=2e-3)
    for key, value in {**settings, **overrides}.items():
        setattr(args, key, value)
    return args


def test_run_preference_is_the_implicit_reward_against_its_reference(videos, tmp_path):
    pairs = [("the person walks in and then sits", "a person"), ("then the scene is dark", "the video"),
             ("a clip of the scene with a person", "is in"), ("the video ends with the person", "and then")]
    write_pairs(tmp_path / "pairs_r16.jsonl", videos, [(c, r, "shuffle", 16) for c, r in pairs])
    write_pairs(tmp_path / "swapped.jsonl", videos, [(r, c, "shuffle", 16) for c, r in pairs])
    run = recipes.run_stage(dpo_args(tmp_path, tmp_path / "runs"))  # trained until it prefers every chosen answer
    report = run_eval("--run", run, "--pairs", str(tmp_path / "pairs_r16.jsonl"), str(tmp_path / "swapped.jsonl"),
                      "--out", str(tmp_path / "r.json"))
    trained, swapped = report["pairs"]
    assert trained["measure"].startswith("implicit reward") and report["model"] == "tiny"
    assert trained["groups"]["all"]["accuracy"] == 1.0 and swapped["groups"]["all"]["accuracy"] == 0.0
    assert trained["groups"]["all"]["mean_margin"] > 0
    for item in trained["items"]:
        policy, reference = item["logps"], item["ref_logps"]
        assert item["reward_margin"] == pytest.approx(0.1 * ((policy[0] - reference[0]) - (policy[1] - reference[1])))
    # the reference is the model the run started from: here the untrained tiny model
    base = run_eval("--model", "tiny", "--pairs", str(tmp_path / "pairs_r16.jsonl"), "--out", str(tmp_path / "b.json"))
    flat = lambda items, key: [x for item in items for x in item[key]]  # noqa: E731
    assert flat(base["pairs"][0]["items"], "logps") == pytest.approx(flat(trained["items"], "ref_logps"), abs=1e-4)


def test_unfinished_or_missing_run_is_refused_saying_which(tmp_path):
    (tmp_path / "pairs.jsonl").write_text("")
    with pytest.raises(ValueError, match="not a finished run .* goes on with --resume"):
        run_eval("--run", str(tmp_path), "--pairs", str(tmp_path / "pairs.jsonl"))
    with pytest.raises(FileNotFoundError, match="runs/dpo_r3: no such directory"):
        run_eval("--run", "runs/dpo_r3", "--pairs", str(tmp_path / "pairs.jsonl"))


def test_a_run_given_as_model_says_how_to_use_it(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=f"{tmp_path} holds a LoRA adapter .* not a model: evaluate it with "
                                         f"`temple.py eval --run {tmp_path}`, or .* merge"):
        vlm.load(str(tmp_path))


def test_a_video_too_thin_for_qwen_is_skipped_with_its_reason(tmp_path):
    """Sides more than 200 times apart: Qwen's preprocessing refuses the picture; the item is skipped, not fatal."""
    thin = write_video(tmp_path / "thin.mp4", np.random.default_rng(0).integers(0, 255, (10, 2, 404, 3)), fps=5)
    datafiles.write_jsonl(tmp_path / "mcq.jsonl", [mcq_record(str(thin), "rain")])
    with pytest.raises(ValueError, match="nothing could be evaluated"):
        run_eval("--model", "tiny", "--mcq", str(tmp_path / "mcq.jsonl"))
    report = json.load(open(tmp_path / "mcq.eval.json"))["mcq"][0]
    assert report["skipped_by_reason"] == {"unusable video": 1}
    assert report["skipped_items"][0]["reason"] == f"unusable video: {thin}: aspect ratio 202 is over 200"
