"""demo.py - the whole TEMPLE pipeline in about 20 s on a CPU: the built-in random tiny model and videos made here.

    python temple.py demo --out demo

Nine stages, each the `temple.py` command a real run uses, with tiny settings (docs/method.md gives the method):
synthetic videos with cuts -> select -> captions -> pairs of all six kinds for r = 16, 8, 4, 2 -> the pair pages
-> the adaptive DPO curriculum (one video's pairs held out) -> SFT -> eval (colour-order questions, Vinoground-style
order pairs, preference accuracy) -> the training curves. Every file lands in the demo directory, with paths
relative to it, so the directory can be moved as a whole; a re-run skips what is done. The tiny model is random: its
text is gibberish and its scores mean nothing. The point is to see every file the real pipeline makes, and to read
each stage's output before running it on real videos.

Each video is five shots of one colour each (a camera drifting over a textured scene, hard cuts between shots), so
the data can carry questions with known answers: which colour comes first, last, right after another one.
"""

import functools
import os
import random

import av
import numpy as np
import torch
from PIL import Image

import datafiles
import perturb
import runs

COLOURS = {"red": (200, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 200), "yellow": (220, 200, 40),
                "purple": (130, 50, 160), "orange": (235, 130, 30), "white": (225, 225, 225), "grey": (110, 110, 110)}


def run(args, command):
    """`temple.py demo`; command(argv) runs a temple.py subcommand in this process."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model's matrices are so small that a second thread only adds waiting
    caller = os.getcwd()
    os.makedirs(args.out, exist_ok=True)
    os.chdir(args.out)  # every path the demo records is relative to its own directory: it can be moved as a whole
    try:
        stages(args, command)
    finally:
        os.chdir(caller)
        torch.set_num_threads(threads)


def stages(args, command):
    """The stages, run inside the demo's directory; messages show paths as seen from where the demo was started."""
    data, runs_dir = "data", "runs"
    model = ["--model", args.model]
    video = ["--fps", "2", "--max-frames", "8", "--total-pixels", str(8 * 56 * 56)]  # 4 tokens per 2 frames
    make_data(args, data, model, command)
    stage(6, f"curriculum: DPO r = 16, 8, 4, 2, at most {args.steps} steps each, one video held out of every stage: "
             f"an adaptive stage ends early once its pairs' accuracy stops improving", f"{runs_dir}/dpo_r*")
    training = [*model, *video, "--runs", runs_dir, "--max-steps", str(args.steps), "--global-batch", "2",
                "--workers", "0", "--lr", "1e-3", "--save-every", "1000"]
    command(["curriculum", "--data-dir", data, *training, "--heldout", "1", "--eval-every", "1", "--adaptive",
             "--plateau-evals", "2"])
    stage(7, "sft: instruction tuning on top of dpo_r2", f"{runs_dir}/sft")
    if runs.finished(f"{runs_dir}/sft"):
        print(f"{runs_dir}/sft is finished, skipped")
    else:
        resume = ["--resume"] if os.path.isdir(f"{runs_dir}/sft") else []
        command(["sft", "--data", f"{data}/sft.jsonl", "--init", f"{runs_dir}/dpo_r2", *training, *resume])
    stage(8, "eval: colour-order questions, Vinoground-style order pairs (base, dpo_r2, sft), what DPO learned",
          "eval_*.json")
    # the whole pairs files, the held-out video's pairs among them: too few videos to hold out more
    pairs = ["--pairs", *(f"{data}/pairs_r{r}.jsonl" for r in (16, 8, 4, 2))]
    for name, spec in (("base", model), ("dpo_r2", ["--run", f"{runs_dir}/dpo_r2", *pairs]),
                       ("sft", ["--run", f"{runs_dir}/sft"])):
        report = f"eval_{name}.json"
        if os.path.exists(report):
            print(f"{os.path.join(args.out, report)} exists, skipped")
        else:
            command(["eval", *spec, "--mcq", f"{data}/mcq.jsonl", "--vinoground", f"{data}/vinoground.jsonl",
                     "--out", report, *video])
    stage(9, "plot: training curves of the stages end to end", f"{runs_dir}/curves.png")
    command(["plot", *(f"{runs_dir}/{name}" for name in ("dpo_r16", "dpo_r8", "dpo_r4", "dpo_r2", "sft")),
                 "--out", f"{runs_dir}/curves.png"])
    shown = functools.partial(os.path.join, args.out)
    print(f"\ndone. Open {shown(data, 'pairs_r16.html')} and {shown(runs_dir, 'curves.png')}; the reports are "
          f"{shown('eval_*.json')}")


def make_data(args, data, model, command):
    """Stages 1-5: videos, selection, captions, pairs for every r, their HTML pages."""
    videos = "videos"
    stage(1, "synthetic videos with cuts, questions about them, clips in two orders", videos)
    write_data(videos, data, args.videos)
    write_order_pairs("vinoground", data)
    stage(2, "select: shots, clips, keyframes", f"{data}/videos.jsonl")
    command(["select", videos, "--out", data])
    keyframes = ["--max-pixels", str(56 * 56), "--min-pixels", str(28 * 28), "--batch-size", "16"]
    stage(3, "captions: every clip captioned by the model", f"{data}/captions.jsonl")
    command(["captions", "--videos", f"{data}/videos.jsonl", *model, *keyframes, "--max-new-tokens", "16"])
    stage(4, "pairs: clean vs perturbed descriptions (all six kinds), filtered, for every r", f"{data}/pairs_r*.jsonl")
    command(["pairs", "--captions", f"{data}/captions.jsonl", *model, *keyframes, "--max-new-tokens", "48",
             "--kinds", *perturb.ALL_KINDS])
    for r in (16, 8, 4, 2):
        if not datafiles.read_jsonl(f"{data}/pairs_r{r}.jsonl"):
            raise ValueError(f"{data}/pairs_r{r}.jsonl: the filters kept no pair; run the demo with more --videos")
    stage(5, "view: an HTML page per pairs file", f"{data}/pairs_r*.html")
    for r in (16, 8, 4, 2):
        command(["view", f"{data}/pairs_r{r}.jsonl", "--thumb-height", "40"])


def stage(number, what, where):
    print(f"\n== {number}/9 {what} -> {where} (in the demo directory)", flush=True)


def colours_of(seed):
    """The five colours of video `seed`, all different so every cut changes the picture."""
    return random.Random(seed).sample(sorted(COLOURS), 5)


def write_video(path, colours, seed, frames_per_shot=12, fps=8, height=48, width=64):
    """One shot per colour: a camera drifting over a textured scene of that colour, hard cuts between shots."""
    rng = np.random.default_rng(seed)
    partial = path + ".part"  # renamed when complete: an interrupted demo never reuses half a video
    with av.open(partial, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for colour in colours:
            blotches = Image.fromarray(rng.normal(0, 25, (3, 4)).astype(np.float32), mode="F")
            shading = np.asarray(blotches.resize((2 * width, 2 * height), Image.BICUBIC))[..., None]
            grain = rng.normal(0, 10, (2 * height, 2 * width, 3))
            scene = np.clip(np.array(COLOURS[colour]) + shading + grain, 0, 255).astype(np.uint8)
            dy, dx = rng.integers(1, 3, size=2)  # the camera's drift in pixels per frame
            for k in range(frames_per_shot):
                frame = np.ascontiguousarray(scene[k * dy:k * dy + height, k * dx:k * dx + width])
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    os.replace(partial, path)


def write_data(videos_dir, data_dir, count):
    """Videos demo_{k}.mp4 with cuts (select keeps them) and one_shot.mp4 (select rejects it); what we know about
    them becomes data: mcq.jsonl (which colour comes first, last, right after another) and sft.jsonl (the colours
    in order). Videos already there are kept."""
    os.makedirs(videos_dir, exist_ok=True)
    questions, conversations = [], []
    for k in range(count):
        path, colours = os.path.join(videos_dir, f"demo_{k}.mp4"), colours_of(k)
        if not os.path.exists(path):
            write_video(path, colours, seed=k)
        questions += questions_about(path, colours, k)
        conversations.append({"video": path, "conversations": [
            {"from": "human", "value": "<video>\nWhich colours does the video show, in order?"},
            {"from": "gpt", "value": ", then ".join(colours).capitalize() + "."}]})
    one_shot = os.path.join(videos_dir, "one_shot.mp4")
    if not os.path.exists(one_shot):
        write_video(one_shot, ["blue"], seed=count, frames_per_shot=40)
    datafiles.write_jsonl(os.path.join(data_dir, "mcq.jsonl"), questions)
    datafiles.write_jsonl(os.path.join(data_dir, "sft.jsonl"), conversations)
    print(f"{videos_dir}: {count} videos of 5 shots and one single-shot video\n"
          f"{data_dir}/mcq.jsonl: {len(questions)} questions, {data_dir}/sft.jsonl: {len(conversations)} conversations")


def write_order_pairs(videos_dir, data_dir, count=2):
    """Vinoground-style items (evaluate.py): two clips showing the same two colours in opposite orders, each with the
    caption of its own order; data/vinoground.jsonl lists them."""
    os.makedirs(videos_dir, exist_ok=True)
    items = []
    for k in range(count):
        first, second = colours_of(100 + k)[:2]
        paths = []
        for order in ((first, second), (second, first)):
            path = os.path.join(videos_dir, f"order_{k}_{order[0]}_{order[1]}.mp4")
            if not os.path.exists(path):
                write_video(path, list(order), seed=100 + k)
            paths.append(path)
        items.append({"pos_video": paths[0], "pos_caption": f"A {first} scene, then a {second} one.",
                      "neg_video": paths[1], "neg_caption": f"A {second} scene, then a {first} one.",
                      "category": "colour order"})
    datafiles.write_jsonl(os.path.join(data_dir, "vinoground.jsonl"), items)
    print(f"{videos_dir}: {2 * count} clips of two colours, {data_dir}/vinoground.jsonl: {count} items")


def questions_about(path, colours, seed):
    rng = random.Random(seed)
    asks = [("first", "Which colour fills the screen first?", colours[0]),
            ("last", "Which colour fills the screen last?", colours[-1]),
            ("after", f"Which colour comes right after {colours[1]}?", colours[2])]
    questions = []
    for category, question, answer in asks:
        options = rng.sample([c for c in colours if c != answer], 3) + [answer]  # distractors from the same video
        rng.shuffle(options)
        questions.append({"video": path, "question": question, "options": options, "answer": answer,
                          "category": category})
    return questions
