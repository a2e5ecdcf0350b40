"""dpo.py - Direct Preference Optimization of a video LLM on TEMPLE's pairs: the loss and one step.

DPO (Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is Secretly a Reward Model")
trains the policy pi so that, relative to a frozen reference pi_ref, the chosen answer y+ gains log-probability
over the rejected answer y-:

    r+ = log pi(y+|x) - log pi_ref(y+|x)        r- = log pi(y-|x) - log pi_ref(y-|x)       (summed over tokens)
    sigmoid (default):  loss = -log sigmoid(beta * (r+ - r-))
    ipo:                loss = ((r+/|y+| - r-/|y-|) - 1/(2 beta))^2        (length-normalised, as TRL)
    hinge:              loss = max(0, 1 - beta * (r+ - r-))

TEMPLE's released run (docs/method.md, "Training") adds 1.0 x the mean token NLL of the chosen answer
(`--nll-weight`; docs/stack.md, "rpo_alpha"). An answer's log-probability covers its text and the closing
<|im_end|>, not the newline the chat template writes after it, as the released run's trainer scored it
(docs/stack.md, "The answer's last token"). Dropout is off in the policy (LoRA dropout 0), as ms-swift and TRL switch it off for DPO.
The reference is the same weights with the LoRA adapters switched off: no second copy of the model. Logged metrics
use TRL's names:
    rewards/chosen, rewards/rejected   mean beta * r+ and beta * r-       (how far the policy moved per answer)
    rewards/margins, rewards/accuracies  mean beta * (r+ - r-), and the share of pairs where it is > 0
    logps/chosen, logps/rejected       mean summed policy log-probability of the answers
    nll                                mean token NLL of the chosen answers

Preference accuracy (`temple.py eval --pairs`): the share of pairs with beta * (r+ - r-) > 0, what DPO learned.

A step, from a pairs file to the loss (train.py's loop calls dpo_step and backward):
    encode_pair      the pair's video prepared once, the chosen and the rejected answer encoded after it
    collate_pairs    the chosen rows of a micro-batch, then their rejected rows: one forward for both
    policy_and_reference   log-probs with LoRA on (gradient) and off (the reference, no gradient)
    dpo_loss         the loss above, + nll_weight x the chosen answers' token NLL
A curriculum stage (docs/method.md, "Training") is these steps on one r's pairs, starting from the stage before it
merged in; recipes.run_stage wires it.

    python temple.py dpo -r 16 --model Qwen/Qwen2.5-VL-7B-Instruct
    torchrun --nproc_per_node 8 temple.py dpo -r 8 --model Qwen/Qwen2.5-VL-7B-Instruct
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

import examples
import lora
import vision_cache


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
    """encode(index) for the training loop: pair `index` as {"rows", "index"}. It runs in data-loader workers, so it
    holds the weightless vlm.Processor, never the model (it pickles to spawned workers)."""
    processor: object  # vlm.Processor
    pairs: list
    video_options: dict
    max_length: int
    truncation: str = "delete"

    def __call__(self, index):
        return {"rows": encode_pair(self.processor, self.pairs[index], self.video_options, self.max_length,
                                    self.truncation), "index": index}

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
    # the chosen answers' mean token NLL keeps the policy fluent on its own good descriptions while DPO pushes the
    # pair apart
    nll = -policy[:n].sum() / counts[:n].sum()
    loss = losses.mean() + settings["nll_weight"] * nll
    metrics = {"rewards/chosen": chosen_rewards.mean().item(), "rewards/rejected": rejected_rewards.mean().item(),
               "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean().item(),
               "rewards/margins": (chosen_rewards - rejected_rewards).mean().item(),
               "logps/chosen": policy[:n].mean().item(), "logps/rejected": policy[n:].mean().item(),
               "nll": nll.item()}
    return loss, metrics
