"""perturb.py - TEMPLE's temporal perturbations of a clip list at difficulty r: the released three, and three more.

A video is a list of N clips (in the released pipeline: the list of per-clip captions). Difficulty r sets the chunk
size g = max(1, N // r); chunks are consecutive, the last one may be shorter, so there are ceil(N / g) ~ r of them.

The released three (KINDS, the default), as in the official code (github.com/lscpku/TEMPLE,
inference/generator_base.py):
    drop     keep max(1, N // r) items, chosen uniformly at random, in their original order
    shuffle  permute the chunks (the order inside a chunk is kept)
    reverse  the chunks in reverse order (the order inside a chunk is kept)
Larger r = stronger, more obvious corruption (more items dropped, finer shuffle / reversal) = an *easier* pair,
so the curriculum runs r = 16 -> 8 -> 4 -> 2. r is not a length in frames. "Stronger" is measured by the share of
the clean order's clip-to-clip transitions (i, i + 1) that the perturbed list breaks: as r doubles it never falls,
for all six kinds (for drop and shuffle on average over their random draw). The number of swapped pairs
(inversions) is not that measure: swap at r = 2 exchanges the two halves, more inversions than at r = 4.

Three more (NEW_KINDS), in neither the paper nor the released code:
    swap     exchange neighbouring chunks: (0, 1), (2, 3), ... change places, an odd last chunk stays put
             why: local order errors (each clip moves by at most g places, the story's coarse order survives)
    repeat   in every neighbouring pair of chunks (0, 1), (2, 3), ... the first is shown twice, in place of the
             second (length N): why: temporal redundancy / looping (does an event happen once or twice? what
             went missing?)
    speed    every r-th clip kept, from the first, plus the last clip: a sped-up video with the same endpoints
             why: pace and intermediate steps (the whole span is there, the steps in between are not)
All three follow the rule above: larger r = more, finer swaps / more loops (~r / 2 of them: r = 2 plays the first
half twice, r = 16 stutters all through the video) / fewer clips kept.

Where they coincide: with exactly two chunks (r = 2 and N even, or N = 2) swap, reverse and the only shuffle
all exchange the two halves; with more chunks a shuffle may still draw swap's order by chance. speed and drop both
keep ~N / r clips; speed spaces them evenly and keeps the ends, drop draws them at random.

Never the original list when another result exists: for r >= 2 every kind changes every list of N >= 2 clips
(speed: N >= 3; of two clips both are endpoints). The released code leaves half of its r=2 shuffles with two chunks
unchanged; here a shuffle redraws the original order. r = 1 is the clean input (the released code files it as
magnitude 1): one chunk, nothing dropped, every clip kept, so every kind returns the list unchanged, as it does a
one-clip list. The pairs stage drops unchanged results as "unperturbed".

docs/method.md, "Perturbations and difficulty r", tells where they enter the method; `temple.py pairs -r 16 8 4 2
--kinds drop shuffle reverse` applies them. Standard library only; copy this file anywhere.

    import random
    from perturb import perturb, CURRICULUM
    rng = random.Random(0)
    clips, order = perturb(["a", "b", "c", "d", "e"], "reverse", 2, rng)   # ['e', 'c', 'd', 'a', 'b'], [4, 2, 3, 0, 1]
    clips, order = perturb(["a", "b", "c", "d", "e"], "speed", 2, rng)     # ['a', 'c', 'e'], [0, 2, 4]
"""

KINDS = ("drop", "shuffle", "reverse")  # the released three: the default everywhere
NEW_KINDS = ("swap", "repeat", "speed")  # ours, not in the paper or the released code
ALL_KINDS = KINDS + NEW_KINDS
CURRICULUM = (16, 8, 4, 2)  # easy -> hard


def check(kind, r):
    if kind not in ALL_KINDS:
        raise ValueError(f"unknown perturbation {kind!r}; choose one of {', '.join(ALL_KINDS)}")
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"difficulty r must be a positive integer, got {r!r}")


def chunk_size(n, r):
    return max(1, n // r)


def chunks(n, size):
    """Consecutive index chunks [0..size), [size..2*size), ...; the last one may be shorter."""
    return [list(range(start, min(start + size, n))) for start in range(0, n, size)]


def joined(parts):
    return [i for part in parts for i in part]


# One function per kind: (n, r, rng) -> the original indices in their perturbed order. rng is used by drop and
# shuffle only; reverse, swap, repeat and speed are fixed by n and r.


def drop(n, r, rng):
    return sorted(rng.sample(range(n), min(n, chunk_size(n, r))))


def shuffle(n, r, rng):
    parts = chunks(n, chunk_size(n, r))
    original = list(parts)
    while len(parts) > 1 and parts == original:  # redraw the identity: uniform over the *other* orders
        rng.shuffle(parts)
    return joined(parts)


def reverse(n, r, rng):
    return joined(chunks(n, chunk_size(n, r))[::-1])


def swap(n, r, rng):
    """Chunks (0, 1), (2, 3), ... change places; with an odd number of chunks the last one stays where it is.

    Every pair is swapped, not a random few, so r alone sets the strength: ~r / 2 swaps, ~r - 1 broken transitions.
    Each clip moves by the length of its neighbour chunk, at most g places (shuffle moves a chunk anywhere)."""
    parts = chunks(n, chunk_size(n, r))
    for i in range(0, len(parts) - 1, 2):
        parts[i], parts[i + 1] = parts[i + 1], parts[i]
    return joined(parts)


def repeat(n, r, rng):
    """In chunks (0, 1), (2, 3), ... the first is played again in place of the second; an odd last chunk stays.

    Every pair loops, not a random one, so r sets the strength as for the other kinds: ~r / 2 loops. A replay lasts
    as long as the chunk it replaces, so the length stays n: when the second is the shorter last chunk, only its
    length of the first is shown again. The clips of every second chunk are gone."""
    parts = chunks(n, chunk_size(n, r))
    for i in range(0, len(parts) - 1, 2):
        parts[i + 1] = parts[i][:len(parts[i + 1])]
    return joined(parts)


def speed(n, r, rng):
    """Clips 0, r, 2r, ... and the last one: step k = r, independent of n.

    The last step may be shorter than r (e.g. n = 8, r = 2: 0 2 4 6 7). r >= n - 1 leaves the two endpoints only."""
    kept = list(range(0, n, r))
    if n and kept[-1] != n - 1:
        kept.append(n - 1)
    return kept


ORDERS = {"drop": drop, "shuffle": shuffle, "reverse": reverse, "swap": swap, "repeat": repeat, "speed": speed}


def perturbed_order(n, kind, r, rng):
    """The original indices 0..n-1 in their perturbed order (drop and speed: the survivors; repeat: looped chunks
    twice)."""
    check(kind, r)
    return ORDERS[kind](n, r, rng)


def perturb(items, kind, r, rng):
    """(perturbed items, order): order[k] is the original index of the k-th item returned.

    `rng` is a random.Random (or anything with .sample and .shuffle); a seeded rng gives the same result every time.
    """
    items = list(items)
    order = perturbed_order(len(items), kind, r, rng)
    return [items[i] for i in order], order
