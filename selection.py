"""selection.py - which videos TEMPLE learns from, their clips and their keyframes (docs/method.md, "Choosing videos",
"Keyframes").

TEMPLE only learns from temporally rich videos: several distinct shots, no talking-head back-and-forth. After shot
detection (shots.py) every rule of the released code applies:

    clean (drop shots < 0.2 s / < 8 frames / blank) -> 4 <= shots <= 32, none over 16 s
    -> group similar shots (average linkage over all shots) -> fuse consecutive shots of one group into clips
    -> >= 4 clips, no group revisited in more than min(3, N // 3) runs -> two sharp keyframes per clip

The released code groups shots by SigLIP embeddings of their middle frames; here their colour histograms stand in.
It imports numpy, shots.py and decode.py only: the three copy together.

    python temple.py select videos/ --out data    # data/videos.jsonl: shots, clips, keyframes, kept or not
"""

import inspect

import numpy as np

from decode import BAD_VIDEO, decoded_frames, open_video
from shots import find_shots, grey_levels, histogram_distance, scan_video


# ----------------------------------------------------------------------------------------------------------------
# The selection rules: cleaning, the shot filter, grouping, the group filter


def clean_shots(shots, fps, grey_min, grey_max, min_seconds=0.2, min_frames=8, min_grey_range=10):
    """Drop shots shorter than min_seconds or min_frames, and blank ones: every frame one grey level (grey max - min
    < min_grey_range within each frame). The released code takes max - min over all frames of the shot together,
    which drops the same black or white shots but keeps a uniform field fading from black to white, and a black gap
    whose first frames are the last of a fade-out."""
    kept = []
    for start, end in shots:
        if end - start < min_seconds * fps or end - start < min_frames:
            continue
        if (grey_max[start:end].astype(np.int16) - grey_min[start:end]).max() < min_grey_range:
            continue
        kept.append((start, end))
    return kept


def shot_filter(shots, fps, min_shots=4, max_shots=32, max_shot_seconds=16.0):
    """None if the video passes, else the reason it is rejected."""
    if len(shots) < min_shots:
        return f"too few shots: {len(shots)} after cleaning (need at least {min_shots})"
    if len(shots) > max_shots:
        return f"too many shots: {len(shots)} after cleaning (at most {max_shots})"
    longest = max(end - start for start, end in shots)
    if longest > max_shot_seconds * fps:
        return f"shot too long: {longest / fps:.1f} s (at most {max_shot_seconds:g} s)"
    return None


def shot_similarity(histograms, shots):
    """Similarity of every pair of shots: 1 - histogram distance between their middle frames (as in the released
    code, the frame start + len // 2 stands for the shot)."""
    middle = histograms[[start + (end - start) // 2 for start, end in shots]]
    return 1.0 - histogram_distance(middle[:, None], middle[None, :])


def group_shots(similarity, threshold=0.8):
    """Average-linkage clustering over all shots, as the released merge_items: merge the most similar pair while
    its similarity exceeds threshold; the merged row is the plain mean of the two rows. Returns a group id per shot."""
    sim = np.array(similarity, dtype=np.float64)
    np.fill_diagonal(sim, -np.inf)
    members = [[i] for i in range(len(sim))]
    alive = list(range(len(sim)))
    while len(alive) > 1:
        sub = sim[np.ix_(alive, alive)]
        i, j = np.unravel_index(np.argmax(sub), sub.shape)
        if sub[i, j] <= threshold:
            break
        a, b = alive[min(i, j)], alive[max(i, j)]
        merged = (sim[a] + sim[b]) / 2
        sim[a], sim[:, a] = merged, merged
        sim[a, a] = -np.inf
        members[a] += members[b]
        alive.remove(b)
    labels = [0] * len(sim)
    for group, index in enumerate(sorted(alive, key=lambda k: min(members[k]))):
        for shot in members[index]:
            labels[shot] = group
    return labels


def fuse_clips(shots, labels):
    """Consecutive shots of one group become one clip. Returns (clips [(start, end)], shots per clip, group per clip);
    a clip spans from the start of its first shot to the end of its last (a dropped shot in between is inside)."""
    clips, members, groups = [], [], []
    for index, (shot, label) in enumerate(zip(shots, labels)):
        if groups and groups[-1] == label:
            clips[-1] = (clips[-1][0], shot[1])
            members[-1].append(index)
        else:
            clips.append(shot)
            members.append([index])
            groups.append(label)
    return clips, members, groups


def group_filter(clip_groups, min_clips=4, max_runs=3):
    """None if the video passes, else the reason: fewer than min_clips clips, or a group that comes back in more
    than min(max_runs, N // 3) separate runs (talking heads, back-and-forth)."""
    n = len(clip_groups)
    if n < min_clips:
        return f"too few clips: {n} after grouping similar shots (need at least {min_clips})"
    allowed = min(max_runs, n // 3)
    runs = {g: clip_groups.count(g) for g in set(clip_groups)}
    group, count = max(runs.items(), key=lambda item: item[1])
    if count > allowed:
        return f"scene revisited: one group appears in {count} of {n} clips (at most {allowed})"
    return None


# ----------------------------------------------------------------------------------------------------------------
# Keyframes: the sharpest frames near 1/3 and 2/3 of each clip


def sharpness(rgb):
    """Mean absolute Laplacian of the blurred grey frame, as the released tools/laplacian.py with OpenCV:
    GaussianBlur 3x3 (kernel 1-2-1 / 4, rounded), RGB -> grey, Laplacian ksize=3 (OpenCV's 3x3 aperture is
    [[2, 0, 2], [0, -8, 0], [2, 0, 2]]), absolute value saturated to uint8, mean. Borders reflect (OpenCV's
    BORDER_REFLECT_101)."""
    image = np.pad(rgb.astype(np.int32), ((1, 1), (1, 1), (0, 0)), mode="reflect")
    rows = image[:-2] + 2 * image[1:-1] + image[2:]
    blurred = (rows[:, :-2] + 2 * rows[:, 1:-1] + rows[:, 2:] + 8) >> 4
    grey = np.pad(grey_levels(blurred).astype(np.int32), 1, mode="reflect")
    corners = grey[:-2, :-2] + grey[:-2, 2:] + grey[2:, :-2] + grey[2:, 2:]
    laplacian = 2 * corners - 8 * grey[1:-1, 1:-1]
    return float(np.minimum(np.abs(laplacian), 255).mean())


def keyframe_windows(start, end, per_clip=2):
    """For each keyframe: (first frame, weights) of the window around start + k * L / (per_clip + 1).

    As the released extract_frames: half-width h = int(L / 3) // 2, window [centre - h, centre + h), weight
    cos(pi * d / (2h)) for offset d (1 at the centre, 0 at the far edge)."""
    interval = (end - start) / (per_clip + 1)
    half = max(1, int(interval) // 2)
    distance = np.arange(-half, half)
    weights = np.cos(np.pi * distance / (2 * half))
    return [(int(start + interval * k) - half, weights) for k in range(1, per_clip + 1)]


def pick_keyframes(clips, score, per_clip=2):
    """Keyframe indices per clip, from score(frame index) -> sharpness; the first best frame wins ties."""
    keyframes = []
    for start, end in clips:
        picked = []
        for first, weights in keyframe_windows(start, end, per_clip):
            weighted = [score(first + i) * w for i, w in enumerate(weights)]
            picked.append(first + int(np.argmax(weighted)))
        keyframes.append(picked)
    return keyframes


def clip_keyframes(path, clips, per_clip=2):
    """Decode the video a second time at full size, scoring only frames inside keyframe windows."""
    wanted = {first + i for start, end in clips for first, weights in keyframe_windows(start, end, per_clip)
              for i in range(len(weights))}
    scores = {}
    container, stream = open_video(path)
    with container:
        for index, frame in enumerate(decoded_frames(container, stream, [0])):
            if index in wanted:
                scores[index] = sharpness(frame.to_ndarray(format="rgb24"))
            if index >= max(wanted):
                break
    return pick_keyframes(clips, lambda i: scores.get(i, 0.0), per_clip)


# ----------------------------------------------------------------------------------------------------------------
# One video, end to end

# Every option of find_shots with its default; the cleaning and the filters that select_video applies after it.
DETECT_DEFAULTS = {name: p.default for name, p in inspect.signature(find_shots).parameters.items()
                   if p.default is not inspect.Parameter.empty}


SELECT_DEFAULTS = dict(min_shot_seconds=0.2, min_shot_len=8, min_shots=4, max_shots=32, max_shot_seconds=16.0,
                       group_threshold=0.8, min_clips=4, max_runs=3)


def select_video(path, **options):
    """The record of one video for videos.jsonl: status "kept", "rejected" or "error" and a reason.
    Never raises for a bad file; options are DETECT_DEFAULTS and SELECT_DEFAULTS keys. A video that does not fully
    decode is rejected, not training data: its clips would not be the video's."""
    detect = {k: options.get(k, v) for k, v in DETECT_DEFAULTS.items()}
    rules = {k: options.get(k, v) for k, v in SELECT_DEFAULTS.items()}
    record = dict(path=str(path), fps=None, num_frames=None, shots=[], clips=[], clip_shots=[], clip_groups=[],
                  keyframes=[], status="error", reason="")
    try:
        scan = scan_video(path)
        record.update(fps=scan.fps, num_frames=scan.num_frames)
        if scan.incomplete():
            record.update(status="rejected", reason=f"does not fully decode: {scan.incomplete()}")
            return record
        shots = find_shots(scan, **detect)
        shots = clean_shots(shots, scan.fps, scan.grey_min, scan.grey_max, rules["min_shot_seconds"],
                            rules["min_shot_len"], detect["min_grey_range"])
        record["shots"] = [list(s) for s in shots]
        reason = shot_filter(shots, scan.fps, rules["min_shots"], rules["max_shots"], rules["max_shot_seconds"])
        if reason is None:
            labels = group_shots(shot_similarity(scan.histograms, shots), rules["group_threshold"])
            clips, members, groups = fuse_clips(shots, labels)
            record.update(clips=[list(c) for c in clips], clip_shots=members, clip_groups=groups)
            reason = group_filter(groups, rules["min_clips"], rules["max_runs"])
        if reason is not None:
            record.update(status="rejected", reason=reason)
            return record
        record["keyframes"] = clip_keyframes(path, clips)
        note = f", {scan.corrupt_packets} corrupt packet(s) skipped" if scan.corrupt_packets else ""
        record.update(status="kept", reason=f"kept: {len(shots)} shots in {len(clips)} clips{note}")
    except BAD_VIDEO as e:
        record.update(status="error", reason=str(e) if str(path) in str(e) else f"{path}: {e}")
    except Exception as e:  # noqa: BLE001 - one odd file must not stop a run over thousands of videos
        record.update(status="error", reason=f"{path}: unexpected {type(e).__name__}: {e}")
    return record
