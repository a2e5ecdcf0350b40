"""train.py - the training loop that dpo.py and sft.py share: torchrun DDP, accumulation, schedule, NaN stop.

The loop (docs/method.md, "Training", for the released run's settings) is written out in the style of nanoGPT's
train.py, so one can read every step (set_up, then loop):

    for each optimizer step:
        for each micro-batch of this rank:                  # global batch = world x micro-batch x accumulation
            loss = loss_fn(model, items) / accumulation     # bf16 autocast on GPU; a summed loss (SFT): / tokens
            loss.backward()                                 # DDP all-reduces gradients on the last micro-batch only
        the loss averaged over ranks: NaN or inf stops every rank here, before the weights change
        every --save-every steps: a checkpoint (only now: these weights have just given a finite loss)
        clip gradients, AdamW step, learning rate = linear warmup then cosine decay to 0
        held-out evaluation every --eval-every steps, if asked (an adaptive stage may end here)
        rank 0: one line of metrics.jsonl, the progress bar

Data order: every epoch is a permutation of the dataset drawn from the seed, the epochs are concatenated into one
stream, and optimizer step s uses items [s*G, (s+1)*G) of that stream (G = global batch), item k of those going to
rank k % world. The order therefore depends only on the seed and the dataset size: `--resume` continues with
exactly the items an uninterrupted run would have seen. What a run directory holds (checkpoints, metrics) is
runs.py's subject, the processes' collectives distributed.py's, an example that cannot be used examples.py's.

    torchrun --nproc_per_node 8 temple.py dpo -r 16         (recipes.run_stage and run_sft call train() below)
"""

import contextlib
import json
import math
import os
import random
from dataclasses import dataclass

import torch
from tqdm import tqdm
from torch.nn.parallel import DistributedDataParallel

import datafiles
import distributed
import examples
import runs


@dataclass
class TrainConfig:
    out: str  # run directory
    lr: float = 5e-6
    warmup_ratio: float = 0.05
    epochs: float = 1.0
    global_batch: int = 16  # examples per optimizer step, over all ranks
    micro_batch: int = 1  # examples per forward on one rank
    weight_decay: float = 0.1
    betas: tuple = (0.9, 0.95)  # AdamW's; ms-swift's default beta2 is 0.95 (torch's is 0.999)
    max_grad_norm: float = 1.0
    save_every: int = 500  # optimizer steps between checkpoints
    max_steps: int = 0  # the number of optimizer steps, overriding epochs (0 = as many as the epochs give)
    seed: int = 42
    # a summed loss (SFT) is divided by the answer tokens of this rank's accumulation window, as the released run did
    # (docs/stack.md, "SFT loss"); True: by those of the whole global batch, all ranks (exact, whatever the GPU count)
    tokens_across_ranks: bool = False
    grad_ckpt: bool = True  # non-reentrant activation checkpointing (ms-swift's default; a real pair needs it)
    workers: int = 2  # data-loading processes per rank (video decoding)
    # DDP must look for parameters a forward leaves out (SFT: a text-only record never reaches the vision adapters);
    # off by default because it walks the autograd graph after every forward
    find_unused_parameters: bool = False


# ----------------------------------------------------------------------------------------------------------------
# Data order and learning-rate schedule


def total_steps(num_items, config):
    """The optimizer steps of a run: --max-steps when given (the data repeats as often as that needs: HF's and
    ms-swift's meaning, so --max-steps 2 on 6 pairs is 2 steps), else as many as --epochs give."""
    return config.max_steps or math.ceil(num_items * config.epochs / config.global_batch)


def step_items(num_items, step, config):
    """The dataset indices of optimizer step `step` (all ranks), from the seeded epoch stream."""
    start, end = step * config.global_batch, (step + 1) * config.global_batch
    items, epoch = [], start // num_items
    while len(items) < end - start:
        order = torch.randperm(num_items, generator=torch.Generator().manual_seed(config.seed + epoch)).tolist()
        lo = max(start - epoch * num_items, 0)
        items += order[lo:end - epoch * num_items]
        epoch += 1
    return items


def rank_micro_batches(num_items, step, config, world):
    """This rank's share of a step, cut into micro-batches."""
    mine = step_items(num_items, step, config)[world.rank::world.size]
    return [mine[i:i + config.micro_batch] for i in range(0, len(mine), config.micro_batch)]


def learning_rate(step, steps, config):
    """The learning rate of optimizer step `step` (0-based): HF's get_cosine_schedule_with_warmup, which ms-swift
    uses: linear warmup over ceil(warmup_ratio x steps) steps from 0 (step k gets k / warmup: the first step runs
    at lr 0), then cosine decay to 0."""
    warmup = math.ceil(steps * config.warmup_ratio)
    if step < warmup:
        return config.lr * step / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return config.lr * 0.5 * (1 + math.cos(math.pi * progress))


def check_accumulation(config, world):
    per_step = world.size * config.micro_batch
    if config.global_batch % per_step:
        raise ValueError(f"--global-batch {config.global_batch} is not a multiple of world size {world.size} x "
                         f"--micro-batch {config.micro_batch}")


# ----------------------------------------------------------------------------------------------------------------
# The loop


def enable_activation_checkpointing(model):
    """Recompute each layer's activations in backward, non-reentrant: correct with DDP, kwargs and frozen inputs,
    where the reentrant variant drops LoRA gradients. Non-reentrant needs none of the input-grad hooks transformers
    adds for the reentrant one, and they make the frozen ViT run backward: removed (docs/stack.md, "Checkpointing")."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if getattr(model, "_require_grads_hooks", None) or getattr(model, "_require_grads_hook", None):
        model.disable_input_require_grads()


def disable_activation_checkpointing(model):
    disable = getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable
    disable()


@dataclass
class Evaluation:
    """Held-out evaluation during training: measure() every `every` optimizer steps and after the last one, on every
    rank (each scores its share and the results are gathered, so all ranks return the same numbers). Its metrics go
    into that step's line of metrics.jsonl. stop(evaluations so far) may end the run early: it returns the reason
    in words, or None to go on."""
    every: int
    measure: object  # measure() -> {"eval/...": float}
    stop: object = None  # stop([measure() results]) -> str or None


def train(model, loss_fn, encode, num_items, config, world, meta, resume=False, tokens=None, evaluation=None):
    """Train the trainable (LoRA) parameters of `model`; returns the number of optimizer steps.

    loss_fn(module, encoded_items) -> (loss tensor, {metric: float}); module is the DDP wrapper when distributed,
    so its forward must be the one that runs the policy. The loss is a mean over the micro-batch, or, given
    tokens(encoded_items) -> int, a sum that the loop divides by the tokens of this rank's whole accumulation window.
    encode(index) -> one encoded example (runs in workers); it raises examples.BadItem for an example that cannot be
    used, which is left out and named by encode.where(index) when encode has that method.
    meta: what config.json records besides the settings (base_model, the run it started from, data, ...).
    evaluation: an Evaluation, or None.
    """
    run = set_up(model, encode, num_items, config, world, meta, resume)
    with runs.noting_checkpoint(config, run):  # a Ctrl-C or a full disk says which checkpoint --resume goes on from
        loop(run, loss_fn, config, world, meta, tokens, evaluation)
        runs.save_checkpoint(model, run.optimizer, run.steps, config, world, meta, final=True,
                             evaluations=run.evaluations)
    distributed.on_main(world, lambda: runs.report_left_out(config.out))
    if config.grad_ckpt:
        disable_activation_checkpointing(model)
    model.eval()
    return run.steps


@dataclass
class Run:
    """What the loop works with: the model, its DDP wrapper, optimizer, data, and where it stands."""
    model: torch.nn.Module
    wrapped: torch.nn.Module
    optimizer: torch.optim.Optimizer
    trainable: list
    batches: object  # iterator over this rank's micro-batches, in step order
    start: int
    steps: int  # the last step: the planned one, or the one a held-out evaluation stopped at
    saved: int  # the step of the newest checkpoint (0: none yet)
    evaluations: list  # the held-out evaluations so far (an adaptive stage decides on their history)


def set_up(model, encode, num_items, config, world, meta, resume):
    check_accumulation(config, world)
    distributed.check_shared_directory(config.out, world)
    steps = total_steps(num_items, config)
    trainable = [p for p in model.parameters() if p.requires_grad]  # the adapters, float32 (lora.py)
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    if config.grad_ckpt:
        enable_activation_checkpointing(model)
    model.train()
    start, evaluations = runs.load_checkpoint(model, optimizer, config, world) if resume else (0, [])
    if start == 0:
        # every rank its own dropout stream; the adapters' init (before this) used one seed on every rank
        torch.manual_seed(config.seed + world.rank)
        random.seed(config.seed + world.rank)
    distributed.on_main(world, lambda: runs.start_run_files(config, meta, world.size, start))
    wrapped = DistributedDataParallel(model, device_ids=[world.local_rank] if world.device.type == "cuda" else None,
                                      find_unused_parameters=config.find_unused_parameters) if world.size > 1 else model
    micro_batches = [b for step in range(start, steps) for b in rank_micro_batches(num_items, step, config, world)]
    items = examples.Examples(micro_batches, encode, num_items, getattr(encode, "where", None))
    loader = torch.utils.data.DataLoader(items, batch_size=None, shuffle=False,
                                         num_workers=config.workers, collate_fn=examples.keep_as_is,
                                         generator=torch.Generator())  # own RNG: the global one drives dropout
    return Run(model, wrapped, optimizer, trainable, iter(loader), start, steps, start, evaluations)


def loop(run, loss_fn, config, world, meta, tokens, evaluation=None):
    """The optimizer steps from run.start to run.steps, in the order of the module docstring."""
    accumulation = config.global_batch // (world.size * config.micro_batch)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if world.device.type == "cuda" and \
        next(run.model.parameters()).dtype == torch.bfloat16 else torch.autocast("cpu", enabled=False)
    with tqdm(total=run.steps, initial=run.start, disable=not world.main,
              desc=os.path.basename(config.out) or "train") as progress:  # closed before any message (Ctrl-C, NaN)
        for step in range(run.start, run.steps):
            rng_at_start = runs.rng_state()
            lr = learning_rate(step, run.steps, config)
            for group in run.optimizer.param_groups:
                group["lr"] = lr
            window, left_out = zip(*[next(run.batches) for _ in range(accumulation)])  # this rank's share
            logged = forward_backward(run, window, loss_fn, config, world, tokens, autocast)
            left_out = round(distributed.all_sum(world, sum(left_out)))  # examples this step left out, over all ranks
            if not math.isfinite(logged["loss"]):
                raise ValueError(f"step {step + 1}: the loss is {logged['loss']}; stopped before updating the "
                                 f"weights. {runs.checkpoint_note(config, run.saved)}, whose weights gave a finite "
                                 f"loss: lower --lr or check the data, then continue with --resume")
            if step > run.start and step % config.save_every == 0:
                # saved only now: the weights after `step` updates have just given a finite loss, so a NaN stop
                # never leaves behind a checkpoint that holds the update that blew up
                runs.save_checkpoint(run.model, run.optimizer, step, config, world, meta, rng=rng_at_start,
                                     evaluations=run.evaluations)
                run.saved = step
            grad_norm = torch.nn.utils.clip_grad_norm_(run.trainable, config.max_grad_norm)
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
            held_out = {}
            if evaluation and ((step + 1) % evaluation.every == 0 or step + 1 == run.steps):
                held_out = evaluation.measure()
                run.evaluations.append({"step": step + 1, **held_out})
            if world.main:
                record = {"step": step + 1, **{k: round(v, 6) for k, v in {**logged, **held_out}.items()},
                          "grad_norm": round(grad_norm.item(), 6), "learning_rate": lr}
                if left_out:
                    record["left_out"] = left_out
                datafiles.append_line(os.path.join(config.out, "metrics.jsonl"), json.dumps(record))
                progress.set_postfix(loss=f"{logged['loss']:.4f}")
                progress.update()
            reason = held_out and evaluation.stop and evaluation.stop(run.evaluations)
            if reason and step + 1 < run.steps:  # every rank has the same numbers, so every rank stops here
                stop_at = step + 1
                distributed.on_main(world, lambda: runs.stopped_early(config.out, stop_at, run.steps, reason, progress))
                run.steps = stop_at
                break


def forward_backward(run, window, loss_fn, config, world, tokens, autocast):
    """Gradients of one step's micro-batches, accumulated; returns the step's metrics averaged over ranks."""
    accumulation = len(window)
    # a summed loss (SFT): a long answer weighs as much in a small micro-batch as in a big one (ms-swift, HF Trainer)
    divisor = sum(tokens(items) for items in window) if tokens else accumulation
    if tokens and config.tokens_across_ranks:  # DDP averages gradients over ranks: divide by the mean count
        divisor = distributed.all_sum(world, divisor) / world.size
    sums = {}
    for micro, items in enumerate(window):
        last = micro == accumulation - 1
        # DDP all-reduces gradients during backward; skip that on all but the last micro-batch
        with run.wrapped.no_sync() if world.size > 1 and not last else contextlib.nullcontext():
            with autocast:
                loss, metrics = loss_fn(run.wrapped, items)
            (loss / divisor).backward()
        sums["loss"] = sums.get("loss", 0.0) + loss.item() / divisor
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + float(v) / accumulation
    return distributed.all_mean(world, sums)  # every rank takes the same decisions (NaN stop) on the same numbers


