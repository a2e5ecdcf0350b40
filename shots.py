"""shots.py - shot detection, clips, keyframes and video selection for TEMPLE (spec.md sections 1-2).

TEMPLE only learns from temporally rich videos: several distinct shots, no talking-head back-and-forth. The released
pipeline finds shots with TransNetV2 and groups them with SigLIP embeddings; this module replaces both with
dependency-free methods on small decoded frames and keeps every selection rule:

    detect shots -> clean (drop < 0.2 s / < 8 frames / blank) -> 4 <= shots <= 32, none over 16 s
    -> group similar shots (average linkage over all shots) -> fuse consecutive shots of one group into clips
    -> >= 4 clips, no group revisited in more than min(3, N // 3) runs -> two sharp keyframes per clip

Shot detection compares colour histograms of consecutive 96x54 frames. A cut is a jump that is large in absolute
terms and large relative to the local level (so fast camera motion does not fire), after which the old content does
not come back within a few frames (so flashes do not fire). Fades and dissolves are found by comparing the mean
histograms of the windows before and after each frame.

It imports numpy and PyAV only; copy it into another project as it is.

    python temple.py shots VIDEO                  # shots of one video as JSON
    python temple.py select videos/ --out data    # data/videos.jsonl: shots, clips, keyframes, kept or not
"""

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import av
import numpy as np
from av.video.reformatter import VideoReformatter

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")

# The detector looks at frames of this size: small enough to be cheap, big enough for a 2x2 grid of histograms.
SMALL_WIDTH, SMALL_HEIGHT = 96, 54


# ----------------------------------------------------------------------------------------------------------------
# Decoding: threaded PyAV, frames scaled down as they come out of the decoder


def open_video(path):
    """Open a file with PyAV and return (container, video stream); every error names the file."""
    path = str(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a directory, not a video file")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path}: empty file (0 bytes)")
    try:
        container = av.open(path)
    except av.FFmpegError as e:
        raise ValueError(f"{path}: not a readable video ({e.strerror or e})") from None
    if not container.streams.video:
        container.close()
        raise ValueError(f"{path}: has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame + slice threads: decoding is most of the cost
    return container, stream


def stream_fps(stream):
    rate = stream.average_rate or stream.base_rate or stream.guessed_rate
    return float(rate) if rate else 25.0


def expected_frames(container, stream, fps):
    """Frames the container promises: the stream's count, else duration x fps (webm/mkv have no count); 0 = unknown."""
    if stream.frames:
        return stream.frames
    if stream.duration and stream.time_base:
        return round(float(stream.duration * stream.time_base) * fps)
    if container.duration:
        return round(container.duration / av.time_base * fps)
    return 0


def decoded_frames(container, stream, errors):
    """Yield every frame that decodes, in order. A corrupt packet is counted in errors[0] and skipped, not fatal.

    Frame indices everywhere in this project are positions in this sequence (vlm.read_frames counts the same way)."""
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except (av.FFmpegError, ValueError):
            errors[0] += 1
            continue
        yield from frames


@dataclass
class Scan:
    """What one decoding pass keeps per frame: colour histograms and the grey range (for blank shots)."""
    fps: float
    num_frames: int
    histograms: np.ndarray   # (T, cells, bins) float32, each cell sums to 1
    grey_min: np.ndarray     # (T,) uint8, of the small frame
    grey_max: np.ndarray     # (T,) uint8
    corrupt_packets: int = 0


# (Kr, Kb) of the YUV -> RGB matrix swscale applies for a frame's colorspace tag (AVColorSpace): BT.709 (1), and
# BT.601 for BT470BG (5), SMPTE170M (6) and untagged frames (2), as swscale reads them. Other tags go through swscale.
YUV_MATRICES = {1: (0.2126, 0.0722), 2: (0.299, 0.114), 5: (0.299, 0.114), 6: (0.299, 0.114)}
FULL_RANGE = 2  # AVCOL_RANGE_JPEG: Y and UV span 0..255 (yuvj420p always does); otherwise Y 16..235, UV 16..240


class SmallFrames:
    """Point-sample decoded frames down to SMALL_WIDTH x SMALL_HEIGHT pixels.

    At ~1700 frames/s, handing each frame to swscale (scale + convert to RGB) and then to numpy costs as much per
    frame as a third of decoding it. For 4:2:0 frames (nearly every video) we read the decoder's planes in place
    instead: take() gathers the Y, U and V samples swscale would pick (a few microseconds), and to_rgb converts
    whole chunks of frames at once with the matrix swscale would use. Other pixel formats (and
    other colour matrices) still go through swscale with point sampling, giving RGB directly."""

    def __init__(self):
        self.swscale = VideoReformatter()  # one for all frames: a new scaling context per frame is slow
        self.layouts = {}                  # frame geometry -> flat indices of the sampled pixels in each plane

    def take(self, frame):
        """(key, samples): key None and (H, W, 3) RGB from swscale, or key (Kr, Kb, full range) and (3, H * W)
        Y, U, V samples for to_rgb."""
        pixel_format, matrix = frame.format.name, YUV_MATRICES.get(frame.colorspace)
        full = pixel_format == "yuvj420p" or frame.color_range == FULL_RANGE
        if pixel_format not in ("yuv420p", "yuvj420p") or matrix is None:
            return None, self.swscale.reformat(frame, width=SMALL_WIDTH, height=SMALL_HEIGHT, format="rgb24",
                                               interpolation="POINT").to_ndarray()
        planes = frame.planes
        layout = (frame.width, frame.height, planes[0].line_size, planes[1].line_size, planes[2].line_size)
        if layout not in self.layouts:
            self.layouts[layout] = self.sample_indices(*layout)
        luma, chroma_u, chroma_v = self.layouts[layout]
        samples = np.empty((3, SMALL_HEIGHT * SMALL_WIDTH), np.uint8)
        np.take(np.frombuffer(planes[0], np.uint8), luma, out=samples[0])
        np.take(np.frombuffer(planes[1], np.uint8), chroma_u, out=samples[1])
        np.take(np.frombuffer(planes[2], np.uint8), chroma_v, out=samples[2])
        return (*matrix, full), samples

    @staticmethod
    def sample_indices(width, height, luma_stride, u_stride, v_stride):
        """Flat offsets (rows are `stride` bytes apart) of the pixels swscale's point sampling picks: the Y pixel
        nearest the centre of each of SMALL_HEIGHT x SMALL_WIDTH cells, and the U, V samples that swscale uses for
        it (its chroma is half-width: each picked chroma column serves two output columns)."""
        def centres(size, count):  # swscale's 16.16 fixed-point step, rounded, taken at cell centres
            step = ((size << 16) + count // 2) // count
            return ((2 * np.arange(count) + 1) * step) >> 17
        chroma_width, chroma_height = (width + 1) // 2, (height + 1) // 2
        luma = centres(height, SMALL_HEIGHT)[:, None] * luma_stride + centres(width, SMALL_WIDTH)
        chroma_rows = centres(chroma_height, SMALL_HEIGHT)[:, None]
        chroma_cols = np.repeat(centres(chroma_width, SMALL_WIDTH // 2), 2)
        return [luma.ravel()] + [(chroma_rows * stride + chroma_cols).ravel() for stride in (u_stride, v_stride)]

    @staticmethod
    def to_rgb(samples, kr, kb, full):
        """(T, 3, N) Y, U, V samples -> (3, T, N) uint8 R, G, B planes, rounded and clipped. In float32, one colour
        plane at a time: numpy is fastest on long contiguous runs of one type. The result is the exact conversion;
        swscale's table-driven integer one comes out up to 3 levels off it (1 to 1.5 darker on average)."""
        y, u, v = samples.transpose(1, 0, 2).astype(np.float32)
        y_scale, c_scale, black = (1.0, 1.0, 0) if full else (255 / 219, 255 / 224, 16)  # Y 16..235, UV 16..240
        kg = 1.0 - kr - kb
        # R = Y' + 2 (1 - Kr) V', G = Y' - (2 Kb (1 - Kb) U' + 2 Kr (1 - Kr) V') / Kg, B = Y' + 2 (1 - Kb) U' with
        # Y' = (Y - black) y_scale and U', V' = (U, V - 128) c_scale; the constant terms are gathered into one.
        r_v, g_u, g_v, b_u = (c_scale * c for c in (2 * (1 - kr), -2 * kb * (1 - kb) / kg, -2 * kr * (1 - kr) / kg,
                                                    2 * (1 - kb)))
        y *= y_scale
        rgb = np.empty((3,) + y.shape, np.float32)
        np.multiply(v, r_v, out=rgb[0])
        np.multiply(u, g_u, out=rgb[1])
        rgb[1] += g_v * v
        np.multiply(u, b_u, out=rgb[2])
        rgb += y
        # + 0.5: round to nearest, as astype truncates
        constant = 0.5 - black * y_scale - 128 * np.array([r_v, g_u + g_v, b_u], np.float32)
        rgb += constant[:, None, None]
        return np.clip(rgb, 0, 255, out=rgb).astype(np.uint8)


def scan_video(path, levels=4, grid=2, chunk=32, min_decoded=0.9):
    """Decode the whole video once, point-sample each frame to 96x54 and keep per-frame histograms and grey ranges.

    Raises ValueError naming the file when nothing decodes or fewer than `min_decoded` of the promised frames do
    (a truncated or badly damaged file); a few corrupt packets in an otherwise good video are skipped."""
    container, stream = open_video(path)
    fps = stream_fps(stream)
    # Point sampling, not area averaging: a histogram only needs a fair sample of the pixels, and averaging every
    # pixel of a large frame costs a third of the decoding time.
    small = SmallFrames()
    errors, pending, summaries = [0], [], []

    def summarise(chunk):
        """Histograms and grey ranges of a chunk of sampled frames. Numpy works on whole chunks (per-frame calls
        would cost more than the arithmetic), small enough to stay in the CPU cache from one step to the next, in
        planes (each step reads one colour at a time)."""
        rgb = np.empty((3, len(chunk), SMALL_HEIGHT * SMALL_WIDTH), np.uint8)
        keys = [key for key, _ in chunk]
        for key in set(keys):  # one key in practice; a stream can change pixel format midway
            at = [i for i, k in enumerate(keys) if k == key]
            samples = np.stack([chunk[i][1] for i in at])
            rgb[:, at] = small.to_rgb(samples, *key) if key else samples.reshape(len(at), -1, 3).transpose(2, 0, 1)
        frames = np.moveaxis(rgb.reshape(3, -1, SMALL_HEIGHT, SMALL_WIDTH), 0, -1)  # (T, H, W, 3), a view
        return colour_histograms(frames, levels, grid), *grey_range(frames)

    # Chunks are summarised in a second thread while this one goes on decoding: with frame threading, the decoder
    # only works ahead by a few frames, so work done here between two frames stalls it (numpy and the decoder
    # both release the GIL). At most a few chunks wait, so memory stays bounded on long videos.
    with container, ThreadPoolExecutor(1) as worker:
        promised = expected_frames(container, stream, fps)
        try:
            for frame in decoded_frames(container, stream, errors):
                pending.append(small.take(frame))
                if len(pending) == chunk:
                    summaries.append(worker.submit(summarise, pending))
                    pending = []
                    if len(summaries) > 4:
                        summaries[-5].result()
        except av.FFmpegError as e:  # the demuxer itself gave up: keep what decoded, judge below
            errors[0] += 1
            if not summaries and not pending:
                raise ValueError(f"{path}: not a readable video ({e.strerror or e})") from None
        if pending:
            summaries.append(worker.submit(summarise, pending))
        histograms, grey_min, grey_max = zip(*[summary.result() for summary in summaries]) if summaries else ([],) * 3
    num_frames = sum(len(h) for h in histograms)
    if num_frames == 0:
        raise ValueError(f"{path}: truncated or corrupt: no frame could be decoded")
    if promised and num_frames < min_decoded * promised:
        raise ValueError(f"{path}: truncated or corrupt: only {num_frames} of {promised} frames could be decoded")
    return Scan(fps, num_frames, np.concatenate(histograms), np.concatenate(grey_min), np.concatenate(grey_max),
                errors[0])


def grey_levels(rgb):
    """RGB -> grey exactly as OpenCV's COLOR_RGB2GRAY: 0.299 R + 0.587 G + 0.114 B in 15-bit fixed point, rounded."""
    rgb = rgb.astype(np.int32)
    return ((rgb[..., 0] * 9798 + rgb[..., 1] * 19235 + rgb[..., 2] * 3735 + (1 << 14)) >> 15).astype(np.uint8)


def grey_range(frames):
    """(T, H, W, 3) uint8 -> the darkest and the brightest grey level of each frame, exactly as grey_levels gives
    them but several times faster: float32 holds the fixed-point sums exactly (they stay below 2**24), and since
    rounding keeps the order, only the minimum and maximum of each frame need rounding."""
    rgb = frames.astype(np.float32)
    grey = rgb[..., 0] * 9798
    grey += rgb[..., 1] * 19235
    grey += rgb[..., 2] * 3735
    grey = grey.reshape(len(grey), -1)
    return [((g + (1 << 14)) // (1 << 15)).astype(np.uint8) for g in (grey.min(axis=1), grey.max(axis=1))]


# ----------------------------------------------------------------------------------------------------------------
# Shot detection: histogram distances, a cut test relative to the local level, a flash test, fades


def colour_histograms(frames, levels=4, grid=2):
    """(T, H, W, 3) uint8 -> (T, grid*grid, levels**3) joint RGB histograms of each grid cell, each summing to 1.

    Joint colour (not luma alone) separates shots that differ only in hue; the grid separates shots with the same
    palette arranged differently, while staying blind to motion inside a cell."""
    t, h, w, _ = frames.shape
    bins = levels ** 3
    q = frames >> (8 - int(math.log2(levels)))                       # each channel -> 0..levels-1
    if bins > 256:
        q = q.astype(np.int32)                                        # else uint8 holds the colour: faster
    colour = (q[..., 0] * levels + q[..., 1]) * levels + q[..., 2]
    cell = (np.arange(h)[:, None] * grid // h) * grid + np.arange(w)[None, :] * grid // w
    index = (np.arange(t, dtype=np.int32)[:, None, None] * grid * grid + cell.astype(np.int32)) * bins + colour
    counts = np.bincount(index.ravel(), minlength=t * grid * grid * bins).reshape(t, grid * grid, bins)
    return (counts / counts.sum(-1, keepdims=True)).astype(np.float32)


def histogram_distance(a, b):
    """Half the L1 distance per cell (0 = same colours, 1 = no colour in common), averaged over cells."""
    return 0.5 * np.abs(a - b).sum(-1).mean(-1)


def local_median(values, window):
    """Median of values[t - window : t + window + 1] without values[t] itself, for every t."""
    padded = np.pad(values, window, mode="reflect" if len(values) > 1 else "edge")
    views = np.lib.stride_tricks.sliding_window_view(padded, 2 * window + 1)
    return np.median(np.delete(views, window, axis=1), axis=1)


def is_flash(histograms, t, score, flash_frames, ratio=0.5):
    """A jump at t is a flash edge if the content before it comes back soon after (or was there just before):
    frame t-1 resembles one of t+1..t+F, or frame t resembles one of t-1-F..t-2."""
    n = len(histograms)
    after = histograms[t + 1:min(n, t + 1 + flash_frames)]
    before = histograms[max(0, t - 1 - flash_frames):t - 1]
    back = [histogram_distance(histograms[t - 1], after).min() if len(after) else 1.0,
            histogram_distance(histograms[t], before).min() if len(before) else 1.0]
    return min(back) < ratio * score


def hard_cuts(histograms, threshold=0.2, ratio=3.0, window=12, flash_frames=4):
    """Frames t where a new shot starts abruptly: dist(t-1, t) >= threshold and >= ratio x the local level.

    The level is the larger of two medians: over +-window frames (fast camera motion raises it for seconds) and over
    +-3 frames (a fade raises it for a few frames: its steps are alike, a cut's single step stands out)."""
    scores = np.zeros(len(histograms), np.float32)
    scores[1:] = histogram_distance(histograms[1:], histograms[:-1])
    if len(scores) > 1:
        scores[0] = scores[1]  # no previous frame: borrow the next step so frame 0 does not pull medians down
    level = np.maximum(local_median(scores, window), local_median(scores, 3)) if len(scores) > 3 else scores
    scores[0] = 0.0
    candidates = np.flatnonzero((scores >= threshold) & (scores >= ratio * level))
    cuts = [(int(t), float(scores[t])) for t in candidates if not is_flash(histograms, t, scores[t], flash_frames)]
    return cuts


def gradual_cuts(histograms, frames=12, threshold=0.5, ratio=2.0):
    """Centres of fades and dissolves: frames where the mean histogram of the `frames` frames before differs from
    that of the `frames` frames after by >= threshold, a local maximum and >= ratio x the level around it.

    Every single step of a dissolve is small, so the cut test misses it; the window means see the whole change."""
    n = len(histograms)
    if n < 2 * frames:
        return []
    sums = np.concatenate([np.zeros_like(histograms[:1]), np.cumsum(histograms, axis=0, dtype=np.float64)])
    t = np.arange(frames, n - frames + 1)
    before = (sums[t] - sums[t - frames]) / frames
    after = (sums[t + frames] - sums[t]) / frames
    change = np.zeros(n, np.float32)
    change[t] = histogram_distance(before, after)
    peak = change == np.max(np.lib.stride_tricks.sliding_window_view(np.pad(change, frames), 2 * frames + 1), axis=1)
    level = local_median(change, 4 * frames)
    candidates = np.flatnonzero(peak & (change >= threshold) & (change >= ratio * level))
    return [(int(i), float(change[i])) for i in candidates]


def blank_edges(grey_min, grey_max, min_grey_range=10, min_frames=8):
    """First and one-past-last frames of every run of >= min_frames frames that is blank as a whole (grey max - min
    over the run < min_grey_range, the rule of clean_shots): black gaps and the black middle of a fade get shots of
    their own, which clean_shots then drops."""
    edges, start, low, high = [], None, 0, 0
    for frame, (lo, hi) in enumerate(zip(grey_min.tolist() + [0], grey_max.tolist() + [255])):  # sentinel ends
        if start is not None and max(high, hi) - min(low, lo) < min_grey_range:
            low, high = min(low, lo), max(high, hi)
            continue
        if start is not None and frame - start >= min_frames:
            edges += [start, frame]
        start, low, high = (frame, lo, hi) if hi - lo < min_grey_range else (None, 0, 0)
    return edges


def cuts_to_shots(candidates, num_frames, min_shot_frames):
    """Accept candidate cut frames in priority order, never closer than min_shot_frames to an accepted cut or to
    either end of the video; the cuts split [0, num_frames) into shots."""
    kept = []
    for frame in candidates:
        if min_shot_frames <= frame <= num_frames - min_shot_frames and \
                all(abs(frame - k) >= min_shot_frames for k in kept):
            kept.append(frame)
    bounds = [0] + sorted(kept) + [num_frames]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def find_shots(histograms, grey_min=None, grey_max=None, threshold=0.2, ratio=3.0, window=12, flash_frames=4,
               min_shot_frames=8, fade_frames=12, fade_threshold=0.5, min_grey_range=10):
    """Frame ranges [start, end) covering the video. Priority when two candidates are too close: the edges of blank
    runs (certain, and they keep the steps of a fade to black out of the cuts), then hard cuts, strongest first,
    then the centres of fades and dissolves."""
    candidates = blank_edges(grey_min, grey_max, min_grey_range, min_shot_frames) if grey_min is not None else []
    cuts = sorted(hard_cuts(histograms, threshold, ratio, window, flash_frames), key=lambda c: -c[1])
    candidates += [frame for frame, _ in cuts]
    if fade_frames:
        candidates += [frame for frame, _ in gradual_cuts(histograms, fade_frames, fade_threshold)]
    return cuts_to_shots(candidates, len(histograms), min_shot_frames)


def detect_shots(path, **options):
    """Shots of a video file as [(start, end), ...] frame ranges, end exclusive, covering every decoded frame.
    Options: the keyword arguments of find_shots."""
    scan = scan_video(path)
    return find_shots(scan.histograms, scan.grey_min, scan.grey_max, **options)


# ----------------------------------------------------------------------------------------------------------------
# Selection rules (spec section 1): cleaning, shot filter, grouping into clips, group filter


def clean_shots(shots, fps, grey_min, grey_max, min_seconds=0.2, min_frames=8, min_grey_range=10):
    """Drop shots shorter than min_seconds or min_frames, and near-constant ones (grey max - min < min_grey_range
    over all their frames: black or blank shots)."""
    kept = []
    for start, end in shots:
        if end - start < min_seconds * fps or end - start < min_frames:
            continue
        if int(grey_max[start:end].max()) - int(grey_min[start:end].min()) < min_grey_range:
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
    """Similarity of every pair of shots: 1 - histogram distance between their middle frames (spec: the middle
    frame start + len // 2 stands for the shot)."""
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
# Keyframes (spec section 2): the sharpest frames near 1/3 and 2/3 of each clip


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


DETECT_DEFAULTS = dict(threshold=0.2, ratio=3.0, window=12, flash_frames=4, min_shot_frames=8, fade_frames=12,
                       fade_threshold=0.5)
SELECT_DEFAULTS = dict(min_shot_seconds=0.2, min_shot_len=8, min_grey_range=10, min_shots=4, max_shots=32,
                       max_shot_seconds=16.0, group_threshold=0.8, min_clips=4, max_runs=3)


def select_video(path, **options):
    """The record of one video for videos.jsonl: status "kept", "rejected" or "error" and a reason.
    Never raises for a bad file; options are DETECT_DEFAULTS and SELECT_DEFAULTS keys."""
    detect = {k: options.get(k, v) for k, v in DETECT_DEFAULTS.items()}
    rules = {k: options.get(k, v) for k, v in SELECT_DEFAULTS.items()}
    record = dict(path=str(path), fps=None, num_frames=None, shots=[], clips=[], clip_shots=[], clip_groups=[],
                  keyframes=[], status="error", reason="")
    try:
        scan = scan_video(path)
        record.update(fps=scan.fps, num_frames=scan.num_frames)
        shots = find_shots(scan.histograms, scan.grey_min, scan.grey_max, min_grey_range=rules["min_grey_range"], **detect)
        shots = clean_shots(shots, scan.fps, scan.grey_min, scan.grey_max, rules["min_shot_seconds"],
                            rules["min_shot_len"], rules["min_grey_range"])
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
    except (OSError, ValueError, av.FFmpegError) as e:
        record.update(status="error", reason=str(e) if str(path) in str(e) else f"{path}: {e}")
    except Exception as e:  # noqa: BLE001 - one odd file must not stop a run over thousands of videos
        record.update(status="error", reason=f"{path}: unexpected {type(e).__name__}: {e}")
    return record


def list_videos(inputs):
    """Files given directly, plus every video file (by extension) under the given directories, sorted."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            for root, _, files in sorted(os.walk(item)):
                paths += [os.path.join(root, f) for f in sorted(files) if f.lower().endswith(VIDEO_EXTENSIONS)]
        else:
            paths.append(item)
    return paths
