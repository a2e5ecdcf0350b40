"""views.py - the pictures a person looks at: the HTML page of preference pairs, and the training curves as a PNG.

Neither needs torch (pillow, PyAV, the standard library), so `temple.py view` and `plot` start in a moment.

    python temple.py view data/pairs_r16.jsonl --out pairs.html     # pair_page: read 20-30 pairs per r before training
    python temple.py plot runs/dpo_r16 runs/dpo_r8 --out curves.png # plot_curves: metrics.jsonl of runs, end to end

The pair page shows, per pair, the keyframe thumbnails of the video's clips in the clean order and in the order the
perturbation left (drop / shuffle / reverse at difficulty r), then the chosen and the rejected description side by
side, and the filter counts of the pairs file (pairs_r{r}.stats.json). The curves are loss, rewards/accuracies and
rewards/margins against step, with the runs of a curriculum drawn one after the other and a dashed line where an
adaptive stage stopped early.
"""

import base64
import html
import io
import json
import math
import os
import random
import sys

from PIL import Image, ImageDraw, ImageFont

import datafiles
import decode

# ----------------------------------------------------------------------------------------------------------------
# The pair page: one static HTML file (thumbnails inline), to read pairs before training on them

PAGE_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; width: 100%; table-layout: fixed; }
td, th { border-top: 1px solid #ccc; padding: .6em; vertical-align: top; text-align: left; overflow-wrap: anywhere; }
th.text { width: 34%; } .pair td.text { white-space: pre-wrap; }
.chosen { background: #f1f8f1; } .rejected { background: #fbf1f1; }
.strip { margin: .3em 0; } .cells { display: flex; flex-wrap: wrap; gap: 2px; }
.t { flex: none; max-width: 100%; position: relative; background: #ddd center / cover; }
.t b { position: absolute; left: 2px; top: 1px; color: #fff; font-size: 11px; text-shadow: 0 0 2px #000; }
.kind { font-weight: bold; } .note { color: #888; } details { margin-top: .4em; }
.stats td, .stats th { border: 1px solid #ccc; padding: .2em .6em; }
"""


def thumbnail_css(video, keyframes, height, css_class):
    """CSS rules with the first keyframe of every clip as an inline JPEG (each clip stored once on the page). The
    strip wraps, and a thumbnail wider than its column shrinks with its aspect ratio kept: every clip stays in view."""
    frames, _ = decode.read_frames(video, [pair[0] for pair in keyframes])
    width = max(1, round(frames.shape[2] * height / frames.shape[1]))
    rules = [f".{css_class} {{ width: {width}px; aspect-ratio: {width} / {height}; }}"]
    for i, frame in enumerate(frames):
        buffer = io.BytesIO()
        Image.fromarray(frame).resize((width, height), Image.BILINEAR).save(buffer, "JPEG", quality=70)
        data = base64.b64encode(buffer.getvalue()).decode()
        rules.append(f".{css_class}c{i} {{ background-image: url(data:image/jpeg;base64,{data}); }}")
    return "\n".join(rules)


def strip_html(order, css_class, label, captions=None):
    """A row of thumbnails in `order`, each labelled with its clip number; hovering shows the clip's caption."""
    titles = [f"clip {i + 1}" + (f": {captions[i]}" if captions else "") for i in order]
    cells = "".join(f'<span class="t {css_class} {css_class}c{i}" title="{html.escape(title)}"><b>{i + 1}</b></span>'
                    for i, title in zip(order, titles))
    return f'<div class="strip"><div class="note">{label}</div><div class="cells">{cells}</div></div>'


def pair_row(number, pair, video_info, css_class):
    """One <tr class="pair">: what was shown (clean vs perturbed clip order), then chosen | rejected."""
    order = pair.get("order")
    meta = (f'<b>#{number}</b> <span class="kind">{html.escape(str(pair.get("kind")))}</span> '
            f'r={html.escape(str(pair.get("r")))}<br><span class="note">{html.escape(pair["video"])}</span><br>'
            f'<i>{html.escape(pair["instruction"])}</i>')
    if video_info and css_class:  # css_class: the captions record has checked clips and keyframes
        n, captions = len(video_info["clips"]), video_info.get("captions")
        meta += strip_html(range(n), css_class, "clean order", captions)
        if order is not None and all(i < n for i in order):
            label = f"{pair.get('kind')} r={pair.get('r')}: {len(order)} of {n} clips"
            meta += strip_html(order, css_class, label, captions)
        elif order is not None:  # captions.jsonl was made again since the pairs
            meta += order_note(order, f"the captions file has {n} clips for this video")
    elif order is not None:
        meta += order_note(order, "no thumbnails")
    if video_info and video_info.get("captions"):
        items = "".join(f"<li>{html.escape(c)}</li>" for c in video_info["captions"])
        meta += f"<details><summary>clip captions</summary><ol>{items}</ol></details>"
    return (f'<tr class="pair"><td>{meta}</td><td class="text chosen">{html.escape(pair["chosen"])}</td>'
            f'<td class="text rejected">{html.escape(pair["rejected"])}</td></tr>')


def order_note(order, why):
    return f'<div class="note">clip order: {" ".join(str(i + 1) for i in order)} ({why})</div>'


def stats_html(stats):
    if not stats:
        return '<p class="note">no .stats.json beside the pairs file: filter counts unknown</p>'
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in stats.get("dropped", {}).items())
    kept = stats.get("kept_by_kind", {})  # kinds with no pair kept are absent there: listed as 0, as drop reasons are
    kinds = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{kept.get(k, 0)}</td></tr>"
                    for k in dict.fromkeys([*stats.get("kinds", []), *kept]))
    source = f' (input: {html.escape(str(stats["perturb_input"]))})' if stats.get("perturb_input") else ""
    return (f'<p>{stats.get("kept")} of {stats.get("candidates")} candidate pairs kept from {stats.get("videos")} '
            f'videos{source}.</p>'
            f'<table class="stats"><tr><th>kept, by kind</th><th>pairs</th></tr>{kinds}</table>'
            f'<table class="stats"><tr><th>dropped because</th><th>pairs</th></tr>{rows}</table>')


def render_page(title, pairs, numbers, stats, videos, thumbnails):
    """The whole page; `videos` maps a video path to its captions record, `thumbnails` to (css class, rules)."""
    css = "\n".join(rules for _, rules in thumbnails.values())
    rows = "\n".join(pair_row(n, p, videos.get(p["video"]), thumbnails.get(p["video"], (None, ""))[0])
                     for n, p in zip(numbers, pairs))
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{PAGE_STYLE}\n{css}</style></head><body>\n<h1>{html.escape(title)}</h1>\n{stats_html(stats)}\n"
            f"<p>{len(pairs)} pairs shown. Look for: a chosen description that follows the clean clip order, a "
            f"rejected one that visibly suffers from the perturbation, and no pair where both are the same.</p>\n"
            f'<table><tr><th>pair and its clips</th><th class="text">chosen (clean)</th>'
            f'<th class="text">rejected (perturbed)</th></tr>\n'
            f"{rows}\n</table></body></html>\n")


def pair_page(pairs_file, out, captions_file=None, limit=30, seed=0, thumb_height=64, warn=None):
    """Write the HTML page for (a seeded sample of `limit`) pairs; returns the number of rows. Without a
    captions_file, the captions.jsonl beside the pairs gives the thumbnails where it can be read; where not, the page
    has none and `warn` (a function of one line; default: stderr) says so."""
    datafiles.check_input_file(pairs_file, "a pairs file", "data/pairs_r16.jsonl")
    datafiles.check_output_file(out, "--out", "pairs.html")
    if captions_file:
        datafiles.check_input_file(captions_file, "the captions.jsonl the pairs were made from", "data/captions.jsonl",
                                   "--captions")
    pairs, _ = datafiles.read_pairs(pairs_file, need_video=False)
    if not pairs:
        raise ValueError(f"{pairs_file}: no pairs to show")
    numbers = list(range(1, len(pairs) + 1))
    if limit and len(pairs) > limit:
        numbers = sorted(random.Random(seed).sample(numbers, limit))
    shown = [pairs[n - 1] for n in numbers]
    warn = warn or warn_line
    stats = read_stats(datafiles.stats_path(pairs_file), warn)
    if captions_file:
        videos = video_records(captions_file)
    else:
        videos = neighbour_records(os.path.join(os.path.dirname(pairs_file), "captions.jsonl"), warn)
    thumbnails = {}
    for k, video in enumerate(dict.fromkeys(p["video"] for p in shown)):
        try:
            keyframes = datafiles.clips_and_keyframes(videos[video])[1]
            thumbnails[video] = (f"v{k}", thumbnail_css(video, keyframes, thumb_height, f"v{k}"))
        except (KeyError, datafiles.BadRecord, *decode.BAD_VIDEO):  # no keyframes known, or an unreadable video
            pass
    datafiles.write_atomic(out, render_page(os.path.basename(pairs_file), shown, numbers, stats, videos, thumbnails))
    return len(shown)


def video_records(captions_file):
    """{video path: captions record} of a captions.jsonl; a bad line is an error naming the file and line."""
    videos = {}
    for record in datafiles.read_jsonl(captions_file):
        video = record.get("video") or record.get("path")
        if isinstance(video, str):
            videos[video] = record
    return videos


def neighbour_records(path, warn):
    """video_records of the captions.jsonl beside the pairs file, which the user did not name: where it is missing
    or unreadable the page goes without thumbnails, and one warning names the file."""
    try:
        return video_records(path)
    except (OSError, ValueError) as e:
        warn(f"no thumbnails: {problem(path, e)}; pass --captions FILE (the captions.jsonl the pairs were made from)")
        return {}


def read_stats(path, warn):
    """The filter counts beside the pairs file (pairs_r16.stats.json), or None where it is missing; where it is
    unreadable, one warning names it and the page goes without them."""
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            stats = json.load(f)
        if not isinstance(stats, dict):
            raise ValueError(f"{path}: expected a JSON object")
        return stats
    except (OSError, ValueError) as e:
        warn(f"no filter counts: {problem(path, e)}")
        return None


def problem(path, error):
    """One line for why `path` could not be read, naming it once."""
    if isinstance(error, FileNotFoundError):
        return f"{path}: no such file"
    if isinstance(error, OSError):
        return f"{path}: {(error.strerror or str(error)).lower()}"
    if isinstance(error, json.JSONDecodeError):
        return f"{path}:{error.lineno}: invalid JSON ({error.msg})"
    return str(error) if str(error).startswith(path) else f"{path}: {error}"  # read_jsonl's name file and line


def warn_line(line):
    print(f"warning: {line}", file=sys.stderr)


# ----------------------------------------------------------------------------------------------------------------
# Training curves: metrics.jsonl of one or several runs as a PNG

PLOT_METRICS = ("loss", "rewards/accuracies", "rewards/margins")
HELD_OUT = {"rewards/accuracies": "eval/rewards/accuracies", "rewards/margins": "eval/rewards/margins"}  # dpo --heldout
PLOT_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
                "#17becf")


STOP_COLOUR = "#505070"  # the dashed line where an adaptive stage stopped early (no grey: text is drawn in greys)
INSET = 8  # pixels between a panel's frame and its outermost points, so that those are drawn whole


def read_curves(runs):
    """[(run name, metric records, stop)]; each record gets "x", its global step: a run continues where the one
    before it in the list ended, so the stages of a curriculum read as one training. `stop` is the "stopped" of the
    run's config.json ({"step", "reason"}: an adaptive stage that ended early) with its "x" added, or None."""
    curves, offset = [], 0
    for run in runs:
        path = os.path.join(run, "metrics.jsonl") if os.path.isdir(run) else run
        records = datafiles.read_jsonl(path)
        if not records:
            raise ValueError(f"{path}: no metrics yet (no optimizer step finished)")
        steps = [r["step"] if isinstance(r.get("step"), (int, float)) else i for i, r in enumerate(records, 1)]
        stop = run_stop(os.path.dirname(path))
        curves.append((run_name(run), [{**r, "x": offset + s} for r, s in zip(records, steps)],
                       stop and {**stop, "x": offset + stop["step"]}))
        offset += max(steps)
    return curves


def run_stop(run_dir):
    """The "stopped" of a run's config.json, or None: a run that did not stop early, or metrics without a run's
    config.json beside them."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        try:
            config = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    stop = config.get("stopped") if isinstance(config, dict) else None
    return stop if isinstance(stop, dict) and isinstance(stop.get("step"), (int, float)) else None


def run_name(run):
    path = os.path.normpath(run)
    return os.path.basename(os.path.dirname(path) if path.endswith(".jsonl") else path)


def image_format(path, option):
    """The format pillow writes `path` in (by its ending; none: PNG), checked with the path before any work."""
    datafiles.check_output_file(path, option, "curves.png")
    ending = os.path.splitext(path)[1].lower()
    if ending and ending not in Image.registered_extensions():
        raise ValueError(f"{option} {path}: pillow writes no {ending} images; give a .png file name")
    return Image.registered_extensions().get(ending, "PNG")


def image_bytes(image, image_format="PNG"):
    """The image file's bytes, to be written whole (datafiles.write_atomic): a reader never sees half an image."""
    buffer = io.BytesIO()
    image.save(buffer, image_format)
    return buffer.getvalue()


def plot_curves(curves, width, panel_height):
    """One panel per PLOT_METRICS entry, a legend on top; a run without a metric (SFT: no rewards) is left out of
    that panel."""
    font = plot_font(13)
    legend_height = 30
    image = Image.new("RGB", (width, legend_height + panel_height * len(PLOT_METRICS) + 20), "white")
    draw = ImageDraw.Draw(image)
    x = 70
    for k, (name, _, _) in enumerate(curves):  # the legend: a colour swatch and the run's name
        draw.rectangle((x, 10, x + 14, 22), fill=PLOT_COLOURS[k % len(PLOT_COLOURS)])
        draw.text((x + 20, 9), name, fill="black", font=font)
        x += 40 + draw.textlength(name, font=font)
    if any(stop for _, _, stop in curves):
        dashed_line(draw, (x, 10, x, 22), STOP_COLOUR)
        draw.text((x + 6, 9), "stopped early (adaptive)", fill="black", font=font)
    x_axis = step_axis(max(r["x"] for _, records, _ in curves for r in records))
    starts = [records[0]["x"] - 0.5 for _, records, _ in curves[1:]]  # where one run hands over to the next
    for k, metric in enumerate(PLOT_METRICS):
        top = legend_height + k * panel_height
        box = (70, top + 24, width - 20, top + panel_height - 28)
        draw_panel(draw, box, metric, curves, x_axis, starts, font)
    label = "step (the runs end to end)"
    draw.text(((width - draw.textlength(label, font=font)) / 2, image.height - 20), label, fill="black", font=font)
    return image


def step_axis(last):
    """(low, high, tick step) of the step axis: 0 to the last step, not on to the next round tick (INSET keeps the
    last point whole); ticks a whole number of steps apart."""
    high = max(last, 1)
    return 0, high, max(1, nice_range(0, high, ticks=8)[2])


def plot_font(size):
    try:
        return ImageFont.load_default(size=size)  # a scalable font when pillow has FreeType
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def metric_series(curves, metric):
    """[(x, value)] of `metric` per run, the steps where the run logged it."""
    return [[(r["x"], r[metric]) for r in records
             if isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric])] for _, records, _ in curves]


def dashed_line(draw, box, colour, dash=4, gap=3):
    """A vertical dashed line from (x, top) to (x, bottom) (pillow draws no dashes)."""
    x, top, _, bottom = box
    y = top
    while y < bottom:
        draw.line((x, y, x, min(y + dash, bottom)), fill=colour)
        y += dash + gap


def draw_panel(draw, box, metric, curves, x_axis, starts, font):
    """One metric against step, a line per run; the held-out version of the metric (HELD_OUT), where runs logged
    it, in the run's colour as squares joined by a thin line; a dashed line where a run stopped early."""
    left, top, right, bottom = box
    series = metric_series(curves, metric)
    held_out = metric_series(curves, HELD_OUT[metric]) if metric in HELD_OUT else [[] for _ in curves]
    title = metric + ("   (squares: the same on held-out pairs)" if any(held_out) else "")
    draw.text((left, top - 20), title, fill="black", font=font)
    points = [p for s in series + held_out for p in s]
    if not points:
        draw.rectangle(box, outline="#888888")
        draw.text((left + 10, top + 10), "no data: these runs do not log this metric", fill="#888888", font=font)
        return
    y_low, y_high, y_step = nice_range(min(y for _, y in points), max(y for _, y in points))
    x_low, x_high, x_step = x_axis

    def to_pixel(x, y):
        return (left + INSET + (x - x_low) / (x_high - x_low) * (right - left - 2 * INSET),
                bottom - INSET - (y - y_low) / (y_high - y_low) * (bottom - top - 2 * INSET))

    for y in tick_values(y_low, y_high, y_step):
        py = to_pixel(x_low, y)[1]
        draw.line((left, py, right, py), fill="#e6e6e6")
        label = f"{y:.6g}"
        draw.text((left - 6 - draw.textlength(label, font=font), py - 7), label, fill="black", font=font)
    for x in tick_values(x_low, x_high, x_step):
        px = to_pixel(x, y_low)[0]
        draw.line((px, bottom, px, bottom + 4), fill="#888888")
        label = f"{x:.6g}"
        draw.text((px - draw.textlength(label, font=font) / 2, bottom + 6), label, fill="black", font=font)
    for x in starts:
        px = to_pixel(x, y_low)[0]
        draw.line((px, top, px, bottom), fill="#bbbbbb")
    for _, _, stop in curves:
        if stop:
            dashed_line(draw, (to_pixel(stop["x"], y_low)[0], top + 1, None, bottom), STOP_COLOUR)
    draw.rectangle(box, outline="#888888")
    for k, (line, checks) in enumerate(zip(series, held_out)):
        pixels = [to_pixel(x, y) for x, y in line]
        colour = PLOT_COLOURS[k % len(PLOT_COLOURS)]
        if len(pixels) > 1:
            draw.line(pixels, fill=colour, width=2, joint="curve")
        for px, py in pixels if len(pixels) <= 40 else []:  # few points: mark each step
            draw.ellipse((px - 2.5, py - 2.5, px + 2.5, py + 2.5), fill=colour)
        squares = [to_pixel(x, y) for x, y in checks]
        if len(squares) > 1:
            draw.line(squares, fill=colour, width=1)
        for px, py in squares:
            draw.rectangle((px - 3.5, py - 3.5, px + 3.5, py + 3.5), outline=colour, width=2)


def nice_range(low, high, ticks=5):
    """An axis range around [low, high] that starts and ends on a round tick, and the tick step (1, 2 or 5 x 10^k)."""
    if high - low < 1e-12:  # a flat line: give it some room
        low, high = low - max(abs(low) * 0.1, 0.5), high + max(abs(high) * 0.1, 0.5)
    raw = (high - low) / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    return math.floor(low / step) * step, math.ceil(high / step) * step, step


def tick_values(low, high, step):
    """The ticks from low on, `step` apart, up to high (not past it: the step axis ends where the steps do)."""
    count = math.floor((high - low) / step + 1e-9)
    return [round(low + i * step, 12) for i in range(count + 1)]
