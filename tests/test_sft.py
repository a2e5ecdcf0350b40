"""sft.py: data formats, labels on assistant tokens only, training from a DPO run, bad input."""

import argparse
import datetime
import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

import datafiles
import recipes
import lora
import runs
import sft
import temple
import train
import vlm
from gloo import leave_without_teardown
from media import scene_frames, write_video


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft_data")
    write_video(root / "a.mp4", scene_frames(4, 5, seed=1), fps=5)
    llava = [{"id": "1", "video": "a.mp4", "conversations": [
        {"from": "human", "value": "<image>\nWhat happens first?"}, {"from": "gpt", "value": "a person walks in"},
        {"from": "human", "value": "And then?"}, {"from": "gpt", "value": "the scene is dark"}]},
        {"id": "2", "conversations": [{"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "hi"}]}]
    swift = [{"messages": [{"role": "user", "content": "Describe <video> in detail."},
                           {"role": "assistant", "content": "the video ends"}], "videos": ["a.mp4"]}]
    (root / "llava.json").write_text(json.dumps(llava))
    datafiles.write_jsonl(root / "swift.jsonl", swift)
    return root


def test_both_formats_normalise_to_messages(data):
    llava, missing = datafiles.read_conversations(str(data / "llava.json"), video_root=str(data))
    swift, _ = datafiles.read_conversations(str(data / "swift.jsonl"), video_root=str(data))
    assert missing == [] and len(llava) == 2 and llava[1]["video"] is None
    assert [m["role"] for m in llava[0]["messages"]] == ["user", "assistant", "user", "assistant"]
    assert swift[0]["video"] == str(data / "a.mp4") and swift[0]["messages"][1]["content"] == "the video ends"


def test_video_goes_where_the_marker_is():
    video = object()
    messages = sft.with_video([{"role": "user", "content": "Describe <video> in detail."}], video)
    assert messages[0]["content"] == ["Describe", video, "in detail."]
    messages = sft.with_video([{"role": "user", "content": "No marker here."}], video)
    assert messages[0]["content"] == [video, "No marker here."]


def test_labels_cover_only_assistant_tokens_across_turns(data):
    model = vlm.load("tiny")
    examples, _ = datafiles.read_conversations(str(data / "llava.json"), video_root=str(data))
    sample = sft.encode_example(model, examples[0], {"fps": 1.0, "max_frames": 4, "total_pixels": 64 * 96 * 4},
                                4096)
    learned = [t for t, label in zip(sample.input_ids, sample.labels) if label != vlm.IGNORE]
    assert model.tokenizer.decode(learned) == "a person walks in<|im_end|>the scene is dark<|im_end|>"
    text = model.tokenizer.decode(sample.input_ids)
    assert "<|vision_start|><|video_pad|>" in text and "<image>" not in text and "What happens first?" in text


def sft_args(data, runs, **overrides):
    parser = argparse.ArgumentParser()
    temple.add_sft(parser.add_subparsers())
    args = parser.parse_args(["sft", "--data", str(data / "llava.json")])
    settings = dict(model="tiny", runs=str(runs), video_root=str(data), workers=0, global_batch=2, max_steps=3,
                    total_pixels=64 * 96 * 4, max_frames=4, lr=1e-3)
    settings.update(overrides)
    for key, value in settings.items():
        setattr(args, key, value)
    return args


def test_sft_trains_lora_on_vision_and_language_and_lowers_the_loss(data, tmp_path):
    run = recipes.run_sft(sft_args(data, tmp_path, max_steps=8, epochs=8))
    metrics = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    assert len(metrics) == 8 and metrics[-1]["loss"] < metrics[0]["loss"]
    keys = json.load(open(os.path.join(run, "adapter_config.json")))["target_modules"]
    assert any("visual" in k or "blocks" in k or "qkv" in k for k in keys) and any("q_proj" in k for k in keys)
    tensors = load_file(os.path.join(run, "adapter_model.safetensors"))
    assert any(".visual.blocks." in k for k in tensors) and not any("merger" in k for k in tensors)  # aligner frozen


def test_sft_starts_from_a_dpo_run(data, tmp_path):
    pairs = [{"video": str(data / "a.mp4"), "instruction": "Describe.", "chosen": "a person", "rejected": "the end"}]
    datafiles.write_jsonl(tmp_path / "pairs_r16.jsonl", pairs)
    parser = argparse.ArgumentParser()
    temple.add_dpo_options(parser)
    dpo_args = parser.parse_args(["--model", "tiny", "--runs", str(tmp_path), "--data-dir", str(tmp_path),
                                  "--workers", "0", "--global-batch", "1", "--max-steps", "1",
                                  "--total-pixels", str(64 * 96 * 4), "--max-frames", "4"])
    dpo_args.r, dpo_args.data, dpo_args.out, dpo_args.init = 16, None, None, None
    stage = recipes.run_stage(dpo_args)
    run = recipes.run_sft(sft_args(data, tmp_path, init=stage, max_steps=1))
    assert runs.read_run_config(run)["start"]["stages"] == ["dpo_r16"]
    with pytest.raises(ValueError, match="trained on base model 'tiny', not 'tiny-qwen3'"):
        recipes.run_sft(sft_args(data, tmp_path, init=stage, model="tiny-qwen3", out=str(tmp_path / "sft_qwen3")))


def test_bad_records_name_the_file_and_record(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps([{"conversations": [{"from": "human", "value": "hi"}]}]))
    with pytest.raises(ValueError, match=r"bad.json: record 1: no assistant turn"):
        datafiles.read_conversations(str(tmp_path / "bad.json"))
    (tmp_path / "bad2.jsonl").write_text('{"messages": [{"role": "robot", "content": "x"}]}\n')
    with pytest.raises(ValueError, match=r"bad2.jsonl:1: a turn needs a role"):
        datafiles.read_conversations(str(tmp_path / "bad2.jsonl"))
    (tmp_path / "bad3.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(ValueError, match=r"bad3.jsonl:1: needs 'conversations' \(LLaVA\) or 'messages'"):
        datafiles.read_conversations(str(tmp_path / "bad3.jsonl"))
    turns = [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]
    for record, problem in [({"conversations": 5}, "the turns must be a list, got int"),
                            ({"video": 5, "conversations": turns}, "the video must be a path"),
                            ({"video": "a.mp4", "conversations": turns[1:]}, "a video but no user turn"),
                            ({"messages": [turns[0]]}, "a turn needs a role")]:
        datafiles.write_jsonl(tmp_path / "typed.jsonl", [{"conversations": turns}, record])
        with pytest.raises(ValueError, match=rf"typed.jsonl:2: {problem}"):
            datafiles.read_conversations(str(tmp_path / "typed.jsonl"))
    gone = [{"video": "gone.mp4", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}]
    (tmp_path / "gone.json").write_text(json.dumps(gone))
    assert datafiles.read_conversations(str(tmp_path / "gone.json"), video_root=str(tmp_path)) == \
        ([], [(f"{tmp_path / 'gone.json'}: record 1", f"video missing: {tmp_path / 'gone.mp4'}")])


# ---- DDP: a text-only record leaves the vision adapters unused on its rank ---------------------------------------


def _ddp_worker(rank, world, init_file, data, runs):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        recipes.run_sft(sft_args(data, runs, epochs=2, max_steps=2, lora_dropout=0.0, tokens_across_ranks=True))
    finally:
        dist.destroy_process_group()
    leave_without_teardown()


def test_two_gloo_processes_match_one_process_with_text_only_records(data, tmp_path):
    # global batch 2 over 2 ranks: every step one rank trains the text-only record, where the vision tower and
    # its adapters take no part, while the other rank's video record uses them. With the loss divided by the tokens
    # of the global batch, the number of processes changes nothing (per-rank windows, the released way, would).
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), data, str(tmp_path / "ddp")), nprocs=2)
    single = recipes.run_sft(sft_args(data, tmp_path / "single", epochs=2, max_steps=2, lora_dropout=0.0,
                                      tokens_across_ranks=True))
    a = load_file(os.path.join(tmp_path, "ddp", "sft", "adapter_model.safetensors"))
    b = load_file(os.path.join(single, "adapter_model.safetensors"))
    assert any("visual" in key for key in a)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_loss_is_normalised_by_the_answer_tokens_of_the_whole_accumulation_window(data, tmp_path, monkeypatch):
    """Two micro-batches with answers of different lengths: the step's gradient is that of the summed NLL over all
    answer tokens / their count (ms-swift with transformers >= 4.46), not the mean of two per-micro-batch means."""
    captured = {}

    def capture_grads(parameters, max_norm):
        parameters = list(parameters)
        captured["grads"] = [p.grad.detach().clone() for p in parameters]
        return torch.tensor(0.0)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", capture_grads)
    args = sft_args(data, tmp_path, global_batch=2, micro_batch=1, max_steps=1, lora_dropout=0.0, freeze_vit=True)
    recipes.run_sft(args)

    examples, _ = datafiles.read_conversations(args.data, args.video_root)
    model = vlm.load("tiny")
    torch.manual_seed(args.seed)
    lora.apply_lora(model.hf_model, r=args.lora_r, alpha=args.lora_alpha, dropout=0.0, exclude=vlm.ALIGNER)
    video = {"fps": args.fps, "max_frames": args.max_frames, "total_pixels": args.total_pixels}
    order = train.step_items(len(examples), 0, train.TrainConfig(out="", global_batch=2, seed=args.seed))
    samples = [sft.encode_example(model, examples[i], video, args.max_length) for i in order]
    counts = [sft.answer_tokens([s]) for s in samples]
    assert counts[0] != counts[1]  # otherwise both rules agree
    trainable = [p for p in model.hf_model.parameters() if p.requires_grad]

    def gradient(per_micro_divisors):
        for p in trainable:
            p.grad = None
        for sample, divisor in zip(samples, per_micro_divisors):
            (sft.sft_step(model, model.hf_model, [sample])[0] / divisor).backward()
        return [p.grad.clone() for p in trainable]

    window = gradient([sum(counts)] * 2)
    per_micro_mean = gradient([2 * c for c in counts])
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(captured["grads"], window))
    assert not all(torch.allclose(a, b, atol=1e-7) for a, b in zip(captured["grads"], per_micro_mean))


def test_loader_workers_started_by_forkserver(data, tmp_path):
    import multiprocessing

    before = multiprocessing.get_start_method()
    multiprocessing.set_start_method("forkserver", force=True)
    try:
        run = recipes.run_sft(sft_args(data, tmp_path, max_steps=1, workers=1))
    finally:
        multiprocessing.set_start_method(before, force=True)
    assert runs.finished(run)
