"""Synthetic edited videos for the shot tests and bench/shots.py: a camera moving over textured procedural scenes.

A scene is a large image: smooth random colour regions plus fine texture (so frames have edges, motion looks like
motion and sharpness means something). A shot is a camera path over one scene; the edits between shots are hard
cuts, cross-dissolves, flashes and a black lead-in, all at known frames.
"""

import numpy as np
from PIL import Image


def make_scene(seed, height=216, width=384):
    """A (height, width, 3) uint8 landscape: a 4x6 grid of random colours blended smoothly, plus texture."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(20, 236, (4, 6, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), np.float32)
    texture = rng.normal(0, 1, (height // 4, width // 4)).astype(np.float32)
    texture = np.asarray(Image.fromarray(texture, mode="F").resize((width, height), Image.BILINEAR))
    return np.clip(image + 18 * texture[..., None], 0, 255).astype(np.uint8)


def camera(scene, frames, start=(0, 0), velocity=(0.0, 1.0), height=72, width=128):
    """`frames` crops of scene along a straight path (y, x) + k * velocity; wraps around the scene's edges."""
    sy, sx = scene.shape[:2]
    out = []
    for k in range(frames):
        y = int(round(start[0] + k * velocity[0])) % sy
        x = int(round(start[1] + k * velocity[1])) % sx
        rows = np.arange(y, y + height) % sy
        cols = np.arange(x, x + width) % sx
        out.append(scene[rows][:, cols])
    return np.stack(out)


def dissolve(a, b, frames):
    """Cross-dissolve from the last frame of a to the first of b over `frames` blended frames."""
    w = np.linspace(0, 1, frames + 2)[1:-1, None, None, None]
    return (a[-1] * (1 - w) + b[0] * w).astype(np.uint8)


def flash(frames, at, length=2, strength=0.75):
    """Brighten frames[at:at + length] towards white, like a photographer's flash."""
    frames = frames.copy()
    frames[at:at + length] = (frames[at:at + length] * (1 - strength) + 255 * strength).astype(np.uint8)
    return frames


def fading_flash(frames, at, strengths=(1.0, 0.9, 0.5)):
    """A white flash that fades out: frames[at + k] mixed with white by strengths[k] (1.0 = all white)."""
    frames = frames.copy()
    for k, strength in enumerate(strengths):
        frames[at + k] = (frames[at + k] * (1 - strength) + 255 * strength).astype(np.uint8)
    return frames


def repeated(frames, times):
    """Every `times`-th frame shown `times` times: 10 frames/s material at 30 (times 3), as much web video is."""
    return np.repeat(frames[::times], times, axis=0)[:len(frames)]


def edited_video(num_shots=6, shot_frames=30, seed=0, same_scene_every=3, height=72, width=128):
    """Shots with hard cuts at known frames. Every `same_scene_every`-th shot films another part of the previous
    shot's scene (same palette: the hard case for histograms). Returns (frames, cut frames)."""
    rng = np.random.default_rng(seed)
    scene = make_scene(seed)
    shots, cuts = [], []
    for i in range(num_shots):
        if i and i % same_scene_every != 0:
            scene = make_scene(seed * 1000 + i)
        start = (rng.integers(0, 216), rng.integers(0, 384))
        velocity = rng.uniform(-2, 2, size=2)
        shots.append(camera(scene, shot_frames, start, velocity, height, width))
        cuts.append(i * shot_frames)
    return np.concatenate(shots), cuts[1:]


def palette_scene(seed, palette_seed=0, height=216, width=384, cells=(36, 64)):
    """A scene of small patches, each one of four colours of a palette: scenes of one palette_seed share their
    colours (what a histogram sees) and differ in layout (two faces in one warmly lit room)."""
    palette = np.random.default_rng(palette_seed).integers(40, 220, (4, 3))
    rng = np.random.default_rng(seed)
    coarse = palette[rng.integers(0, len(palette), cells)].astype(np.uint8)
    image = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), np.float32)
    return np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)


def overlay(frames, at, length=1, box=(0.3, 0.3, 0.4, 0.4), value=245):
    """A box of one colour drawn onto frames[at:at + length] (a graphics glitch); box = (top, left, height, width)
    as fractions of the frame."""
    frames = frames.copy()
    h, w = frames.shape[1:3]
    top, left, height, width = box
    frames[at:at + length, int(top * h):int((top + height) * h), int(left * w):int((left + width) * w)] = value
    return frames


def uniform_ramp(levels, height=72, width=128):
    """Frames that are each one uniform grey level: a flat fade (no picture at all, whatever the level)."""
    return np.broadcast_to(np.asarray(levels, np.uint8)[:, None, None, None], (len(levels), height, width, 3)).copy()


def fade(frames, to=0, start=0.0, end=1.0):
    """frames mixed with a uniform level `to`, its weight going from start to end: a fade-out (0 -> 1) or in."""
    w = np.linspace(start, end, len(frames))[:, None, None, None]
    return (frames * (1 - w) + to * w).astype(np.uint8)


def panorama(seeds, height=216):
    """Scenes side by side: a camera panning across it goes from one place to another."""
    return np.concatenate([make_scene(seed, height, 384) for seed in seeds], axis=1)


def subtitles(frames, at, seed=0):
    """Two lines of white glyph blocks burnt into the bottom of frames[at:], like captions appearing."""
    frames = frames.copy()
    h, w = frames.shape[1:3]
    glyphs = np.kron(np.random.default_rng(seed).random((2, 24)) < 0.6, np.ones((4, 3), bool))
    top, left = int(0.8 * h), int(0.2 * w)
    frames[at:, top:top + glyphs.shape[0], left:left + glyphs.shape[1]][:, glyphs] = 235
    return frames
