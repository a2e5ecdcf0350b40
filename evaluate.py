"""evaluate.py - what a trained model has learned: multiple-choice video QA, preference accuracy on pairs, and
Vinoground's temporal text / video / group scores. Every measure is a likelihood: no generated text is parsed.

    multiple choice   JSONL: video, question, options, answer (the option's text, letter or 0-based index)
                      [, category]. Each option is scored as the answer to the video + question + lettered options;
                      the pick is the highest summed log-prob (--normalize: the mean per token).
    preference pairs  ours or ms-swift's. With a run (its LoRA adapter on): how often the implicit DPO reward
                      beta * (r+ - r-) is positive against the run with its adapter off, what DPO optimised. A base
                      or merged model is its own reference, so there it is how often logp(chosen) > logp(rejected).
    Vinoground        two clips, two captions that differ only in temporal order (docs/method.md, "Evaluation"):
                      plain JSONL or the released vinoground.csv. s[v][c] = log p(caption c | clip v);
                      text: each clip prefers its own caption; video: each caption prefers its own clip; group: both.

Bad items (a malformed line, a missing field, an answer not among the options, a missing or unreadable video) are
skipped and counted with file:line and reason, never fatal; the run fails only if nothing could be evaluated. Each
video is decoded, preprocessed and encoded by the vision tower once per item, however many answers are scored.

    python temple.py eval --run runs/dpo_r2 --pairs heldout/pairs_r2.jsonl --mcq tempcompass_mcq.jsonl
    python temple.py eval --model merged/ --vinoground /data/Vinoground/vinoground.csv --out reports/merged.json

Vinoground's format, as read here (the dataset itself is gated on the Hub): the authors' repository
(github.com/Vinoground/Vinoground: eval/*.py and get_score_all.py) reads the CSV by the columns index, major, minor,
pos_cap and neg_cap, names row i's clips vinoground_videos/{index}_pos.mp4 and {index}_neg.mp4 beside the CSV, and
counts an item towards "all", its major category and each of its ";"-separated minor ones. The authors score
CLIP-style models on the same 2x2 matrix with strict comparisons, as we do (a tie is wrong); lmms-eval's vinoground
task instead asks a generative model A/B questions (one clip, two captions; the two clips joined, which segment fits).
"""

import csv
import json
import os
from collections import Counter

import torch
from tqdm import tqdm

import datafiles
import dpo
import examples
import runs
import vlm

# ----------------------------------------------------------------------------------------------------------------
# Setting up: the model, the video settings, and how skipped items are counted


def report_path(args):
    return args.out or os.path.splitext((args.mcq + args.pairs + args.vinoground)[0])[0] + ".eval.json"


def check_report_path(out, given):
    """The report's file, checked before any work: writable, and not an earlier report (evaluating another model on
    the same data would replace it without a word)."""
    datafiles.check_output_file(out, "--out", "report.json")
    if os.path.exists(out):
        try:
            with open(out, encoding="utf-8") as f:
                earlier = json.load(f)
            of = f" of {earlier.get('run') or earlier.get('model')}"
        except (OSError, ValueError, AttributeError):
            of = ""
        raise ValueError(f"{out}: holds an earlier report{of}; give another --out{'' if given else ' FILE'}, or "
                         f"delete it")


def load_eval_model(args):
    """(model, has_reference). With --run: base model + the runs merged before it + the run's adapter, which
    switched off gives back the run's DPO reference. A base or merged model is its own reference (no rewards)."""
    if args.run is None:
        return vlm.load(args.model, attn_implementation=args.attn, seed=args.model_seed), False
    return runs.load_run(args.run, args.model, attn_implementation=args.attn), True


UNUSABLE = (examples.BadItem, vlm.TooLong)  # an item that cannot be scored: its video, or its length


def problem(error):
    """The reason's heading for an item that cannot be scored (what the report's table counts)."""
    return error.kind if isinstance(error, examples.BadItem) else "over --max-length"


def skip(where, reason):
    """A skipped item for the report; the reason's text before ":" is what the table counts."""
    return {"where": where, "reason": reason}


def skip_fields(skipped):
    """The report's account of the skipped items: how many, how many per reason, and each one."""
    by_reason = Counter(s["reason"].split(":")[0] for s in skipped).most_common()
    return {"skipped": len(skipped), "skipped_by_reason": dict(by_reason), "skipped_items": skipped}



# ----------------------------------------------------------------------------------------------------------------
# Multiple choice

NO_CATEGORY = "(no category)"  # the per-category rows cover every item: those without a category get this row
MCQ_INSTRUCTION = "Answer with the text of the correct option."
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def answer_index(answer, options):
    """The answer as an option index: the option's text, its letter (A, "b", "C.") or a 0-based integer."""
    if isinstance(answer, int) and not isinstance(answer, bool):
        return answer if 0 <= answer < len(options) else None
    if not isinstance(answer, str):
        return None
    if answer in options:
        return options.index(answer)
    letter = answer.strip().strip("().").upper()
    return LETTERS.index(letter) if len(letter) == 1 and letter in LETTERS[:len(options)] else None


def mcq_item(record, video_root):
    """The checked item, or raises ValueError with the reason it is skipped."""
    for field in ("video", "question"):
        if not isinstance(record.get(field), str):
            raise ValueError(f"missing field: {field} (a text)")
    options = record.get("options")
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise ValueError("missing field: options (a list of texts)")
    if not 2 <= len(options) <= len(LETTERS):
        raise ValueError(f"options: {len(options)} given (need 2 to {len(LETTERS)})")
    answer = answer_index(record.get("answer"), options)
    if answer is None:
        raise ValueError(f"answer not among options: {record.get('answer')!r}")
    video = os.path.join(video_root or "", record["video"])  # an absolute path stays as it is
    if not os.path.exists(video):
        raise ValueError(f"video missing: {video}")
    category = record.get("category")
    return {"video": video, "question": record["question"], "options": options, "answer": answer,
            "category": None if category is None else str(category)}


def read_mcq(path, video_root):
    """(items, skipped): a malformed line or item is skipped with its file:line and reason, not fatal."""
    items, bad = [], []
    for where, record in datafiles.numbered_jsonl(path, bad):
        try:
            items.append({"where": where, **mcq_item(record, video_root)})
        except ValueError as e:
            bad.append((where, str(e)))
    return items, [skip(where, reason) for where, reason in bad]


def mcq_prompt(question, options):
    listing = "\n".join(f"{LETTERS[i]}. {option}" for i, option in enumerate(options))
    return f"{question}\n{listing}\n{MCQ_INSTRUCTION}"


def mcq_scores(model, video, item, max_length, truncation="delete"):
    """Summed and mean log p(option | video, question + options) of every option; `video` is prepared once."""
    prompt = [video, mcq_prompt(item["question"], item["options"])]
    sums, counts = model.score_options(prompt, item["options"], max_length, item["where"], truncation)
    return sums.tolist(), (sums / counts).tolist()


def evaluate_mcq(model, path, args):
    items, skipped = read_mcq(path, args.video_root)
    results, prepared = [], {}
    for item in tqdm(items, desc=f"mcq {os.path.basename(path)}", unit="question"):
        try:
            if item["video"] not in prepared:  # benchmarks ask several questions in a row about one video
                prepared = {item["video"]: examples.prepared_video(model, item["video"], examples.video_options(args))}
            sums, means = mcq_scores(model, prepared[item["video"]], item, args.max_length, args.truncation)
        except UNUSABLE as e:
            skipped.append(skip(item["where"], f"{problem(e)}: {e}"))
            continue
        results.append({"where": item["where"], "category": item["category"], "answer": item["answer"],
                        "predicted_sum": argmax(sums), "predicted_mean": argmax(means), "logp_sum": sums,
                        "logp_mean": means})
    return mcq_report(path, results, skipped, rule="mean" if args.normalize else "sum")


def mcq_report(path, results, skipped, rule):
    """Accuracy by the chosen rule overall and per category; by both rules overall (the length-bias check)."""
    for result in results:
        result["correct"] = result[f"predicted_{rule}"] == result["answer"]
    categories = sorted({r["category"] for r in results if r["category"] is not None})
    by_category = {c: [r for r in results if r["category"] == c] for c in categories}
    if categories and any(r["category"] is None for r in results):
        by_category[NO_CATEGORY] = [r for r in results if r["category"] is None]
    return {"file": path, "rule": f"highest {rule} log-prob", "evaluated": len(results),
            "accuracy": accuracy(results, rule), "accuracy_sum": accuracy(results, "sum"),
            "accuracy_mean": accuracy(results, "mean"),
            "by_category": {c: {"items": len(rows), "accuracy": accuracy(rows, rule)} for c, rows in by_category.items()},
            **skip_fields(skipped), "items": results}


def argmax(values):
    return max(range(len(values)), key=values.__getitem__)


def accuracy(results, rule):
    if not results:
        return None
    return sum(r[f"predicted_{rule}"] == r["answer"] for r in results) / len(results)



# ----------------------------------------------------------------------------------------------------------------
# Preference pairs: what DPO learned

PREFERENCE_MEASURES = {
    "reward_margin": "implicit reward, margin = beta * (r+ - r-), r = log pi - log pi_ref, pi_ref = the run with its "
                     "adapter switched off (what the run's own stage changed: DPO's preference, or SFT's)",
    "logp_margin": "raw log-prob, margin = logp(chosen) - logp(rejected), summed over each answer's tokens (a base "
                   "or merged model is its own reference: its rewards would all be 0); a sum favours the shorter "
                   "answer, and drop and speed pairs have the longer chosen answer by construction: per_token "
                   "compares the mean log-prob per token instead",
}


def pair_logps(model, pair, video_options, max_length, use_reference, truncation="delete"):
    """Policy [chosen, rejected] summed log-probs, their token counts, and with use_reference the reference's
    (LoRA off, else None); no gradient."""
    rows = dpo.encode_pair(model, pair, video_options, max_length, truncation)
    batch = model.to_device(dpo.collate_pairs(model, [rows]))
    with torch.no_grad():
        if not use_reference:
            policy, counts = model.response_logps(batch)
            return policy.tolist(), None, counts.tolist()
        policy, reference, counts = dpo.policy_and_reference(model, None, batch)
        return policy.tolist(), reference.tolist(), counts.tolist()


def preference_accuracy(model, pairs, video_options, max_length, beta=0.1, use_reference=False, desc="pairs",
                        truncation="delete"):
    """How often the model prefers the chosen answer over the rejected one, over all pairs and per kind and r.

    use_reference (the model carries a run's LoRA adapter): a pair counts when the implicit reward margin
    beta * (r+ - r-) > 0 against the adapter switched off, what DPO optimised. Without (a base or merged model):
    when logp(chosen) > logp(rejected), summed over tokens, and beside it per token. Returns {"measure", "groups",
    "items", "unscored"}: the measure in words, accuracy and mean margin per group, one result per scored pair, and
    (pair, reason) per pair not scored.
    """
    results, unscored = [], []
    for pair in tqdm(pairs, desc=desc, unit="pair"):
        try:
            policy, reference, counts = pair_logps(model, pair, video_options, max_length, use_reference, truncation)
        except UNUSABLE as e:
            unscored.append((pair, f"{problem(e)}: {e}"))
            continue
        results.append(preference_result(pair, policy, reference, counts, beta))
    measure = "reward_margin" if use_reference else "logp_margin"
    groups = {name: preference_stats(rows, measure) for name, rows in preference_groups(results).items()}
    return {"measure": PREFERENCE_MEASURES[measure], "groups": groups, "items": results, "unscored": unscored}


def preference_result(pair, policy, reference, counts, beta):
    result = {"video": pair["video"], "kind": pair["kind"], "r": pair["r"], "logps": policy, "tokens": counts,
              "logp_margin": policy[0] - policy[1],
              "per_token_margin": policy[0] / counts[0] - policy[1] / counts[1]}
    if reference is not None:
        result["ref_logps"] = reference
        result["reward_margin"] = beta * ((policy[0] - reference[0]) - (policy[1] - reference[1]))
    return result


def preference_groups(results):
    """"all", then one group per kind and r (larger r first); ms-swift pairs carry neither and are only in "all"."""
    groups = {"all": results}
    for result in sorted(results, key=lambda x: (str(x["kind"]), -x["r"] if isinstance(x["r"], int) else 0)):
        if result["kind"] or result["r"]:
            groups.setdefault(f"{result['kind']} r={result['r']}", []).append(result)
    return groups


def preference_stats(rows, measure):
    """Accuracy (margin > 0) and the mean margin of one group; the raw log-prob ones too for comparison."""
    if not rows:
        return {"pairs": 0}
    stats = {"pairs": len(rows), "accuracy": sum(r[measure] > 0 for r in rows) / len(rows),
             "mean_margin": sum(r[measure] for r in rows) / len(rows),
             "per_token_accuracy": sum(r["per_token_margin"] > 0 for r in rows) / len(rows)}
    if measure != "logp_margin":
        stats["logp_accuracy"] = sum(r["logp_margin"] > 0 for r in rows) / len(rows)
    return stats



def evaluate_pairs(model, path, args, has_reference):
    """preference_accuracy on one pairs file; malformed records and missing or unreadable videos are skipped
    and counted, not fatal."""
    pairs, left_out = datafiles.read_pairs(path, args.video_root, skip_bad=True)
    skipped = [skip(where, reason) for where, reason in left_out]
    scored = preference_accuracy(model, pairs, examples.video_options(args), args.max_length, beta=args.beta,
                                 use_reference=has_reference, desc=f"pairs {os.path.basename(path)}",
                                 truncation=args.truncation)
    skipped += [skip(pair["where"], reason) for pair, reason in scored["unscored"]]
    return {"file": path, "evaluated": len(scored["items"]), "measure": scored["measure"], "beta": args.beta,
            "groups": scored["groups"], **skip_fields(skipped), "items": scored["items"]}



# ----------------------------------------------------------------------------------------------------------------
# Vinoground: temporal order, by text, by video and both

CAPTION_PROMPT = "Describe the video in one sentence."
JSONL_FIELDS = ("pos_video", "pos_caption", "neg_video", "neg_caption")
CSV_COLUMNS = ("index", "major", "minor", "pos_cap", "neg_cap")  # the ones we read; the released file has more
CSV_VIDEOS = "vinoground_videos"  # the clips' folder in the released dataset, beside vinoground.csv
TESTS = ("text", "video", "group")


def read_vinoground(path, video_root=None):
    """(items, skipped) of a plain JSONL or of Vinoground's vinoground.csv (by the ending)."""
    if os.fspath(path).endswith(".csv"):
        return read_vinoground_csv(path, video_root)
    return read_vinoground_jsonl(path, video_root)


def read_vinoground_jsonl(path, video_root=None):
    bad = []
    return checked_items(datafiles.numbered_jsonl(path, bad), bad, lambda record: jsonl_item(record, video_root))


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


def caption_scores(model, videos, captions, max_length=None, where="an item", truncation="delete"):
    """(sums, means): s[v][c] = summed and mean per token log p(captions[c] | videos[v], CAPTION_PROMPT), as nested
    lists. `videos` are Prepared; each goes through the vision tower once, in one forward that scores both
    captions after it."""
    sums, means = [], []
    for video in videos:
        total, count = model.score_options([video, CAPTION_PROMPT], captions, max_length, where, truncation)
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
    items, skipped = read_vinoground(path, args.video_root)
    results = []
    for item in tqdm(items, desc=f"vinoground {os.path.basename(path)}", unit="item"):
        try:
            videos = [examples.prepared_video(model, video, examples.video_options(args)) for video in item["videos"]]
            sums, means = caption_scores(model, videos, item["captions"], args.max_length, item["where"],
                                         args.truncation)
        except UNUSABLE as e:
            skipped.append(skip(item["where"], f"{problem(e)}: {e}"))
            continue
        results.append({"where": item["where"], "categories": item["categories"], "logp_sum": sums,
                        "logp_mean": means})
    return vinoground_report(path, results, skipped, rule="mean" if args.normalize else "sum")


def vinoground_report(path, results, skipped, rule):
    """Text, video and group score by the chosen matrix (logp_sum or logp_mean), overall and per category."""
    for result in results:
        s = result[f"logp_{rule}"]
        result.update(text=text_correct(s), video=video_correct(s), group=group_correct(s))
    categories = sorted({c for r in results for c in r["categories"]})
    by_category = {c: [r for r in results if c in r["categories"]] for c in categories}
    if categories and any(not r["categories"] for r in results):
        by_category[NO_CATEGORY] = [r for r in results if not r["categories"]]
    return {"file": path, "rule": f"higher {rule} log-prob", "evaluated": len(results), **scores(results),
            "by_category": {c: {"items": len(rows), **scores(rows)} for c, rows in by_category.items()},
            **skip_fields(skipped), "items": results}


def scores(results):
    """The fraction of items passing each test; None when there are no items."""
    return {test: sum(r[test] for r in results) / len(results) if results else None for test in TESTS}



# ----------------------------------------------------------------------------------------------------------------
# The report: one JSON file and one table


def run(args):
    """`temple.py eval`: every file given scored by one model; the report goes to --out and a table to the console.
    Raises when nothing at all could be evaluated (every item skipped: the reasons are in the report)."""
    files = args.mcq + args.pairs + args.vinoground
    if not files:
        raise ValueError("nothing to evaluate: give --mcq, --pairs and/or --vinoground FILE")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # set by torchrun
        refusal = ValueError("eval runs in one process: start it with python (or torchrun --nproc_per_node 1); "
                             f"with {os.environ['WORLD_SIZE']} processes each would evaluate everything")
        refusal.known_to_every_rank = True  # every process refuses alike: printed once, by rank 0
        raise refusal
    for path in files:  # before the model loads
        datafiles.check_input_file(path)
    check_report_path(report_path(args), args.out)
    model, has_reference = load_eval_model(args)
    report = {"model": model.name, "run": args.run, "video": examples.video_options(args),
              "mcq": [evaluate_mcq(model, path, args) for path in args.mcq],
              "pairs": [evaluate_pairs(model, path, args, has_reference) for path in args.pairs],
              "vinoground": [evaluate_vinoground(model, path, args) for path in args.vinoground]}
    out = report_path(args)
    datafiles.write_atomic(out, json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(eval_table(report))
    print(f"report: {out}")
    parts = report["mcq"] + report["pairs"] + report["vinoground"]
    if not any(part["evaluated"] for part in parts):
        skipped = [(item["where"], item["reason"]) for part in parts for item in part["skipped_items"]]
        missing = [(w, r) for w, r in skipped if r.startswith("video missing: ")]
        first = (datafiles.missing_videos(missing, args.video_root, "item") if missing else
                 f"the first: {skipped[0][0]}: {skipped[0][1]}" if skipped else "no items")
        raise ValueError(f"nothing could be evaluated: every item was skipped ({first}; all reasons in {out})")
    return report


def eval_table(report):
    """MCQ and pairs: accuracy (pairs: also per token, and the mean margin) per group; Vinoground: its three scores
    per category."""
    rows = [("data", "group", "n", "accuracy", "per token", "margin")]
    for part in report["mcq"]:
        name = os.path.basename(part["file"])
        rows.append((name, f"all ({part['rule']})", part["evaluated"], part["accuracy"], None, None))
        rows += [(name, c, s["items"], s["accuracy"], None, None) for c, s in part["by_category"].items()]
    for part in report["pairs"]:
        name = os.path.basename(part["file"])
        rows += [(name, group, s["pairs"], s.get("accuracy"), s.get("per_token_accuracy"), s.get("mean_margin"))
                 for group, s in part["groups"].items()]
    for part in report["mcq"] + report["pairs"]:
        if part["skipped"]:
            reasons = ", ".join(f"{reason}: {n}" for reason, n in part["skipped_by_reason"].items())
            rows.append((os.path.basename(part["file"]), "skipped", part["skipped"], None, None, reasons))
    lines = aligned([[cell(value) for value in row] for row in rows]) if len(rows) > 1 else []
    if report["pairs"]:
        lines.append(f"pairs measure: {report['pairs'][0]['measure']}")
    if report["vinoground"]:
        lines += vinoground_table(report["vinoground"])
    return "\n".join(lines)


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



def cell(value):
    if value is None:
        return ""
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def aligned(rows):
    """Columns padded to their widest cell; the last column is left ragged (it may hold a long note)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join([c.ljust(w) for c, w in zip(row, widths)] + [row[-1]]).rstrip() for row in rows]
