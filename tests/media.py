"""Synthetic media for the tests: small videos written with PyAV, broken files, audio-only files."""

import wave

import av
import numpy as np


def write_video(path, frames, fps=25, codec="libx264"):
    """Encode (T, H, W, 3) uint8 frames; H and W must be even for yuv420p."""
    frames = np.asarray(frames, dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "18"}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def scene_frames(num_shots=4, frames_per_shot=10, height=64, width=96, seed=0):
    """Shots of distinct random colours with a moving bar, so every shot looks different and not constant."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(num_shots):
        base = rng.integers(30, 225, size=3)
        for k in range(frames_per_shot):
            frame = np.empty((height, width, 3), np.uint8)
            frame[:] = base
            x = (4 * k) % (width - 8)
            frame[:, x:x + 8] = 255 - base
            frames.append(frame)
    return np.stack(frames)


def write_audio_only(path, seconds=0.5, rate=8000):
    """A WAV file: a valid media file with no video stream."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.zeros(int(seconds * rate), np.int16).tobytes())
    return str(path)
