"""vlm.py - Qwen2-VL, Qwen2.5-VL and Qwen3-VL as one video-LLM interface: everything model-specific is here.

The rest of the project never touches a processor, a chat template or a token id; it asks this module to
    load a model          model = load("Qwen/Qwen2.5-VL-7B-Instruct" | "runs/merged" | "tiny" | "tiny-qwen3")
    encode a sample       model.encode([video, "Describe the video."], response="The video opens ...")
    batch samples         model.collate(samples, padding="right")      (left for generation)
    generate              model.generate(samples, max_new_tokens=..., temperature=..., seeds=[one per row])
    score responses       model.response_logps(batch)   -> summed log p(response | prompt, video) per row
    score answers         model.score_options([video, question], options)   -> summed log p and length per option

How the families differ is one table (FAMILIES): normalisation, the default system prompt, Qwen3-VL's
"<t seconds>" text before every temporal patch, Qwen2.5-VL's time between patches in its rotary positions. A
VideoLM is a transformers model (`hf_model`) and its Processor, the weightless half that turns videos and
conversations into model inputs (patch sizes, tokenizer, token ids, positions): data-loader workers get the
processor alone. Videos become patches in preprocess.py, positions come from mrope.py, and a video shown in
several rows of a batch goes through the vision tower once (vision_cache.py). The video settings of the released
run are in docs/method.md, "Training"; where this differs from transformers, "Where this implementation differs".

    python temple.py describe VIDEO --model tiny
"""

import importlib.util
import uuid
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import LogitsProcessorList

import hub
import mrope
import preprocess
import tiny
import vision_cache

IGNORE = -100  # label of tokens the loss skips (prompt, video, padding)


# ----------------------------------------------------------------------------------------------------------------
# Model families: the only place that knows how Qwen2-VL, Qwen2.5-VL and Qwen3-VL differ

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Family:
    model_type: str
    mean: tuple
    std: tuple
    system_prompt: str | None  # the chat template's default system message
    processor_class: str  # transformers' processor and video processor of the family, as checkpoints name them
    video_processor_class: str
    frame_timestamps: bool = False  # Qwen3-VL: "<1.5 seconds>" before every temporal patch
    seconds_per_grid: bool = False  # Qwen2.5-VL: time between temporal patches feeds M-RoPE


FAMILIES = {
    "qwen2_vl": Family("qwen2_vl", CLIP_MEAN, CLIP_STD, "You are a helpful assistant.", "Qwen2VLProcessor",
                       "Qwen2VLVideoProcessor"),
    "qwen2_5_vl": Family("qwen2_5_vl", CLIP_MEAN, CLIP_STD, "You are a helpful assistant.", "Qwen2_5_VLProcessor",
                         "Qwen2VLVideoProcessor", seconds_per_grid=True),
    "qwen3_vl": Family("qwen3_vl", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), None, "Qwen3VLProcessor", "Qwen3VLVideoProcessor",
                       frame_timestamps=True),
}
# The projector from vision to language features (ms-swift's "aligner"); the released SFT puts LoRA on the ViT
# but leaves this frozen. A full-match regex over module paths, as lora.apply_lora's `exclude` takes it.
ALIGNER = r".*\.visual\.(merger|deepstack_merger_list)\..*"
TINY_MODELS = tiny.TINY_MODELS  # built-in: tiny.py
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]
TEXT, IMAGE, VIDEO = mrope.TEXT, mrope.IMAGE, mrope.VIDEO  # mm_token_type_ids values


# ----------------------------------------------------------------------------------------------------------------
# Loading


def default_device():
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def load(name, device=None, dtype=None, attn_implementation="sdpa", seed=0):
    """A model by built-in name (tiny.py), local directory or hub id (hub.load_pretrained: the local Hugging Face
    cache first, the hub when it answers). attn_implementation: sdpa, eager or flash_attention_2."""
    if attn_implementation == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise ValueError("attention flash_attention_2 needs the flash-attn package (pip install flash-attn); "
                         "sdpa needs nothing")
    device = torch.device(device) if device else default_device()
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    if name in TINY_MODELS:
        model, tokenizer = tiny.build(name, seed)
        model.config._attn_implementation = attn_implementation
    else:
        model, tokenizer = hub.load_pretrained(name, dtype, attn_implementation)
    if model.config.model_type not in FAMILIES:
        raise ValueError(f"model '{name}' is a {model.config.model_type}; supported: {', '.join(FAMILIES)}")
    return VideoLM(model.to(device=device, dtype=dtype).eval(), tokenizer, name)


# ----------------------------------------------------------------------------------------------------------------
# The interface


@dataclass
class Prepared:
    """A video already resized and patchified: encode it into several prompts without redoing the work. Samples made
    from one Prepared share its `key`, so a batch stores its pixels once and the vision tower encodes them once."""
    pixels: np.ndarray
    grid: tuple
    times: list  # of every frame, in seconds (Qwen3-VL's timestamps)
    seconds_per_grid: float  # time covered by one temporal patch (Qwen2.5-VL's M-RoPE time step)
    key: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass
class Sample:
    """One encoded conversation: token ids, labels (IGNORE outside responses) and its videos' patches."""
    input_ids: list
    labels: list
    token_types: list
    pixels: list = field(default_factory=list)  # one float32 array per video
    grids: list = field(default_factory=list)  # (t, h, w) per video
    video_keys: list = field(default_factory=list)  # Prepared.key per video
    blocks: list = field(default_factory=list)  # (times, rows, cols) per vision block, for mrope.positions

    def positions(self):
        return mrope.positions(self.token_types, self.blocks)


class TooLong(ValueError):
    """A sample over --max-length that truncate() may not cut: training leaves the example out (examples.BadItem)."""


TRUNCATION = ("delete", "right")  # ms-swift's truncation_strategy names; "delete" is its default


def truncate(sample, max_length, where, strategy="delete"):
    """Fit a Sample into max_length tokens as ms-swift's truncation_strategy does. "delete" (its default, so the
    released run's) refuses a longer sample: TooLong, and training leaves the example out. "right" cuts the end of
    the answer; a prompt longer on its own is TooLong either way. `where` names the record in the error."""
    if len(sample.input_ids) <= max_length:
        return sample
    first_answer_token = next((i for i, label in enumerate(sample.labels) if label != IGNORE), len(sample.labels))
    if first_answer_token >= max_length:
        raise TooLong(f"{where}: the prompt alone is {first_answer_token} tokens, over --max-length {max_length}; "
                      f"lower --fps / --max-frames / --total-pixels or raise --max-length")
    if strategy == "delete":
        raise TooLong(f"{where}: {len(sample.input_ids)} tokens, over --max-length {max_length} (--truncation right "
                      f"cuts the answer instead of leaving the example out)")
    sample.input_ids, sample.labels, sample.token_types = (
        x[:max_length] for x in (sample.input_ids, sample.labels, sample.token_types))
    return sample


def patch_seconds(times, temporal_patch):
    """Qwen3-VL's timestamp of each temporal patch: the mean time of its first and last frame, the last frame repeated
    to fill the last patch (what its processor computes from frame indices / the file's fps)."""
    times = list(times) + [times[-1]] * (-len(times) % temporal_patch)
    return [(times[k] + times[k + temporal_patch - 1]) / 2 for k in range(0, len(times), temporal_patch)]


class Processor:
    """The half of a VideoLM that turns videos and conversations into model inputs: the family, the patch sizes, the
    tokenizer and its special-token ids. It holds no weights, so it travels cheaply to data-loader workers."""

    def __init__(self, config, tokenizer):
        self.tokenizer = tokenizer
        self.family = FAMILIES[config.model_type]
        vision = config.vision_config
        self.patch, self.merge = vision.patch_size, vision.spatial_merge_size
        self.temporal_patch = vision.temporal_patch_size
        self.tokens_per_second = getattr(vision, "tokens_per_second", None)  # Qwen2.5-VL's M-RoPE time scale
        self.factor = self.patch * self.merge
        self.min_pixels, self.max_pixels = 4 * self.factor ** 2, 768 * self.factor ** 2  # qwen_vl_utils defaults
        ids = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)
        self.ids = dict(zip(["pad", "im_start", "im_end", "vision_start", "vision_end", "image", "video"], ids))

    def preprocess(self, video, total_pixels=9_000_000, min_pixels=None, max_pixels=None):
        """A preprocess.Video (or (T, H, W, 3) array) -> (patches, grid (t, h, w)). Decoded video (a preprocess.Video
        that knows its sampling rate) is resized as qwen_vl_utils resizes video, a list of frames as it resizes
        images (preprocess.resize_video and preprocess.resize_frames)."""
        frames = video.frames if isinstance(video, preprocess.Video) else np.asarray(video)
        min_pixels = min_pixels or self.min_pixels
        limit = preprocess.frame_max_pixels(len(frames), total_pixels, min_pixels, max_pixels or self.max_pixels)
        height, width = preprocess.smart_resize(frames.shape[1], frames.shape[2], self.factor, min_pixels, limit)
        decoded = isinstance(video, preprocess.Video) and video.fps is not None
        resize = preprocess.resize_video if decoded else preprocess.resize_frames
        return preprocess.patchify(resize(frames, height, width), self.family.mean, self.family.std,
                                   self.patch, self.merge, self.temporal_patch)

    def prepare(self, video, **pixel_options):
        """Preprocess once, encode many times (e.g. the chosen and the rejected answer of one DPO pair)."""
        pixels, grid = self.preprocess(video, **pixel_options)
        times = list(video.times) if isinstance(video, preprocess.Video) else list(range(grid[0] * self.temporal_patch))
        fps = video.fps if isinstance(video, preprocess.Video) and video.fps else preprocess.FRAME_LIST_FPS
        return Prepared(pixels, grid, times, seconds_per_grid=self.temporal_patch / fps)

    def encode(self, prompt, response=None, system=None, **pixel_options):
        """One user turn (a string or a list of strings and Videos) and optionally the assistant's answer."""
        messages = [{"role": "user", "content": prompt}]
        if response is not None:
            messages.append({"role": "assistant", "content": response})
        return self.encode_chat(messages, system=system, **pixel_options)

    def encode_chat(self, messages, system=None, **pixel_options):
        """A conversation; labels cover every assistant turn (its text and <|im_end|>). A conversation ending on a
        user turn gets the generation prompt "<|im_start|>assistant\\n" appended."""
        sample = Sample([], [], [])
        system = system if system is not None else self.family.system_prompt
        if system is not None and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": system}] + list(messages)
        for message in messages:
            role, content = message["role"], message["content"]
            self._add(sample, [self.ids["im_start"]] + self._text_ids(role + "\n"))
            if role == "assistant":
                self._add(sample, self._text_ids(content) + [self.ids["im_end"]], learn=True)
                self._add(sample, self._text_ids("\n"))
                continue
            for part in [content] if isinstance(content, str) else content:
                if isinstance(part, str):
                    self._add(sample, self._text_ids(part))
                else:
                    self._add_video(sample, part, **pixel_options)
            self._add(sample, [self.ids["im_end"]] + self._text_ids("\n"))
        if messages[-1]["role"] != "assistant":
            self._add(sample, [self.ids["im_start"]] + self._text_ids("assistant\n"))
        return sample

    def _text_ids(self, text):
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []

    def _add(self, sample, ids, learn=False, token_type=TEXT):
        sample.input_ids += ids
        sample.labels += ids if learn else [IGNORE] * len(ids)
        sample.token_types += [token_type] * len(ids)

    def _add_video(self, sample, video, **pixel_options):
        prepared = video if isinstance(video, Prepared) else self.prepare(video, **pixel_options)
        t, h, w = prepared.grid
        rows, cols = h // self.merge, w // self.merge
        sample.pixels.append(prepared.pixels)
        sample.grids.append(prepared.grid)
        sample.video_keys.append(prepared.key)
        start, pads, end = [self.ids["vision_start"]], [self.ids["video"]] * (rows * cols), [self.ids["vision_end"]]
        if not self.family.frame_timestamps:
            self._add(sample, start)
            self._add(sample, pads * t, token_type=VIDEO)
            sample.blocks.append((self.time_steps(prepared), rows, cols))
            self._add(sample, end)
            return
        # Qwen3-VL: every temporal patch is its own block "<t seconds><|vision_start|>...<|vision_end|>" at time step 0;
        # the timestamps, as text, carry the time; the blocks replace the template's whole start/pad/end
        # (docs/stack.md, "Qwen3-VL timestamps").
        for seconds in patch_seconds(prepared.times, self.temporal_patch):
            self._add(sample, self._text_ids(f"<{seconds:.1f} seconds>") + start)
            self._add(sample, pads, token_type=VIDEO)
            sample.blocks.append(([0], rows, cols))
            self._add(sample, end)

    def time_steps(self, prepared):
        """The M-RoPE time index of each temporal patch of a video. Qwen2-VL: 0, 1, 2, ... Qwen2.5-VL: the patch's
        start in ticks of 1 / tokens_per_second seconds, k * seconds_per_grid * tokens_per_second, multiplied in
        float32 as Qwen's code did with the processor's float32 seconds_per_grid and rounded down only at the end
        (docs/stack.md, "Seconds per patch")."""
        steps = torch.arange(prepared.grid[0], dtype=torch.float32)
        if self.family.seconds_per_grid:
            seconds = torch.tensor(prepared.seconds_per_grid, dtype=torch.float32)
            steps = steps * seconds * self.tokens_per_second
        return steps.long().tolist()

    # -- batching ------------------------------------------------------------------------------------------------

    def collate(self, samples, padding="right"):
        """Pad to one tensor batch: right padding for training, left padding for generation.

        The batch holds the model's inputs with our position_ids (3, B, L) (padding gets 0; it is masked), and each
        distinct video (Prepared.key) once in pixel_values_videos / video_grid_thw. When one video is shown in several
        places (both rows of a DPO pair, the options of a question), `video_slots` says for every video of the batch,
        in order, which stored one it is: such a batch goes to the model through model_inputs().
        """
        length = max(len(s.input_ids) for s in samples)

        def span(row_length):  # the columns a row of this length fills
            return slice(0, row_length) if padding == "right" else slice(length - row_length, length)

        def pad(rows, value):
            out = torch.full((len(rows), length), value, dtype=torch.long)
            for i, row in enumerate(rows):
                out[i, span(len(row))] = torch.tensor(row, dtype=torch.long)
            return out

        positions = torch.zeros((3, len(samples), length), dtype=torch.long)
        for i, sample in enumerate(samples):
            positions[:, i, span(len(sample.input_ids))] = torch.from_numpy(sample.positions())
        batch = {"input_ids": pad([s.input_ids for s in samples], self.ids["pad"]),
                 "attention_mask": pad([[1] * len(s.input_ids) for s in samples], 0),
                 "labels": pad([s.labels for s in samples], IGNORE),
                 "mm_token_type_ids": pad([s.token_types for s in samples], TEXT),
                 "position_ids": positions}
        stored = {}  # key -> (index, pixels, grid) of every distinct video, in order of first appearance
        for sample in samples:
            for key, pixels, grid in zip(sample.video_keys, sample.pixels, sample.grids):
                stored.setdefault(key, (len(stored), pixels, grid))
        if stored:
            batch["pixel_values_videos"] = torch.from_numpy(np.concatenate([p for _, p, _ in stored.values()]))
            batch["video_grid_thw"] = torch.tensor([g for _, _, g in stored.values()], dtype=torch.long)
            slots = [stored[key][0] for sample in samples for key in sample.video_keys]
            if len(slots) > len(stored):
                batch["video_slots"] = torch.tensor(slots)
        return batch


class VideoLM:
    """A loaded model and its Processor; see the module docstring for the tour."""

    def __init__(self, hf_model, tokenizer, name=""):
        self.hf_model, self.tokenizer, self.name = hf_model, tokenizer, name
        self.shared_vision = None  # (batch, features) inside vision_cache.shared()
        self.processor = Processor(hf_model.config, tokenizer)
        self.family, self.ids, self.merge = self.processor.family, self.processor.ids, self.processor.merge

    # encoding and batching are the processor's
    def prepare(self, video, **pixel_options):
        return self.processor.prepare(video, **pixel_options)

    def encode(self, prompt, response=None, system=None, **pixel_options):
        return self.processor.encode(prompt, response, system, **pixel_options)

    def encode_chat(self, messages, system=None, **pixel_options):
        return self.processor.encode_chat(messages, system, **pixel_options)

    def collate(self, samples, padding="right"):
        return self.processor.collate(samples, padding)

    @property
    def device(self):
        return next(self.hf_model.parameters()).device

    @property
    def vision_tower(self):
        """The ViT and its merger (transformers calls it `visual`)."""
        return self.hf_model.model.visual

    def to_device(self, batch):
        dtype = next(self.hf_model.parameters()).dtype
        return {k: v.to(self.device, dtype=dtype if v.is_floating_point() and k == "pixel_values_videos" else None)
                for k, v in batch.items()}

    def model_inputs(self, batch, videos_once=False):
        """The transformers model's keyword arguments for a collated batch, our position_ids among them. A video the
        batch shows in several rows is passed once per row, as the model's own forward expects, or with `videos_once`
        once in all (for vision_cache.forward_inputs, which hands the tower's features to every row)."""
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "mm_token_type_ids", "position_ids")}
        if "pixel_values_videos" in batch:
            pixels, grids, slots = batch["pixel_values_videos"], batch["video_grid_thw"], batch.get("video_slots")
            if slots is not None and not videos_once:
                pixels = pixels[vision_cache.slot_rows(grids.prod(-1), slots).to(pixels.device)]
            inputs["pixel_values_videos"] = pixels
            inputs["video_grid_thw"] = grids if slots is None else grids[slots]
        return inputs

    # -- generation ----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, samples, max_new_tokens=256, temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0,
                 seed=0, seeds=None):
        """Answers for prompts encoded without a response; greedy when temperature is 0, else sampled with `seed`, or
        with one seed per row (`seeds`): then a row's text depends on its own seed alone, not on the batch it is in.
        Sampling keeps the top_k likeliest tokens (0: all) and of those the smallest set of mass top_p; the
        checkpoint's generation_config never fills these in here (captions.sample_filters reads it for the caller).

        The prompt's positions are ours; generate extends position_ids by one per new token on all three axes, so the
        answer continues at the prompt's last position + 1, as when it was trained (docs/stack.md, "M-RoPE
        positions"). Left padding keeps every row's last prompt token in the last column."""
        batch = self.to_device(self.collate(samples, padding="left"))
        if temperature > 0 and seeds is not None:  # RowSampler picks each row's token; greedy decoding takes it
            processors = LogitsProcessorList([RowSampler(seeds, temperature, top_k, top_p, self.device)])
            sampling = dict(do_sample=False, temperature=None, top_p=None, top_k=None, logits_processor=processors)
        elif temperature > 0:
            sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k)
        else:
            sampling = dict(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []), \
                vision_cache.forward_inputs(self, batch) as inputs:  # a clip in several rows: one tower pass
            torch.manual_seed(seed)
            out = self.hf_model.generate(**inputs, max_new_tokens=max_new_tokens, repetition_penalty=repetition_penalty,
                                         eos_token_id=[self.ids["im_end"], self.ids["pad"]],
                                         pad_token_id=self.ids["pad"], **sampling)
        new_tokens = out[:, batch["input_ids"].shape[1]:]
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in new_tokens]

    # -- scoring -------------------------------------------------------------------------------------------------

    def response_logps(self, batch, model=None):
        """Summed log-probability of each row's labelled tokens, and their count.

        Logits are computed only at the positions that predict a label (the union over the batch), never for the
        whole sequence x vocabulary: with a 151k vocabulary that is most of the memory of a DPO step.
        `model` overrides self.hf_model (e.g. the DDP-wrapped module, so its gradient hooks run).
        """
        model = model or self.hf_model
        targets = batch["labels"][:, 1:]
        mask = targets != IGNORE
        positions = mask.any(0).nonzero().squeeze(1)  # position p predicts token p + 1
        with vision_cache.forward_inputs(self, batch) as inputs:
            logits = model(**inputs, logits_to_keep=positions, use_cache=False).logits
        targets, mask = targets[:, positions], mask[:, positions]
        token_logps = selective_log_softmax(logits, targets.clamp(min=0))
        return (token_logps * mask).sum(-1), mask.sum(-1)

    def score_options(self, prompt, options, max_length=None, where="a prompt", truncation="delete"):
        """How likely each candidate answer is after one prompt (multiple-choice QA): summed log p(option | prompt)
        and the option's token count, as tensors, from one forward over all options without gradient.

        `prompt` is a user turn as encode() takes it; a Prepared video in it is preprocessed once and encoded by the
        vision tower once for all options. The answer's closing <|im_end|> counts too: an option must end the answer.
        With max_length, each row goes through truncate() (TooLong names `where`).
        """
        samples = [self.encode(prompt, response=option) for option in options]
        if max_length is not None:
            samples = [truncate(sample, max_length, where, truncation) for sample in samples]
        with torch.no_grad():
            return self.response_logps(self.to_device(self.collate(samples)))


class RowSampler:
    """A logits processor that samples every row with its own torch.Generator and returns a one-hot choice, which
    greedy decoding then takes. A row's text then depends on its seed alone, not on the batch it was in."""

    def __init__(self, seeds, temperature, top_k, top_p, device):
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.generators = [torch.Generator(device).manual_seed(s) for s in seeds]

    def __call__(self, input_ids, scores):
        scores = scores.float() / self.temperature  # transformers' order: temperature, top_k, top_p
        if 0 < self.top_k < scores.shape[-1]:
            kth = scores.topk(self.top_k, dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        if self.top_p < 1.0:  # nucleus: the smallest set of tokens whose mass reaches top_p
            sorted_probs, index = probs.sort(dim=-1, descending=True)
            outside = sorted_probs.cumsum(-1) - sorted_probs >= self.top_p
            probs = probs.scatter(-1, index, sorted_probs.masked_fill(outside, 0.0))
        picks = torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, self.generators)])
        return torch.full_like(scores, float("-inf")).scatter(-1, picks[:, None], 0.0)


def selective_log_softmax(logits, index):
    """log_softmax(logits)[..., index] without materialising a float32 copy of all logits at once."""
    if logits.dtype == torch.float32:
        return logits.gather(-1, index.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    rows = [row.float().log_softmax(-1).gather(-1, i.unsqueeze(-1)).squeeze(-1) for row, i in zip(logits, index)]
    return torch.stack(rows)
