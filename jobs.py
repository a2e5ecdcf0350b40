"""jobs.py - batch jobs that survive interruptions: select (in CPU worker processes), captions and pairs (sharded
over GPUs under torchrun).

A long job over thousands of videos must be resumable and must not lose finished work to a crash or a Ctrl-C:

    Journal         the output file of a sharded job (captions.jsonl, descriptions.jsonl): every rank appends its
                    finished records to its own part file, flushed line by line; a re-run skips what is there;
                    rank 0 merges the parts in input order once every record is in. Its settings are stored beside
                    it, and going on with other ones is an error, not a silent mix.
    in_batches      jobs from many videos regrouped into batches of one size (one generate call each), each video's
                    jobs made only when the batch needs them, so memory holds about one batch of videos.
    select_videos   `temple.py select`: videos.jsonl appended one complete line per video, in worker processes.

Records carry a fingerprint of their input ("source"), so a re-run redoes the records whose input changed since.
Under torchrun each rank takes every WORLD_SIZE-th video; every node needs the same input file and videos (a
rank that finished its share of other inputs stops rank 0 with one line, instead of a wait for records that
never come).

    torchrun --nproc-per-node 8 temple.py captions --videos data/videos.jsonl --model ...
"""

import errno
import functools
import glob
import hashlib
import json
import multiprocessing
import os
import shlex
import sys
import time
from collections import Counter

from tqdm import tqdm

import datafiles
import decode
import selection


def fingerprint(value):
    """A short hash of what a record was made from, stored in it as "source": a re-run redoes the records whose
    input changed (other clips after a new `select`, other captions) instead of reusing them."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


class Journal:
    """The output file of a resumable, sharded batch job.

    Each rank appends its finished records to its own part file (OUT.part{rank}of{world}), a line at a time and
    flushed, so an interruption loses only the batch in flight. A re-run reads the final file and all part files
    and skips what they hold. Rank 0 waits until every wanted record is there, writes the final file atomically in
    input order, and removes the part files. Completion is judged from the records themselves, not from marker
    files, so nothing left behind by a crashed run can make rank 0 merge early (the other ranks' notes of what they
    wanted, OUT.wanted{rank}of{world}, can only make it stop). `settings` are stored beside the
    file: resuming with other settings (another model, seed, ...) is an error instead of a silent mix.
    """

    def __init__(self, path, key, rank=0, world_size=1, settings=None):
        self.path, self.key, self.rank, self.world_size = path, key, rank, world_size
        self.part = f"{path}.part{rank}of{world_size}"
        self.file = None
        self.opened = time.time()  # a rank's note of what it wanted counts only when written after this
        if settings is not None:
            check_settings(path, settings)

    def part_paths(self):
        return sorted(glob.glob(glob.escape(self.path) + ".part*of*"))

    def records(self):
        final = datafiles.read_jsonl(self.path) if os.path.exists(self.path) else []
        return final + [r for part in self.part_paths() for r in read_part(part)]

    def done(self):
        """The keys of the records finished: an error record (a video that could not be read) is not, so a re-run
        tries it again (the file may be there now)."""
        return {self.key(r) for r in self.records() if r.get("status") != "error"}

    def append(self, record):
        with datafiles.named(self.part):  # a full disk names the part file
            if self.file is None:
                drop_torn_line(self.part)
                self.file = open(self.part, "a", encoding="utf-8")
            self.file.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.file.flush()

    def close(self):
        if self.file:
            self.file.close()
            self.file = None

    def wanted_note(self, rank):
        return f"{self.path}.wanted{rank}of{self.world_size}"

    def merge(self, wanted, keep=None, poll_seconds=5.0):
        """Rank 0: wait for the records of all `wanted` keys, write them in that order (then the records of other
        keys the file held for which keep(record) is true) and return the wanted ones. Other ranks: None, after
        leaving a note of what they wanted, so that rank 0 stops instead of waiting for records that a rank which
        read other inputs (another videos.jsonl on its node) will never write."""
        self.close()
        wanted = list(dict.fromkeys(wanted))
        wanted_fingerprint = fingerprint(wanted)
        if self.rank != 0:
            datafiles.write_atomic(self.wanted_note(self.rank), wanted_fingerprint)
            return None
        waiting = False
        while True:
            by_key = {}
            for record in self.records():  # the part files come after the final file: a record made again wins
                by_key[self.key(record)] = record
            missing = [k for k in wanted if k not in by_key]
            if not missing:
                break
            if self.world_size == 1:  # nobody else will write them (e.g. a merge without a run)
                raise ValueError(f"{self.path}: {len(missing)} records are missing (first: {missing[0]})")
            self.check_other_ranks_wanted(wanted_fingerprint, missing)
            if not waiting:
                print(f"waiting for the other ranks: {len(missing)} records to go", file=sys.stderr)
                waiting = True
            time.sleep(poll_seconds)
        records = [by_key[k] for k in wanted]
        wanted_keys = set(wanted)
        others = [r for k, r in by_key.items() if k not in wanted_keys and keep and keep(r)]
        datafiles.write_jsonl(self.path, records + others)
        for leftover in self.part_paths() + glob.glob(glob.escape(self.path) + ".wanted*of*"):
            os.remove(leftover)
        return records

    def check_other_ranks_wanted(self, wanted_fingerprint, missing):
        for rank in range(1, self.world_size):
            note = self.wanted_note(rank)
            if not os.path.exists(note) or os.path.getmtime(note) < self.opened:  # not yet, or left by a crash
                continue
            with open(note, encoding="utf-8") as f:
                if f.read() != wanted_fingerprint:
                    raise ValueError(f"{self.path}: rank {rank} finished its share of other inputs than rank 0's, "
                                     f"and {len(missing)} records will never come (first: {missing[0]}); every node "
                                     f"needs the same input file and videos at the same paths")


def check_settings(path, settings, out_option="--out"):
    """A journal's settings are stored beside it (OUT.settings.json); going on with other ones is an error naming
    the option that picks another output. Called before the model loads, and again by the Journal."""
    settings_path = datafiles.swap_ending(path, ".settings.json")
    started = os.path.exists(path) or glob.glob(glob.escape(path) + ".part*of*")
    if os.path.exists(settings_path) and started:
        with open(settings_path, encoding="utf-8") as f:
            before = json.load(f)
        changed = ", ".join(datafiles.changes(before, json.loads(json.dumps(settings))))
        if changed:
            raise ValueError(f"{path} was made with other settings ({changed}); give another {out_option}, or "
                             f"delete it and its .part files to start over")
    else:
        datafiles.write_atomic(settings_path, json.dumps(settings, indent=2) + "\n")


def read_part(path):
    """Records of a part file; an unfinished last line (a rank still writing, killed mid-line, or a full disk, which
    can cut a character in two) is ignored."""
    with open(path, "rb") as f:
        data = f.read()
    records = []
    for number, line in enumerate(data.split(b"\n")[:-1], 1):  # the piece after the last newline is unfinished
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}:{number}: invalid JSON ({getattr(e, 'msg', e)})") from None
    return records


def drop_torn_line(path):
    """Cut a half-written last line (from an interrupted run) so new records start on a line of their own."""
    if not os.path.exists(path):
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def in_batches(groups, size):
    """Regroup the jobs of an iterable of job lists (one list per video) into lists of `size` (the last may be
    shorter). The groups are consumed lazily: a video's jobs are made only when the next batch needs them."""
    queue = []
    for group in groups:
        queue += group
        while len(queue) >= size:
            yield queue[:size]
            del queue[:size]
    if queue:
        yield queue


def select_videos(inputs, out, workers=1, retry_errors=False, **options):
    """`temple.py select`: selection.select_video on every video of `inputs` not yet in `out` (videos.jsonl), in
    `workers` processes; returns (all records, the records of the videos given, how many of those were recorded
    before)."""
    missing = [path for path in inputs if not os.path.exists(path)]
    if missing:  # a mistyped path is a usage error: nothing is written
        raise FileNotFoundError(f"{', '.join(missing)}: no such file or directory")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    records = read_selection(out, retry_errors)
    done = {os.path.abspath(r["path"]) for r in records if isinstance(r.get("path"), str)}
    todo, listed = [], decode.list_videos(inputs)
    for path in listed:
        if os.path.abspath(path) not in done:
            todo.append(path)
            done.add(os.path.abspath(path))
    before = len(listed) - len(todo)
    select = functools.partial(selection.select_video, **options)
    pool = multiprocessing.Pool(workers) if workers > 1 and len(todo) > 1 else None
    results = pool.imap_unordered(select, todo) if pool else map(select, todo)
    try:
        with datafiles.named(out), open(out, "a", encoding="utf-8") as f, \
                tqdm(total=len(todo), unit="video", desc="select") as bar:
            for record in results:  # one complete line per video, flushed: a crash loses at most the videos in flight
                f.write(json.dumps(record) + "\n")
                f.flush()
                os.fsync(f.fileno())
                records.append(record)
                bar.update()
    finally:
        if pool:
            pool.terminate()
    records = in_input_order(records, listed)
    datafiles.write_jsonl(out, records)
    given = {os.path.abspath(path) for path in listed}
    return records, [r for r in records if isinstance(r.get("path"), str) and os.path.abspath(r["path"]) in given], \
        before


def in_input_order(records, listed):
    """Workers finish in any order, and a resumed run appends after the first: the finished file lists the videos
    in the order they were given (records of videos given in earlier runs first, as they were), so that captions,
    pairs and the training data order do not depend on --workers or on interruptions."""
    position = {os.path.abspath(path): i for i, path in enumerate(listed)}

    def place(record):
        path = record.get("path")
        index = position.get(os.path.abspath(path)) if isinstance(path, str) else None
        return (0, 0) if index is None else (1, index)

    return sorted(records, key=place)  # stable: the earlier runs' records keep their order


def read_selection(path, retry_errors=False):
    """Records already in videos.jsonl. A half-written last line (a crash mid-write) is cut off; with retry_errors
    the error records are removed so their videos run again. Both rewrites are atomic (temp file + rename)."""
    if not os.path.exists(path):
        return []
    text = open(path, encoding="utf-8").read()
    lines = text.split("\n")
    complete, partial = lines[:-1], lines[-1]  # the text after the last newline is partial (or empty)
    records = []
    for number, line in enumerate(complete, 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{number}: not a JSON line ({e.msg})") from None
    kept = [r for r in records if not (retry_errors and r.get("status") == "error")]
    if partial.strip() or len(kept) < len(records):
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        os.replace(path + ".tmp", path)
    return kept


def selection_summary(records, which=""):
    """kept / rejected by reason / errors by reason, one line each ("7 videos{which}: 2 kept, ...")."""
    def kind(record):  # "too few shots: 2 after ..." -> "too few shots"; "a.mp4: empty file (0 bytes)" -> "empty file"
        reason = record.get("reason", "")
        if record.get("status") == "error":
            reason = reason.removeprefix(f"{record.get('path')}: ")
        return reason.split(":")[0].split(" (")[0]

    by_status = Counter(r.get("status") for r in records)
    lines = [f"{len(records)} videos{which}: {by_status['kept']} kept, {by_status['rejected']} rejected, "
             f"{by_status['error']} errors"]
    for status in ("rejected", "error"):
        for reason, count in Counter(kind(r) for r in records if r.get("status") == status).most_common():
            lines.append(f"  {status}: {reason}: {count}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# A command stopped half-way (Ctrl-C, a full disk): one line with what is kept and the command that goes on

# What each command leaves behind (training says which checkpoint: runs.Interrupted)
KEPT_ON_INTERRUPT = {
    "select": "every video finished so far is in videos.jsonl", "captions": "every caption finished so far is kept",
    "pairs": "every description finished so far is kept", "curriculum": "finished stages and checkpoints are kept",
    "merge": "--out is as it was", "eval": "no report was written",
}


RESUMED_BY_RERUN = ("select", "captions", "pairs", "curriculum")  # these skip what is done on their own


RESUMED_WITH_FLAG = ("dpo", "sft")


def stopped_line(command, argv, what, error, then="Resume"):
    """One line for a job stopped half-way (Ctrl-C, a full disk): what stopped it, what is kept, the command that goes
    on from there."""
    kept = getattr(error, "kept", None) or KEPT_ON_INTERRUPT.get(command, "nothing is lost but the unfinished work")
    line = f"temple.py {command}: {what}; {kept}"
    if command not in RESUMED_BY_RERUN + RESUMED_WITH_FLAG:
        return line
    flag = ["--resume"] if command in RESUMED_WITH_FLAG and "--resume" not in argv else []
    if "RANK" in os.environ:  # under torchrun: its own options are not ours to repeat
        return line + (f". {then}: the same torchrun command" + (" with --resume" if flag else ""))
    return line + f". {then}: " + shlex.join(["python", "temple.py", *argv, *flag])


def interrupted_line(command, argv, error):
    return stopped_line(command, argv, "interrupted", error)


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def no_space_line(command, argv, error):
    """A full disk (or quota) while writing: which file, what is kept, how to go on once there is room."""
    return stopped_line(command, argv, f"error: no space left on the device of {error.filename}", error,
                        then="Free some space, then resume")
