"""runs.py - a training run on disk: what its directory holds, how a stage starts from another, its checkpoints, how a
finished run is loaded again or merged into a model.

A curriculum stage trains fresh LoRA adapters on the base model with the earlier stages merged in (its start, which
is also its DPO reference; docs/method.md, "Training"). A finished run directory carries its whole chain:

    config.json                     what is trained (base model, start, data, LoRA, loss, video) and how (the
                                    TrainConfig), plus what each resume changed and from which step
    metrics.jsonl                   one line per optimizer step
    checkpoint/                     the stage's adapter + optimizer, schedule, RNG and step, for --resume
    stage/                          this stage's own final adapter, trained on top of its start: never load it alone
    adapter_model.safetensors       the start's adapters and this stage's stacked into one adapter on the plain base
    adapter_config.json             model (lora.stack_adapters), written last: its presence marks the run finished

So `merge`, `eval --run`, `sft --init` and the next stage need this directory and the base model, nothing else:
moving or copying runs/ (or one run) keeps every run usable, and peft.PeftModel.from_pretrained(base, run) loads the
model the curriculum made up to this stage. Every file is written whole (temporary file, then rename), so a crash
or a full disk leaves the previous checkpoint as it was.

    python temple.py merge runs/dpo_r2 --out merged/      # base + the whole chain, as a transformers model
"""

import contextlib
import errno
import functools
import hashlib
import io
import json
import os
import random
import shutil
import sys
from dataclasses import asdict

import torch

import datafiles
import distributed
import hub
import lora
import tiny
import vlm


def finished(run_dir):
    return os.path.exists(os.path.join(run_dir, "adapter_model.safetensors"))


def check_finished(run_dir, label=""):
    """A run to read from (merge, eval --run, --init) must be there and finished; say which of the two it is not."""
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"{label}{run_dir}: no such directory")
    if not finished(run_dir):
        raise ValueError(f"{label}{run_dir}: not a finished run (no adapter_model.safetensors; an interrupted run "
                         f"goes on with --resume)")


def resumable(run_dir):
    """Whether a run directory holds work a --resume goes on from: a checkpoint, or the finished run itself. A run
    that stopped before its first checkpoint (a bad option, a crash in step 1) left nothing worth keeping."""
    return finished(run_dir) or any(os.path.exists(os.path.join(run_dir, name, "train_state.pt"))
                                    for name in ("checkpoint", "checkpoint.old"))


def check_run_dir(run_dir, resume):
    """A new run never writes into an earlier one: its final adapter or checkpoint would outlive a failed new run,
    and the directory would still look finished (curriculum skips it, the next stage chains from it). What a run
    that never reached a checkpoint left behind does not block a new one."""
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise ValueError(f"{run_dir}: is a file, not a run directory; give another --out (or --runs)")
    if resumable(run_dir) and not resume:
        earlier = [n for n in ("config.json", "checkpoint", "adapter_model.safetensors")
                   if os.path.exists(os.path.join(run_dir, n))]
        raise ValueError(f"{run_dir} holds an earlier run ({', '.join(earlier)}); add --resume to continue it, or "
                         f"give another --out (or delete it) to start over")


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def same_base_model(config, name, identity):
    """Whether a run's config.json names the base model `name`: by what it is (hub.model_identity, so a hub id and
    its snapshot on disk are one model) when both sides could look at its files, else by name."""
    if config.get("base_model_id") and identity:
        return config["base_model_id"] == identity
    return config["base_model"] == name


def start_after(init, base_model, run_dir, identity=None):
    """config.json's record of a stage that starts from the finished run `init` (None: from the base model): where
    it was, relative to the new run (for the reader; never followed later), its stages, and the content hash of the
    adapter that is merged in. `identity` is the base model's hub.model_identity."""
    if init is None:
        return None
    check_finished(init, "--init ")
    previous = read_run_config(init)
    if not same_base_model(previous, base_model, identity):
        raise ValueError(f"{init}: trained on base model '{previous['base_model']}', not '{base_model}'")
    stages = (previous["start"] or {}).get("stages", []) + [os.path.basename(os.path.normpath(init))]
    return {"run": os.path.relpath(init, run_dir), "stages": stages,
            "adapter_sha256": file_sha256(os.path.join(init, "adapter_model.safetensors"))}


def stage_adapter_notes(meta):
    """(base_model_name_or_path, README text) for a stage's own adapter (stage/, checkpoint/). A chained stage's
    adapter was trained on the base with earlier stages merged in: loaded alone on the plain base model it would
    silently leave them out. Its adapter_config.json then names base + stages (no loader finds such a model) and a
    README.md says what to load instead."""
    start = meta.get("start")
    if not start:
        return meta["base_model"], None
    on_top = f"{meta['base_model']} + {' + '.join(start['stages'])} merged"
    return on_top, (f"This is one curriculum stage's own LoRA adapter, trained on {on_top}.\n\n"
                    f"Loaded alone on {meta['base_model']} it leaves {', '.join(start['stages'])} out. Load the run "
                    f"directory's own adapter_model.safetensors instead (the whole chain, on the plain base model: "
                    f"peft.PeftModel.from_pretrained(base, RUN)), or merge everything with "
                    f"`python temple.py merge RUN --out DIR`.\n")


def merge_start(model, init):
    """Fold the finished run `init` (its whole chain) into the weights: the starting point of a stage or of SFT."""
    if init is not None:
        lora.merge_updates(model, lora.adapter_updates(init)[0])
    return model


def finish_run(run_dir, meta):
    """Stack the start's adapter and the stage's (stage/) into the run's own adapter, which marks it finished."""
    parts = [os.path.join(run_dir, "stage")]
    if meta["start"] is not None:
        init = os.path.normpath(os.path.join(run_dir, meta["start"]["run"]))
        if not finished(init) or file_sha256(os.path.join(init, "adapter_model.safetensors")) != \
                meta["start"]["adapter_sha256"]:
            raise ValueError(f"{run_dir} started from {init}, which has changed or moved since this stage began; "
                             f"put it back, or resume with --init pointing at where it is now (the stage's own "
                             f"adapter is kept in {parts[0]})")
        parts.insert(0, init)
    lora.stack_adapters(parts, run_dir, base_model=meta["base_model"])


def split_run(run_dir):
    """(start, stage directory): the updates of the run's start (the stacked rows before the stage's own) and
    where the stage's own adapter is."""
    stage_dir = os.path.join(run_dir, "stage")
    if not os.path.exists(os.path.join(stage_dir, "adapter_model.safetensors")):
        raise ValueError(f"{run_dir}: no stage/ adapter (not a run this temple.py wrote); train it again")
    stacked, _ = lora.adapter_updates(run_dir)
    stage, _ = lora.adapter_updates(stage_dir)
    start = {}
    for name, (a, b) in stacked.items():
        own = len(stage[name][0]) if name in stage else 0
        if own and not torch.equal(a[len(a) - own:], stage[name][0].to(a.dtype)):
            raise ValueError(f"{run_dir}: adapter_model.safetensors and stage/ disagree on '{name}'")
        if len(a) > own:
            start[name] = (a[:len(a) - own], b[:, :len(a) - own])
    return start, stage_dir


def load_run(run_dir, model_name=None, **load_options):
    """A finished run as a vlm.VideoLM: its base (or `model_name`, e.g. a local copy) with the run's start merged
    in, and its own stage adapter loaded but not merged, so that `lora.disable_lora` gives back its reference."""
    check_finished(run_dir)
    config = read_run_config(run_dir)
    start, stage_dir = split_run(run_dir)
    model = vlm.load(model_name or config["base_model"], seed=config.get("model_seed", 0), **load_options)
    lora.merge_updates(model.hf_model, start)
    lora.load_adapter(model.hf_model, stage_dir)
    model.hf_model.eval()  # new LoRA layers start in training mode: no dropout outside training
    return model


def write_run_config(config, meta, world_size, start=0):
    """config.json: what is trained (meta) and how (the TrainConfig). A resume may change how (a lower --lr after a
    NaN stop, more steps, another batch split): the first settings stay, and each resume adds what it changed and
    from which step, as metrics.jsonl keeps the history of the steps. It may not change what is trained."""
    path = os.path.join(config.out, "config.json")
    record = json.loads(json.dumps({**meta, "train": asdict(config), "world_size": world_size}))  # tuples as lists
    if start and os.path.exists(path):  # a resume from a checkpoint, already checked by check_resume
        saved = read_run_config(config.out)
        current = settings_now(saved)
        changed = {k: [current.get(k), v] for k, v in record["train"].items() if current.get(k) != v}
        resume = {"step": start, "changed": changed}
        if "stopped" in saved:  # an adaptive stage that ended early goes on: its stop becomes history
            resume["after_stop"] = saved.pop("stopped")
            unfinish(config.out)  # before config.json says so: never a finished-looking run that is training on
        if changed or "after_stop" in resume:
            saved.setdefault("resumes", []).append(resume)
        record = saved
    datafiles.write_atomic(path, json.dumps(record, indent=2))


def settings_now(saved):
    """A run's TrainConfig settings as they stand: the first ones (config.json's "train"), with what each resume
    changed."""
    return {**saved["train"], **{k: new for resume in saved.get("resumes", []) for k, (_, new) in
                                 resume["changed"].items()}}


def unfinish(run_dir):
    """Take a run's final adapter away while it trains on: until its new end it is not finished (curriculum would
    skip it, and the next stage would chain from the old weights). Its checkpoint/ and stage/ stay."""
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(run_dir, name))


def trained_otherwise(saved, meta):
    """What a run's config.json says was trained otherwise than `meta` asks: base model (by what it is), start (by
    content: a moved start is the same), data (by file), LoRA, loss, video, held-out settings..."""
    def what(record):
        # left out: how it trains (train, world_size, resumes), what it wrote since (stopped), and what is compared
        # by what it is (base model), by content (start) or by file (data)
        fixed = {k: v for k, v in record.items() if k not in ("train", "world_size", "resumes", "stopped", "start",
                                                              "data", "base_model", "base_model_id")}
        return {**json.loads(json.dumps(fixed)), "start": (record.get("start") or {}).get("adapter_sha256"),
                "data": record.get("data") and os.path.realpath(record["data"])}

    before, now = what(saved), what(meta)
    differ = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    if not same_base_model(saved, meta["base_model"], meta.get("base_model_id")):
        differ.insert(0, "base_model")
    return differ


# TrainConfig fields that change the weights a run ends with (workers, save_every, grad_ckpt, micro_batch do not)
TRAINING_SETTINGS = ("lr", "warmup_ratio", "epochs", "global_batch", "weight_decay", "betas", "max_grad_norm",
                     "max_steps", "seed", "tokens_across_ranks")


def trained_with_other_settings(saved, config):
    """The TRAINING_SETTINGS a finished run ended with (its first settings and what its resumes changed) that differ
    from `config` (a TrainConfig)."""
    current = settings_now(saved)
    wanted = json.loads(json.dumps(asdict(config)))
    return [k for k in TRAINING_SETTINGS if current.get(k) != wanted.get(k)]


def check_resume(run_dir, meta):
    """A resume continues the same training: refused when what is trained differs from the run's config.json."""
    if not os.path.exists(os.path.join(run_dir, "config.json")):
        return
    differ = trained_otherwise(read_run_config(run_dir), meta)
    if differ:
        raise ValueError(f"{run_dir}: the run was started with another {', '.join(differ)}; a resume may change how "
                         f"it trains (--lr, --max-steps, ...), not what it trains; give another --out to start over")


def record_stop(run_dir, step, reason):
    """config.json notes that the run ended early (an adaptive stage): at which step and why."""
    config = read_run_config(run_dir)
    config["stopped"] = {"step": step, "reason": reason}
    datafiles.write_atomic(os.path.join(run_dir, "config.json"), json.dumps(config, indent=2))


def stopped_early(run_dir, step, steps, reason, progress):
    """record_stop, and the reason said on a line below the progress bar, closed at its last state."""
    record_stop(run_dir, step, reason)
    progress.close()
    print(f"{os.path.basename(run_dir)}: {reason}; the stage ends at step {step} of {steps}")


def report_left_out(run_dir):
    """After training: how many examples were left out (unusable) and replaced, per metrics.jsonl."""
    left_out = sum(m.get("left_out", 0) for m in read_metrics(run_dir))
    if left_out:
        print(f"{run_dir}: {left_out} example(s) left out and replaced by the next usable one (reasons above; "
              f"metrics.jsonl counts them per step)", file=sys.stderr)


def read_run_config(run_dir):
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{run_dir}: not a run directory (no config.json)")
    try:
        with open(path) as f:
            config = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    missing = [k for k in ("base_model", "start") if k not in config] if isinstance(config, dict) else ["all"]
    if missing:
        raise ValueError(f"{path}: not a run's config.json (missing: {', '.join(missing)})")
    return config


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training; `kept` says which checkpoint a --resume continues from."""

    def __init__(self, kept):
        super().__init__(kept)
        self.kept = kept


@contextlib.contextmanager
def noting_checkpoint(config, run):
    """A Ctrl-C (Interrupted) or an OSError (e.g. a full disk while a checkpoint was written) inside the block
    carries which checkpoint a --resume continues from: run.saved, the step of the newest one."""
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(checkpoint_note(config, run.saved)) from None
    except OSError as e:
        e.kept = checkpoint_note(config, run.saved)
        raise


def checkpoint_note(config, saved):
    """Where a --resume continues from, in words."""
    if saved == 0:
        return f"no checkpoint yet (one every {config.save_every} steps), so --resume starts from step 0, the start"
    return f"{config.out}/checkpoint holds step {saved}"


def rng_state():
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_checkpoint(model, optimizer, step, config, world, meta, final=False, rng=None, evaluations=()):
    """Adapter + optimizer + RNG of every rank (`rng`: as it was at the step's start) + the held-out evaluations so
    far (an adaptive stage decides on them), written to checkpoint.tmp/ and then renamed: a crash mid-save leaves
    the previous checkpoint intact."""
    rngs = distributed.all_gather(world, rng or rng_state())
    base_model, readme = stage_adapter_notes(meta)

    def write():
        ckpt = os.path.join(config.out, "checkpoint")
        tmp = ckpt + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        state = io.BytesIO()  # torch.save's own file writing turns a full disk into an unnamed RuntimeError
        torch.save({"step": step, "optimizer": optimizer.state_dict(), "rng": rngs, "world": world.size,
                    "evaluations": list(evaluations)}, state)
        try:
            lora.save_adapter(model, tmp, base_model=base_model, readme=readme)
            datafiles.write_atomic(os.path.join(tmp, "train_state.pt"), state.getvalue())
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # give back the space a half-written checkpoint took
            raise
        if os.path.exists(ckpt):
            os.replace(ckpt, ckpt + ".old")
        os.replace(tmp, ckpt)
        shutil.rmtree(ckpt + ".old", ignore_errors=True)
        if final:
            lora.save_adapter(model, os.path.join(config.out, "stage"), base_model=base_model, readme=readme)
            finish_run(config.out, meta)

    distributed.on_main(world, write)


def load_checkpoint(model, optimizer, config, world):
    """Restore a run's checkpoint; returns (the step to continue from, the held-out evaluations up to it); (0, [])
    when there is none."""
    ckpt = os.path.join(config.out, "checkpoint")
    if not os.path.exists(ckpt) and os.path.exists(ckpt + ".old"):
        ckpt += ".old"  # a crash between the two renames of save_checkpoint
    if not os.path.exists(os.path.join(ckpt, "train_state.pt")):
        return 0, []
    state = torch.load(os.path.join(ckpt, "train_state.pt"), weights_only=True, map_location="cpu")
    if state["world"] != world.size:
        raise ValueError(f"{ckpt}: saved with {state['world']} processes, resumed with {world.size}; resume with "
                         f"--nproc_per_node matching the original run")
    lora.load_adapter(model, ckpt)
    optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"][world.rank])
    return state["step"], state.get("evaluations", [])


def start_run_files(config, meta, world_size, start):
    """config.json (with what a resume changed) and metrics.jsonl (new, or cut back to the checkpoint's step)."""
    write_run_config(config, meta, world_size, start)
    metrics_path = os.path.join(config.out, "metrics.jsonl")
    trim_metrics(metrics_path, start) if start else open(metrics_path, "w").close()


def read_metrics(run_dir):
    """The records of a run's metrics.jsonl."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def trim_metrics(path, step):
    """On resume, drop metric lines past the checkpoint so metrics.jsonl reads as one continuous run. A last line cut
    short by a kill is dropped too; a bad line before it is an error naming the file and line."""
    if os.path.exists(path):
        with open(path) as f:
            lines = [line for line in f if line.strip()]
        kept = []
        for number, line in enumerate(lines, 1):
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line if line.endswith("\n") else line + "\n")
            except (ValueError, KeyError, TypeError):
                if number < len(lines):
                    raise ValueError(f"{path}:{number}: not a metrics line") from None
        datafiles.write_atomic(path, "".join(kept))


MERGED_MARK = "merged_from.json"  # merge writes it: a directory that has it holds a model merge made and may replace


def check_merge_out(out):
    """merge's --out, checked before the model loads: a directory (or a new one) that is empty or holds an earlier
    merge (its MERGED_MARK); never a run, another model, or a file."""
    datafiles.check_output_dir(out, "--out")
    if not os.path.isdir(out) or not os.listdir(out) or os.path.exists(os.path.join(out, MERGED_MARK)):
        return
    names = set(os.listdir(out))
    if names & {"adapter_model.safetensors", "checkpoint", "metrics.jsonl"}:
        raise ValueError(f"--out {out}: holds a training run; give a new directory for the merged model")
    if "config.json" in names or any(is_weight_file(n) for n in names):
        raise ValueError(f"--out {out}: holds a model that merge did not write (no {MERGED_MARK}); give a new "
                         f"directory")


def is_weight_file(name):
    return name.startswith(("model", "pytorch_model")) and name.endswith((".safetensors", ".bin", ".index.json"))


# What a model directory holds besides weights, config and tokenizer: vLLM, lmms-eval and AutoProcessor read these
PROCESSOR_FILES = ("preprocessor_config.json", "video_preprocessor_config.json", "processor_config.json",
                   "chat_template.json", "chat_template.jinja")


def copy_processor_files(base, out, processor):
    """Put the base model's processor and chat-template files into `out` (a built-in tiny model's are made from
    its vlm.Processor); say which could not be looked up."""
    if base in vlm.TINY_MODELS:
        for name, content in tiny.processor_files(processor).items():
            datafiles.write_atomic(os.path.join(out, name), json.dumps(content, indent=2) + "\n")
        return
    ask_hub = functools.cache(hub.reachable)  # probed once, and only for a file the cache does not know
    unchecked = []
    for name in PROCESSOR_FILES:
        path = hub.base_model_file(base, name, ask_hub)
        if path is hub.UNCHECKED:
            unchecked.append(name)
        elif path:
            shutil.copyfile(path, os.path.join(out, name))
    if unchecked:
        print(f"warning: {base}: these files are not in the local Hugging Face cache and the hub did not answer, so "
              f"they were not looked up: {', '.join(unchecked)}. Copy the ones the model has into the merged "
              f"directory (vLLM, lmms-eval and AutoProcessor read them)", file=sys.stderr)


def merge_run(run_dir, out, model_name=None):
    """`temple.py merge`: the base model with the run's whole chain folded in (one float32 sum, rounded once),
    saved as a transformers model directory with the base model's processor and chat-template files beside it.
    An earlier merge in `out` is replaced file by file; other files there (notes, reports) stay."""
    out = os.path.normpath(out)
    check_merge_out(out)
    check_finished(run_dir)
    config = read_run_config(run_dir)
    base = model_name or config["base_model"]
    model = vlm.load(base, seed=config.get("model_seed", 0))
    merge_start(model.hf_model, run_dir)
    partial = out + ".partial"  # written whole first: a failure leaves `out` as it was
    shutil.rmtree(partial, ignore_errors=True)
    try:
        with full_disk_named(partial):
            model.hf_model.save_pretrained(partial)
        model.tokenizer.save_pretrained(partial)
        copy_processor_files(base, partial, model.processor)
        datafiles.write_atomic(os.path.join(partial, MERGED_MARK), json.dumps(
            {"run": os.path.abspath(run_dir), "base_model": base}, indent=2) + "\n")
        mode = datafiles.usual_file_mode(partial)
        for name in os.listdir(partial):  # safetensors writes private (0600) files
            os.chmod(os.path.join(partial, name), mode)
        replace_files(partial, out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return out


@contextlib.contextmanager
def full_disk_named(path):
    """safetensors (under save_pretrained) reports a full disk as its own error, without a file: an OSError naming
    `path` instead, which temple.py turns into one line."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - only the full-disk case is translated; the rest goes on as it was
        if "os error 28" in str(e) or "No space left" in str(e):
            raise OSError(errno.ENOSPC, "No space left on device", path) from e
        raise


def replace_files(new, out):
    """Put the files of directory `new` into `out`: all at once when `out` is new or empty, else one by one, first
    taking away the weight files of the earlier merge that the new one does not have (another sharding)."""
    if not os.path.isdir(out) or not os.listdir(out):
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(out)
        os.replace(new, out)
        return
    written = set(os.listdir(new))
    for name in os.listdir(out):
        if is_weight_file(name) and name not in written:
            os.remove(os.path.join(out, name))
    for name in sorted(written, key=lambda n: n == MERGED_MARK):  # the mark last: it vouches for a whole merge
        os.replace(os.path.join(new, name), os.path.join(out, name))
