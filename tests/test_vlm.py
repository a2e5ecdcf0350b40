"""vlm.py: preprocessing vs transformers, prompt layout and labels, batching, generation, log-probs, loading."""

import dataclasses
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import vision_cache
import preprocess
import mrope
import vlm
from media import scene_frames, write_audio_only, write_video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = dict(min_pixels=32 * 32)  # keep sequences short: the default min_pixels upscales small frames


@pytest.fixture(scope="module")
def tiny():
    return vlm.load("tiny")


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", scene_frames(4, 10), fps=10)


def random_video(frames=4, height=64, width=80, seed=0):
    rng = np.random.default_rng(seed)
    return preprocess.Video(rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8), [0.5 * i for i in range(frames)])


# ---- preprocessing --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,patch,mean", [("tiny", 14, vlm.CLIP_MEAN), ("tiny-qwen3", 16, (0.5, 0.5, 0.5))])
@pytest.mark.parametrize("size", [(100, 150), (37, 301), (224, 224)])
def test_preprocess_equals_hf_image_processor(name, patch, mean, size):
    from PIL import Image
    from transformers import Qwen2VLImageProcessorPil

    model = vlm.load(name)
    std = vlm.CLIP_STD if mean == vlm.CLIP_MEAN else mean
    image = np.random.default_rng(1).integers(0, 256, (*size, 3), dtype=np.uint8)
    hf = Qwen2VLImageProcessorPil(patch_size=patch, image_mean=list(mean), image_std=list(std),
                                  size={"shortest_edge": 56 * 56, "longest_edge": 128 * 128})
    expected = hf(images=Image.fromarray(image), return_tensors="np")
    pixels, grid = model.processor.preprocess(image[None], min_pixels=56 * 56, max_pixels=128 * 128, total_pixels=10 ** 9)
    assert tuple(expected["image_grid_thw"][0]) == grid
    np.testing.assert_array_equal(pixels, expected["pixel_values"])  # bit-exact


def test_smart_resize_respects_budget():
    for h, w in [(1080, 1920), (27, 48), (360, 640)]:
        rh, rw = preprocess.smart_resize(h, w, 28, 3136, 401408)
        assert rh % 28 == 0 and rw % 28 == 0 and 3136 <= rh * rw <= 401408
    # The released run: 600 frames share 9,000,000 pixels -> 30,000 pixels (two frames per temporal patch).
    assert preprocess.frame_max_pixels(600, 9_000_000, 3136, 768 * 28 * 28) == 30_000


def test_video_frames_are_resized_as_torchvision_does(tiny):
    frame = (np.arange(24) * 97 % 256).astype(np.uint8).reshape(1, 4, 6, 1).repeat(3, -1)
    # torchvision 0.28's resize of the uint8 tensor (BICUBIC, antialias=True), as qwen_vl_utils calls it
    assert preprocess.resize_video(frame, 3, 4)[0, :, :, 0].tolist() == [[46, 127, 91, 177], [149, 103, 119, 82],
                                                                        [161, 131, 166, 124]]
    up = preprocess.resize_video(frame, 6, 8)
    assert up[0, :, :, 0].tolist() == [[0, 48, 147, 196, 41, 78, 177, 247], [24, 91, 127, 97, 62, 138, 169, 135],
                                       [76, 157, 123, 5, 103, 175, 134, 32], [122, 211, 183, 64, 160, 79, 50, 102],
                                       [183, 159, 127, 127, 216, 98, 72, 160], [224, 96, 61, 167, 250, 143, 116, 193]]
    assert not np.array_equal(preprocess.resize_frames(frame, 6, 8), up)  # PIL's bicubic is another kernel
    frames = random_video(3, 60, 80).frames  # -> 56 x 84
    assert np.array_equal(preprocess.resize_video(frames, 56, 84, chunk=2), preprocess.resize_video(frames, 56, 84))
    # decoded video (a Video with its sampling rate) goes the torchvision way, a list of frames the PIL way
    pixels, _ = tiny.processor.preprocess(preprocess.Video(frames, [0.0, 0.5, 1.0], fps=2.0), **SMALL)
    expected, _ = preprocess.patchify(preprocess.resize_video(frames, 56, 84), vlm.CLIP_MEAN, vlm.CLIP_STD, 14, 2, 2)
    np.testing.assert_array_equal(pixels, expected)


def test_sample_indices_follow_qwen_vl_utils():
    # 121.5 s at 30 fps sampled at 1 fps: 121.5 frames, rounded down to an even 120, spread by torch.linspace
    indices = preprocess.sample_indices(3645, 30.0, fps=1.0, max_frames=600)
    assert len(indices) == 120 and indices[:3] == [0, 31, 61] and indices[-1] == 3644
    assert len(preprocess.sample_indices(3645, 30.0, fps=1.0, max_frames=99)) == 98  # the cap, made even
    assert preprocess.sample_indices(30, 30.0, fps=1.0, max_frames=600) == [0, 10, 19, 29]  # at least 4 frames
    assert preprocess.sample_indices(3, 30.0, fps=1.0, max_frames=600) == [0, 2]  # never more than the video, even


def test_odd_frame_count_is_padded_with_last_frame(tiny):
    video = random_video(frames=3)
    pixels, (t, h, w) = tiny.processor.preprocess(video, **SMALL)
    padded, grid = tiny.processor.preprocess(preprocess.Video(np.concatenate([video.frames, video.frames[-1:]]), []), **SMALL)
    assert t == 2 and grid == (t, h, w)
    np.testing.assert_array_equal(pixels, padded)


# ---- prompt layout and labels -----------------------------------------------------------------------------------


def test_labels_cover_only_the_response(tiny):
    sample = tiny.encode([random_video(), "Describe the video."], response="the person walks in", **SMALL)
    ids, labels = np.array(sample.input_ids), np.array(sample.labels)
    learned = labels != vlm.IGNORE
    assert (labels[learned] == ids[learned]).all()
    assert tiny.tokenizer.decode(ids[learned]) == "the person walks in<|im_end|>"
    # the learned span is contiguous and is followed only by the closing newline
    positions = np.flatnonzero(learned)
    assert (np.diff(positions) == 1).all() and positions[-1] == len(ids) - 2


def test_multi_turn_labels_every_assistant_turn(tiny):
    messages = [{"role": "user", "content": [random_video(), "What happens?"]},
                {"role": "assistant", "content": "a man runs"},
                {"role": "user", "content": "And then?"},
                {"role": "assistant", "content": "he jumps"}]
    sample = tiny.encode_chat(messages, **SMALL)
    learned = [t for t, label in zip(sample.input_ids, sample.labels) if label != vlm.IGNORE]
    assert tiny.tokenizer.decode(learned) == "a man runs<|im_end|>he jumps<|im_end|>"


def test_video_tokens_and_types(tiny):
    sample = tiny.encode([random_video(), "Hi"], **SMALL)
    t, h, w = sample.grids[0]
    ids, types = np.array(sample.input_ids), np.array(sample.token_types)
    assert (ids == tiny.ids["video"]).sum() == t * h * w // 4
    assert ((types == vlm.VIDEO) == (ids == tiny.ids["video"])).all()
    text = tiny.tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                           "<|vision_start|><|video_pad|>")
    assert text.endswith("<|vision_end|>Hi<|im_end|>\n<|im_start|>assistant\n")


def test_prompt_matches_the_chat_template_text(tiny):
    # Our piecewise encoding equals the tokenized chat template (vision slot expanded) for text-only prompts.
    sample = tiny.encode("Describe the video in detail.")
    text = tiny.tokenizer.apply_chat_template([{"role": "user", "content": "Describe the video in detail."}],
                                              tokenize=False, add_generation_prompt=True)
    assert sample.input_ids == tiny.tokenizer.encode(text, add_special_tokens=False)


def test_qwen3_timestamps_one_block_per_temporal_patch():
    model = vlm.load("tiny-qwen3")
    video = preprocess.Video(random_video(frames=4).frames, [0.0, 1.0, 2.0, 3.0])
    text = model.tokenizer.decode(model.encode([video, "Hi"], **SMALL).input_ids)
    # transformers 4.57's processor (the released one) and vLLM: no <|vision_start|> ... <|vision_end|> around them
    block = "<|vision_start|>" + "<|video_pad|>" * 4 + "<|vision_end|>"
    assert f"<|im_start|>user\n<0.5 seconds>{block}<2.5 seconds>{block}Hi<|im_end|>" in text


def test_qwen25_time_steps_follow_the_sampled_rate_in_float():
    model = vlm.load("tiny-qwen2.5")
    model.processor.tokens_per_second = 2  # Qwen2.5-VL-7B's value (the tiny config has another)
    # 122 of 3645 frames at 30 fps: sampled at 1.0041 fps, 1.9918 s per temporal patch, 3.98 ticks per patch
    video = preprocess.Video(random_video(frames=8).frames, [float(i) for i in range(8)], fps=122 / 3645 * 30)
    prepared = model.prepare(video, **SMALL)
    assert prepared.seconds_per_grid == pytest.approx(1.99180, abs=1e-5)
    assert model.processor.time_steps(prepared) == [0, 3, 7, 11]  # transformers 4.53-4.57 (int cast): [0, 2, 4, 6]
    assert model.prepare(preprocess.Video(video.frames, video.times), **SMALL).seconds_per_grid == 1.0  # a frame list: 2 fps


def test_collate_padding_sides(tiny):
    short, long = tiny.encode("a"), tiny.encode("a much longer prompt than the other")
    right, left = tiny.collate([short, long]), tiny.collate([short, long], padding="left")
    n = len(short.input_ids)
    assert right["input_ids"][0, :n].tolist() == short.input_ids and right["attention_mask"][0, n:].sum() == 0
    assert left["input_ids"][0, -n:].tolist() == short.input_ids and left["attention_mask"][0, :-n].sum() == 0
    assert (right["labels"][0, n:] == vlm.IGNORE).all()



# ---- positions (M-RoPE) -----------------------------------------------------------------------------------------

T, V = vlm.TEXT, vlm.VIDEO


def test_positions_text_video_text_by_hand():
    # 2 text tokens, a video of 3 temporal patches on a 1 x 2 grid (Qwen2-VL's times 0, 1, 2), 2 text tokens
    positions = mrope.positions([T, T] + [V] * 6 + [T, T], [([0, 1, 2], 1, 2)])
    assert positions.tolist() == [[0, 1, 2, 2, 3, 3, 4, 4, 5, 6],   # time: the video spans 2..4, text resumes at 5
                                  [0, 1, 2, 2, 2, 2, 2, 2, 5, 6],   # height: one row
                                  [0, 1, 2, 3, 2, 3, 2, 3, 5, 6]]   # width: two columns
    # transformers 5.24 resumes at 2 + max(rows, cols) = 4, inside the video's time span


def test_positions_two_videos_by_hand():
    # text, video A (2 time steps on 2 rows x 1 column), text, video B (1 time step, 1 row x 3 columns), text
    types = [T] + [V] * 4 + [T] + [V] * 3 + [T]
    positions = mrope.positions(types, [([0, 1], 2, 1), ([0], 1, 3)])
    assert positions.tolist() == [[0, 1, 1, 2, 2, 3, 4, 4, 4, 7],   # A from 1: 1 + max(1, 1, 0) + 1 = 3 next
                                  [0, 1, 2, 1, 2, 3, 4, 4, 4, 7],   # B from 4: 4 + max(0, 0, 2) + 1 = 7 next
                                  [0, 1, 1, 1, 1, 3, 4, 5, 6, 7]]
    with pytest.raises(ValueError, match="does not fill a 2x2x1 grid"):
        mrope.positions([T] + [V] * 3 + [T], [([0, 1], 2, 1)])


def test_positions_of_an_odd_frame_count(tiny):
    # 5 frames of 28 x 28: padded to 6, 3 temporal patches of one merged token each
    sample = tiny.encode([random_video(5, 28, 28), "Hi"], min_pixels=28 * 28)
    assert sample.grids == [(3, 2, 2)]
    positions, video = sample.positions(), np.flatnonzero(np.array(sample.token_types) == vlm.VIDEO)
    s = positions[0, video[0]]
    assert positions[:, video].T.tolist() == [[s, s, s], [s + 1, s, s], [s + 2, s, s]]
    assert positions[:, video[-1] + 1].tolist() == [s + 3] * 3  # the <|vision_end|> after it (5.24: s + 1)


def test_left_padding_shifts_positions_and_pads_with_zero(tiny):
    short, long = tiny.encode([random_video(4, 28, 56), "Hi"], **SMALL), tiny.encode("a much longer text prompt here")
    batch = tiny.collate([short, long], padding="left")
    pad = batch["input_ids"].shape[1] - len(short.input_ids)
    assert pad > 0 and (batch["position_ids"][:, 0, :pad] == 0).all()
    assert batch["position_ids"][:, 0, pad:].tolist() == short.positions().tolist()
    assert batch["position_ids"][:, 1].tolist() == [list(range(len(long.input_ids)))] * 3
    right = tiny.collate([short, long])
    assert right["position_ids"][:, 0, :len(short.input_ids)].tolist() == short.positions().tolist()


def long_video(model, fps=2.0):
    """16 frames of 2 x 3 merged patches: 8 time steps, more than the grid's rows and columns."""
    f = model.processor.factor
    return preprocess.Video(random_video(16, 2 * f, 3 * f).frames, [i / 2 for i in range(16)], fps=fps)


def landmarks(model, prompt):
    """Positions of the video's first and last token, of the token after it and of the sequence's last token."""
    sample = model.encode(prompt, response="the person walks in", min_pixels=model.processor.factor ** 2, total_pixels=10 ** 9)
    positions, video = sample.positions(), np.flatnonzero(np.array(sample.token_types) == vlm.VIDEO)
    return [positions[:, i].tolist() for i in (video[0], video[-1], video[-1] + 1, -1)]


# transformers 4.57.1's get_rope_index (as 4.53.2 and 4.49.0) on the same token ids and grids, tokens_per_second 2
EXPECTED_4_57 = {("tiny", 2.0): [[42] * 3, [49, 43, 44], [50] * 3, [84] * 3],
                 ("tiny-qwen2.5", 2.0): [[42] * 3, [56, 43, 44], [57] * 3, [91] * 3],
                 ("tiny-qwen2.5", 120 / 3645 * 30): [[42] * 3, [70, 43, 44], [71] * 3, [105] * 3],  # 2.025 s / patch
                 ("tiny-qwen3", 2.0): [[19] * 3, [138, 139, 140], [141] * 3, [175] * 3]}


@pytest.mark.parametrize("name,fps", list(EXPECTED_4_57))
def test_positions_equal_transformers_4_57(name, fps):
    model = vlm.load(name)
    model.processor.tokens_per_second = 2  # Qwen2.5-VL-7B's value (the tiny config has another)
    assert landmarks(model, [long_video(model, fps), "Describe."]) == EXPECTED_4_57[(name, fps)]


@pytest.mark.parametrize("name", ["tiny", "tiny-qwen2.5", "tiny-qwen3"])
def test_positions_equal_transformers_5_where_it_is_right(name):
    model = vlm.load(name)
    f = model.processor.factor
    still = random_video(1, 3 * f, 2 * f)  # an image: one time step
    short = preprocess.Video(random_video(4, 4 * f, 5 * f).frames, [0.0, 0.5, 1.0, 1.5], fps=2.0)  # 2 steps, 2 x 2 merged
    small = dict(min_pixels=f * f, total_pixels=10 ** 9)
    samples = [model.encode([still, "What is it?"], response="a cat", **small),
               model.encode(["First", short, "then", still, "compare."], response="same", **small),
               model.encode([long_video(model), "Describe."], response="a clip", **small)]
    batch = model.collate(samples, padding="left")
    theirs, _ = model.hf_model.model.get_rope_index(
        batch["input_ids"], mm_token_type_ids=batch["mm_token_type_ids"], video_grid_thw=batch["video_grid_thw"],
        attention_mask=batch["attention_mask"], second_per_grid_ts=torch.ones(len(batch["video_grid_thw"])))
    real = batch["attention_mask"].bool()
    same = [torch.equal(batch["position_ids"][:, i, real[i]], theirs[:, i, real[i]]) for i in range(3)]
    # Qwen3-VL's blocks are one time step each, so transformers 5 is right there; a long video breaks Qwen2/2.5-VL
    assert same == [True, True, name == "tiny-qwen3"]


@pytest.mark.parametrize("name", ["tiny", "tiny-qwen2.5", "tiny-qwen3"])
def test_generation_after_a_long_video_continues_our_positions(name, monkeypatch):
    """Greedy generate (left padded, KV cache) gives, step by step, the logits of a full forward with our positions.
    (transformers' own positions move these logits by ~1e-3 on the tiny Qwen2/2.5-VL: their text after a video
    starts inside the video's time span.)"""
    model = vlm.load(name)
    steps = []
    original = model.hf_model.generate

    def recording(**kwargs):  # what VideoLM.generate gets from transformers, plus the logits of every step
        out = original(**kwargs, return_dict_in_generate=True, output_logits=True)
        steps.append(torch.stack(out.logits, 1))
        return out.sequences

    monkeypatch.setattr(model.hf_model, "generate", recording)
    small = dict(min_pixels=model.processor.factor ** 2, total_pixels=10 ** 9)
    samples = [model.encode([long_video(model), "Describe."], **small),
               model.encode([long_video(model), "What happens in this long clip, in order?"], **small)]
    generated = model.generate(samples, max_new_tokens=5)
    for row, sample in enumerate(samples):
        answer, features = [], vision_cache.encode(model, model.collate([sample]))
        for step, logits in enumerate(steps[0][row]):
            grown = dataclasses.replace(sample, input_ids=sample.input_ids + answer,
                                        labels=sample.labels + [vlm.IGNORE] * len(answer),
                                        token_types=sample.token_types + [vlm.TEXT] * len(answer))
            with torch.no_grad(), vision_cache.reuse(model, features):
                full = model.hf_model(**model.model_inputs(model.collate([grown]), videos_once=True)).logits[0, -1]
            assert torch.allclose(logits, full, atol=2e-5), (row, step, (logits - full).abs().max())
            answer.append(int(full.argmax()))
            if answer[-1] in (model.ids["im_end"], model.ids["pad"]):
                break
        assert model.tokenizer.decode(answer, skip_special_tokens=True).strip() == generated[row]


# ---- generation and scoring -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny", "tiny-qwen2.5", "tiny-qwen3"])
def test_batched_generation_equals_one_at_a_time(name):
    model = vlm.load(name)
    clip = model.prepare(random_video(4, 64, 80, seed=1), **SMALL)  # two rows show it: stored and encoded once
    samples = [model.encode([clip, "Describe."]),
               model.encode([random_video(2, 96, 64, seed=2), "What happens in this clip?"], **SMALL),
               model.encode("Text only, no video at all."),
               model.encode(["Look:", clip, "What colour is it?"])]
    batched = model.generate(samples, max_new_tokens=12)
    singles = [model.generate([s], max_new_tokens=12)[0] for s in samples]
    assert batched == singles
    assert any(batched)


def test_sampling_is_seeded(tiny):
    sample = tiny.encode([random_video(), "Describe."], **SMALL)
    first = tiny.generate([sample], max_new_tokens=16, temperature=1.0, seed=3)
    assert first == tiny.generate([sample], max_new_tokens=16, temperature=1.0, seed=3)
    assert first != tiny.generate([sample], max_new_tokens=16, temperature=1.0, seed=4)


def test_response_logps_equal_hand_computation_from_full_logits(tiny):
    samples = [tiny.encode([random_video(seed=s), "Describe."], response=r, **SMALL)
               for s, r in [(1, "the scene is dark"), (2, "a person"), (3, "then the video ends with a clip")]]
    batch = tiny.collate(samples)
    logps, counts = tiny.response_logps(batch)
    with torch.no_grad():
        full = tiny.hf_model(**{k: v for k, v in batch.items() if k != "labels"}).logits.log_softmax(-1)
    for row, sample in enumerate(samples):
        expected = sum(full[row, p - 1, token] for p, (token, label) in enumerate(zip(sample.input_ids, sample.labels))
                       if label != vlm.IGNORE)
        assert torch.allclose(logps[row], expected, atol=1e-4)
        assert counts[row] == sum(label != vlm.IGNORE for label in sample.labels)
    logps.sum().backward()  # differentiable
    assert tiny.hf_model.lm_head.weight.grad is not None
    tiny.hf_model.zero_grad(set_to_none=True)


def test_score_options_scores_each_answer_as_alone_in_one_forward(tiny):
    prompt = [tiny.prepare(random_video(seed=1), **SMALL), "What happens?"]
    options = ["the scene is dark", "a person", "then the video ends with a clip"]
    sums, counts = tiny.score_options(prompt, options)
    assert not sums.requires_grad
    for option, total, count in zip(options, sums, counts):
        with torch.no_grad():
            alone, alone_count = tiny.response_logps(tiny.collate([tiny.encode(prompt, response=option)]))
        assert torch.allclose(total, alone[0], atol=1e-4) and count == alone_count[0]
    prompt_length = len(tiny.encode(prompt).input_ids)  # ends with the assistant header, as the scored rows do
    _, cut_counts = tiny.score_options(prompt, options, max_length=prompt_length + 2, truncation="right")
    assert cut_counts.tolist() == [2, 2, 2]
    with pytest.raises(vlm.TooLong, match=rf"question 7: \d+ tokens, over --max-length "
                                          rf"{prompt_length + 2} \(--truncation right cuts"):
        tiny.score_options(prompt, options, max_length=prompt_length + 2, where="question 7")  # ms-swift's delete
    for truncation in ("delete", "right"):
        with pytest.raises(vlm.TooLong, match="question 7: the prompt alone is"):
            tiny.score_options(prompt, options, max_length=prompt_length - 1, where="question 7",
                               truncation=truncation)


def test_selective_log_softmax_bf16_matches_float32():
    logits = torch.randn(2, 5, 300)
    index = torch.randint(0, 300, (2, 5))
    expected = logits.log_softmax(-1).gather(-1, index[..., None])[..., 0]
    got = vlm.selective_log_softmax(logits.bfloat16(), index)
    assert torch.allclose(got, logits.bfloat16().float().log_softmax(-1).gather(-1, index[..., None])[..., 0])
    assert torch.allclose(vlm.selective_log_softmax(logits, index), expected, atol=1e-5)


# ---- loading ----------------------------------------------------------------------------------------------------


def test_tiny_is_deterministic_per_seed():
    a, b, c = vlm.load("tiny", seed=0), vlm.load("tiny", seed=0), vlm.load("tiny", seed=1)
    assert torch.equal(a.hf_model.lm_head.weight, b.hf_model.lm_head.weight)
    assert not torch.equal(a.hf_model.lm_head.weight, c.hf_model.lm_head.weight)


@pytest.mark.parametrize("name", ["tiny", "tiny-qwen2.5", "tiny-qwen3"])
def test_save_and_load_round_trip(name, tmp_path):
    model = vlm.load(name)
    model.hf_model.save_pretrained(tmp_path)
    model.tokenizer.save_pretrained(tmp_path)
    again = vlm.load(str(tmp_path))
    assert again.family == model.family
    batch = model.collate([model.encode([random_video(), "Describe."], response="a clip", **SMALL)])
    assert torch.equal(model.response_logps(batch)[0], again.response_logps(batch)[0])


def test_unknown_model_name_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="model 'no-such-model' was not found"):
        vlm.load("no-such-model")


def test_flash_attention_without_its_package_is_a_clear_error():
    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed here")
    with pytest.raises(ValueError, match="flash_attention_2 needs the flash-attn package"):
        vlm.load("tiny", attn_implementation="flash_attention_2")


# ---- reading video ---------------------------------------------------------------------------------------------


def test_read_video_samples_at_fps_with_a_cap(clip_file):
    video = preprocess.read_video(clip_file, fps=2.0, max_frames=600)  # 40 frames at 10 fps = 4 s -> 8 frames
    assert video.frames.shape == (8, 64, 96, 3) and video.times[0] == 0.0 and video.fps == 2.0
    capped = preprocess.read_video(clip_file, fps=10.0, max_frames=6)
    assert len(capped.frames) == 6 and capped.fps == 1.5  # the rate actually sampled: 6 frames over 4 s
    assert len(preprocess.read_video(clip_file, fps=0.1).frames) == 4  # at least 4 frames


def test_read_frames_by_index(clip_file):
    video = preprocess.read_frames(clip_file, [25, 5])
    assert video.times == [2.5, 0.5] and video.frames.shape[0] == 2
    # frame 5 is in shot 1 (colour of frame 0), frame 25 in shot 3
    first = preprocess.read_frames(clip_file, [0]).frames[0]
    assert np.abs(video.frames[1, :, 40:].astype(int) - first[:, 40:]).mean() < 10
    with pytest.raises(ValueError, match="could not decode frame"):
        preprocess.read_frames(clip_file, [1000])


def bad_files(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("this is not a video\n")
    good = open(write_video(tmp_path / "good.mp4", scene_frames(2, 10)), "rb").read()
    (tmp_path / "truncated.mp4").write_bytes(good[:200])
    return {"missing.mp4": "no such file", "empty.mp4": "empty file", "text.mp4": "not a readable video",
            "audio.wav": "has no video stream", "truncated.mp4": "not a readable video"}


@pytest.mark.parametrize("name", ["missing.mp4", "empty.mp4", "text.mp4", "audio.wav", "truncated.mp4"])
def test_bad_video_files_raise_naming_the_file(name, tmp_path):
    expected = bad_files(tmp_path)
    write_audio_only(tmp_path / "audio.wav")
    path = str(tmp_path / name)
    with pytest.raises((ValueError, OSError), match=expected[name]) as info:
        preprocess.read_video(path)
    assert path in str(info.value)


# ---- the describe command ---------------------------------------------------------------------------------------


def run_cli(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, os.path.join(ROOT, "temple.py"), *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_describe_prints_a_description(clip_file):
    result = run_cli("describe", clip_file, "--model", "tiny", "--max-new-tokens", "8")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


@pytest.mark.parametrize("args,message", [
    (["missing.mp4"], "missing.mp4: no such file"),
    (["text.mp4"], "text.mp4: not a readable video"),
    (["audio.wav"], "audio.wav: has no video stream"),
    (["CLIP", "--model", "no-such-model"], "model 'no-such-model' was not found"),
])
def test_describe_bad_input_is_one_clear_line(args, message, tmp_path, clip_file):
    bad_files(tmp_path)
    write_audio_only(tmp_path / "audio.wav")
    args = [clip_file if a == "CLIP" else a for a in args]
    args[0] = args[0] if os.path.isabs(args[0]) else str(tmp_path / args[0])
    result = run_cli("describe", *args)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
