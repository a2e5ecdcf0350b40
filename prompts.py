"""prompts.py - every prompt the data pipeline gives the model, in one JSON-able dict, and reading a user's own.

The wording is ours (docs/method.md, "Captions, descriptions, pairs", lists where it differs from the released
code's); a user reproducing the released data gives its prompts instead:

    python temple.py prompts > my_prompts.json        # edit the strings
    python temple.py captions --prompts my_prompts.json ...
    python temple.py pairs --prompts my_prompts.json ...

Markers the code fills in, as the released code writes them: <vid> where a video goes (a clip's two keyframes),
{captions} for the list of clip captions, {i} and {caption} in each line of that list. Standard library only.
"""

import json

VIDEO = "<vid>"  # the released code's marker: the prompt is split there and the videos go in between

PROMPTS = {
    # A. clip captions: the first clip alone, every later clip after the one before it
    "caption_first_clip": (
        "<vid>Describe this video clip in detail: the place, the people and objects in it, and what they do. Answer "
        "in a single paragraph."),
    "caption_with_context": (
        "Here are two consecutive clips from the same video.\nVideo clip 1:<vid>\nVideo clip 2:<vid>\nFirst, "
        "describe video clip 2 in detail. Then analyse how video clip 2 may connect to video clip 1: the same "
        "people, objects or place, an action that continues or follows. Finally, write a detailed caption for video "
        "clip 2 that uses this context, as the last line of your answer, starting with \"Caption:\"."),
    # B. descriptions: the clean and every perturbed caption list through the same prompt (text only)
    "description": (
        "You will be given a list of captions. Each describes one clip, and the clips were extracted one after "
        "another from a single video. Write a detailed caption of the entire video that describes its events in "
        "chronological order. Make it fluent and coherent, do not repeat yourself, include as many details as "
        "possible, and answer directly in a single paragraph.\n\n{captions}"),
    "description_caption_line": "- Caption {i}: {caption}",
    # B, `pairs --perturb-input frames`: the keyframes themselves, clean or perturbed, as one video
    "description_frames": (
        "<vid>Describe this video in detail, telling its events in chronological order. Include as many details as "
        "possible and answer directly in a single paragraph."),
    # C. the user turn of a DPO pair: one drawn at random per pair
    "instructions": [
        "Describe the video in detail.",
        "Describe the sequence of events in this video in chronological order.",
        "Walk me through what happens in the video, from beginning to end.",
        "Give a detailed account of how the events in this video unfold over time.",
        "Describe the main actions in the video in the order in which they happen.",
        "Provide a detailed description of the video that follows the progression of its events.",
    ],
}

# What each prompt must contain, and how often: the code fills these in
MARKERS = {
    "caption_first_clip": {VIDEO: 1},
    "caption_with_context": {VIDEO: 2},
    "description": {"{captions}": 1},
    "description_caption_line": {"{i}": 1, "{caption}": 1},
    "description_frames": {VIDEO: 1},
}
CAPTION_KEYS = ("caption_first_clip", "caption_with_context")  # what `captions` uses (and records)


def check(prompts, where="prompts"):
    """The prompts if they are whole and right; else a ValueError naming the key and what is wrong with it."""
    if not isinstance(prompts, dict):
        raise ValueError(f"{where}: expected a JSON object of prompts, as `temple.py prompts` prints")
    for key in prompts:
        if key not in PROMPTS:
            raise ValueError(f"{where}: unknown key \"{key}\" (the keys: {', '.join(PROMPTS)})")
    for key in PROMPTS:
        if key not in prompts:
            raise ValueError(f"{where}: missing key \"{key}\" (`temple.py prompts` prints them all)")
    instructions = prompts["instructions"]
    if not (isinstance(instructions, list) and instructions and
            all(isinstance(i, str) and i.strip() for i in instructions)):
        raise ValueError(f"{where}: \"instructions\" must be a list of one or more texts")
    for key, markers in MARKERS.items():
        if not isinstance(prompts[key], str):
            raise ValueError(f"{where}: \"{key}\" must be a text, got {type(prompts[key]).__name__}")
        for marker, count in markers.items():
            if prompts[key].count(marker) != count:
                times = "once" if count == 1 else f"{count} times"
                raise ValueError(f"{where}: \"{key}\" must contain {marker} {times} (found {prompts[key].count(marker)})")
    return prompts


def read(path=None):
    """The prompts of a JSON file (checked), or ours when path is None."""
    if path is None:
        return PROMPTS
    try:
        with open(path, encoding="utf-8") as f:
            prompts = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file (`temple.py prompts > {path}` writes ours to edit)") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    return check(prompts, path)


def with_videos(prompt, videos):
    """A prompt's text with the videos put where its markers are: [text, video, text, ...], what the model's
    encode() takes (empty texts give no tokens)."""
    texts = prompt.split(VIDEO)
    parts = [texts[0]]
    for video, text in zip(videos, texts[1:]):
        parts += [video, text]
    return parts


def description(prompts, captions):
    """The description prompt for a list of clip captions, numbered 1..k (no gap after a drop)."""
    lines = [prompts["description_caption_line"].replace("{i}", str(i)).replace("{caption}", caption)
             for i, caption in enumerate(captions, 1)]
    return prompts["description"].replace("{captions}", "\n".join(lines))
