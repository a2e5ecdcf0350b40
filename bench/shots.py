"""Shot detection speed: detect_shots vs decoding alone, and `temple.py shots` as a whole process.

    python bench/shots.py            # generates bench/out/shots_1280x720.mp4 (720 frames, 16 shots) once, then measures
    python bench/shots.py VIDEO      # measures on your video (accuracy is only reported for the generated one)
    SCENEDETECT=/path/to/scenedetect python bench/shots.py    # PySceneDetect from another environment

1. decode alone: the same PyAV settings detect_shots uses (threaded), every frame decoded, nothing converted;
2. detect_shots: decode + scale to 96x54 + histograms, tiles, grey ranges + shots. Goal: time_ratio = 2 / 1 <= 1.3;
3. `python temple.py shots VIDEO` as a subprocess: interpreter start, imports, decode, detection. The bar is
   PySceneDetect's `scenedetect -i VIDEO detect-content list-scenes` as a whole process (3.0 s on this video, 2
   cores, when we measured); if a `scenedetect` executable is on PATH (or given in $SCENEDETECT) it is timed here
   too, the two processes taking turns.
Times are the fastest of several runs, the contenders taking turns: other work on the machine only ever adds time.
The last line is `RESULT key=value ...`.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import av
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import decode  # noqa: E402
import shots  # noqa: E402
from shots_media import camera, make_scene  # noqa: E402

WIDTH, HEIGHT, FRAMES, SHOT_FRAMES = 1280, 720, 720, 45


def bench_video(path):
    """720 frames of 1280x720 at 25 fps: 16 shots of a camera panning over textured scenes, x264 'veryfast'."""
    if os.path.exists(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(0)
    with av.open(path + ".tmp.mp4", "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for shot in range(FRAMES // SHOT_FRAMES):
            scene = make_scene(shot % 11, height=2 * HEIGHT, width=2 * WIDTH)  # shots 11.. revisit earlier scenes
            start, velocity = rng.integers(0, 2 * HEIGHT, 2), rng.uniform(-8, 8, 2)
            for image in camera(scene, SHOT_FRAMES, start, velocity, HEIGHT, WIDTH):
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    os.replace(path + ".tmp.mp4", path)
    return path


def decode_alone(path):
    container, stream = decode.open_video(path)
    with container:
        return sum(1 for _ in decode.decoded_frames(container, stream, [0]))


def best_times(fns, repeats=7):
    """Fastest of `repeats` runs of each function after a warm-up (file cache, libraries), the functions taking
    turns: a ratio of two times measured minutes apart would mostly measure how the load of the machine changed
    in between."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, kept in zip(fns, times):
            start = time.perf_counter()
            fn()
            kept.append(time.perf_counter() - start)
    return [min(kept) for kept in times]


def process(command, scratch):
    """A function running the command as a process (in scratch: scenedetect may write files there)."""
    return lambda: subprocess.run(command, check=True, capture_output=True, cwd=scratch)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", nargs="?", help="a video to time (default: a generated 1280x720 one)")
    video = parser.parse_args().video
    path = video or bench_video(os.path.join(ROOT, "bench", "out", "shots_1280x720.mp4"))
    container, stream = decode.open_video(path)
    print(f"video: {path} ({stream.width}x{stream.height}, {stream.codec_context.name}), {os.cpu_count()} CPU cores")
    container.close()

    frames = decode_alone(path)
    decode_s, detect_s = best_times([lambda: decode_alone(path), lambda: shots.detect_shots(path)])
    print(f"decode alone:   {decode_s:.3f} s  ({frames / decode_s:.0f} frames/s)")
    print(f"detect_shots:   {detect_s:.3f} s  ({frames / detect_s:.0f} frames/s, {detect_s / decode_s:.2f}x decoding)")

    if video is None:  # generated: its true cuts are known
        found = [start for start, _ in shots.detect_shots(path)[1:]]
        truth = list(range(SHOT_FRAMES, FRAMES, SHOT_FRAMES))
        hits = sum(any(abs(f - t) <= 1 for f in found) for t in truth)
        print(f"cuts: {hits} of {len(truth)} found within +-1 frame, {len(found) - hits} false")

    temple = [sys.executable, os.path.join(ROOT, "temple.py"), "shots", os.path.abspath(path)]
    scenedetect = os.environ.get("SCENEDETECT") or shutil.which("scenedetect")
    with tempfile.TemporaryDirectory() as scratch:
        commands = [temple] + ([[scenedetect, "-i", os.path.abspath(path), "detect-content", "list-scenes"]]
                               if scenedetect else [])
        process_s, *scenedetect_s = best_times([process(c, scratch) for c in commands], repeats=3)
    print(f"temple.py shots (whole process): {process_s:.3f} s")
    if scenedetect_s:
        print(f"scenedetect detect-content list-scenes: {scenedetect_s[0]:.3f} s")
        reference = f"scenedetect_s={scenedetect_s[0]:.2f}"
    else:
        print("scenedetect not installed: comparing with the measured reference, 3.0 s for 720 frames of 1280x720")
        reference = "scenedetect_ref_s=3.0"
    print(f"RESULT time_ratio={detect_s / decode_s:.2f} fps={frames / detect_s:.0f} decode_fps={frames / decode_s:.0f} "
          f"process_s={process_s:.2f} {reference}")


if __name__ == "__main__":
    main()
