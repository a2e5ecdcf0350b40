"""decode.py - reading video files with PyAV: frames at given indices, and every frame of a file scaled down small.

Every frame index in this project is a position in the sequence of frames that decode (decoded_frames): shots.py
and selection.py number shots, clips and keyframes that way, and preprocess.py and the pair page read the frames
back by the same numbers. A broken file is one clear error naming it (VideoError, or OSError for a file that is
gone): batch jobs record it and go on.

The shot detector looks at every frame of a video, so scanning must cost little more than decoding: scan() samples
each frame down to SMALL_WIDTH x SMALL_HEIGHT straight from the decoder's planes and hands chunks of them to a
second thread while decoding goes on. It imports numpy and PyAV only; shots.py and this file copy together.

    frames, fps = decode.read_frames("clip.mp4", [0, 30, 60])     # (3, H, W, 3) uint8 RGB
"""

import os
from concurrent.futures import ThreadPoolExecutor

import av
import numpy as np
from av.video.reformatter import VideoReformatter

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")

# The detector looks at frames of this size: small enough to be cheap, big enough for a 2x2 grid of histograms.
SMALL_WIDTH, SMALL_HEIGHT = 96, 54


class VideoError(ValueError):
    """A file that is no usable video: a directory, empty, not a video, no video stream, frames that do not decode."""


BAD_VIDEO = (OSError, av.FFmpegError, VideoError)  # what reading a vanished, unreadable or too short file raises


def open_video(path):
    """Open a file with PyAV and return (container, video stream); every error names the file."""
    path = str(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if os.path.isdir(path):
        raise VideoError(f"{path}: is a directory, not a video file")
    if os.path.getsize(path) == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
    try:
        container = av.open(path)
    except av.FFmpegError as e:
        raise VideoError(f"{path}: not a readable video ({e.strerror or e})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame + slice threads: decoding is most of the cost
    return container, stream


def stream_fps(stream):
    rate = stream.average_rate or stream.base_rate or stream.guessed_rate
    return float(rate) if rate else 25.0


def expected_frames(container, stream, fps):
    """(frames the container promises, whether that is its own count): the stream's count, else duration x fps
    (webm/mkv have no count); 0 = unknown."""
    if stream.frames:
        return stream.frames, True
    if stream.duration and stream.time_base:
        return round(float(stream.duration * stream.time_base) * fps), False
    if container.duration:
        return round(container.duration / av.time_base * fps), False
    return 0, False


def decoded_frames(container, stream, errors):
    """Yield every frame that decodes, in order. A corrupt packet is counted in errors[0] and skipped, not fatal.

    Frame indices everywhere in this project are positions in this sequence: read_frames below (which vlm.py and the
    pair view use too) counts the same way."""
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except (av.FFmpegError, ValueError):
            errors[0] += 1
            continue
        yield from frames


def count_frames(path):
    """Frames in the first video stream, cheaply: the header's count, or the packets (webm/mkv have no count). A
    file may promise more than decode (select rejects those); read_frames then says which frames are missing."""
    container, stream = open_video(path)
    with container:
        if stream.frames:
            return stream.frames
        return sum(1 for packet in container.demux(stream) if packet.size)


def read_frames(path, indices):
    """(RGB frames (len(indices), H, W, 3) uint8 at the given frame indices, in the order given; the file's fps).
    An index is a position in decoded_frames' sequence, the numbering every frame index in this project uses."""
    wanted = set(int(i) for i in indices)
    container, stream = open_video(path)
    found = {}
    with container:
        for index, frame in enumerate(decoded_frames(container, stream, [0])):
            if index in wanted:
                found[index] = frame.to_ndarray(format="rgb24")
            if index >= max(wanted):
                break
    missing = sorted(wanted - found.keys())
    if missing:
        raise VideoError(f"{path}: could not decode frame(s) {missing[:5]} (video has fewer frames or is corrupt)")
    return np.stack([found[int(i)] for i in indices]), stream_fps(stream)


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


def scan(path, summarise, chunk=32):
    """Decode the whole video once, point-sample every frame to SMALL_WIDTH x SMALL_HEIGHT, and return (the file's
    fps, [summarise(frames) of each chunk of up to `chunk` frames (T, H, W, 3) uint8, in order], the frames the
    container promises, whether that is its own count, corrupt packets skipped).

    Frames that do not decode are skipped; a file of which no frame decodes raises VideoError naming it."""
    container, stream = open_video(path)
    fps = stream_fps(stream)
    # Point sampling, not area averaging: a histogram only needs a fair sample of the pixels, and averaging every
    # pixel of a large frame costs a third of the decoding time.
    small = SmallFrames()
    errors, pending, summaries = [0], [], []

    def convert(chunk):
        """summarise() of a chunk of sampled frames. Numpy works on whole chunks (per-frame calls would cost more
        than the arithmetic), small enough to stay in the CPU cache from one step to the next, in planes (each step
        reads one colour at a time)."""
        rgb = np.empty((3, len(chunk), SMALL_HEIGHT * SMALL_WIDTH), np.uint8)
        keys = [key for key, _ in chunk]
        for key in set(keys):  # one key in practice; a stream can change pixel format midway
            at = [i for i, k in enumerate(keys) if k == key]
            samples = np.stack([chunk[i][1] for i in at])
            rgb[:, at] = small.to_rgb(samples, *key) if key else samples.reshape(len(at), -1, 3).transpose(2, 0, 1)
        return summarise(np.moveaxis(rgb.reshape(3, -1, SMALL_HEIGHT, SMALL_WIDTH), 0, -1))  # (T, H, W, 3) view

    # Chunks are summarised in a second thread while this one goes on decoding: with frame threading, the decoder
    # only works ahead by a few frames, so work done here between two frames stalls it (numpy and the decoder
    # both release the GIL). At most a few chunks wait, so memory stays bounded on long videos.
    with container, ThreadPoolExecutor(1) as worker:
        promised, exact = expected_frames(container, stream, fps)
        try:
            for frame in decoded_frames(container, stream, errors):
                pending.append(small.take(frame))
                if len(pending) == chunk:
                    summaries.append(worker.submit(convert, pending))
                    pending = []
                    if len(summaries) > 4:
                        summaries[-5].result()
        except av.FFmpegError as e:  # the demuxer itself gave up: keep what decoded
            errors[0] += 1
            if not summaries and not pending:
                raise VideoError(f"{path}: not a readable video ({e.strerror or e})") from None
        if pending:
            summaries.append(worker.submit(convert, pending))
        parts = [summary.result() for summary in summaries]
    if not parts:
        raise VideoError(f"{path}: truncated or corrupt: no frame could be decoded")
    return fps, parts, promised, exact, errors[0]
