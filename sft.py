"""sft.py - instruction tuning (SFT) after the DPO curriculum: TEMPLE's "Pre-SFT alignment" order.

The released run (docs/method.md, "Instruction tuning") merges the last DPO stage (r=2) into the base model and then
fine-tunes on 60K LLaVA-Video-178K samples with a fresh LoRA (rank 32, alpha 32) on the language model *and* the
vision tower, lr 1e-4, warmup 0.05, 1 epoch, global batch 16. The loss is the NLL of the assistant tokens, divided
by the number of answer tokens in the accumulation window.

Data, JSON list or JSONL, either format:
    LLaVA-Video-178K: {"video": "rel/path.mp4", "conversations": [{"from": "human", "value": "<image>\\nQ"},
                                                                  {"from": "gpt", "value": "A"}, ...]}
    ms-swift:         {"messages": [{"role": "user", "content": "<video>Q"}, {"role": "assistant", ...}],
                       "videos": ["rel/path.mp4"]}
The <image> / <video> marker says where the video goes (at the start of the first user turn when absent); a record
without a video trains text-only (datafiles.read_conversations reads both). recipes.run_sft wires the run.

    python temple.py sft --data llava_video_60k.json --video-root /data/LLaVA-Video-178K --init runs/dpo_r2
    torchrun --nproc_per_node 8 temple.py sft --data ... --init runs/dpo_r2
"""

from dataclasses import dataclass

import examples
import vlm

MARKERS = ("<video>", "<image>")


def strip_markers(text):
    for marker in MARKERS:
        text = text.replace(marker, "")
    return text


def with_video(messages, video):
    """Put the video where the marker is (or at the start of the first user turn) and drop the markers."""
    out, placed = [], video is None
    for message in messages:
        text = message["content"]
        if message["role"] == "user" and not placed:
            marker = next((m for m in MARKERS if m in text), None)
            before, after = text.split(marker, 1) if marker else ("", text)
            parts = [before.strip(), video, strip_markers(after).strip()]
            content = [p for p in parts if not (isinstance(p, str) and p == "")]
            placed = True
        else:
            content = strip_markers(text)
        out.append({"role": message["role"], "content": content})
    return out


def encode_example(model, example, video_options, max_length, truncation="delete"):
    """One record as a Sample; an unreadable video or a record over --max-length (vlm.truncate) raises
    examples.BadItem: training uses another record in its place."""
    video = None if example["video"] is None else examples.prepared_video(model, example["video"], video_options)
    sample = model.encode_chat(with_video(example["messages"], video))
    return examples.truncated(sample, max_length, example["video"] or "a text-only record", truncation)


@dataclass
class ExampleEncoder:
    """encode(index) for the training loop; it holds the weightless vlm.Processor, never the model (it pickles to
    spawned workers)."""
    processor: object  # vlm.Processor
    examples: list
    video_options: dict
    max_length: int
    truncation: str = "delete"

    def __call__(self, index):
        return encode_example(self.processor, self.examples[index], self.video_options, self.max_length,
                              self.truncation)

    def where(self, index):
        """The record's file:line (or record number), for messages."""
        return self.examples[index]["where"]


def sft_step(model, module, samples):
    """Summed NLL of every assistant token of the micro-batch; train() divides it by the answer tokens of the whole
    accumulation window (answer_tokens), not by this micro-batch's, as the released run did (docs/stack.md, "SFT
    loss")."""
    batch = model.to_device(model.collate(samples))
    logps, counts = model.response_logps(batch, model=module)
    return -logps.sum(), {"tokens": counts.sum().item()}


def answer_tokens(samples):
    """The tokens the loss covers: labelled positions after the first (position p predicts token p + 1)."""
    return sum(sum(label != vlm.IGNORE for label in s.labels[1:]) for s in samples)


