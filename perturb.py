"""perturb.py - TEMPLE's temporal perturbations: drop, shuffle or reverse a sequence at difficulty r.

Implements spec.md section 3 (the released code's inference/generator_base.py). A video is a list of N clips (in
the released pipeline: the list of per-clip captions). Difficulty r sets the chunk size g = max(1, N // r):
    drop     keep max(1, N // r) items, chosen uniformly at random, in their original order
    shuffle  cut the list into consecutive chunks of g (the last may be shorter), permute the chunks
    reverse  same chunks, in reverse order (the order inside a chunk is kept)
Larger r = stronger, more obvious corruption (more items dropped, finer shuffle / reversal) = an *easier* pair,
so the curriculum runs r = 16 -> 8 -> 4 -> 2. r is not a length in frames.

One improvement over the released code: a shuffle never returns the original order when another order exists
(the released code leaves half of the r=2 shuffles with two chunks unchanged, giving pairs with no perturbation).

Standard library only; copy this file anywhere.

    import random
    from perturb import perturb, CURRICULUM
    rng = random.Random(0)
    clips, order = perturb(["a", "b", "c", "d", "e"], "reverse", 2, rng)   # ['e', 'c', 'd', 'a', 'b'], [4, 2, 3, 0, 1]
"""

KINDS = ("drop", "shuffle", "reverse")
CURRICULUM = (16, 8, 4, 2)  # easy -> hard


def check(kind, r):
    if kind not in KINDS:
        raise ValueError(f"unknown perturbation {kind!r}; choose one of {', '.join(KINDS)}")
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"difficulty r must be a positive integer, got {r!r}")


def chunk_size(n, r):
    return max(1, n // r)


def chunks(n, size):
    """Consecutive index chunks [0..size), [size..2*size), ...; the last one may be shorter."""
    return [list(range(start, min(start + size, n))) for start in range(0, n, size)]


def perturbed_order(n, kind, r, rng):
    """The original indices 0..n-1 in their perturbed order (drop: the survivors)."""
    check(kind, r)
    if kind == "drop":
        return sorted(rng.sample(range(n), min(n, chunk_size(n, r))))
    parts = chunks(n, chunk_size(n, r))
    if kind == "reverse":
        parts = parts[::-1]
    elif len(parts) > 1:  # shuffle: redraw the identity, so the result is uniform over the *other* orders
        original = list(parts)
        while parts == original:
            rng.shuffle(parts)
    return [i for part in parts for i in part]


def perturb(items, kind, r, rng):
    """(perturbed items, order): order[k] is the original index of the k-th item returned.

    `rng` is a random.Random (or anything with .sample and .shuffle); a seeded rng gives the same result every time.
    """
    items = list(items)
    order = perturbed_order(len(items), kind, r, rng)
    return [items[i] for i in order], order
