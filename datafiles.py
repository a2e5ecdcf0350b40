"""datafiles.py - the plain files that flow between the stages: JSON lines in and out, the pairs and SFT formats.

Every stage reads and writes records a person can open (docs/method.md, "The data flow"): videos.jsonl, captions.jsonl,
descriptions.jsonl, pairs_r{r}.jsonl, metrics.jsonl. This module reads them so that a bad line is one error naming
the file and the line (or, for jobs that count bad items and carry on, is set aside with its reason), and writes them
atomically: a reader never sees half a file.

Pairs come in two formats, told apart per record:
    ours      {"video", "instruction", "chosen", "rejected", "kind", "r", "order"}          (temple.py pairs)
    ms-swift  {"messages": [user "<video>...", assistant chosen], "rejected_response", "videos": [path]}
              (the released run's training data; `temple.py export` writes it)
SFT records are LLaVA-Video-178K's or ms-swift's (sft.py's docstring shows both).

No torch here: `temple.py view` and `export` start fast.

    read_jsonl("data/videos.jsonl")
    pairs, skipped = read_pairs("data/pairs_r16.jsonl", video_root=None, skip_bad=False)
"""

import contextlib
import json
import os
import secrets
from collections import Counter

# ----------------------------------------------------------------------------------------------------------------
# JSON lines (ours) and JSON lists (LLaVA, ms-swift)


def read_jsonl(path):
    """All records of a JSON-lines file; blank lines are skipped; a bad line is an error naming file and line."""
    return [record for _, record in numbered_jsonl(path)]


def numbered_jsonl(path, bad=None):
    """[(where, record)] of a JSON-lines file, where = "FILE:LINE" for messages about the record. A line that is not
    a JSON object is an error naming file and line; given a list `bad`, it is skipped and noted there as
    (where, reason) instead, for jobs that count bad items and carry on."""
    check_input_file(path)
    records = []
    with open(path, encoding="utf-8") as f:
        try:
            lines = list(enumerate(f, 1))
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not UTF-8 text (a JSON-lines file expected)") from None
        for number, line in lines:
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError(f"expected a JSON object, got {type(record).__name__}")
            except ValueError as e:  # json.JSONDecodeError is a ValueError
                reason = f"invalid JSON ({e.msg})" if isinstance(e, json.JSONDecodeError) else str(e)
                if bad is None:
                    raise ValueError(f"{where}: {reason}") from None
                bad.append((where, reason))
                continue
            records.append((where, record))
    return records


def read_records(path, what="records", bad=None):
    """[(where, record)] of a JSON file holding a list (LLaVA, ms-swift; where = "FILE: record N") or of a
    JSON-lines file (ours; where = "FILE:LINE", `bad` as in numbered_jsonl), told apart by the ending."""
    if not os.fspath(path).endswith(".json"):
        return numbered_jsonl(path, bad)
    check_input_file(path)
    with open(path, encoding="utf-8") as f:
        try:
            records = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of {what}")
    return [(f"{path}: record {number}", record) for number, record in enumerate(records, 1)]


def write_atomic(path, data):
    """Write `data` (text, or bytes) to a temporary file beside `path`, then rename: readers never see a half-written
    file, and a failure (a full disk) leaves the old file and no temporary one, and names `path`. The file gets the
    mode a plain open() gives."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
    try:
        with named(path):
            with open(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666), "wb") as f:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def named(path):
    """An OSError inside the block names `path` (a write or close that finds the disk full names no file)."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def append_line(path, line):
    """One line added to a log (metrics.jsonl, a journal's part file) and flushed; an error names the file."""
    with named(path), open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def writable_place(path, option):
    """The nearest existing directory at or above `path`'s parent, checked to be one this process can write in."""
    place = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(place):
        place = os.path.dirname(place)
    if not os.path.isdir(place):
        raise ValueError(f"{option} {path}: {place} is a file, not a directory")
    if not os.access(place, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: cannot write in {place} (permission denied)")
    return place


def check_output_file(path, option, example="out.json"):
    """A file a command will write, checked before any work: not a directory, in a place it can be written."""
    if os.path.isdir(path):
        raise ValueError(f"{option} {path}: is a directory; give a file name, e.g. {option} "
                         f"{os.path.join(path, example)}")
    writable_place(path, option)


def check_output_dir(path, option):
    """A directory a command will write into, checked before any work: not a file, in a place it can be made."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{option} {path}: is a file, not a directory; give a directory (it is made if missing)")
    writable_place(os.path.join(path, "x"), option)


def check_input_file(path, what=None, example=None, option=None):
    """A file a command reads, checked before any work: there, and a file, not a directory. The message says what to
    give: `what`, with `example` (a path) when given, else, for a directory, the data files it holds."""
    prefix = f"{option} " if option else ""
    if os.path.isdir(path):
        if what:
            example = os.path.join(path, os.path.basename(example))
            raise ValueError(f"{prefix}{path}: is a directory; give {what}, e.g. {prefix}{example}")
        inside = sorted(n for n in os.listdir(path) if n.endswith((".jsonl", ".json")))
        hint = f" (it holds {', '.join(inside[:4])}{', ...' if len(inside) > 4 else ''})" if inside else ""
        raise ValueError(f"{prefix}{path}: is a directory; give the data file itself{hint}")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{prefix}{path}: no such file" + (f"; give {what}, e.g. {prefix}{example}" if what
                                                                     else ""))


def usual_file_mode(directory):
    """The mode a plain open() gives a new file in `directory` (0666 less the umask), read off an empty file made
    there: the umask can only be read by setting it, which races with other threads."""
    probe = os.path.join(directory, f".mode-{secrets.token_hex(4)}")
    os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        return os.stat(probe).st_mode & 0o777
    finally:
        os.remove(probe)


def write_jsonl(path, records):
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


# ----------------------------------------------------------------------------------------------------------------
# videos.jsonl (select): the clips and keyframes of a video


class BadRecord(ValueError):
    """A record whose fields are not what its file's format says (batch jobs record it and go on)."""


def clips_and_keyframes(record):
    """(clips, keyframes) of a videos.jsonl record, checked: one [k1, k2] pair of frame indices per clip."""
    clips, keyframes = record.get("clips"), record.get("keyframes")
    if isinstance(clips, list) and clips and isinstance(clips[0], dict):  # clips given as dicts
        keyframes = keyframes or [c.get("keyframes") for c in clips]
        clips = [[c.get("start"), c.get("end")] for c in clips]
    if not isinstance(clips, list) or not clips:
        raise BadRecord("malformed record: no clips")
    if not isinstance(keyframes, list) or len(keyframes) != len(clips):
        raise BadRecord(f"malformed record: {len(clips)} clips but keyframes for "
                        f"{len(keyframes) if isinstance(keyframes, list) else 0}")
    for pair in keyframes:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(k, int) and k >= 0 for k in pair)):
            raise BadRecord(f"malformed record: keyframes {pair!r} is not two frame indices")
    return clips, keyframes


def kept_videos(path):
    """The records of videos.jsonl with status "kept" (a record without a status counts as kept), one per path."""
    numbered = numbered_jsonl(path)
    for where, record in numbered:
        if not isinstance(record.get("path"), str):
            raise ValueError(f"{where}: no \"path\"")
    records = [record for _, record in numbered]
    kept, seen = [], set()
    for record in records:
        if record.get("status", "kept") == "kept" and record["path"] not in seen:  # a repeated path counts once
            kept.append(record)
            seen.add(record["path"])
    if not kept:
        statuses = Counter(r.get("status") for r in records)
        summary = ", ".join(f"{n} {s}" for s, n in statuses.items()) or "the file is empty"
        raise ValueError(f"{path}: no video with status 'kept' to caption ({summary})")
    return kept


def pair_inputs(path, need_captions=True):
    """Videos ready for step B: from captions.jsonl (status "ok"), or for the frames route also from videos.jsonl.
    Returns records {video, clips, keyframes, captions}."""
    records = numbered_jsonl(path)
    videos = []
    for where, record in records:
        if "video" in record:  # captions.jsonl
            if record.get("status", "ok") != "ok":
                continue
            if not isinstance(record.get("captions"), list) or len(record["captions"]) != len(record.get("clips", [])):
                raise ValueError(f"{where}: needs one caption per clip")
            videos.append({k: record[k] for k in ("video", "clips", "keyframes", "captions")})
        elif "path" in record and not need_captions:  # videos.jsonl
            if record.get("status", "kept") == "kept":  # checked when its keyframes are read
                videos.append({"video": record["path"], "clips": record.get("clips"),
                               "keyframes": record.get("keyframes"), "captions": None})
        else:
            hint = " (run `temple.py captions` first)" if "path" in record else ""
            raise ValueError(f"{where}: not a captions.jsonl record{hint}")
    if not videos:
        raise ValueError(f"{path}: no captioned video to make pairs from ({len(records)} records)")
    return videos


# ----------------------------------------------------------------------------------------------------------------
# Preference pairs: ours or ms-swift's, in; ms-swift's, out


def read_pairs(path, video_root=None, skip_bad=False, need_video=True):
    """(pairs, skipped) of a pairs file. Each pair is {video, instruction, chosen, rejected, kind, r, order, where,
    video_in_data}: `video` is the path joined to `video_root` (an absolute path stays as it is), `video_in_data` the
    path as the file has it, `where` its file:line (or "FILE: record N"); `skipped` lists (where, reason) for every
    record left out.

    A malformed record is an error naming its file and line (or record of a JSON list): training stops before it
    starts on bad data. With skip_bad (eval, on pairs from elsewhere) it is left out instead. A pair whose video file
    is missing is left out and listed unless need_video is False (view and export show and convert the records)."""
    pairs, skipped = [], []
    for where, record in read_records(path, "pairs", skipped if skip_bad else None):
        try:
            pair = pair_from_record(record)
        except ValueError as e:
            if not skip_bad:
                raise ValueError(f"{where}: {e}") from None
            skipped.append((where, str(e)))
            continue
        pair["where"], pair["video_in_data"] = where, pair["video"]
        pair["video"] = os.path.join(video_root or "", pair["video"])
        if need_video and not os.path.exists(pair["video"]):
            skipped.append((where, f"video missing: {pair['video']}"))
            continue
        pairs.append(pair)
    return pairs, skipped


def missing_videos(skipped, video_root=None, what="pair"):
    """What a reader left out for missing videos ((where, "video missing: PATH") items of `skipped`), in words that
    say where relative paths are looked for: "N pair(s) whose video file is missing, the first PATH (...)"."""
    paths = [reason.removeprefix("video missing: ") for _, reason in skipped if reason.startswith("video missing: ")]
    if not paths:
        return f"{len(skipped)} left out"
    if video_root:
        where = f" (relative paths start from --video-root {video_root})"
    elif not os.path.isabs(paths[0]):
        where = (f" (relative paths start from the directory you run in, {os.getcwd()}; --video-root DIR starts them "
                 f"there)")
    else:
        where = ""
    return f"{len(paths)} {what}(s) whose video file is missing, the first {paths[0]}{where}"


def pair_from_record(record):
    """Our pair or an ms-swift record as our pair; ValueError says what is wrong with it."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    if "messages" in record:  # ms-swift
        try:
            user = next(m["content"] for m in record["messages"] if m["role"] == "user")
            chosen = next(m["content"] for m in reversed(record["messages"]) if m["role"] == "assistant")
            record = {"video": record["videos"][0], "instruction": user.replace("<video>", "", 1).strip(),
                      "chosen": chosen, "rejected": record["rejected_response"], "kind": record.get("kind", ""),
                      "r": record.get("r", 0)}
        except (KeyError, IndexError, StopIteration, TypeError, AttributeError):
            raise ValueError("an ms-swift record needs messages (user + assistant), rejected_response and "
                             "videos") from None
    missing = [k for k in PAIR_TEXTS if not isinstance(record.get(k), str)]
    if missing:
        raise ValueError(f"missing or non-text field(s) {', '.join(missing)}")
    order = record.get("order")
    if order is not None and not (isinstance(order, list) and all(is_clip_index(i) for i in order)):
        raise ValueError(f"'order' must be a list of clip indices (0, 1, ...), got {brief_json(order)}")
    return {k: record[k] for k in PAIR_TEXTS} | {"kind": record.get("kind", ""), "r": record.get("r", 0),
                                                 "order": order}


PAIR_TEXTS = ("video", "instruction", "chosen", "rejected")


def is_clip_index(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0  # JSON true is no clip 1


def brief_json(value, limit=60):
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "..."


def changes(before, after, prefix=""):
    """What differs between two JSON-like dicts, as "key: old -> new" texts (nested keys joined by dots)."""
    found = []
    for key in sorted(set(before) | set(after), key=str):
        old, new = before.get(key), after.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            found += changes(old, new, f"{prefix}{key}.")
        elif old != new:
            found.append(f"{prefix}{key}: {brief_json(old)} -> {brief_json(new)}")
    return found


def swift_records(pairs):
    """Our pairs as ms-swift DPO records (kind, r and order have no place there and are left out). read_pairs reads
    them back, so pairs made here or by the released code train alike."""
    return [{"messages": [{"role": "user", "content": "<video>" + p["instruction"]},
                          {"role": "assistant", "content": p["chosen"]}],
             "rejected_response": p["rejected"], "videos": [p["video"]]} for p in pairs]


def export_pairs(path, out=None, fmt="swift"):
    """`temple.py export`: a pairs file in ms-swift's RLHF format (a JSON list); returns (out, count)."""
    if fmt != "swift":
        raise ValueError(f"unknown export format {fmt!r} (known: swift)")
    check_input_file(path, "a pairs file", "data/pairs_r16.jsonl")
    out = out or swap_ending(path, ".swift.json")
    check_output_file(out, "--out", "pairs_r16.swift.json")
    pairs, _ = read_pairs(path, need_video=False)
    if not pairs:
        raise ValueError(f"{path}: no pairs to export")
    write_atomic(out, json.dumps(swift_records(pairs), ensure_ascii=False, indent=1) + "\n")
    return out, len(pairs)


def stats_path(pairs_file):
    """pairs_r16.jsonl -> pairs_r16.stats.json: how many candidate pairs each filter dropped (temple.py pairs)."""
    return swap_ending(pairs_file, ".stats.json")


def swap_ending(path, ending):
    """data/pairs_r16.jsonl -> data/pairs_r16{ending}: the files made from a pairs file sit beside it."""
    for old in (".jsonl", ".json"):
        if path.endswith(old):
            return path[:-len(old)] + ending
    return path + ending


# ----------------------------------------------------------------------------------------------------------------
# SFT records: LLaVA-Video-178K's conversations or ms-swift's messages


ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def read_conversations(path, video_root=None):
    """SFT records, LLaVA's or ms-swift's (sft.py's docstring): (records as {"video": path or None, "messages":
    [{"role", "content"}], "where"}, [(where, "video missing: PATH")] of the records whose video is not there);
    errors name the file and record."""
    records, missing = [], []
    for where, record in read_records(path):
        example = {**conversation(record, where), "where": where}
        if example["video"] is not None:
            example["video"] = os.path.join(video_root or "", example["video"])  # absolute stays absolute
            if not os.path.exists(example["video"]):
                missing.append((where, f"video missing: {example['video']}"))
                continue
        records.append(example)
    return records, missing


def conversation(record, where):
    """A LLaVA or ms-swift record as {"video", "messages"}; ValueError naming `where` says what is wrong."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object")
    if "conversations" in record:
        turns, video = record["conversations"], record.get("video")
        role_key, text_key = "from", "value"
    elif "messages" in record:
        videos = record.get("videos") or [None]
        turns, video = record["messages"], videos[0] if isinstance(videos, list) else videos
        role_key, text_key = "role", "content"
    else:
        raise ValueError(f"{where}: needs 'conversations' (LLaVA) or 'messages' (ms-swift)")
    if not isinstance(turns, list):
        raise ValueError(f"{where}: the turns must be a list, got {type(turns).__name__}")
    if video is not None and not isinstance(video, str):
        raise ValueError(f"{where}: the video must be a path (a text), got {type(video).__name__}")
    messages = []
    for turn in turns:
        role, text = (turn.get(role_key), turn.get(text_key)) if isinstance(turn, dict) else (None, None)
        if role not in ROLES or not isinstance(text, str):
            raise ValueError(f"{where}: a turn needs a role in {sorted(ROLES)} and a text, got {role!r}")
        messages.append({"role": ROLES[role], "content": text})
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError(f"{where}: no assistant turn to learn from")
    if video is not None and not any(m["role"] == "user" for m in messages):
        raise ValueError(f"{where}: a video but no user turn to show it in")
    return {"video": video, "messages": messages}
