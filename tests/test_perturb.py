"""perturb.py: the properties of drop / shuffle / reverse (spec.md section 3) for N = 1..40 and every r."""

import itertools
import random
from collections import Counter

import pytest

from perturb import CURRICULUM, KINDS, chunks, perturb

SIZES = range(1, 41)
DIFFICULTIES = sorted(set(CURRICULUM) | {1, 3, 5, 32, 64})


def runs(order, size):
    """The chunk structure of `order`: consecutive runs of indices that belong to the same chunk of `size`."""
    return [list(group) for _, group in itertools.groupby(order, key=lambda i: i // size)]


@pytest.mark.parametrize("n", SIZES)
def test_drop_keeps_n_over_r_items_in_order(n):
    items = [f"clip {i}" for i in range(n)]
    for r in DIFFICULTIES:
        for seed in range(3):
            new, order = perturb(items, "drop", r, random.Random(seed))
            assert len(order) == max(1, n // r)
            assert order == sorted(set(order)) and all(0 <= i < n for i in order)  # distinct, original order
            assert new == [items[i] for i in order]


@pytest.mark.parametrize("n", SIZES)
def test_shuffle_permutes_whole_chunks_and_never_returns_the_identity(n):
    items = list(range(100, 100 + n))
    for r in DIFFICULTIES:
        size = max(1, n // r)
        parts = chunks(n, size)
        for seed in range(5):
            new, order = perturb(items, "shuffle", r, random.Random(seed))
            assert sorted(order) == list(range(n)) and new == [items[i] for i in order]
            assert sorted(runs(order, size)) == parts  # every chunk survives whole, its inside order kept
            if len(parts) > 1:
                assert order != list(range(n))
            else:
                assert order == list(range(n))  # one chunk: no other order exists


@pytest.mark.parametrize("n", SIZES)
def test_reverse_reverses_the_chunk_order(n):
    items = [str(i) for i in range(n)]
    for r in DIFFICULTIES:
        new, order = perturb(items, "reverse", r, random.Random(0))
        expected = [i for part in reversed(chunks(n, max(1, n // r))) for i in part]
        assert order == expected and new == [items[i] for i in order]


def test_examples_from_the_spec():
    # r=16 and N < 32: chunk size 1, i.e. a full clip-level reversal; drop keeps one clip.
    assert perturb(range(10), "reverse", 16, random.Random(0))[1] == list(range(9, -1, -1))
    assert len(perturb(range(10), "drop", 16, random.Random(0))[1]) == 1
    assert len(perturb(range(32), "drop", 16, random.Random(0))[1]) == 2
    # r=2: the two halves swapped
    assert perturb(range(8), "reverse", 2, random.Random(0))[1] == [4, 5, 6, 7, 0, 1, 2, 3]
    assert perturb(range(8), "shuffle", 2, random.Random(0))[1] == [4, 5, 6, 7, 0, 1, 2, 3]  # the only other order


def test_larger_r_is_stronger():
    for n in SIZES:
        kept = [len(perturb(range(n), "drop", r, random.Random(0))[1]) for r in sorted(CURRICULUM)]
        assert kept == sorted(kept, reverse=True)  # r = 2, 4, 8, 16 keep fewer and fewer clips


def test_shuffle_is_uniform_over_the_other_orders():
    counts = Counter(tuple(perturb(range(3), "shuffle", 3, random.Random(seed))[1]) for seed in range(3000))
    assert (0, 1, 2) not in counts and len(counts) == 5
    assert min(counts.values()) > 450  # 600 expected each


def test_deterministic_for_a_seeded_rng():
    for kind in KINDS:
        a = [perturb(range(20), kind, r, random.Random(7)) for r in CURRICULUM]
        b = [perturb(range(20), kind, r, random.Random(7)) for r in CURRICULUM]
        assert a == b
    assert perturb(range(20), "shuffle", 16, random.Random(1)) != perturb(range(20), "shuffle", 16, random.Random(2))


def test_curriculum_goes_from_easy_to_hard():
    assert CURRICULUM == (16, 8, 4, 2)


@pytest.mark.parametrize("kind,r", [("flip", 2), ("none", 2), ("drop", 0), ("drop", -2), ("shuffle", 2.0),
                                    ("reverse", "4"), ("drop", True), ("shuffle", None)])
def test_invalid_kind_or_r_is_a_clear_error(kind, r):
    with pytest.raises(ValueError, match="perturbation|positive integer"):
        perturb(range(8), kind, r, random.Random(0))
