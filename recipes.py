"""recipes.py - the DPO stage, the curriculum and the SFT run, each wired from the pieces that make it.

A recipe reads its inputs (stage_inputs.py checks them before the model loads, on every rank), builds the model it
trains: the base with the run it starts from merged in (the curriculum's previous stage, which is also this stage's
DPO reference), fresh LoRA on top; and hands the loop (train.py) its step: dpo.dpo_step, or sft.sft_step
(docs/method.md, "Training").

    python temple.py dpo -r 16 --model Qwen/Qwen2.5-VL-7B-Instruct        # run_stage
    python temple.py curriculum --model ...                                 # run_curriculum: r = 16, 8, 4, 2
    python temple.py sft --data llava_video_60k.json --init runs/dpo_r2     # run_sft
"""

import argparse
import os

import torch

import distributed
import dpo
import heldout
import lora
import reference_cache
import runs
import sft
import stage_inputs
import train
import vlm


def start_stage(args, init, world, **lora_options):
    """The model a stage trains: the base model (args.model) with the chain of `init` merged in (None: the base
    alone), and fresh adapters on top (lora.apply_lora's options). The adapters' random init comes from --seed,
    the same on every rank (DDP needs the replicas equal) and in every run; the ranks' dropout streams differ
    later (set_up)."""
    model = vlm.load(args.model, device=world.device, attn_implementation=args.attn, seed=args.model_seed)
    runs.merge_start(model.hf_model, init)  # lora.merge_updates of every adapter in init's chain
    torch.manual_seed(args.seed)
    lora.apply_lora(model.hf_model, **lora_options)
    return model


def run_stage(args):
    """`temple.py dpo`: train one curriculum stage; returns the run directory."""
    world = distributed.setup()
    # every rank reads the data from its own disk; a failure on one node stops them all, before the model loads
    inputs = distributed.on_every_rank(world, lambda: stage_inputs.read_stage_inputs(args, world))
    run_dir, data, init, meta, video, pairs, held_pairs = inputs
    distributed.check_same_data(world, pairs + held_pairs, data)
    config = stage_inputs.train_config(args, run_dir)
    if args.resume and stage_inputs.already_finished(config, len(pairs), f"stage r={args.r}", world):
        return run_dir

    model = start_stage(args, init, world, r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout)
    encode = dpo.PairEncoder(model.processor, pairs, video, args.max_length, args.truncation)
    if args.precompute_ref:  # the reference's log-probs computed once, before training: a speed-up only
        encode = reference_cache.attach(model, encode, data, pairs, meta, world)
    settings = {"beta": args.beta, "loss_type": args.loss_type, "nll_weight": args.nll_weight,
                "precomputed": args.precompute_ref}
    train.train(model.hf_model, lambda module, items: dpo.dpo_step(model, module, items, settings), encode, len(pairs),
                config, world, meta, resume=args.resume,
                evaluation=heldout.evaluation(args, model, held_pairs, video, world))
    if world.main:
        print(f"stage r={args.r}: {len(pairs)} pairs -> {run_dir}")
    return run_dir


def run_sft(args):
    """`temple.py sft`: returns the run directory."""
    world = distributed.setup()
    run_dir, init, video, meta, examples = distributed.on_every_rank(
        world, lambda: stage_inputs.read_sft_inputs(args, world))
    distributed.check_same_data(world, examples, args.data)
    config = stage_inputs.sft_config(args, run_dir, examples)
    if args.resume and stage_inputs.already_finished(config, len(examples), "sft", world):
        return run_dir

    # the released SFT: LoRA on the ViT too, but not on the merger that feeds it to the language model (its aligner)
    model = start_stage(args, init, world, r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout,
                        include_vision=not args.freeze_vit, exclude=vlm.ALIGNER)
    train.train(model.hf_model, lambda module, items: sft.sft_step(model, module, items),
                sft.ExampleEncoder(model.processor, examples, video, args.max_length, args.truncation), len(examples),
                config, world, meta, resume=args.resume, tokens=sft.answer_tokens)
    if world.main:
        print(f"sft: {len(examples)} records -> {run_dir}")
    return run_dir


def run_curriculum(args):
    """`temple.py curriculum`: the stages in order (r = 16, 8, 4, 2), each starting from the one before. A finished
    stage is skipped only when it was trained as this command would train it; an unfinished one resumes."""
    main_process = distributed.setup().main
    previous = args.init
    if previous is None and args.stages[0] < 16:
        previous = os.path.join(args.runs, f"dpo_r{args.stages[0] * 2}")
        if main_process:
            print(f"stage r={args.stages[0]} starts from {previous}, the stage before it (--init RUN or --init base "
                  f"to start elsewhere)")
    for r in args.stages:
        run_dir = os.path.join(args.runs, f"dpo_r{r}")
        stage = argparse.Namespace(**{**vars(args), "r": r, "data": None, "out": run_dir, "init": previous,
                                      "resume": args.resume or os.path.isdir(run_dir)})
        if runs.finished(run_dir):
            differ = stage_inputs.trained_otherwise(stage)
            if differ:
                raise ValueError(f"stage r={r}: {run_dir} is finished, but was trained with another "
                                 f"{', '.join(differ)} than this command asks for; delete it and the stages after "
                                 f"it to train them again, or give another --runs")
            if main_process:  # under torchrun: one line, not one per rank
                print(f"stage r={r}: {run_dir} is finished, skipped")
        else:
            run_stage(stage)
        previous = run_dir
