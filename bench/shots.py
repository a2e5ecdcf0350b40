"""Shot detection speed: detect_shots vs decoding alone, and `temple.py shots` as a whole process.

    python bench/shots.py            # generates bench/out/shots_768x576.mp4 (800 frames, 16 shots) once, then measures
    python bench/shots.py VIDEO      # measures on your video (accuracy is only reported for the generated one)

1. decode alone: the same PyAV settings detect_shots uses (threaded), every frame decoded, nothing converted;
2. detect_shots: decode + scale to 96x54 + histograms + cuts. Goal: time_ratio = 2 / 1 <= 1.3;
3. `python temple.py shots VIDEO` as a subprocess: interpreter start, imports, decode, detection. The bar is
   PySceneDetect's `scenedetect -i VIDEO detect-content list-scenes` (1.5 s on this video size, 2 cores, when we
   measured); if a `scenedetect` executable is on PATH (or given in $SCENEDETECT) it is timed here too.
The last line is `RESULT key=value ...`.
"""

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

import shots  # noqa: E402
from shots_media import camera, make_scene  # noqa: E402

WIDTH, HEIGHT, FRAMES, SHOT_FRAMES = 768, 576, 800, 50


def bench_video(path):
    """800 frames of 768x576 at 25 fps: 16 shots of a camera panning over textured scenes, x264 'veryfast'."""
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
    container, stream = shots.open_video(path)
    with container:
        return sum(1 for _ in shots.decoded_frames(container, stream, [0]))


def best_time(fn, repeats=5):
    """Fastest of `repeats` runs after a warm-up: other processes on the machine only ever add time."""
    fn()  # warm the file cache and the libraries
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def best_times(fns, repeats=7):
    """best_time of each function, the functions taking turns: a ratio of two times measured minutes apart would
    mostly measure how the load of the machine changed in between."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, kept in zip(fns, times):
            start = time.perf_counter()
            fn()
            kept.append(time.perf_counter() - start)
    return [min(kept) for kept in times]


def process_time(command, repeats=3):
    with tempfile.TemporaryDirectory() as scratch:  # scenedetect may write files into its working directory
        def run():
            subprocess.run(command, check=True, capture_output=True, cwd=scratch)
        return best_time(run, repeats)


def main():
    generated = len(sys.argv) < 2
    path = bench_video(os.path.join(ROOT, "bench", "out", "shots_768x576.mp4")) if generated else sys.argv[1]
    container, stream = shots.open_video(path)
    print(f"video: {path} ({stream.width}x{stream.height}, {stream.codec_context.name}), {os.cpu_count()} CPU cores")
    container.close()

    frames = decode_alone(path)
    decode_s, detect_s = best_times([lambda: decode_alone(path), lambda: shots.detect_shots(path)])
    print(f"decode alone:   {decode_s:.3f} s  ({frames / decode_s:.0f} frames/s)")
    print(f"detect_shots:   {detect_s:.3f} s  ({frames / detect_s:.0f} frames/s, {detect_s / decode_s:.2f}x decoding)")

    if generated:
        found = [start for start, _ in shots.detect_shots(path)[1:]]
        truth = list(range(SHOT_FRAMES, FRAMES, SHOT_FRAMES))
        hits = sum(any(abs(f - t) <= 1 for f in found) for t in truth)
        print(f"cuts: {hits} of {len(truth)} found within +-1 frame, {len(found) - hits} false")

    process_s = process_time([sys.executable, os.path.join(ROOT, "temple.py"), "shots", path])
    print(f"temple.py shots (whole process): {process_s:.3f} s")
    scenedetect = os.environ.get("SCENEDETECT") or shutil.which("scenedetect")
    if scenedetect:
        scenedetect_s = process_time([scenedetect, "-i", os.path.abspath(path), "detect-content", "list-scenes"])
        print(f"scenedetect detect-content list-scenes: {scenedetect_s:.3f} s")
        reference = f"scenedetect_s={scenedetect_s:.2f}"
    else:
        print("scenedetect not installed: comparing with the measured reference, 1.5 s for 800 frames of 768x576")
        reference = "scenedetect_ref_s=1.5"
    print(f"RESULT time_ratio={detect_s / decode_s:.2f} fps={frames / detect_s:.0f} decode_fps={frames / decode_s:.0f} "
          f"process_s={process_s:.2f} {reference}")


if __name__ == "__main__":
    main()
