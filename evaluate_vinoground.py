"""Vinoground-style scoring: two videos, two captions that differ only in temporal order, a 2x2 likelihood matrix.

An item is (pos video, pos caption, neg video, neg caption): each caption describes its own video, and the two
captions use the same words in another order ("the man opens the door, then sits" / "the man sits, then opens the
door"). With s[v][c] = log p(caption c | video v, CAPTION_PROMPT), v and c 0 = pos, 1 = neg:

    text score   each video prefers its own caption      s[0][0] > s[0][1] and s[1][1] > s[1][0]
    video score  each caption prefers its own video      s[0][0] > s[1][0] and s[1][1] > s[0][1]
    group score  both

Comparisons are strict: a tie is wrong (a model that cannot tell the orders apart scores 0, not 1). The report gives
the fraction of items passing each test, overall and per category.

Data: plain JSONL (pos_video, pos_caption, neg_video, neg_caption[, category: a text or a list of texts]; relative
videos start from --video-root, else the working directory, as for MCQ), or Vinoground's released vinoground.csv,
told apart by the ending .csv. Bad items are skipped and counted with file:line and reason, as for MCQ.

NOTES: where the format facts come from (the dataset itself is gated on the Hub, so none of this was read from it)
- Hub dataset HanSolo9682/Vinoground (card) and github.com/Vinoground/Vinoground README.md: the release holds
  vinoground.csv, the zipped folders vinoground_videos/ and vinoground_videos_concated/, and the question files
  vinoground_textscore.json / vinoground_videoscore.json; 500 items, 1000 video-caption pairs.
- Vinoground/Vinoground eval/imagebind_eval.py, eval/videoclip.py, eval/langbind.py: CSV row i has the captions in
  columns pos_cap and neg_cap and its clips are vinoground_videos/{i}_pos.mp4 and {i}_neg.mp4 under the clone;
  those scripts score a 2x2 similarity matrix with the three tests above, using strict ">".
- Vinoground/Vinoground get_score_all.py: the CSV's second and third columns are the major category and the minor
  categories joined by ";" (possibly empty); an item counts towards "all", its major and each of its minors.
- yejipark-m/FOCUS eval/vinoground.py: the same rows have an `index` column naming the files, {index}_pos.mp4.
- A third-party write-up of the benchmark lists the whole header: index, major, minor, pos_vid, pos_start, pos_end,
  pos_cap, neg_vid, neg_start, neg_end, neg_cap (pos_vid / neg_vid are YouTube ids and the times are the cut in
  seconds; we need neither). We read columns by name and need only index, major, minor, pos_cap, neg_cap.
- lmms-eval lmms_eval/tasks/vinoground/utils.py (+ vinoground.yaml, split "lmmseval"): a generative model is asked
  questions and its letter compared with the answer: for the text score one clip and both captions as options A/B,
  for the video score the two clips joined with a black gap (vinoground_videos_concated/) and "which segment fits
  this caption"; categories are "all", major and the ";"-split minors, as in get_score_all.py.

We score likelihoods instead: log p(caption | clip) over the 2x2 matrix, the way the authors score CLIP-style models,
so no generated text is parsed and no joined video is needed; the video test compares one caption's likelihood
under the two clips rather than asking the model to pick a segment.

Categories: a CSV row belongs to its major category and to each of its minor ones, names used as they are (as
Vinoground's own scorer does), so per-category counts add up to more than the items; "all" is the top-level numbers.
A JSONL item may likewise give a list of categories.
"""

import csv
import os

from temple import aligned, cell, skip, skip_fields

CAPTION_PROMPT = "Describe the video in one sentence."
JSONL_FIELDS = ("pos_video", "pos_caption", "neg_video", "neg_caption")
CSV_COLUMNS = ("index", "major", "minor", "pos_cap", "neg_cap")  # the ones we read; the released file has more
CSV_VIDEOS = "vinoground_videos"  # the clips' folder in the released dataset, beside vinoground.csv
TESTS = ("text", "video", "group")


# -- reading items -----------------------------------------------------------------------------------------------


def read_vinoground(path, video_root=None):
    """(items, skipped) of a plain JSONL or of Vinoground's vinoground.csv (by the ending)."""
    if os.fspath(path).endswith(".csv"):
        return read_vinoground_csv(path, video_root)
    return read_vinoground_jsonl(path, video_root)


def read_vinoground_jsonl(path, video_root=None):
    import vlm

    bad = []
    return checked_items(vlm.numbered_jsonl(path, bad), bad, lambda record: jsonl_item(record, video_root))


def read_vinoground_csv(path, video_root=None):
    """The released CSV; its clips are <video_root>/vinoground_videos/{index}_pos.mp4 and _neg.mp4, video_root by
    default the CSV's own folder (the Hub clone's layout)."""
    root = video_root if video_root is not None else os.path.dirname(path)
    bad = []
    return checked_items(numbered_csv(path, CSV_COLUMNS, bad), bad, lambda row: csv_item(row, root))


def checked_items(records, bad, make_item):
    """(items, skipped): an item `make_item` refuses (ValueError) is skipped with its file:line and reason."""
    items = []
    for where, record in records:
        try:
            items.append({"where": where, **make_item(record)})
        except ValueError as e:
            bad.append((where, str(e)))
    return items, [skip(where, reason) for where, reason in bad]


def numbered_csv(path, columns, bad):
    """[(where, row as a dict)] of a CSV file with a header line, where = "FILE:LINE" of the row's first line (a
    caption in quotes may span lines). A row whose field count differs from the header's is noted in `bad` as
    (where, reason) and left out. A header without `columns`, or text that is not CSV, is an error: the wrong file."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    rows = []
    with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: a spreadsheet's byte-order mark
        reader = csv.reader(f)
        try:
            header = [name.strip() for name in next(reader, [])]
            missing = [c for c in columns if c not in header]
            if missing:
                raise ValueError(f"{path}: not a Vinoground CSV: no column(s) {', '.join(missing)} in its header")
            last = reader.line_num
            for fields in reader:
                where, last = f"{path}:{last + 1}", reader.line_num
                if not any(field.strip() for field in fields):
                    continue  # a blank line
                if len(fields) != len(header):
                    bad.append((where, f"{len(fields)} fields, the header has {len(header)}"))
                    continue
                rows.append((where, dict(zip(header, fields))))
        except csv.Error as e:
            raise ValueError(f"{path}:{reader.line_num}: not CSV ({e})") from None
    return rows


def jsonl_item(record, video_root):
    """The checked item of a JSONL record, or raises ValueError with the reason it is skipped."""
    for field in JSONL_FIELDS:
        if not isinstance(record.get(field), str) or not record[field].strip():
            raise ValueError(f"missing field: {field} (a text)")
    category = record.get("category")
    categories = [] if category is None else [str(c) for c in (category if isinstance(category, list) else [category])]
    return pair_item([record["pos_video"], record["neg_video"]], [record["pos_caption"], record["neg_caption"]],
                     categories, video_root)


def csv_item(row, video_root):
    """The checked item of a vinoground.csv row: its clips are named by its index, its categories are the major one
    and the ";"-separated minor ones."""
    for field in ("index", "pos_cap", "neg_cap"):
        if not row[field].strip():
            raise ValueError(f"missing field: {field}")
    index = row["index"].strip()
    videos = [os.path.join(CSV_VIDEOS, f"{index}_{side}.mp4") for side in ("pos", "neg")]
    categories = [name.strip() for name in [row["major"], *row["minor"].split(";")] if name.strip()]
    return pair_item(videos, [row["pos_cap"], row["neg_cap"]], categories, video_root)


def pair_item(videos, captions, categories, video_root):
    captions = [caption.strip() for caption in captions]
    if captions[0] == captions[1]:
        raise ValueError("the two captions are the same")  # every test would tie, and ties are wrong
    videos = [os.path.join(video_root or "", video) for video in videos]  # an absolute path stays as it is
    for video in videos:
        if not os.path.exists(video):
            raise ValueError(f"video missing: {video}")
    return {"videos": videos, "captions": captions, "categories": categories}


# -- scoring -----------------------------------------------------------------------------------------------------


def caption_scores(model, videos, captions, max_length=None, where="an item"):
    """(sums, means): s[v][c] = summed and mean per token log p(captions[c] | videos[v], CAPTION_PROMPT), as nested
    lists. `videos` are Prepared; each goes through the vision tower once, in one forward that scores both
    captions after it."""
    sums, means = [], []
    for video in videos:
        total, count = model.score_options([video, CAPTION_PROMPT], captions, max_length, where)
        sums.append(total.tolist())
        means.append((total / count).tolist())
    return sums, means


def text_correct(s):
    """Each video gives its own caption the higher score."""
    return s[0][0] > s[0][1] and s[1][1] > s[1][0]


def video_correct(s):
    """Each caption gets the higher score from its own video."""
    return s[0][0] > s[1][0] and s[1][1] > s[0][1]


def group_correct(s):
    return text_correct(s) and video_correct(s)


def evaluate_vinoground(model, path, args):
    """The report on one file (args: video_root, fps, max_frames, total_pixels, max_length, normalize: eval's)."""
    from tqdm import tqdm

    import vlm

    items, skipped = read_vinoground(path, args.video_root)
    results = []
    for item in tqdm(items, desc=f"vinoground {os.path.basename(path)}", unit="item"):
        try:
            frames = [vlm.read_video(video, fps=args.fps, max_frames=args.max_frames) for video in item["videos"]]
        except vlm.BAD_VIDEO as e:
            skipped.append(skip(item["where"], f"unreadable video: {e}"))
            continue
        videos = [model.prepare(video, total_pixels=args.total_pixels) for video in frames]
        sums, means = caption_scores(model, videos, item["captions"], args.max_length, item["where"])
        results.append({"where": item["where"], "categories": item["categories"], "logp_sum": sums,
                        "logp_mean": means})
    return vinoground_report(path, results, skipped, rule="mean" if args.normalize else "sum")


# -- the report --------------------------------------------------------------------------------------------------


def vinoground_report(path, results, skipped, rule):
    """Text, video and group score by the chosen matrix (logp_sum or logp_mean), overall and per category."""
    for result in results:
        s = result[f"logp_{rule}"]
        result.update(text=text_correct(s), video=video_correct(s), group=group_correct(s))
    categories = sorted({c for r in results for c in r["categories"]})
    by_category = {c: [r for r in results if c in r["categories"]] for c in categories}
    return {"file": path, "rule": f"higher {rule} log-prob", "evaluated": len(results), **scores(results),
            "by_category": {c: {"items": len(rows), **scores(rows)} for c, rows in by_category.items()},
            **skip_fields(skipped), "items": results}


def scores(results):
    """The fraction of items passing each test; None when there are no items."""
    return {test: sum(r[test] for r in results) / len(results) if results else None for test in TESTS}


def vinoground_table(parts):
    """Lines of a table: one row per file and category, then the skipped items' reasons."""
    rows = [("data", "category", "n", "text", "video", "group")]
    for part in parts:
        name = os.path.basename(part["file"])
        rows.append((name, f"all ({part['rule']})", part["evaluated"], *(part[t] for t in TESTS)))
        rows += [(name, c, s["items"], *(s[t] for t in TESTS)) for c, s in part["by_category"].items()]
        if part["skipped"]:
            reasons = ", ".join(f"{reason}: {n}" for reason, n in part["skipped_by_reason"].items())
            rows.append((name, "skipped", part["skipped"], None, None, reasons))
    return aligned([[cell(value) for value in row] for row in rows])
