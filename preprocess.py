"""preprocess.py - a video as Qwen-VL sees it: frames sampled, resized, normalised and cut into patches.

Written here because every transformers video processor needs torchvision. It follows qwen_vl_utils, which the
released run used (docs/method.md, "Training": 1 fps, at most 600 frames, 9,000,000 pixels for the whole video):
    1. sample duration x fps frames, at least 4 and at most `max_frames`, rounded down to an even count, spread
       evenly over the video; the rate actually sampled (frames kept / frames x the file's fps) is Video.fps,
    2. give each frame an equal share of the total pixel budget and resize it to multiples of patch_size *
       merge_size (28 for Qwen2/2.5-VL, 32 for Qwen3-VL): decoded video with torchvision's antialiased bicubic
       (resize_video, bit-exact), a list of frames (keyframes, stills) with PIL's bicubic as images are,
    3. rescale to [0, 1], normalise (CLIP mean/std; 0.5/0.5 for Qwen3-VL),
    4. pad the frame count to a multiple of the temporal patch (2) with the last frame and cut into patches of
       channels x 2 frames x patch x patch, grouped merge x merge so the merger sees neighbours together.
A single image is a video of one frame; this is bit-exact with Qwen2VLImageProcessorPil (tests/test_vlm.py).
vlm.Processor.preprocess puts the steps together with a model's sizes.

    video = preprocess.read_video("clip.mp4", fps=1.0, max_frames=600)     # a Video: frames, times, rate
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

import decode


BAD_VIDEO = decode.BAD_VIDEO  # what read_video / read_frames raise for a vanished, unreadable or too short file


FRAME_LIST_FPS = 2.0  # qwen_vl_utils' rate for a list of frames given without one (its sample_fps default)


@dataclass
class Video:
    """Decoded RGB frames (T, H, W, 3) uint8, the time of each frame in seconds, and the rate they were sampled at.

    `fps` is qwen_vl_utils' sample_fps: frames kept / frames in the file x the file's frame rate (read_video sets
    it). None means a list of frames (keyframes, a still image): qwen_vl_utils resizes those as images and gives them
    a nominal FRAME_LIST_FPS."""
    frames: np.ndarray
    times: list
    path: str = ""
    fps: float | None = None


def sample_indices(num_frames, video_fps, fps, max_frames, min_frames=4):
    """qwen_vl_utils' smart_nframes: duration x fps frames, clamped to [min_frames, max_frames] and to the video,
    rounded *down* to an even count, spread evenly (torch.linspace, rounded) over the whole video."""
    if num_frames < 2:
        return [0] * num_frames
    low, high = math.ceil(min_frames / 2) * 2, math.floor(min(max_frames, num_frames) / 2) * 2
    count = min(max(num_frames / video_fps * fps, low), high, num_frames)
    count = max(2, math.floor(count / 2) * 2)
    return torch.linspace(0, num_frames - 1, count).round().long().tolist()


def read_frames(path, indices):
    """The frames at the given indices (e.g. keyframes), in the order given; decode.py numbers frames for
    selection.py too, so a keyframe index chosen there is the same frame here."""
    frames, fps = decode.read_frames(path, indices)
    check_shape(*frames.shape[1:3], where=f"{path}: ")  # a property of the video: refused with the file's name
    return Video(frames, [int(i) / fps for i in indices], str(path))


def read_video(path, fps=1.0, max_frames=600, min_frames=4):
    """Frames sampled at `fps` (the released run: 1 fps, at most 600 frames), with the rate actually sampled."""
    num_frames = decode.count_frames(path)
    if num_frames == 0:
        raise decode.VideoError(f"{path}: the video stream has no frames")
    container, stream = decode.open_video(path)
    container.close()
    video_fps = decode.stream_fps(stream)
    video = read_frames(path, sample_indices(num_frames, video_fps, fps, max_frames, min_frames))
    video.fps = len(video.frames) / num_frames * video_fps  # the rate sampled (docs/stack.md, "Seconds per patch")
    return video


class ExtremeShape(decode.VideoError):
    """A picture whose sides differ more than 200 times: Qwen's preprocessing refuses it. read_frames checks it as
    soon as a video's frames are decoded, so it is one more BAD_VIDEO: batch jobs record it, training leaves the
    example out, eval skips the item."""


def check_shape(height, width, where=""):
    if max(height, width) / min(height, width) > 200:
        raise ExtremeShape(f"{where}aspect ratio {max(height, width) / min(height, width):.0f} is over 200")


def smart_resize(height, width, factor, min_pixels, max_pixels):
    """Closest size with both sides multiples of `factor` (never below one) and the area within [min_pixels,
    max_pixels] (qwen_vl_utils and transformers agree on this)."""
    check_shape(height, width)
    h, w = max(factor, round(height / factor) * factor), max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


def frame_max_pixels(num_frames, total_pixels, min_pixels, max_pixels, temporal_patch=2):
    """qwen_vl_utils: an equal share of the video's pixel budget (two frames make one temporal patch)."""
    return max(min(max_pixels, total_pixels / num_frames * temporal_patch), int(min_pixels * 1.05))


def resize_frames(frames, height, width):
    """PIL bicubic, frame by frame: what qwen_vl_utils (fetch_image) and Qwen2VLImageProcessorPil do to images, and
    so to lists of frames (keyframes)."""
    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BICUBIC)) for f in frames])


def resize_video(frames, height, width, chunk=32):
    """What qwen_vl_utils' fetch_video does to decoded video: torchvision's resize of a uint8 (T, C, H, W) tensor with
    bicubic interpolation and antialiasing, which is torch's own interpolate on float32 copies, clamped to [0, 255]
    and rounded back to uint8. (PIL's bicubic differs by up to ~15 levels on a few per cent of the values.)
    `chunk` frames at a time bound the float32 copy; every frame is computed alone, so the result is the same."""
    if frames.shape[1:3] == (height, width):
        return frames
    out = []
    for start in range(0, len(frames), chunk):
        x = torch.from_numpy(np.ascontiguousarray(frames[start:start + chunk])).permute(0, 3, 1, 2).float()
        x = torch.nn.functional.interpolate(x, size=(height, width), mode="bicubic", align_corners=False,
                                            antialias=True)
        out.append(x.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def patchify(frames, mean, std, patch, merge, temporal_patch):
    """(T, H, W, 3) uint8 -> float32 patches (t*h*w, 3*temporal_patch*patch*patch) and the grid (t, h, w)."""
    # The same float steps as transformers' numpy path (float64 rescale, float32 normalise): bit-exact output.
    x = (frames.astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    x = x.transpose(0, 3, 1, 2)  # T, C, H, W
    if pad := -len(x) % temporal_patch:
        x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
    t, c, height, width = len(x) // temporal_patch, x.shape[1], x.shape[2] // patch, x.shape[3] // patch
    x = x.reshape(t, temporal_patch, c, height // merge, merge, patch, width // merge, merge, patch)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)  # t, h-blocks, w-blocks, merge rows, merge cols, C, T, p, p
    return np.ascontiguousarray(x.reshape(t * height * width, c * temporal_patch * patch * patch)), (t, height, width)
