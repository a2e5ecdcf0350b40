"""dpo.py - Direct Preference Optimization of a video LLM on TEMPLE's pairs, one curriculum stage at a time.

DPO (Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is Secretly a Reward Model")
trains the policy pi so that, relative to a frozen reference pi_ref, the chosen answer y+ gains log-probability
over the rejected answer y-:

    r+ = log pi(y+|x) - log pi_ref(y+|x)        r- = log pi(y-|x) - log pi_ref(y-|x)       (summed over tokens)
    sigmoid (default):  loss = -log sigmoid(beta * (r+ - r-))
    ipo:                loss = ((r+/|y+| - r-/|y-|) - 1/(2 beta))^2        (length-normalised, as TRL)
    hinge:              loss = max(0, 1 - beta * (r+ - r-))

TEMPLE's released run (docs/method.md, "Training"; ms-swift < 3.8 defaults) adds 1.0 x the mean token NLL of the
chosen answer (`--nll-weight`). An answer's log-probability covers its text and the closing <|im_end|>, not the
newline the chat template writes after it: so did ms-swift 3.7, the released run's trainer (ms-swift 4.x and TRL
also score that "\n"). Dropout is off in the policy (LoRA dropout 0), as ms-swift and TRL switch it off for DPO.
The reference is the same weights with the LoRA adapters switched off: no second copy of the model. Logged metrics
use TRL's names:
    rewards/chosen, rewards/rejected   mean beta * r+ and beta * r-       (how far the policy moved per answer)
    rewards/margins, rewards/accuracies  mean beta * (r+ - r-), and the share of pairs where it is > 0
    logps/chosen, logps/rejected       mean summed policy log-probability of the answers
    nll                                mean token NLL of the chosen answers

Preference accuracy (`temple.py eval --pairs`): the share of pairs with beta * (r+ - r-) > 0, what DPO learned.

Curriculum (docs/method.md, "Training"): stage r=16 trains a LoRA on the base model; stage r<16 starts from the previous
stage's adapter merged into its starting weights, which are also this stage's reference; so on to r=2.

    python temple.py dpo --r 16 --model Qwen/Qwen2.5-VL-7B-Instruct
    torchrun --nproc_per_node 8 temple.py dpo -r 8 --model Qwen/Qwen2.5-VL-7B-Instruct
    python temple.py curriculum --model tiny && python temple.py merge runs/dpo_r2 --out merged/
"""

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm import tqdm

import datafiles
import distributed
import examples
import lora
import runs
import train
import vision_cache
import hub


# ----------------------------------------------------------------------------------------------------------------
# The loss (torch only: copy this function on its own)

LOSS_TYPES = ("sigmoid", "ipo", "hinge")


def dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1,
             loss_type="sigmoid", chosen_lengths=None, rejected_lengths=None):
    """Per-pair DPO losses and the implicit rewards beta * r+ and beta * r- (detached), each of shape (pairs,).

    All log-probs are summed over answer tokens. `ipo` needs the answers' token counts (chosen_lengths,
    rejected_lengths) because it compares per-token log-ratios.
    """
    chosen_ratio = policy_chosen_logps - ref_chosen_logps
    rejected_ratio = policy_rejected_logps - ref_rejected_logps
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * (chosen_ratio - rejected_ratio))
    elif loss_type == "ipo":
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError("loss_type 'ipo' needs chosen_lengths and rejected_lengths")
        margin = chosen_ratio / chosen_lengths - rejected_ratio / rejected_lengths
        losses = (margin - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}; choose from {', '.join(LOSS_TYPES)}")
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


# ----------------------------------------------------------------------------------------------------------------
# The step: a micro-batch of pairs, one forward for chosen and rejected, the reference with LoRA off


def encode_pair(model, pair, video_options, max_length, truncation="delete"):
    """(chosen Sample, rejected Sample) for one pair, each fitted into max_length tokens by vlm.truncate. Both rows
    hold the one Prepared video: a batch stores it once and the vision tower encodes it once (policy_and_reference).
    A video that cannot be read, or a pair over --max-length (with truncation "delete", ms-swift's default: either
    answer; else its prompt alone), raises examples.BadItem: training uses another pair in its place."""
    prepared = examples.prepared_video(model, pair["video"], video_options)
    rows = [model.encode([prepared, pair["instruction"]], response=answer)
            for answer in (pair["chosen"], pair["rejected"])]
    return [examples.truncated(row, max_length, pair["video"], truncation) for row in rows]


@dataclass
class PairEncoder:
    """encode(index) for the training loop: pair `index` as {"rows", "index"} (and "ref", its cached reference
    log-probs, with --precompute-ref). It runs in data-loader workers, so it holds the weightless vlm.Processor,
    never the model: it pickles when the workers are started by spawn or forkserver."""
    processor: object  # vlm.Processor
    pairs: list
    video_options: dict
    max_length: int
    truncation: str = "delete"
    references: list | None = None  # per pair [chosen, rejected]; None for a pair unreadable when cached
    cache: str = ""

    def __call__(self, index):
        encoded = {"rows": encode_pair(self.processor, self.pairs[index], self.video_options, self.max_length,
                                       self.truncation), "index": index}
        if self.references is not None:
            if self.references[index] is None:  # its video did not decode when the cache was made
                raise examples.BadItem(f"no cached reference (its video was unreadable when {self.cache} was made; "
                                    f"delete it to recompute)", "unreadable video")
            encoded["ref"] = self.references[index]
        return encoded

    def where(self, index):
        """The pair's file:line, for messages."""
        return f"pair {self.pairs[index]['where']}"


def collate_pairs(model, encoded):
    """One batch: the chosen rows of every pair, then their rejected rows (one forward for both)."""
    return model.collate([c for c, _ in encoded] + [r for _, r in encoded])


def policy_and_reference(model, module, batch, reference=None):
    """Policy log-probs (with gradient) and reference log-probs (LoRA off, no gradient) of a pairs batch."""
    with vision_cache.shared(model, batch):  # each pair's video through the frozen tower once, for all three passes
        policy, counts = model.response_logps(batch, model=module)
        if reference is None:
            # the plain model, not the DDP wrapper `module`: a pass without gradient must stay out of DDP's
            # bookkeeping of which parameters took part in the backward
            with torch.no_grad(), lora.disable_lora(model.hf_model):
                reference, _ = model.response_logps(batch)
    return policy, reference, counts


def dpo_step(model, module, encoded, settings):
    """Loss and TRL-named metrics of a micro-batch of encoded pairs (PairEncoder's; "ref" with --precompute-ref)."""
    batch = model.to_device(collate_pairs(model, [e["rows"] for e in encoded]))
    reference = None
    if settings["precomputed"]:
        # the cache holds [chosen, rejected] per pair; the batch's rows are all the chosen, then all the rejected
        reference = torch.tensor([e["ref"] for e in encoded], device=model.device).T.reshape(-1)
    policy, ref, counts = policy_and_reference(model, module, batch, reference)
    n = len(encoded)
    losses, chosen_rewards, rejected_rewards = dpo_loss(
        policy[:n], policy[n:], ref[:n], ref[n:], beta=settings["beta"], loss_type=settings["loss_type"],
        chosen_lengths=counts[:n], rejected_lengths=counts[n:])
    # the released run's extra term (ms-swift < 3.8, rpo_alpha 1): the chosen answers' mean token NLL, which keeps
    # the policy fluent on its own good descriptions while DPO pushes the pair apart
    nll = -policy[:n].sum() / counts[:n].sum()
    loss = losses.mean() + settings["nll_weight"] * nll
    metrics = {"rewards/chosen": chosen_rewards.mean().item(), "rewards/rejected": rejected_rewards.mean().item(),
               "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean().item(),
               "rewards/margins": (chosen_rewards - rejected_rewards).mean().item(),
               "logps/chosen": policy[:n].mean().item(), "logps/rejected": policy[n:].mean().item(),
               "nll": nll.item()}
    return loss, metrics


def pair_logps(model, pair, video_options, max_length, use_reference, truncation="delete"):
    """Policy [chosen, rejected] summed log-probs, their token counts, and with use_reference the reference's
    (LoRA off, else None); no gradient."""
    rows = encode_pair(model, pair, video_options, max_length, truncation)
    batch = model.to_device(collate_pairs(model, [rows]))
    with torch.no_grad():
        if not use_reference:
            policy, counts = model.response_logps(batch)
            return policy.tolist(), None, counts.tolist()
        policy, reference, counts = policy_and_reference(model, None, batch)
        return policy.tolist(), reference.tolist(), counts.tolist()


# ----------------------------------------------------------------------------------------------------------------
# Reference log-probs computed once per stage (--precompute-ref), cached beside the data


def reference_cache_path(data_path, pairs, meta):
    """The cache file's name carries a hash of everything the reference log-probs depend on: the pairs in use, in
    order, with their resolved video paths (the cache is a list by position); the base model and its seed; the
    content of the adapter merged before this stage (a stage re-trained in place is another reference); the
    video and length settings."""
    start = meta["start"] and meta["start"]["adapter_sha256"]  # content, not place: a moved run is the same start
    used = [{k: v for k, v in pair.items() if k != "where"} for pair in pairs]  # not where the file lies
    h = hashlib.sha256(json.dumps(used, sort_keys=True).encode())
    h.update(json.dumps({**{k: meta.get(k) for k in ("model_seed", "video", "max_length", "truncation")},
                         "base_model": meta.get("base_model_id") or meta["base_model"], "start": start},
                        sort_keys=True).encode())
    return f"{os.path.splitext(data_path)[0]}.ref-{h.hexdigest()[:12]}.json"


def precompute_reference(model, encode, num_items, path, world):
    """[[ref chosen, ref rejected], ...] for every pair (None for a pair whose video cannot be read; training
    uses another in its place): each rank scores its share, rank 0 writes the cache."""
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    mine = {}
    for index in tqdm(range(world.rank, num_items, world.size), desc="reference log-probs", disable=not world.main):
        try:
            rows = encode(index)["rows"]
        except examples.BadItem as e:
            print(f"left out {encode.where(index)}: {e}", file=sys.stderr)
            mine[index] = None
            continue
        batch = model.to_device(collate_pairs(model, [rows]))
        with torch.no_grad():
            logps, _ = model.response_logps(batch)
        mine[index] = logps.tolist()
    merged = {k: v for part in distributed.all_gather(world, mine) for k, v in part.items()}
    values = [merged[i] for i in range(num_items)]
    distributed.on_main(world, lambda: datafiles.write_atomic(path, json.dumps(values)))
    return values


# ----------------------------------------------------------------------------------------------------------------
# Held-out preference accuracy during training (--eval-pairs FILE or --heldout N, --eval-every STEPS)


def heldout_videos(pairs, count, seed):
    """The `count` videos a stage sets aside, every pair of theirs: a held-out pair must share no chosen answer with
    a trained one, and all kinds and r of a video share one chosen description. Ranked by a hash of --seed and the
    path as the data has it, so every rank and every resume sets aside the same videos."""
    videos = sorted({pair["video_in_data"] for pair in pairs})
    if not 0 < count < len(videos):
        raise ValueError(f"--heldout {count}: the data has pairs on {len(videos)} video(s); set aside between 1 and "
                         f"{len(videos) - 1} (every pair of a held-out video is held out)")
    rank = {video: hashlib.sha256(f"heldout {seed} {video}".encode()).hexdigest() for video in videos}
    return sorted(sorted(videos, key=rank.get)[:count])


def split_off(pairs, videos):
    """(pairs on other videos, pairs on `videos`); videos are compared as the data names them."""
    aside = {os.path.normpath(v) for v in videos}
    held = [os.path.normpath(pair["video_in_data"]) in aside for pair in pairs]
    return [p for p, h in zip(pairs, held) if not h], [p for p, h in zip(pairs, held) if h]


def stage_heldout_videos(args, init, pairs):
    """(videos, note) for --heldout N: the videos the run this stage starts from held out, which its whole chain kept
    out of training, else N chosen from this stage's data (heldout_videos); ([], note) without --heldout. The note
    (or None) says where the chain did not keep them apart."""
    earlier = runs.read_run_config(init).get("heldout_videos", []) if init else []
    if not args.heldout:
        return [], earlier and (f"note: {init} held out {len(earlier)} video(s); without --heldout {len(earlier)} this "
                                f"stage trains on them")
    if not earlier:
        return heldout_videos(pairs, args.heldout, args.seed), init and (
            f"note: {init} held out no video, so the stages before this one trained on the videos held out now")
    if len(earlier) != args.heldout:
        raise ValueError(f"--heldout {args.heldout}: {init}, which this stage starts from, held out {len(earlier)} "
                         f"video(s); hold out the same ones (--heldout {len(earlier)}) so that no stage trains on them")
    return earlier, None


@dataclass
class HeldOutAccuracy:
    """measure() for train.Evaluation: how often the implicit reward beta * (r+ - r-) of a held-out pair is positive,
    against the stage's reference (its adapters off), as `temple.py eval --pairs --run` computes it after training.
    Each rank scores its share of the pairs and the margins are gathered. The pairs are decoded again at every
    evaluation, a batch at a time: keeping them encoded would hold ~100 MB of patches per pair at 9 M pixels."""
    model: object  # vlm.VideoLM with the stage's adapters
    pairs: list
    video_options: dict
    max_length: int
    beta: float
    world: object  # distributed.World
    batch_size: int = 1
    truncation: str = "delete"
    left_out: set = field(default_factory=set)  # indices of pairs that failed (reported once, then skipped)

    def measure(self):
        mine = range(self.world.rank, len(self.pairs), self.world.size)
        training = self.model.hf_model.training
        self.model.hf_model.eval()  # no dropout while measuring
        margins = []
        with torch.no_grad():
            for first in range(0, len(mine), self.batch_size):
                rows = [r for r in (self.encode(i) for i in mine[first:first + self.batch_size]) if r is not None]
                if not rows:
                    continue
                batch = self.model.to_device(collate_pairs(self.model, rows))
                policy, reference, _ = policy_and_reference(self.model, None, batch)
                n = len(rows)
                margins += (self.beta * ((policy[:n] - reference[:n]) - (policy[n:] - reference[n:]))).tolist()
        self.model.hf_model.train(training)
        margins = [m for part in distributed.all_gather(self.world, margins) for m in part]
        if not margins:
            raise ValueError("no held-out pair could be scored (each was left out, for the reasons above)")
        return {"eval/rewards/accuracies": sum(m > 0 for m in margins) / len(margins),
                "eval/rewards/margins": sum(margins) / len(margins), "eval/pairs": len(margins)}

    def encode(self, index):
        if index in self.left_out:
            return None
        try:
            return encode_pair(self.model, self.pairs[index], self.video_options, self.max_length, self.truncation)
        except examples.BadItem as e:  # an unreadable video, or a pair over --max-length: this pair only
            print(f"held-out pair {self.pairs[index]['where']} left out: {e}", file=sys.stderr)
            self.left_out.add(index)
            return None


def evaluation(args, model, heldout, video, world):
    """The train.Evaluation of a stage (None without held-out pairs); with --adaptive it may end the stage early."""
    if not heldout:
        if args.adaptive:
            raise ValueError("no held-out pair is left to decide on (their videos are missing, or this stage's data "
                             "has no pair on the held-out videos), so --adaptive cannot run")
        return None
    measure = HeldOutAccuracy(model, heldout, video, args.max_length, args.beta, world, args.micro_batch,
                              args.truncation).measure
    stop = train.plateau("eval/rewards/accuracies", args.plateau_delta, args.plateau_evals,
                         args.accuracy_ceiling, count="eval/pairs") if args.adaptive else None
    return train.Evaluation(args.eval_every, measure, stop)


# ----------------------------------------------------------------------------------------------------------------
# A curriculum stage


def stage_init(args):
    """The finished run this stage starts from (None: the base model): --init, else the stage before, r * 2."""
    init = args.init
    if init is None and args.r < 16:
        init = os.path.join(args.runs, f"dpo_r{args.r * 2}")
        if not runs.finished(init):
            raise ValueError(f"stage r={args.r} starts from {init}, which is not finished; run "
                             f"`temple.py dpo -r {args.r * 2}` first, or pass --init RUN (or --init base)")
    return None if init == "base" else init


def stage_meta(args, data, start, identity, held_videos):
    """What config.json records of what a stage trains (the settings of how it trains are the TrainConfig's)."""
    return {"stage": "dpo", "r": args.r, "base_model": args.model, "base_model_id": identity, "start": start,
            "data": data, "video": {"fps": args.fps, "max_frames": args.max_frames, "total_pixels": args.total_pixels},
            "max_length": args.max_length, "truncation": args.truncation, "seed": args.seed,
            "model_seed": args.model_seed, "beta": args.beta, "loss_type": args.loss_type,
            "nll_weight": args.nll_weight, "lora": {"r": args.lora_r, "alpha": args.lora_alpha,
                                                    "dropout": args.lora_dropout},
            "heldout": {"videos": args.heldout, "file": args.eval_pairs, "every": args.eval_every},
            "heldout_videos": held_videos,
            "adaptive": {"plateau_delta": args.plateau_delta, "plateau_evals": args.plateau_evals,
                         "accuracy_ceiling": args.accuracy_ceiling} if args.adaptive else None}


def stage_paths(args):
    """(run directory, pairs file) of a stage."""
    return (args.out or os.path.join(args.runs, f"dpo_r{args.r}"),
            args.data or os.path.join(args.data_dir, f"pairs_r{args.r}.jsonl"))


def trained_otherwise(args):
    """What a finished stage was trained with that differs from what `args` asks (curriculum skips a finished stage
    only when this is empty): its start (by content), base model, data file, loss, LoRA, video, the settings that
    change the weights. Its held-out videos follow from the seed and the data, so they are not compared again."""
    run_dir, data = stage_paths(args)
    saved = runs.read_run_config(run_dir)
    init = stage_init(args)
    identity = hub.model_identity(args.model, args.model_seed)
    start = runs.start_after(init, args.model, run_dir, identity)
    meta = stage_meta(args, data, start, identity, saved.get("heldout_videos", []))
    return (runs.trained_otherwise(saved, meta) +
            runs.trained_with_other_settings(saved, train.train_config(args, run_dir)))


def read_stage_inputs(args, world):
    """What a stage trains on, read and checked before the model loads: (run_dir, data, init, meta, video, pairs,
    heldout); init is the finished run it starts from (None: the base model), meta what config.json records."""
    run_dir, data = stage_paths(args)
    runs.check_run_dir(run_dir, args.resume)
    train.check_accumulation(train.train_config(args, run_dir), world)
    init = stage_init(args)
    identity = hub.model_identity(args.model, args.model_seed)
    start = runs.start_after(init, args.model, run_dir, identity)
    if args.adaptive and not (args.heldout or args.eval_pairs):
        raise ValueError("--adaptive decides on held-out preference accuracy: give --heldout N or --eval-pairs FILE")
    if not os.path.exists(data):
        raise FileNotFoundError(f"{data}: no such file; make the pairs with `temple.py pairs` first, or pass "
                                f"--data FILE")
    pairs, skipped = datafiles.read_pairs(data, args.video_root)
    if world.main and skipped and pairs:
        print(f"{data}: skipped {datafiles.missing_videos(skipped, args.video_root)}")
    if not pairs:
        raise ValueError(f"{data}: no usable pairs" + (
            f": {datafiles.missing_videos(skipped, args.video_root)}" if skipped else ""))
    held_videos, note = stage_heldout_videos(args, init, pairs)
    if world.main and note:
        print(note)
    pairs, heldout = split_off(pairs, held_videos)
    if args.eval_pairs:
        extra = datafiles.read_pairs(args.eval_pairs, args.video_root)[0]
        shown = {os.path.normpath(p["video"]) for p in extra}  # the same video root: compare the joined paths
        shared = sum(os.path.normpath(p["video"]) in shown for p in pairs)
        if world.main and shared:
            print(f"note: {shared} training pair(s) are on videos of {args.eval_pairs}: their chosen answers are "
                  f"trained on, so held-out accuracy there is inflated (--heldout N holds out whole videos)")
        heldout += extra
    if not pairs:
        raise ValueError(f"{data}: every pair is on a held-out video; hold out fewer (--heldout) or other ones")
    meta = stage_meta(args, data, start, identity, held_videos)
    if args.resume and runs.resumable(run_dir):
        runs.check_resume(run_dir, meta)
    return run_dir, data, init, meta, meta["video"], pairs, heldout


def run_stage(args):
    """`temple.py dpo`: train one curriculum stage; returns the run directory."""
    world = distributed.setup()
    # every rank reads the data from its own disk; a failure on one node stops them all, before the model loads
    inputs = distributed.on_every_rank(world, lambda: read_stage_inputs(args, world))
    run_dir, data, init, meta, video, pairs, heldout = inputs
    distributed.check_same_data(world, pairs + heldout, data)
    config = train.train_config(args, run_dir)
    if args.resume and (done := train.finished_at(config, len(pairs))):
        if world.main:
            print(f"stage r={args.r}: {run_dir} was already finished (step {done}); nothing to resume")
        return run_dir

    model = train.start_stage(args, init, world, r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout)

    encode = PairEncoder(model.processor, pairs, video, args.max_length, args.truncation)
    settings = {"beta": args.beta, "loss_type": args.loss_type, "nll_weight": args.nll_weight,
                "precomputed": args.precompute_ref}
    if args.precompute_ref:
        distributed.check_shared_directory(os.path.dirname(os.path.abspath(data)), world, "the reference cache's directory")
        with lora.disable_lora(model.hf_model):
            encode.cache = reference_cache_path(data, pairs, meta)
            encode.references = precompute_reference(model, encode, len(pairs), encode.cache, world)

    train.train(model.hf_model, lambda module, items: dpo_step(model, module, items, settings), encode, len(pairs),
                config, world, meta, resume=args.resume, evaluation=evaluation(args, model, heldout, video, world))
    if world.main:
        print(f"stage r={args.r}: {len(pairs)} pairs -> {run_dir}")
    return run_dir


