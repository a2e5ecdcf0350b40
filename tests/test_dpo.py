"""dpo.py + train.py: the loss, the step, learning, DDP equivalence, resume, stage chaining, merge, bad input."""

import argparse
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import datafiles
import distributed
import examples
import dpo
import reference_cache
import recipes
import lora
import runs
import temple
import train
import hub
import preprocess
import vlm
from gloo import leave_without_teardown
from media import write_video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- the loss on fixed numbers ----------------------------------------------------------------------------------


def test_sigmoid_loss_and_rewards_match_the_formula():
    pc, pr, rc, rr = torch.tensor([-10.0, -4.0]), torch.tensor([-12.0, -3.0]), torch.tensor([-11.0, -5.0]), \
        torch.tensor([-11.0, -5.0])
    losses, chosen, rejected = dpo.dpo_loss(pc, pr, rc, rr, beta=0.5)
    # pair 0: r+ = 1, r- = -1 -> -log sigmoid(0.5 * 2); pair 1: r+ = 1, r- = 2 -> -log sigmoid(-0.5)
    assert torch.allclose(losses, torch.tensor([-math.log(1 / (1 + math.exp(-1.0))),
                                                -math.log(1 / (1 + math.exp(0.5)))]))
    assert torch.allclose(chosen, torch.tensor([0.5, 0.5])) and torch.allclose(rejected, torch.tensor([-0.5, 1.0]))


def test_hinge_and_ipo_losses_match_the_formulas():
    pc, pr, rc, rr = torch.tensor([-10.0]), torch.tensor([-12.0]), torch.tensor([-11.0]), torch.tensor([-11.0])
    hinge, _, _ = dpo.dpo_loss(pc, pr, rc, rr, beta=0.1, loss_type="hinge")
    assert torch.allclose(hinge, torch.tensor([1 - 0.1 * 2]))
    ipo, _, _ = dpo.dpo_loss(pc, pr, rc, rr, beta=0.1, loss_type="ipo", chosen_lengths=torch.tensor([4.0]),
                             rejected_lengths=torch.tensor([2.0]))
    assert torch.allclose(ipo, torch.tensor([((1 / 4 + 1 / 2) - 1 / (2 * 0.1)) ** 2]))
    with pytest.raises(ValueError, match="ipo' needs chosen_lengths"):
        dpo.dpo_loss(pc, pr, rc, rr, loss_type="ipo")
    with pytest.raises(ValueError, match="unknown loss_type 'bogus'"):
        dpo.dpo_loss(pc, pr, rc, rr, loss_type="bogus")


def test_loss_is_differentiable_only_through_the_policy():
    pc, pr = torch.tensor([-3.0], requires_grad=True), torch.tensor([-4.0], requires_grad=True)
    losses, chosen, _ = dpo.dpo_loss(pc, pr, torch.tensor([-3.0]), torch.tensor([-4.0]))
    losses.sum().backward()
    assert pc.grad.item() < 0 < pr.grad.item() and not chosen.requires_grad


def test_dpo_loss_stands_alone_with_torch():
    """dpo_loss (and LOSS_TYPES) copied into an empty directory run with torch alone: copy them as they are."""
    import ast
    import inspect
    import tempfile

    source = "import torch\nimport torch.nn.functional as F\n\nLOSS_TYPES = " + repr(dpo.LOSS_TYPES) + "\n\n\n" + \
        inspect.getsource(dpo.dpo_loss)
    names = {n.id for n in ast.walk(ast.parse(inspect.getsource(dpo.dpo_loss))) if isinstance(n, ast.Name)}
    assert names <= {"torch", "F", "LOSS_TYPES", "ValueError", "policy_chosen_logps", "policy_rejected_logps",
                     "ref_chosen_logps", "ref_rejected_logps", "beta", "loss_type", "chosen_lengths",
                     "rejected_lengths", "chosen_ratio", "rejected_ratio", "losses", "margin"}, names
    with tempfile.TemporaryDirectory() as alone:
        with open(os.path.join(alone, "loss.py"), "w") as f:
            f.write(source)
        script = ("import sys, torch; sys.path.insert(0, sys.argv[1]); from loss import dpo_loss\n"
                  "x = torch.tensor([-3.0]); print(dpo_loss(x, x - 1, x, x, loss_type='ipo', chosen_lengths=x.abs(), "
                  "rejected_lengths=x.abs())[0].item())")
        result = subprocess.run([sys.executable, "-I", "-c", script, alone], cwd=alone, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) == pytest.approx((1 / 3 - 1 / (2 * 0.1)) ** 2)


# ---- data -------------------------------------------------------------------------------------------------------


def stage_args(data_dir, runs, r=16, **overrides):
    parser = argparse.ArgumentParser()
    temple.add_dpo_options(parser)
    args = parser.parse_args([])
    settings = dict(r=r, data=None, out=None, init=None, model="tiny", runs=str(runs), data_dir=str(data_dir),
                    workers=0, global_batch=2, micro_batch=1, max_steps=0, epochs=1.0, lr=1e-3, save_every=500,
                    total_pixels=64 * 96 * 4, max_frames=4, lora_dropout=0.0,
                    warmup_ratio=0.0)  # HF's warmup runs step 0 at lr 0: a 1-step run would learn nothing
    settings.update(overrides)
    for key, value in settings.items():
        setattr(args, key, value)
    return args


# ---- the step ---------------------------------------------------------------------------------------------------


def encoded_pairs(model, data_dir, count=2):
    pairs, _ = datafiles.read_pairs(str(data_dir / "pairs_r16.jsonl"))
    video = {"fps": 1.0, "max_frames": 4, "total_pixels": 64 * 96 * 4}
    return [{"rows": dpo.encode_pair(model, p, video, 4096), "video": p["video"]} for p in pairs[:count]]


def test_step_zero_rewards_are_zero_and_loss_is_ln2(data_dir):
    model = vlm.load("tiny")
    lora.apply_lora(model.hf_model, r=8, alpha=16)
    settings = {"beta": 0.1, "loss_type": "sigmoid", "nll_weight": 0.0, "precomputed": False}
    loss, metrics = dpo.dpo_step(model, model.hf_model, encoded_pairs(model, data_dir), settings)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert metrics["rewards/chosen"] == 0 and metrics["rewards/rejected"] == 0
    # with the NLL term the loss adds the chosen answers' mean token NLL
    loss, metrics = dpo.dpo_step(model, model.hf_model, encoded_pairs(model, data_dir), {**settings, "nll_weight": 1.0})
    assert loss.item() == pytest.approx(math.log(2) + metrics["nll"], abs=1e-5)


def test_pair_shares_one_preprocessed_video(data_dir):
    model = vlm.load("tiny")
    chosen, rejected = encoded_pairs(model, data_dir, 1)[0]["rows"]
    assert chosen.pixels[0] is rejected.pixels[0]
    first = lambda s: next(i for i, label in enumerate(s.labels) if label != vlm.IGNORE)  # noqa: E731
    assert chosen.input_ids[:first(chosen)] == rejected.input_ids[:first(rejected)]


def record_vision_output_needs_grad(model):
    """A list that gets, at every pass of the vision tower, whether its output requires grad."""
    seen = []
    visual = next(m for name, m in model.hf_model.named_modules() if name.endswith("visual"))
    visual.register_forward_hook(lambda module, inputs, output: seen.append(
        any(t.requires_grad for t in torch.utils._pytree.tree_leaves(output) if torch.is_tensor(t))))
    return seen


def test_checkpointing_runs_no_backward_through_the_frozen_vision_tower(data_dir):
    """With activation checkpointing (the default) the frozen ViT builds no autograd graph, and the LoRA gradients
    equal those without checkpointing."""
    settings = {"beta": 0.1, "loss_type": "sigmoid", "nll_weight": 1.0, "precomputed": False}
    grads = {}
    for checkpointing in (False, True):
        model = vlm.load("tiny")
        torch.manual_seed(0)
        lora.apply_lora(model.hf_model, r=8, alpha=16)
        for m in lora.lora_modules(model.hf_model).values():
            torch.nn.init.normal_(m.lora_B, std=0.02)  # B = 0 would leave A's gradient 0
        if checkpointing:
            train.enable_activation_checkpointing(model.hf_model)
        model.hf_model.train()
        vision_output_needs_grad = record_vision_output_needs_grad(model)
        loss, _ = dpo.dpo_step(model, model.hf_model, encoded_pairs(model, data_dir), settings)
        loss.backward()
        assert vision_output_needs_grad and not any(vision_output_needs_grad)
        grads[checkpointing] = {n: p.grad for n, p in model.hf_model.named_parameters() if p.requires_grad}
    for name, grad in grads[False].items():
        assert torch.allclose(grad, grads[True][name], atol=1e-6), name


def test_checkpointing_leaves_the_vision_tower_output_without_grad_in_a_plain_forward(data_dir):
    """transformers' gradient_checkpointing_enable makes the inputs of the (frozen) model require grad, so the
    ViT would build a graph and be recomputed in backward; enable_activation_checkpointing takes that hook away.
    Checked on the model's own forward, which encodes the pixels itself."""
    model = vlm.load("tiny")
    lora.apply_lora(model.hf_model, r=8, alpha=16)
    train.enable_activation_checkpointing(model.hf_model)
    model.hf_model.train()
    needs_grad = record_vision_output_needs_grad(model)
    batch = dpo.collate_pairs(model, [e["rows"] for e in encoded_pairs(model, data_dir, count=1)])
    model.hf_model(**model.model_inputs(batch)).logits.sum().backward()
    assert needs_grad == [False]


class VisionPasses:
    """Counts the vision tower's real passes (its patch embedding runs only then) and the patches of each."""

    def __init__(self, model):
        self.patches = []
        model.vision_tower.patch_embed.register_forward_hook(lambda m, args, out: self.patches.append(len(args[0])))


def plain_logps(model, batch):
    """Summed answer log-probs the plain way: the model's own forward encodes every row's copy of its video."""
    logits = model.hf_model(**model.model_inputs(batch)).logits[:, :-1].log_softmax(-1)
    targets = batch["labels"][:, 1:]
    return (logits.gather(-1, targets.clamp(min=0)[..., None])[..., 0] * (targets != vlm.IGNORE)).sum(-1)


@pytest.mark.parametrize("name", ["tiny", "tiny-qwen2.5", "tiny-qwen3"])
def test_one_vision_pass_gives_the_log_probs_and_gradients_of_the_plain_path(name, data_dir):
    model = vlm.load(name)
    lora.apply_lora(model.hf_model, r=8, alpha=16)
    with torch.no_grad():  # B != 0: the policy differs from the reference
        for m in lora.lora_modules(model.hf_model).values():
            m.lora_B.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    encoded = encoded_pairs(model, data_dir, 2)
    batch = model.to_device(dpo.collate_pairs(model, [e["rows"] for e in encoded]))
    passes = VisionPasses(model)
    policy, reference, _ = dpo.policy_and_reference(model, model.hf_model, batch)
    video_patches = [int(g.prod()) for g in batch["video_grid_thw"]]
    assert passes.patches == [sum(video_patches)] and len(video_patches) == 2  # once, each pair's video once
    policy.sum().backward()
    shared = {n: p.grad.clone() for n, p in model.hf_model.named_parameters() if p.requires_grad}
    model.hf_model.zero_grad(set_to_none=True)

    plain = plain_logps(model, batch)  # 4 rows, 4 videos encoded
    with torch.no_grad(), lora.disable_lora(model.hf_model):
        plain_reference = plain_logps(model, batch)
    assert len(passes.patches) == 3 and passes.patches[1] == 2 * sum(video_patches)
    assert torch.allclose(policy, plain, atol=1e-5) and torch.allclose(reference, plain_reference, atol=1e-5)
    assert not torch.allclose(policy, reference, atol=1e-3)
    plain.sum().backward()
    for n, p in model.hf_model.named_parameters():
        if p.requires_grad:
            assert torch.allclose(shared[n], p.grad, atol=1e-6, rtol=1e-4), n
    assert any(g.abs().sum() > 0 for g in shared.values())


def test_a_dpo_step_and_a_question_run_the_vision_tower_once(data_dir):
    model = vlm.load("tiny")
    lora.apply_lora(model.hf_model, r=8, alpha=16)
    settings = {"beta": 0.1, "loss_type": "sigmoid", "nll_weight": 1.0, "precomputed": False}
    encoded = encoded_pairs(model, data_dir, 1)
    passes = VisionPasses(model)
    dpo.dpo_step(model, model.hf_model, encoded, settings)[0].backward()  # chosen, rejected, reference: one pass
    assert len(passes.patches) == 1
    video = model.prepare(preprocess.read_video(encoded[0]["video"], fps=1.0, max_frames=4), total_pixels=64 * 96 * 4)
    model.score_options([video, "What happens?"], ["a person", "the scene", "a clip"])  # three rows, one pass
    assert len(passes.patches) == 2


def read_metrics(run_dir):
    return [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]


def test_training_drives_preference_accuracy_to_one(data_dir, tmp_path):
    args = stage_args(data_dir, tmp_path, epochs=12, global_batch=4, micro_batch=2, nll_weight=0.0, lr=2e-3,
                      warmup_ratio=0.0)
    run_dir = recipes.run_stage(args)
    metrics = read_metrics(run_dir)
    assert len(metrics) == 12
    assert metrics[0]["rewards/margins"] == pytest.approx(0, abs=1e-6)
    assert metrics[-1]["rewards/accuracies"] == 1.0
    margins = [m["rewards/margins"] for m in metrics]
    assert margins[-1] > margins[len(margins) // 2] > margins[1] > 0
    for key in ["loss", "rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected", "nll",
                "grad_norm", "learning_rate"]:
        assert key in metrics[-1]
    assert runs.finished(run_dir)
    config = json.load(open(os.path.join(run_dir, "adapter_config.json")))
    assert config["peft_type"] == "LORA" and config["r"] == 32


def test_schedule_is_hf_cosine_with_warmup_step_for_step():
    """ms-swift trains with transformers' get_cosine_schedule_with_warmup: step k of the warmup runs at k / warmup
    of the peak (the first step at 0), then cosine decay to 0."""
    from transformers import get_cosine_schedule_with_warmup

    for steps, ratio in [(100, 0.05), (7, 0.05), (40, 0.0), (3, 0.5), (1, 0.05)]:
        config = train.TrainConfig(out="", lr=5e-6, warmup_ratio=ratio)
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
        schedule = get_cosine_schedule_with_warmup(optimizer, math.ceil(steps * ratio), steps)
        theirs = []
        for _ in range(steps):  # the Trainer reads the rate, steps the optimizer, then the scheduler
            theirs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step()
        ours = [train.learning_rate(step, steps, config) for step in range(steps)]
        assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-20), (steps, ratio)
    assert train.learning_rate(0, 100, train.TrainConfig(out="", lr=1.0)) == 0.0


def test_defaults_are_the_released_recipe(data_dir, tmp_path):
    """ms-swift's DPO: dropout off, activation checkpointing on, AdamW betas (0.9, 0.95); SFT keeps LoRA dropout."""
    parser = temple.build_parser()
    dpo_args, sft_args = parser.parse_args(["dpo", "-r", "16"]), parser.parse_args(["sft", "--data", "x.json"])
    assert dpo_args.lora_dropout == 0.0 and sft_args.lora_dropout == 0.05
    assert dpo_args.grad_ckpt and sft_args.grad_ckpt and not parser.parse_args(["dpo", "-r", "16", "--no-grad-ckpt"]).grad_ckpt
    run = recipes.run_stage(stage_args(data_dir, tmp_path, max_steps=1))
    state = torch.load(os.path.join(run, "checkpoint", "train_state.pt"), weights_only=True)
    assert tuple(state["optimizer"]["param_groups"][0]["betas"]) == (0.9, 0.95)


def test_precomputed_reference_gives_the_same_training(data_dir, tmp_path):
    plain = recipes.run_stage(stage_args(data_dir, tmp_path / "a", max_steps=2))
    cached = recipes.run_stage(stage_args(data_dir, tmp_path / "b", max_steps=2, precompute_ref=True))
    caches = [f for f in os.listdir(data_dir) if ".ref-" in f]
    assert len(caches) == 1
    a, b = read_metrics(plain), read_metrics(cached)
    for key in ["loss", "rewards/margins", "logps/chosen"]:
        assert [m[key] for m in a] == pytest.approx([m[key] for m in b], abs=1e-5)


def test_reference_cache_follows_the_pairs_in_use(data_dir):
    pairs, _ = datafiles.read_pairs(str(data_dir / "pairs_r16.jsonl"))
    meta = {"base_model": "tiny", "model_seed": 0, "start": None, "video": {}, "max_length": 100}
    path = str(data_dir / "pairs_r16.jsonl")
    start = {"run": "../dpo_r16", "stages": ["dpo_r16"], "adapter_sha256": "ab"}
    names = {reference_cache.reference_cache_path(path, pairs, meta), reference_cache.reference_cache_path(path, pairs[1:], meta),
             reference_cache.reference_cache_path(path, pairs, {**meta, "model_seed": 1}),
             reference_cache.reference_cache_path(path, pairs, {**meta, "start": start}),
             reference_cache.reference_cache_path(path, pairs, {**meta, "start": {**start, "adapter_sha256": "cd"}})}
    assert len(names) == 5  # a pair whose video vanished shifts every position: another cache
    # a start moved elsewhere (another relative path), with the same content, is the same reference
    assert reference_cache.reference_cache_path(path, pairs, {**meta, "start": start}) == \
        reference_cache.reference_cache_path(path, pairs, {**meta, "start": {**start, "run": "/elsewhere/dpo_r16"}})


def test_a_video_too_thin_for_qwen_is_a_left_out_pair_not_fatal(tmp_path):
    thin = write_video(tmp_path / "thin.mp4", np.random.default_rng(0).integers(0, 255, (10, 2, 404, 3)), fps=5)
    pair = {"video": thin, "instruction": "Describe the video.", "chosen": "a", "rejected": "b"}
    with pytest.raises(examples.BadItem, match=f"^{thin}: aspect ratio 202 is over 200$"):
        dpo.encode_pair(vlm.load("tiny"), pair, {"fps": 1.0, "max_frames": 4, "total_pixels": 64 * 96 * 4}, 4096)


def test_a_pair_whose_prompt_alone_is_over_max_length_is_left_out_not_fatal(data_dir):
    model = vlm.load("tiny")
    pair = datafiles.read_pairs(str(data_dir / "pairs_r16.jsonl"))[0][0]
    video = {"fps": 1.0, "max_frames": 4, "total_pixels": 64 * 96 * 4}
    with pytest.raises(examples.BadItem, match=f"{pair['video']}: the prompt alone is .* over --max-length 8"):
        dpo.encode_pair(model, pair, video, 8)


def test_a_pair_over_max_length_is_left_out_as_ms_swift_deletes_it_or_cut_on_request(data_dir, tmp_path, capfd):
    """ms-swift 3.7's truncation_strategy 'delete' (the released run's) leaves an over-long example out; ours counts it
    in the log and in metrics.jsonl. --truncation right cuts its answer instead."""
    pairs = datafiles.read_jsonl(data_dir / "pairs_r16.jsonl")
    pairs[1] = {**pairs[1], "rejected": "and then the person walks in " * 40}
    datafiles.write_jsonl(tmp_path / "pairs_r16.jsonl", pairs)
    video = {"fps": 1.0, "max_frames": 4, "total_pixels": 64 * 96 * 4}
    fits = max(len(row.input_ids) for row in dpo.encode_pair(vlm.load("tiny"), {**pairs[0], "where": "x"}, video,
                                                             10_000))
    args = dict(global_batch=1, max_steps=4, max_length=fits + 5)
    run = recipes.run_stage(stage_args(tmp_path, tmp_path / "delete", **args))
    err = capfd.readouterr().err
    assert f"left out pair {tmp_path / 'pairs_r16.jsonl'}:2: {pairs[1]['video']}: " in err
    assert f"tokens, over --max-length {fits + 5} (--truncation right cuts the answer" in err
    assert sum(m.get("left_out", 0) for m in read_metrics(run)) == 1  # 4 steps of 1 pair: it comes up once
    assert f"{run}: 1 example(s) left out" in err and runs.read_run_config(run)["truncation"] == "delete"
    cut = recipes.run_stage(stage_args(tmp_path, tmp_path / "right", truncation="right", **args))
    assert "left out" not in capfd.readouterr().err and not any("left_out" in m for m in read_metrics(cut))
    with pytest.raises(ValueError, match="the run was started with another truncation"):
        recipes.run_stage(stage_args(tmp_path, tmp_path / "right", truncation="delete", resume=True, **args))


def test_an_unreadable_video_is_replaced_by_the_next_pair(data_dir, tmp_path, capfd):
    (tmp_path / "broken.mp4").write_text("not a video")
    pairs = datafiles.read_jsonl(data_dir / "pairs_r16.jsonl")
    pairs.insert(1, {**pairs[0], "video": str(tmp_path / "broken.mp4")})
    datafiles.write_jsonl(tmp_path / "pairs_r16.jsonl", pairs)
    for precompute_ref in (False, True):
        run = recipes.run_stage(stage_args(tmp_path, tmp_path / f"runs_{precompute_ref}", global_batch=1,
                                           precompute_ref=precompute_ref))
        assert len(read_metrics(run)) == len(pairs) and runs.finished(run)
        err = capfd.readouterr().err
        assert f"left out pair {tmp_path / 'pairs_r16.jsonl'}:2: {tmp_path / 'broken.mp4'}: not a readable video" in err
        assert f"{run}: 1 example(s) left out" in err and sum(m.get("left_out", 0) for m in read_metrics(run)) == 1
    shutil.copy(pairs[0]["video"], tmp_path / "broken.mp4")  # mended after the reference cache was made
    run = recipes.run_stage(stage_args(tmp_path, tmp_path / "runs_mended", global_batch=1, precompute_ref=True))
    assert runs.finished(run)
    assert f"left out pair {tmp_path / 'pairs_r16.jsonl'}:2: no cached reference" in capfd.readouterr().err


# ---- resume, chaining, merge ------------------------------------------------------------------------------------


class Interrupt(Exception):
    pass


def adapter_tensors(run_dir):
    from safetensors.torch import load_file
    return load_file(os.path.join(run_dir, "adapter_model.safetensors"))


def test_resume_ends_with_the_same_weights(data_dir, tmp_path, monkeypatch):
    full = recipes.run_stage(stage_args(data_dir, tmp_path / "full", epochs=3, save_every=2, lora_dropout=0.1))
    original_step = dpo.dpo_step
    calls = {"n": 0}

    def crash_on_fifth_call(*a, **k):  # 2 micro-batches per step: the 5th call is step 3
        calls["n"] += 1
        if calls["n"] == 5:
            raise Interrupt()
        return original_step(*a, **k)

    monkeypatch.setattr(dpo, "dpo_step", crash_on_fifth_call)
    args = stage_args(data_dir, tmp_path / "resumed", epochs=3, save_every=2, lora_dropout=0.1)
    with pytest.raises(Interrupt):
        recipes.run_stage(args)
    assert not runs.finished(args.out or os.path.join(args.runs, "dpo_r16"))
    monkeypatch.setattr(dpo, "dpo_step", original_step)
    args.resume = True
    resumed = recipes.run_stage(args)
    a, b = adapter_tensors(full), adapter_tensors(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    assert [m["step"] for m in read_metrics(resumed)] == [1, 2, 3, 4, 5, 6]


def test_stage_chaining_uses_previous_stage_as_start_and_reference(data_dir, tmp_path):
    first = recipes.run_stage(stage_args(data_dir, tmp_path, r=16, max_steps=3))
    with pytest.raises(ValueError, match="dpo_r4, which is not finished"):
        recipes.run_stage(stage_args(data_dir, tmp_path, r=2))
    second = recipes.run_stage(stage_args(data_dir, tmp_path, r=8, max_steps=1, nll_weight=0.0))
    start = runs.read_run_config(second)["start"]
    assert os.path.normpath(os.path.join(second, start["run"])) == os.path.normpath(first)
    assert start["run"] == "../dpo_r16" and start["stages"] == ["dpo_r16"]
    # step 1 of stage r=8: policy = reference = base + r16 adapter merged -> rewards 0, loss ln 2
    m = read_metrics(second)[0]
    assert m["rewards/margins"] == pytest.approx(0, abs=1e-5) and m["loss"] == pytest.approx(math.log(2), abs=1e-5)


def logps_of(model, data_dir):
    batch = dpo.collate_pairs(model, [e["rows"] for e in encoded_pairs(model, data_dir)])
    with torch.no_grad():
        return model.response_logps(model.to_device(batch))[0]


def test_a_run_carries_its_chain_and_survives_a_move(data_dir, tmp_path):
    """Each run's adapter is its whole chain on the plain base model: loaded as an ordinary (PEFT-format) adapter it
    gives the curriculum's model; merge, eval --run and sft --init need nothing outside the run directory."""
    runs_dir = tmp_path / "runs"
    first = recipes.run_stage(stage_args(data_dir, runs_dir, r=16, max_steps=2))
    second = recipes.run_stage(stage_args(data_dir, runs_dir, r=8, max_steps=2))
    third = recipes.run_stage(stage_args(data_dir, runs_dir, r=4, max_steps=1, data=str(data_dir / "pairs_r16.jsonl")))
    expected = vlm.load("tiny")  # base + r16 + r8 merged, then the r4 adapter on top, the way training built it
    for run in (first, second):
        lora.load_adapter(expected.hf_model, os.path.join(run, "stage"))
        lora.merge_lora(expected.hf_model)
    lora.load_adapter(expected.hf_model, os.path.join(third, "stage"))
    want = logps_of(expected, data_dir)
    config = json.load(open(os.path.join(third, "adapter_config.json")))
    assert config["base_model_name_or_path"] == "tiny" and config["r"] == 3 * 32  # three stages of rank 32, stacked
    for part in ("stage", "checkpoint"):  # a stage's own adapter says it needs the stages before it merged in
        notes = json.load(open(os.path.join(third, part, "adapter_config.json")))["base_model_name_or_path"]
        assert notes == "tiny + dpo_r16 + dpo_r8 merged"
        assert "Loaded alone on tiny it leaves dpo_r16, dpo_r8 out." in open(os.path.join(third, part,
                                                                                         "README.md")).read()
    assert json.load(open(os.path.join(first, "stage", "adapter_config.json")))["base_model_name_or_path"] == "tiny"
    assert not os.path.exists(os.path.join(first, "stage", "README.md"))
    plain = vlm.load("tiny")
    lora.load_adapter(plain.hf_model, third)  # what peft.PeftModel.from_pretrained(base, run) does
    assert torch.allclose(logps_of(plain, data_dir), want, atol=1e-4)

    moved = tmp_path / "moved"
    os.rename(runs_dir, moved)
    os.makedirs(tmp_path / "copy")
    single = shutil.copytree(moved / "dpo_r4", tmp_path / "copy" / "dpo_r4")  # one run on its own
    for run in (moved / "dpo_r4", single):
        assert torch.allclose(logps_of(vlm.load(runs.merge_run(str(run), str(tmp_path / "merged"))), data_dir), want,
                              atol=1e-4)
        loaded = runs.load_run(str(run))  # eval --run: the start merged, the stage's adapter on top
        assert torch.allclose(logps_of(loaded, data_dir), want, atol=1e-4)
        with lora.disable_lora(loaded.hf_model):  # its reference: base + r16 + r8
            reference = logps_of(loaded, data_dir)
        assert not torch.allclose(reference, want, atol=1e-4)
    # the next stage finds dpo_r4 in the moved runs/
    following = stage_args(data_dir, moved, r=2, max_steps=1, data=str(data_dir / "pairs_r16.jsonl"))
    assert runs.read_run_config(recipes.run_stage(following))["start"]["stages"] == ["dpo_r16", "dpo_r8", "dpo_r4"]


@pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="PEFT is not installed (not a dependency)")
def test_peft_loads_a_chained_stage_as_the_curriculum_made_it(data_dir, tmp_path):
    from peft import PeftModel

    first = recipes.run_stage(stage_args(data_dir, tmp_path, r=16, max_steps=2))
    second = recipes.run_stage(stage_args(data_dir, tmp_path, r=8, max_steps=2))
    expected = vlm.load("tiny")
    lora.load_adapter(expected.hf_model, os.path.join(first, "stage"))
    lora.merge_lora(expected.hf_model)
    lora.load_adapter(expected.hf_model, os.path.join(second, "stage"))
    base = vlm.load("tiny")
    PeftModel.from_pretrained(base.hf_model, second)  # wraps base.hf_model's linears in place
    assert torch.allclose(logps_of(base, data_dir), logps_of(expected, data_dir), atol=1e-4)


def test_merged_model_directory_carries_the_processor_files(data_dir, tmp_path, monkeypatch):
    base = tmp_path / "base"
    model = vlm.load("tiny")
    model.hf_model.save_pretrained(base)
    model.tokenizer.save_pretrained(base)
    (base / "preprocessor_config.json").write_text('{"processor_class": "Qwen2VLProcessor"}')
    (base / "chat_template.json").write_text('{"chat_template": "..."}')
    run = recipes.run_stage(stage_args(data_dir, tmp_path / "runs", model=str(base), max_steps=1))
    out = tmp_path / "merged"
    monkeypatch.setattr(hub, "reachable", lambda timeout=3: pytest.fail("the hub was asked"))  # a directory
    runs.merge_run(run, str(out))
    for name in ("preprocessor_config.json", "chat_template.json"):
        assert (out / name).read_text() == (base / name).read_text()
    assert (out / "config.json").exists() and (out / "tokenizer_config.json").exists()


def test_merge_of_a_hub_model_fetches_its_processor_files_or_says_which_it_could_not(data_dir, tmp_path,
                                                                                     monkeypatch, capsys):
    """A hub id's processor files come from the local cache, else from the hub; with neither, a warning names them."""
    import huggingface_hub.constants
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    snapshot = tmp_path / "hub" / "models--org--tiny-vl" / "snapshots" / "abc123"
    model = vlm.load("tiny")
    model.hf_model.save_pretrained(snapshot)
    model.tokenizer.save_pretrained(snapshot)
    (snapshot / "chat_template.json").write_text('{"chat_template": "cached"}')
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc123")
    (snapshot.parent.parent / ".no_exist" / "abc123").mkdir(parents=True)
    (snapshot.parent.parent / ".no_exist" / "abc123" / "processor_config.json").write_text("")  # known absent
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub, "reachable", lambda timeout=3: False)
    run = recipes.run_stage(stage_args(data_dir, tmp_path / "runs", max_steps=1))

    out = tmp_path / "offline"
    runs.merge_run(run, str(out), model_name="org/tiny-vl")
    assert (out / "chat_template.json").read_text() == '{"chat_template": "cached"}'
    warning = capsys.readouterr().err
    assert "were not looked up: preprocessor_config.json, video_preprocessor_config.json. Copy" in warning

    downloaded = tmp_path / "preprocessor_config.json"
    downloaded.write_text('{"processor_class": "Qwen2VLProcessor"}')

    def download(repo, name):
        assert repo == "org/tiny-vl"
        if name != "preprocessor_config.json":
            raise EntryNotFoundError(f"{name}: no such file")
        return str(downloaded)

    monkeypatch.setattr(hub, "reachable", lambda timeout=3: True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # the model itself still from the cache
    monkeypatch.setattr(hub, "hf_hub_download", download)
    out = tmp_path / "online"
    runs.merge_run(run, str(out), model_name="org/tiny-vl")
    assert (out / "preprocessor_config.json").read_text() == downloaded.read_text()
    assert not (out / "video_preprocessor_config.json").exists() and "warning" not in capsys.readouterr().err

    def download_fails(repo, name):  # the hub answered the probe, then the request failed
        if name == "video_preprocessor_config.json":
            raise LocalEntryNotFoundError("an error happened while trying to locate the file on the Hub")
        return download(repo, name)

    monkeypatch.setattr(hub, "hf_hub_download", download_fails)
    runs.merge_run(run, str(tmp_path / "failed"), model_name="org/tiny-vl")
    assert "were not looked up: video_preprocessor_config.json. Copy" in capsys.readouterr().err


def test_merged_model_reloads_and_matches_the_lora_model(data_dir, tmp_path):
    first = recipes.run_stage(stage_args(data_dir, tmp_path, r=16, max_steps=2))
    second = recipes.run_stage(stage_args(data_dir, tmp_path, r=8, max_steps=2))
    out = runs.merge_run(second, str(tmp_path / "merged"))
    merged = vlm.load(out)
    reference = vlm.load("tiny")
    runs.merge_start(reference.hf_model, first)
    lora.load_adapter(reference.hf_model, os.path.join(second, "stage"))
    batch = dpo.collate_pairs(reference, [e["rows"] for e in encoded_pairs(reference, data_dir)])
    with torch.no_grad():
        assert torch.allclose(merged.response_logps(batch)[0], reference.response_logps(batch)[0], atol=1e-4)
    assert runs.merge_run(first, out) == out and not os.path.exists(out + ".partial")  # replaces a merged model
    modes = {name: os.stat(os.path.join(out, name)).st_mode & 0o777 for name in os.listdir(out)}
    assert len(set(modes.values())) == 1 and modes["model.safetensors"] & 0o044, modes  # not private 0600
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    runs.merge_run(first, str(tmp_path / "notes"))  # a directory of other files: they stay beside the model
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"
    assert (tmp_path / "notes" / "model.safetensors").exists()
    for run in (first, second):  # a run directory is never written into, not even the one being merged
        with pytest.raises(ValueError, match="holds a training run"):
            runs.merge_run(second, run)
        assert runs.finished(run)
    (tmp_path / "broken_run").mkdir()
    (tmp_path / "broken_run" / "adapter_model.safetensors").write_bytes(b"")
    (tmp_path / "broken_run" / "config.json").write_text("{")
    with pytest.raises(ValueError, match=r"broken_run/config.json:1: invalid JSON"):
        runs.merge_run(str(tmp_path / "broken_run"), str(tmp_path / "m2"))


# ---- bad input --------------------------------------------------------------------------------------------------


def test_bad_input_messages(data_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="pairs_r16.jsonl: no such file"):
        recipes.run_stage(stage_args(tmp_path, tmp_path / "runs"))
    (tmp_path / "pairs_r16.jsonl").write_text("")
    with pytest.raises(ValueError, match="pairs_r16.jsonl: no usable pairs"):
        recipes.run_stage(stage_args(tmp_path, tmp_path / "runs"))
    gone = [{"video": str(tmp_path / "gone.mp4"), "instruction": "x", "chosen": "a", "rejected": "b"}]
    datafiles.write_jsonl(tmp_path / "pairs_r16.jsonl", gone)
    with pytest.raises(ValueError, match=rf"no usable pairs: 1 pair\(s\) whose video file is missing, the first "
                                         rf"{tmp_path / 'gone.mp4'}$"):
        recipes.run_stage(stage_args(tmp_path, tmp_path / "runs"))
    run = recipes.run_stage(stage_args(data_dir, tmp_path / "runs", max_steps=1))
    with pytest.raises(ValueError, match="trained on base model 'tiny', not 'tiny-qwen3'"):
        recipes.run_stage(stage_args(data_dir, tmp_path / "runs", r=8, model="tiny-qwen3", init=run))
    with pytest.raises(ValueError, match=r"dpo_r16 holds an earlier run \(config.json, checkpoint, adapter_model"):
        recipes.run_stage(stage_args(data_dir, tmp_path / "runs", max_steps=1, lr=1e30))  # without --resume


def saved_tiny(directory, seed=0):
    model = vlm.load("tiny", seed=seed)
    model.hf_model.save_pretrained(directory)
    model.tokenizer.save_pretrained(directory)
    return str(directory)


def test_a_base_model_is_known_by_what_it_is_not_by_its_name(data_dir, tmp_path, monkeypatch):
    """A hub id and its snapshot on disk, or two copies of one model, are one base model for chaining and resume;
    another model under the same kind of name is not."""
    original = saved_tiny(tmp_path / "model")
    copy = shutil.copytree(original, tmp_path / "copy")
    cache = tmp_path / "hub"
    snapshot = cache / "models--someone--tiny-vl" / "snapshots" / ("0" * 40)
    shutil.copytree(original, snapshot)
    (cache / "models--someone--tiny-vl" / "refs").mkdir()
    (cache / "models--someone--tiny-vl" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub, "reachable", lambda timeout=3: False)
    identity = hub.model_identity(original)
    assert identity == hub.model_identity(str(copy)) == hub.model_identity("someone/tiny-vl") is not None
    assert identity["weights"] == {"model.safetensors": os.path.getsize(os.path.join(original, "model.safetensors"))}
    assert hub.model_identity("someone/not-cached") is None and hub.model_identity("tiny", 1) == {"tiny": "tiny", "seed": 1}

    run = recipes.run_stage(stage_args(data_dir, tmp_path / "runs", model=original, max_steps=1))
    for name in (str(copy), "someone/tiny-vl"):
        assert runs.start_after(run, name, str(tmp_path / "runs" / "dpo_r8"), hub.model_identity(name))["stages"] == \
            ["dpo_r16"]
    recipes.run_stage(stage_args(data_dir, tmp_path / "runs", model=str(copy), max_steps=2, resume=True))
    other = saved_tiny(tmp_path / "other", seed=1)
    os.remove(os.path.join(other, "config.json"))
    shutil.copy(os.path.join(original, "config.json"), other)
    (tmp_path / "other" / "model-extra.safetensors").write_bytes(b"0")  # the files differ (not only their bytes)
    with pytest.raises(ValueError, match=f"trained on base model '{original}', not '{other}'"):
        runs.start_after(run, other, str(tmp_path / "runs" / "dpo_r8"), hub.model_identity(other))
    with pytest.raises(ValueError, match="the run was started with another base_model"):
        recipes.run_stage(stage_args(data_dir, tmp_path / "runs", model=other, max_steps=3, resume=True))


def test_cli_reports_a_missing_data_file_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "temple.py"), "dpo", "--r", "16", "--model", "tiny",
                             "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().endswith("pairs_r16.jsonl: no such file; make the pairs with `temple.py pairs` "
                                          "first, or pass --data FILE")


# ---- DDP: 2 gloo processes == 1 process on the whole batch ------------------------------------------------------


def _ddp_worker(rank, world, init_file, data_dir, runs):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        recipes.run_stage(stage_args(data_dir, runs, global_batch=4, micro_batch=1, max_steps=2, lora_dropout=0.0,
                                     eval_pairs=os.path.join(data_dir, "pairs_r8.jsonl"), eval_every=1))
    finally:
        dist.destroy_process_group()
    leave_without_teardown()


def test_two_gloo_processes_match_one_process(data_dir, tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(data_dir), str(tmp_path / "ddp")), nprocs=2)
    # the held-out pairs are split over the 2 ranks, their margins gathered: the same numbers as 1 process
    single = recipes.run_stage(stage_args(data_dir, tmp_path / "single", global_batch=4, micro_batch=1, max_steps=2,
                                          lora_dropout=0.0, eval_pairs=str(data_dir / "pairs_r8.jsonl"), eval_every=1))
    a, b = adapter_tensors(os.path.join(tmp_path, "ddp", "dpo_r16")), adapter_tensors(single)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    ma, mb = read_metrics(os.path.join(tmp_path, "ddp", "dpo_r16")), read_metrics(single)
    assert [m["loss"] for m in ma] == pytest.approx([m["loss"] for m in mb], abs=1e-5)
    for key in ("eval/rewards/accuracies", "eval/rewards/margins"):
        assert [m[key] for m in ma] == pytest.approx([m[key] for m in mb], abs=1e-5)
    # resuming that 2-process run with 1 process is refused
    with pytest.raises(ValueError, match="saved with 2 processes, resumed with 1"):
        runs.load_checkpoint(vlm.load("tiny").hf_model, None, train.TrainConfig(
            out=os.path.join(tmp_path, "ddp", "dpo_r16")), distributed.World())


def _unshared_worker(rank, world, init_file, data_dir, workdir, errors):
    """Each rank in its own working directory: the same relative --runs names two different directories, as a
    run directory on a node's local disk would."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    os.makedirs(os.path.join(workdir, str(rank)))
    os.chdir(os.path.join(workdir, str(rank)))
    try:
        recipes.run_stage(stage_args(data_dir, "runs", global_batch=2, max_steps=1))
    except ValueError as e:
        with open(os.path.join(errors, str(rank)), "w") as f:
            f.write(str(e))
    finally:
        dist.destroy_process_group()
    leave_without_teardown()


def test_a_run_directory_that_not_every_rank_sees_is_refused_naming_the_rank(data_dir, tmp_path):
    os.makedirs(tmp_path / "errors")
    mp.spawn(_unshared_worker, args=(2, str(tmp_path / "init"), str(data_dir), str(tmp_path / "work"),
                                     str(tmp_path / "errors")), nprocs=2)
    messages = {name: (tmp_path / "errors" / name).read_text() for name in os.listdir(tmp_path / "errors")}
    assert set(messages) == {"0", "1"}  # every rank stops, with the same line
    assert "the run directory runs/dpo_r16 is not shared: rank 1 (" in messages["0"] == messages["1"]
    assert not os.path.exists(tmp_path / "work" / "0" / "runs" / "dpo_r16" / "config.json")  # nothing trained


def _data_worker(rank, world, init_file, errors):
    """Rank 1 found one video fewer on its disk than rank 0: its list of pairs differs."""
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    pairs = [{"video": f"v{i}.mp4", "chosen": "a", "rejected": "b"} for i in range(4 - rank)]
    try:
        distributed.check_same_data(distributed.World(rank=rank, size=world), pairs, "pairs_r16.jsonl")
    except ValueError as e:
        with open(os.path.join(errors, str(rank)), "w") as f:
            f.write(str(e))

    def write_on_a_full_disk():
        raise OSError(28, "No space left on device")

    try:  # rank 0's write fails: every rank hears of it, none waits for it
        distributed.on_main(distributed.World(rank=rank, size=world), write_on_a_full_disk)
    except (OSError, ValueError) as e:
        with open(os.path.join(errors, f"{rank}.write"), "w") as f:
            f.write(f"{type(e).__name__}: {e}")
    finally:
        dist.destroy_process_group()
    leave_without_teardown()


def test_ranks_that_read_other_data_or_miss_a_write_of_rank_0_stop_together(tmp_path):
    os.makedirs(tmp_path / "errors")
    mp.spawn(_data_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "errors")), nprocs=2)
    messages = {name: (tmp_path / "errors" / name).read_text() for name in os.listdir(tmp_path / "errors")}
    assert set(messages) == {"0", "1", "0.write", "1.write"} and messages["0"] == messages["1"]
    assert messages["0.write"] == "OSError: [Errno 28] No space left on device"  # its own error, traceback intact
    assert messages["1.write"].startswith("ValueError: rank 0 (") and \
        messages["1.write"].endswith("): [Errno 28] No space left on device")
    assert messages["0"].startswith("pairs_r16.jsonl: rank 1 (") and ": 3 examples) read other examples than " \
        "rank 0 (" in messages["0"] and ": 4); every node needs the same data and videos" in messages["0"]


def test_loader_workers_started_by_forkserver_train_the_same(data_dir, tmp_path):
    """--workers > 0 where workers are started by forkserver or spawn (macOS, Python >= 3.14 on Linux): what they run
    must pickle; the result equals loading in the main process."""
    import multiprocessing

    before = multiprocessing.get_start_method()
    multiprocessing.set_start_method("forkserver", force=True)
    try:
        forked = recipes.run_stage(stage_args(data_dir, tmp_path / "workers", max_steps=2, workers=1,
                                              precompute_ref=True))
    finally:
        multiprocessing.set_start_method(before, force=True)
    inline = recipes.run_stage(stage_args(data_dir, tmp_path / "inline", max_steps=2, workers=0, precompute_ref=True))
    a, b = adapter_tensors(forked), adapter_tensors(inline)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def _diverging_worker(rank, world, init_file, data_dir, runs_dir, errors):
    """Rank 1's node lacks the videos; later rank 0's metrics.jsonl is damaged before a resume. Each time one rank
    fails alone, while the other would go on into the next collective."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)

    def attempt(name, args):
        try:
            recipes.run_stage(args)
        except ValueError as e:
            with open(os.path.join(errors, f"{name}.{rank}"), "w") as f:
                f.write(str(e))

    videos = os.path.join(data_dir, "videos" if rank == 0 else "missing")
    attempt("videos", stage_args(data_dir, runs_dir, data=os.path.join(data_dir, "relative.jsonl"),
                                 video_root=videos, global_batch=2, max_steps=1))
    recipes.run_stage(stage_args(data_dir, runs_dir, global_batch=2, max_steps=2))
    if rank == 0:
        metrics = os.path.join(runs_dir, "dpo_r16", "metrics.jsonl")
        lines = open(metrics).readlines()
        open(metrics, "w").writelines(["not a line of metrics\n", *lines[1:]])
    dist.barrier()
    attempt("metrics", stage_args(data_dir, runs_dir, global_batch=2, max_steps=3, resume=True))
    dist.destroy_process_group()
    leave_without_teardown()


def test_a_failure_on_one_rank_stops_every_rank_with_its_line(data_dir, tmp_path):
    data = tmp_path / "data"
    os.makedirs(data / "videos")
    records = []
    for pair in datafiles.read_jsonl(data_dir / "pairs_r16.jsonl"):
        shutil.copy(pair["video"], data / "videos")
        records.append({**pair, "video": os.path.basename(pair["video"])})
    datafiles.write_jsonl(data / "relative.jsonl", records)
    shutil.copy(data_dir / "pairs_r16.jsonl", data)
    os.makedirs(tmp_path / "errors")
    mp.spawn(_diverging_worker, args=(2, str(tmp_path / "init"), str(data), str(tmp_path / "runs"),
                                      str(tmp_path / "errors")), nprocs=2)
    said = {name: (tmp_path / "errors" / name).read_text() for name in os.listdir(tmp_path / "errors")}
    assert set(said) == {"videos.0", "videos.1", "metrics.0", "metrics.1"}
    assert said["videos.1"].endswith("relative.jsonl: no usable pairs: 4 pair(s) whose video file is missing, the first "
                                     f"{data / 'missing' / 'v0.mp4'} (relative paths start from --video-root "
                                     f"{data / 'missing'})")
    assert said["videos.0"].startswith("rank 1 (") and said["videos.0"].endswith("): " + said["videos.1"])
    assert said["metrics.0"].endswith("metrics.jsonl:1: not a metrics line")
    assert said["metrics.1"].startswith("rank 0 (") and said["metrics.1"].endswith("): " + said["metrics.0"])


def test_curriculum_skips_a_finished_stage_only_when_it_was_trained_as_this_command_would(data_dir, tmp_path,
                                                                                          capsys):
    from safetensors.torch import load_file, save_file
    command = ["curriculum", "--model", "tiny", "--stages", "16", "8", "--data-dir", str(data_dir), "--runs",
               str(tmp_path), "--max-steps", "1", "--global-batch", "2", "--workers", "0", "--max-frames", "4",
               "--total-pixels", str(64 * 96 * 4)]
    assert temple.main(command) == 0
    capsys.readouterr()
    assert temple.main(command) == 0 and capsys.readouterr().out.count("is finished, skipped") == 2
    for other, differ in ((["--model", "tiny-qwen3"], "base_model"), (["--lr", "1e-3"], "lr"),
                          (["--beta", "0.2"], "beta"), (["--max-steps", "2"], "max_steps")):
        assert temple.main([*command, *other]) == 1
        assert capsys.readouterr().err == (f"temple.py curriculum: error: stage r=16: {tmp_path / 'dpo_r16'} is "
                                           f"finished, but was trained with another {differ} than this command asks "
                                           f"for; delete it and the stages after it to train them again, or give "
                                           f"another --runs\n")
    assert temple.main([*command, "--workers", "1", "--save-every", "7"]) == 0  # how it runs, not what it trains
    first = tmp_path / "dpo_r16" / "adapter_model.safetensors"
    tensors = load_file(first)
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1  # r16 trained again (e.g. resumed after an adaptive stop)
    save_file(tensors, first)
    capsys.readouterr()
    assert temple.main(command) == 1
    assert f"stage r=8: {tmp_path / 'dpo_r8'} is finished, but was trained with another start" in capsys.readouterr().err


