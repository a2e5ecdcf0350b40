"""shots.py - where a video's shots begin and end, without a network (docs/method.md, "Choosing videos").

TEMPLE learns from videos of several shots; the released pipeline finds them with TransNetV2. This detector works on
96x54 point-sampled frames (decode.scan), with two kinds of change between frames, each judged against
its own local level (what the frames around it do; where pictures repeat, 10-15 frames/s shown at 24-30, the still
steps between the repeats do not count), so that one setting works on film, animation, slideshows and hand-held
footage:
- colour (joint RGB histograms of a 2x2 grid) catches cuts to another place or light; a colour jump that is only
  the old picture under other light (one exposure gain fits the 16x9 grid of mean colours) is no cut;
- layout (a 16x9 grid of mean grey levels, compared without its median level and contrast, block by block, the
  median of 12 blocks) catches cuts within one palette (two faces in one room, a monitor and then its screen),
  stays still through fades and flicker, and ignores captions, logos and boxes that change a few blocks;
- spread: a jump is a cut only if its change covers the picture. Over the 16x9 grid of mean colours, the median of
  the tiles' squared change over its mean is about 1/2 when every part of the picture changes, by much or by
  little, and near 0 when one part changes and the rest goes on as it was (a cut needs 0.08). The histograms and
  even the layout jump when a caption box covering a fifth to a third of the frame appears or goes; the rest of the
  picture, which goes on, tells that it is no cut, whatever the box's size. A jump cut (a still shot skipping
  ahead: the people move, the room stays) is found only when it changes much of the picture;
- a jump whose old picture comes back within a few frames (one of the few frames before it resembles one of the
  few after) is a flash, also one that fades out over a few frames, or an overlay glitch, not a cut; among jumps a
  few frames apart, the one whose change lasts (every frame before differs from every frame after) is the cut;
- a frame whose grey levels span less than 10 is blank, whatever its level: runs of blank frames (black gaps, the
  black middle of a fade, a uniform fade) are shots of their own that cleaning drops, and nothing changes between
  two blank frames, so a flat fade is no run of cuts; a short run that the colours jump into or out of, with the
  old picture back after it, is a white flash;
- a dissolve is found where the mean pictures of the windows before and after a frame differ, and kept only if the
  frames in between are mixes of its two ends (a pan or a wipe sweeps across the frame instead), its ends differ
  in layout (else the light changed) and the last is not a moved copy of the first (a slow pan). It is reported
  once, as one boundary where the new picture takes over; a fade to or from black is the blank run's boundary.
A file that decodes only in part (a truncated download) gives the shots of the frames that decode; select rejects
it, since its clips would not be the video's. What happens to the shots next is selection.py's. The accuracy on real
footage, against TransNetV2 and PySceneDetect: docs/shots.md.

It imports numpy and decode.py (PyAV) only; copy the two into another project as they are.

    python temple.py shots VIDEO                  # shots of one video as JSON
    shots.detect_shots("clip.mp4")                # [(0, 30), (30, 76), ...]: [start, end) frame ranges
"""

import math
import warnings
from dataclasses import dataclass

import numpy as np

import decode


# ----------------------------------------------------------------------------------------------------------------
# What one decoding pass keeps of every frame


@dataclass
class Scan:
    """What one decoding pass keeps per frame: colour histograms, a coarse grid of mean colours (the picture's
    layout and its light) and the grey range (blank frames and shots)."""
    fps: float
    num_frames: int
    histograms: np.ndarray   # (T, cells, bins) float32, each cell sums to 1
    tiles: np.ndarray        # (T, 9, 16, 3) float32, mean R, G, B of each 6x6 tile of the small frame
    grey_min: np.ndarray     # (T,) uint8, of the small frame
    grey_max: np.ndarray     # (T,) uint8
    promised_frames: int = 0  # what the container says it holds, 0 = unknown
    exact_count: bool = True  # promised_frames is the container's own count, not duration x fps
    corrupt_packets: int = 0

    def incomplete(self):
        """'only N of M frames decode' when the file holds fewer frames than its container promises (a truncated
        download, a damaged stretch), else ''. An estimate from the duration may be a few frames off: 3 % slack."""
        slack = 0 if self.exact_count else max(2, round(0.03 * self.promised_frames))
        if self.num_frames < self.promised_frames - slack:
            return f"only {self.num_frames} of {self.promised_frames} frames decode"
        return ""


def scan_video(path, levels=4, grid=2, chunk=32):
    """Decode the whole video once (decode.scan: every frame point-sampled to 96x54) and keep what shot detection
    and selection need per frame (see Scan). Frames that do not decode are skipped: a damaged or truncated file
    gives the frames before (and after) the damage, and Scan.incomplete() says how many are missing."""
    fps, parts, promised, exact, corrupt = decode.scan(path, lambda frames: summarise_frames(frames, levels, grid),
                                                       chunk)
    histograms, tiles, grey_min, grey_max = (np.concatenate(p) for p in zip(*parts))
    return Scan(fps, len(histograms), histograms, tiles, grey_min, grey_max, promised, exact, corrupt)


def summarise_frames(frames, levels=4, grid=2):
    """(T, H, W, 3) uint8 small frames -> colour histograms, tiles, grey min and grey max (the arrays of Scan)."""
    return (colour_histograms(frames, levels, grid), *tiles_and_grey_range(frames))


def grey_levels(rgb):
    """RGB -> grey exactly as OpenCV's COLOR_RGB2GRAY: 0.299 R + 0.587 G + 0.114 B in 15-bit fixed point, rounded."""
    rgb = rgb.astype(np.int32)
    return ((rgb[..., 0] * 9798 + rgb[..., 1] * 19235 + rgb[..., 2] * 3735 + (1 << 14)) >> 15).astype(np.uint8)


TILE = 6  # side of a tile in pixels of the small frame: 96x54 -> a grid of 16 x 9 tiles
GREY = np.array([0.299, 0.587, 0.114], np.float32)  # R, G, B -> grey, as grey_levels


def tiles_and_grey_range(frames):
    """(T, H, W, 3) uint8 -> (tiles, grey min, grey max): the mean R, G, B of every TILE x TILE tile, and the
    darkest and the brightest grey level of each frame exactly as grey_levels gives them, but several times faster:
    float32 holds the fixed-point sums exactly (they stay below 2**24), and since rounding keeps the order, only
    the minimum and maximum of each frame need rounding. Works on colour planes: numpy reduces contiguous runs of
    one colour fastest."""
    planes = np.moveaxis(frames, -1, 0).astype(np.float32, order="C")  # (3, T, H, W)
    t = planes.shape[1]
    # Tile sums as TILE strided adds along rows, then along columns: numpy adds long runs fast, while a sum over a
    # short axis of a reshaped array goes element by element (5x slower here).
    columns = sum(planes[..., k::TILE] for k in range(TILE))
    tiles = sum(columns[..., k::TILE, :] for k in range(TILE)) * (1 / TILE ** 2)
    grey = planes[0] * 9798
    grey += planes[1] * 19235
    grey += planes[2] * 3735
    grey = grey.reshape(t, -1)
    return [np.moveaxis(tiles, 0, -1)] + [((g + (1 << 14)) // (1 << 15)).astype(np.uint8)
                                          for g in (grey.min(axis=1), grey.max(axis=1))]


# ----------------------------------------------------------------------------------------------------------------
# Shot detection: colour and layout changes between frames, each against its local level; flashes; blank frames;
# dissolves


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


def layout_distance(a, b, noise=3.0, block=(3, 4)):
    """How differently two frames are laid out, from their tiles (..., 9, 16) of grey levels, each less its median
    tile: in each block of 3 x 4 tiles, the squared difference over the summed energy of the two; the median over
    the 12 blocks. 0 = same layout, about 1 = unrelated pictures, 2 = inverted.

    Removing the median level makes it blind to brightness, and a change of contrast by a factor g only gives
    (1 - g)^2 / (1 + g^2): a fade or a flicker barely moves it, while a cut between two shots of one palette (two
    faces in one room, a monitor and then its screen) moves it as much as any cut. The median over blocks wants the
    change everywhere, as a cut makes it: captions, a logo or a box appearing change a few blocks only (and the
    median level, unlike the mean, does not follow them). `noise` (grey levels per tile) keeps nearly flat blocks,
    whose layout is mostly noise, from counting."""
    def centred(x):  # minus the median tile: blind to brightness, and to a small bright patch
        return x - np.median(x.reshape(*x.shape[:-2], x.shape[-2] * x.shape[-1]), axis=-1)[..., None, None]

    a, b = centred(a), centred(b)
    rows, columns = a.shape[-2] // block[0], a.shape[-1] // block[1]

    def per_block(x):  # (..., 9, 16) -> (..., 12) sums over blocks of tiles
        x = x.reshape(*x.shape[:-2], rows, block[0], columns, block[1]).sum(axis=(-3, -1))
        return x.reshape(*x.shape[:-2], rows * columns)

    energy = per_block(a * a + b * b) + block[0] * block[1] * noise ** 2
    return np.median(per_block((a - b) ** 2) / energy, axis=-1)


class FrameChange:
    """How different frames are, for the cut tests: colour (histogram distance) and layout (layout_distance), each
    in units of its cut threshold. change(i, j) = max of the two: >= 1 means another picture. Blank frames (one
    grey level: black, white, any step of a uniform fade) all look alike: between two of them nothing changes."""

    def __init__(self, histograms, colour_tiles, blank, colour_threshold=0.2, layout_threshold=0.3):
        self.histograms, self.colour_tiles, self.blank = histograms, colour_tiles, blank
        self.tiles = colour_tiles @ GREY  # (T, 9, 16) mean grey levels: the layout
        self.colour_threshold, self.layout_threshold = colour_threshold, layout_threshold
        self.num_frames = len(histograms)

    def steps(self):
        """(colour, layout) distances of every frame t from frame t-1; 0 for frame 0 and between blank frames."""
        colour, layout = np.zeros((2, self.num_frames), np.float32)
        colour[1:] = histogram_distance(self.histograms[1:], self.histograms[:-1])
        layout[1:] = layout_distance(self.tiles[1:], self.tiles[:-1])
        still_blank = np.concatenate([[True], self.blank[1:] & self.blank[:-1]])
        colour[still_blank] = layout[still_blank] = 0.0
        return colour, layout

    def __call__(self, i, j):
        """change between frames i and j: indices or index arrays, broadcast against each other (at least 1-d)."""
        i, j = (np.clip(np.atleast_1d(k), 0, self.num_frames - 1) for k in (i, j))
        change = np.maximum(histogram_distance(self.histograms[i], self.histograms[j]) / self.colour_threshold,
                            layout_distance(self.tiles[i], self.tiles[j]) / self.layout_threshold)
        return np.where(self.blank[i] & self.blank[j], 0.0, change)


def around(values, window):
    """values[t - window : t + window + 1] without values[t] itself, for every t: (T, 2 x window), ends mirrored."""
    padded = np.pad(values, window, mode="reflect" if len(values) > window else "edge")
    return np.delete(np.lib.stride_tricks.sliding_window_view(padded, 2 * window + 1), window, axis=1)


def stands_out(steps, threshold, ratio, window, no_evidence):
    """steps >= threshold and >= ratio x the local level: the largest of the medians of the `window` steps before,
    of the `window` steps after, and of the 3 steps on either side together. A cut is one large step among small
    ones. Camera motion raises the steps for as long as it lasts, on the side where it is (the first frame of a
    fast pan out of a still shot is no cut); a fade raises them for a few frames (its steps are alike, while an
    overlay flashed next to a cut adds two large steps out of six). Steps flagged in no_evidence do not count
    (between blank frames, into a repeated picture: see hard_cuts)."""
    if len(steps) < 2:
        return np.zeros(len(steps), bool)
    level = steps.copy()
    level[0] = level[1]  # no step into frame 0: borrow the next one so it does not pull medians down
    level[no_evidence] = np.nan
    sides = around(level, window)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-blank neighbourhoods: no level, NaN
        level = np.nanmax([np.nanmedian(sides[:, :window], axis=1), np.nanmedian(sides[:, window:], axis=1),
                           np.nanmedian(around(level, 3), axis=1)], axis=0)
    return (steps >= threshold) & (steps >= ratio * np.nan_to_num(level))


def is_flash(change, t, flash_frames, ratio=0.5):
    """A jump at t is a flash, or an overlay flashed onto a few frames, if the picture before it comes back soon:
    one of the frames t-1-F..t-1 resembles one of t..t+F (the jump itself, t-1 to t, aside). That covers the jump
    into a flash, the jump back, and every step of a flash that fades out over a few frames (white, then 0.9, then
    0.5 white): the picture from before the flash is back a few frames after each of them."""
    jump = change(t - 1, t)[0]
    before = np.arange(max(0, t - 1 - flash_frames), t)
    after = np.arange(t, min(change.num_frames, t + 1 + flash_frames))
    pairs = change(before[:, None], after[None, :])
    pairs[-1, 0] = np.inf  # frames t-1 and t: the jump itself
    return pairs.min() < ratio * jump


def lasting_change(change, t, reach=2):
    """Strength of a cut at t: the median change between the frames t-1-reach..t-1 and t..t+reach, all pairs. A
    cut changes every frame after it from every frame before; an overlay flashed next to a cut changes only the
    pairs it is on, so where two jumps compete, the cut wins."""
    before, after = np.arange(t - 1 - reach, t), np.arange(t, t + 1 + reach)
    return float(np.median(change(before[:, None], after[None, :])))


def spread(a, b, noise=3.0):
    """How much of the picture a change covers, from colour tiles a and b (9, 16, 3): the median over the tiles of
    their squared colour difference, over its mean (plus `noise` grey levels per channel, so that two identical
    frames give 0). About 1/2 when every part of the picture changes, by much or by little (a cut, the light, every
    step of a dissolve or a fade); near 0 when the change is in one part and the rest of the picture goes on as
    before (a box or a caption appearing, whatever its size as long as the rest stays, or people in a still room)."""
    change = ((a.astype(np.float64) - b) ** 2).sum(axis=-1)
    return float(np.median(change) / (change.mean() + 3 * noise ** 2))


def light_change(a, b, gains=(0.5, 2.0), unexplained=0.1):
    """Whether colour tiles b (9, 16, 3) are tiles a under other light: b = g a + o, one gain g within `gains` and
    one offset for every tile and channel, leaves less than `unexplained` of the change (an exposure step, a lamp
    switched on). Not so for a new picture, a change of colour (the gain would differ per channel) or a cut to
    black (g near 0)."""
    x, y = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    gain, offset = np.polyfit(x, y, 1)
    left = ((y - gain * x - offset) ** 2).sum() / max(((y - x) ** 2).sum(), 1e-9)
    return bool(gains[0] <= gain <= gains[1] and left < unexplained)


def hard_cuts(change, ratio=3.0, window=12, flash_frames=4, min_spread=0.08):
    """Frames t where a new shot starts abruptly, with their strength (lasting_change), and the frames of the jumps
    that change only part of the picture. A cut: the colours or the layout of frame t differ from frame t-1 by at
    least their threshold and by at least ratio x the local level of that kind of change, the change covers the
    picture (spread >= min_spread: a box or a caption appearing over a picture that goes on is no cut, whatever its
    size) and the picture before does not come back within flash_frames (a flash).

    Colour catches cuts between different places and light, but a 4-level histogram also jumps when the exposure
    does: a colour jump with the layout unchanged must be more than a change of light (light_change). Layout
    catches cuts within one palette. Each against its own local level, so camera motion (which raises the steps
    for as long as it lasts) does not fire. Two kinds of step are no evidence of that level: those between blank
    frames (no change, but no evidence of stillness either) and those into a repeated picture next to a step that
    shows change. Footage of 10-15 frames/s shown at 24-30 repeats each picture 2 or 3 times, and its still steps
    would pull the level down to nothing between the steps that show the motion; a repeated picture leaves the
    layout as it was to within noise (a hundredth of its threshold) and the colours nearly so (a tenth)."""
    colour, layout = change.steps()
    same = (layout < change.layout_threshold / 100) & (colour < change.colour_threshold / 10)
    repeated = same & ~(np.concatenate([[True], same[:-1]]) & np.concatenate([same[1:], [True]]))
    no_evidence = np.concatenate([[False], change.blank[1:] & change.blank[:-1]]) | repeated
    by_colour = stands_out(colour, change.colour_threshold, ratio, window, no_evidence)
    by_layout = stands_out(layout, change.layout_threshold, ratio, window, no_evidence)
    jumps = by_colour | by_layout
    jumps[1:] &= ~(change.blank[1:] | change.blank[:-1])  # into or out of blank frames: blank_cuts decides
    cuts, partial = [], []
    for t in np.flatnonzero(jumps):
        if spread(change.colour_tiles[t - 1], change.colour_tiles[t]) < min_spread:
            partial.append(int(t))
            continue
        if is_flash(change, t, flash_frames):
            continue
        if not by_layout[t] and light_change(change.colour_tiles[t - 1], change.colour_tiles[t]):
            continue
        cuts.append((int(t), lasting_change(change, t)))
    return cuts, partial


def window_changes(change, frames):
    """How different the mean picture of frames t-frames..t-1 is from that of t..t+frames-1, for every t (0 where
    the windows do not fit), in the units of FrameChange: max(colour / colour threshold, layout / layout
    threshold) between the mean histograms and the mean tiles. Every step of a dissolve is small, so the cut test
    misses it; the window means see the whole change."""
    n = change.num_frames
    score = np.zeros(n, np.float32)
    if n < 2 * frames:
        return score
    t = np.arange(frames, n - frames + 1)

    def means(values):  # (mean of the window before t, mean of the window after t) for every t
        sums = np.concatenate([np.zeros_like(values[:1], np.float64), np.cumsum(values, axis=0, dtype=np.float64)])
        return (sums[t] - sums[t - frames]) / frames, (sums[t + frames] - sums[t]) / frames

    score[t] = np.maximum(histogram_distance(*means(change.histograms)) / change.colour_threshold,
                          layout_distance(*means(change.tiles)) / change.layout_threshold)
    return score


def blend_fit(tiles):
    """Fit every frame of a run as a mix of the first and the last, (1 - a) first + a last, from their tiles.
    Returns the mixing weights a (clipped to 0..1) and the mean squared residual of the frames in between (0.05 <
    a < 0.95) relative to the squared change first -> last: near 0 when the frames go straight from one picture to
    the other (a dissolve; a cut has no frame in between), about 1/6 for a wipe or a pan from one region to
    another (the change sweeps across the frame instead of happening everywhere at once), more for motion."""
    x = tiles.reshape(len(tiles), -1).astype(np.float64)
    first, change = x[0], x[-1] - x[0]
    size = max(change @ change, 1e-9)
    weights = np.clip((x - first) @ change / size, 0, 1)
    residual = ((x - first - weights[:, None] * change) ** 2).sum(axis=1) / size
    between = (weights > 0.05) & (weights < 0.95)
    return weights, float(residual[between].mean()) if between.any() else 0.0


def moved_copy(a, b, max_shift=(4, 8)):
    """How much of the difference between tiles a and b (9, 16) is left when a is shifted onto b by whole tiles
    (up to max_shift (rows, columns); where they overlap): near 0 when b is a moved copy of a (a camera pan), mostly
    0.2 or more between unrelated pictures."""
    rows, columns = max_shift
    padded = np.pad(a.astype(np.float64), ((rows, rows), (columns, columns)), constant_values=np.nan)
    moved = np.lib.stride_tricks.sliding_window_view(padded, a.shape)  # a under every shift, NaN where it moved off
    errors = np.nanmean((moved - b) ** 2, axis=(-2, -1))
    return float(errors.min() / max(errors[rows, columns], 1e-9))     # [rows, columns]: not shifted


def gradual_transitions(change, frames=16, threshold=1.5, ratio=2.0, max_residual=0.08, min_moved=0.1, cuts=(),
                        min_spread=0.08):
    """Dissolves, each as one boundary at the frame where the new picture takes over, with its strength.

    A candidate is a peak of window_changes: >= threshold, the largest within +-frames and >= ratio x the level
    around it (a long camera move keeps the level up), with none of the `cuts` in its windows (the change there is
    the cut, or a jump already judged no cut: a box appearing while the camera moves). It is a dissolve if, over
    the 2 x frames frames around it:
    - neither end is blank: fades from and to blank frames are the blank runs' boundaries;
    - the two ends differ in layout (>= the cut threshold): else it is one picture whose light changed;
    - the change covers the picture (spread >= min_spread): else a box or a caption faded in or out over a picture
      that goes on;
    - every frame is a mix of the two ends (blend_fit residual <= max_residual): rules out pans and wipes from one
      region to another, and motion;
    - the last frame is not a moved copy of the first (moved_copy >= min_moved): rules out slow pans, whose frames
      look like mixes at the scale of tiles.
    Dissolves with much motion in them fail too: missing one merges two shots; a false one splits one shot.

    One boundary, not a shot of its own: the released code drops the frames of a transition with the shots under
    8 frames, but a dissolve of 0.5-1 s is long enough to pass cleaning as a shot of blended pictures. Split where
    the new picture takes over (its weight reaches 1/2, near the middle), each half stays with its shot, and
    keyframes (near 1/3 and 2/3 of a clip) rarely fall on it."""
    n, tiles = change.num_frames, change.tiles
    if not frames or n < 2 * frames:
        return []
    steps = window_changes(change, frames)
    peak = steps == np.max(np.lib.stride_tricks.sliding_window_view(np.pad(steps, frames), 2 * frames + 1), axis=1)
    level = np.quantile(around(steps, 4 * frames), 0.25, axis=1)  # transitions close together leave it low
    found = []
    for centre in np.flatnonzero(peak & (steps >= threshold) & (steps >= ratio * level)):
        first, last = centre - frames, centre + frames - 1
        if change.blank[first] or change.blank[last] or any(first < cut <= last for cut in cuts):
            continue
        if layout_distance(tiles[first], tiles[last]) < change.layout_threshold:
            continue
        if spread(change.colour_tiles[first], change.colour_tiles[last]) < min_spread:
            continue
        weights, residual = blend_fit(tiles[first:last + 1])
        if residual <= max_residual and moved_copy(tiles[first], tiles[last]) >= min_moved:
            found.append((int(first + np.argmax(weights >= 0.5)), float(steps[centre])))
    return found


def runs(flags):
    """[(start, end)] of the runs of True in a boolean array, end exclusive."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def blank_cuts(change, min_frames=8, flash_frames=4):
    """Boundaries at blank frames. A run of >= min_frames blank frames becomes a shot of its own, which cleaning
    drops: a black gap, the black middle of a fade through black, the black after a final fade-out. A fade to or
    from black thus ends or starts its shot where the picture has faded out, once. A shorter run starts a new shot
    if the pictures on its two sides differ (a quick dip to black between two shots), unless it is a flash: the
    colours jump into or out of it (a fade dims them step by step) and the picture from before it is back within
    flash_frames after it (a white flash, fading out or not; a dropped frame shown black)."""
    n, cuts = change.num_frames, []
    colours = change.histograms
    for start, end in runs(change.blank):
        if end - start >= min_frames:
            cuts += [frame for frame in (start, end) if 0 < frame < n]
        elif 0 < start and end < n and change(start - min_frames, end - 1 + min_frames)[0] >= 1:
            abrupt = max(histogram_distance(colours[start - 1], colours[start]),
                         histogram_distance(colours[end - 1], colours[end])) >= change.colour_threshold
            before = np.arange(max(0, start - 1 - flash_frames), start)
            after = np.arange(end, min(n, end + 1 + flash_frames))
            if not (abrupt and change(before[:, None], after[None, :]).min() < 1):
                cuts.append(start)
    return cuts


def cuts_to_shots(candidates, num_frames, min_shot_frames):
    """Accept candidate cut frames in priority order, never closer than min_shot_frames to an accepted cut; the cuts
    split [0, num_frames) into shots. Near the ends of the video a shot may be shorter: a clip taken from a longer
    video often starts with the last frames of a shot, and cleaning drops them."""
    kept = []
    for frame in candidates:
        if 0 < frame < num_frames and all(abs(frame - k) >= min_shot_frames for k in kept):
            kept.append(frame)
    bounds = [0] + sorted(kept) + [num_frames]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def find_shots(scan, colour_threshold=0.2, layout_threshold=0.3, ratio=3.0, window=12, flash_frames=4,
               min_shot_frames=7, fade_frames=16, fade_threshold=1.5, min_grey_range=10):
    """Frame ranges [start, end) covering the video, from a Scan. A frame is blank when its grey levels span less
    than min_grey_range. Priority when two candidates are too close: the boundaries at blank frames (certain, and
    they keep the steps of a fade to black out of the cuts), then hard cuts, strongest first, then dissolves."""
    blank = scan.grey_max.astype(np.int16) - scan.grey_min < min_grey_range
    change = FrameChange(scan.histograms, scan.tiles, blank, colour_threshold, layout_threshold)
    candidates = blank_cuts(change, flash_frames=flash_frames)
    cuts, partial = hard_cuts(change, ratio, window, flash_frames)
    candidates += [frame for frame, _ in sorted(cuts, key=lambda cut: -cut[1])]
    dissolves = gradual_transitions(change, fade_frames, fade_threshold, cuts=candidates + partial)
    candidates += [frame for frame, _ in dissolves]
    return cuts_to_shots(candidates, scan.num_frames, min_shot_frames)


def detect_shots(path, **options):
    """Shots of a video file as [(start, end), ...] frame ranges, end exclusive, covering every decoded frame.
    Options: the keyword arguments of find_shots."""
    return find_shots(scan_video(path), **options)
