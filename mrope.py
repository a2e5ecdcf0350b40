"""mrope.py - Qwen-VL's multimodal rotary positions (M-RoPE), computed here for every forward and generate.

Text counts up as in any LLM; a video's merged patches sit at (start + time, start + row, start + column); the text
after it resumes one past the largest. vlm.Processor decides each family's time steps (Processor.time_steps) and
records the vision blocks of a sample; this module turns them into the (3, length) positions the model is given.
transformers computes these itself, and gets them wrong after a long video in some versions (docs/stack.md,
"M-RoPE positions"; docs/method.md, "Where this implementation differs"), so we never let it.

    positions = mrope.positions(token_types, blocks)      # blocks: (times, rows, cols) per run of vision tokens
"""

import numpy as np

TEXT, IMAGE, VIDEO = 0, 1, 2  # mm_token_type_ids values


def positions(token_types, blocks):
    """The (3, L) int64 positions (time, height, width) of one sequence's tokens, by the rule the Qwen-VL checkpoints
    were trained with.

    Text counts up as in any LLM: a text token at position p gets (p, p, p) and the next token gets p + 1. A vision
    block (a run of image or video tokens; `blocks` lists (times, rows, cols) for each run, in order) laid out from
    the next free position s puts its merged patch at time step k, row i, column j at (s + times[k], s + i, s + j).
    The text after the block resumes one past the largest position the block used:
    s + max(times[-1], rows - 1, cols - 1) + 1.

    Example with Qwen2-VL's times 0, 1, 2, ...: two text tokens, a video of 3 temporal patches on a 1 x 2 grid, text:
        text   (0,0,0) (1,1,1)
        video  (2,2,2) (2,2,3)  (3,2,2) (3,2,3)  (4,2,2) (4,2,3)        s = 2, largest = 2 + max(2, 0, 1) = 4
        text   (5,5,5) ...
    """
    positions = np.zeros((3, len(token_types)), dtype=np.int64)
    blocks = iter(blocks)
    start = 0  # the next free position
    for kind, first, end in type_runs(token_types):
        if kind == TEXT:
            positions[:, first:end] = start + np.arange(end - first)
            start += end - first
            continue
        times, rows, cols = next(blocks)
        grid = np.meshgrid(np.asarray(times), np.arange(rows), np.arange(cols), indexing="ij")
        if grid[0].size != end - first:
            raise ValueError(f"a vision block of {end - first} tokens does not fill a {len(times)}x{rows}x{cols} grid")
        positions[:, first:end] = start + np.stack([axis.ravel() for axis in grid])
        start += max(max(times), rows - 1, cols - 1) + 1
    return positions


def type_runs(token_types):
    """(type, first, end) of every run of equal token types."""
    runs, first = [], 0
    for i in range(1, len(token_types) + 1):
        if i == len(token_types) or token_types[i] != token_types[first]:
            runs.append((token_types[first], first, i))
            first = i
    return runs
