"""perturb.py: the properties of the released drop / shuffle / reverse (the official inference/generator_base.py)
and of our swap / repeat / speed, for N = 1..40 and every r."""

import ast
import glob
import itertools
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections import Counter

import pytest

import perturb as perturb_module
from perturb import ALL_KINDS, CURRICULUM, KINDS, NEW_KINDS, chunks, perturb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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


def test_examples_of_the_released_kinds():
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
    for kind in ALL_KINDS:
        a = [perturb(range(20), kind, r, random.Random(7)) for r in CURRICULUM]
        b = [perturb(range(20), kind, r, random.Random(7)) for r in CURRICULUM]
        assert a == b
    assert perturb(range(20), "shuffle", 16, random.Random(1)) != perturb(range(20), "shuffle", 16, random.Random(2))


def test_curriculum_goes_from_easy_to_hard():
    assert CURRICULUM == (16, 8, 4, 2)


@pytest.mark.parametrize("kind,r", [("flip", 2), ("none", 2), ("drop", 0), ("drop", -2), ("shuffle", 2.0),
                                    ("reverse", "4"), ("drop", True), ("shuffle", None), ("swap", 0),
                                    ("repeat", 1.5), ("speed", -1), ("Speed", 2)])
def test_invalid_kind_or_r_is_a_clear_error(kind, r):
    with pytest.raises(ValueError, match="perturbation|positive integer"):
        perturb(range(8), kind, r, random.Random(0))


# ---- swap / repeat / speed (ours, not in the paper or the released code) --------------------------------------------


def test_kinds_the_released_three_are_the_default_and_all_six_are_accepted():
    assert KINDS == ("drop", "shuffle", "reverse")
    assert NEW_KINDS == ("swap", "repeat", "speed") and ALL_KINDS == KINDS + NEW_KINDS
    for kind in ALL_KINDS:
        perturb(range(8), kind, 2, random.Random(0))
    with pytest.raises(ValueError, match="drop, shuffle, reverse, swap, repeat, speed"):
        perturb(range(8), "loop", 2, random.Random(0))


@pytest.mark.parametrize("n", SIZES)
def test_swap_exchanges_each_pair_of_neighbouring_chunks(n):
    items = [f"clip {i}" for i in range(n)]
    for r in DIFFICULTIES:
        size = max(1, n // r)
        parts = chunks(n, size)
        new, order = perturb(items, "swap", r, random.Random(0))
        assert sorted(order) == list(range(n)) and new == [items[i] for i in order]
        swapped = []
        for i in range(0, len(parts), 2):  # each pair second-first; an odd last chunk stays put
            swapped += parts[i + 1:i + 2] + parts[i:i + 1]
        assert runs(order, size) == swapped
        assert all(abs(position - i) <= size for position, i in enumerate(order))  # neighbours only


@pytest.mark.parametrize("n", SIZES)
def test_repeat_plays_every_other_chunk_twice_in_place_of_its_successor(n):
    items = list(range(100, 100 + n))
    for r in DIFFICULTIES:
        parts = chunks(n, max(1, n // r))
        new, order = perturb(items, "repeat", r, random.Random(0))
        assert len(order) == n and all(0 <= i < n for i in order) and new == [items[i] for i in order]
        expected = []
        for j, part in enumerate(parts):  # chunk 2k stays, chunk 2k + 1 replays chunk 2k cut to its own length
            expected += parts[j - 1][:len(part)] if j % 2 else part
        assert order == expected
        assert set(range(n)) - set(order) == {i for j, part in enumerate(parts) if j % 2 for i in part}
        assert max(Counter(order).values()) <= 2


@pytest.mark.parametrize("n", SIZES)
def test_speed_keeps_every_rth_clip_and_both_endpoints(n):
    items = [str(i) for i in range(n)]
    for r in DIFFICULTIES:
        new, order = perturb(items, "speed", r, random.Random(0))
        assert new == [items[i] for i in order]
        assert order[0] == 0 and order[-1] == n - 1  # the same endpoints
        assert order[:-1] == list(range(0, n - 1, r))  # every r-th clip before the last
        steps = [b - a for a, b in zip(order, order[1:])]
        assert all(step == r for step in steps[:-1]) and all(1 <= step <= r for step in steps[-1:])


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_no_kind_returns_the_clip_list_unchanged_when_it_can_change_it(kind):
    """For r >= 2 every kind changes every list of two or more clips (speed: three; two clips are both endpoints).
    r = 1 is the released code's magnitude 1, the clean input, for every kind."""
    for n in SIZES:
        changeable = n >= (3 if kind == "speed" else 2)
        for r in DIFFICULTIES:
            for seed in range(5):
                order = perturb(range(n), kind, r, random.Random(seed))[1]
                assert (order != list(range(n))) == (changeable and r >= 2), (n, r, seed)


def test_every_kind_of_an_empty_list_is_empty():
    for kind in ALL_KINDS:
        for r in DIFFICULTIES:
            assert perturb([], kind, r, random.Random(0)) == ([], [])


def test_examples_of_the_new_kinds():
    def order(kind, r, n=8, seed=0):
        return perturb(range(n), kind, r, random.Random(seed))[1]

    # swap, N = 8: chunks of 8 // r, each neighbouring pair exchanged
    assert order("swap", 2) == [4, 5, 6, 7, 0, 1, 2, 3]  # two chunks: the halves, as reverse at r = 2
    assert order("swap", 4) == [2, 3, 0, 1, 6, 7, 4, 5]
    assert order("swap", 8) == order("swap", 16) == [1, 0, 3, 2, 5, 4, 7, 6]
    assert order("swap", 2, n=7) == [3, 4, 5, 0, 1, 2, 6]  # chunks 012 345 6: the odd last chunk stays put
    assert order("swap", 4, n=16) == [4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11]
    # repeat, N = 8: in each pair of chunks the first plays twice
    assert order("repeat", 2) == [0, 1, 2, 3, 0, 1, 2, 3]  # two chunks: the first half replays
    assert order("repeat", 4) == [0, 1, 0, 1, 4, 5, 4, 5]
    assert order("repeat", 8) == order("repeat", 16) == [0, 0, 2, 2, 4, 4, 6, 6]
    # N = 5, r = 2: chunks 01 23 4; the odd last chunk stays
    assert order("repeat", 2, n=5) == [0, 1, 0, 1, 4]
    assert order("repeat", 4, n=7) == [0, 0, 2, 2, 4, 4, 6]  # chunks 0 1 2 3 4 5 6 of one clip each
    # speed: every r-th clip and the last one
    assert [order("speed", r) for r in (2, 4, 8, 16)] == [[0, 2, 4, 6, 7], [0, 4, 7], [0, 7], [0, 7]]
    assert [order("speed", r, n=16) for r in (2, 4, 8, 16)] == [
        [0, 2, 4, 6, 8, 10, 12, 14, 15], [0, 4, 8, 12, 15], [0, 8, 15], [0, 15]]
    assert order("speed", 2, n=5) == [0, 2, 4]  # the last clip on the grid: nothing added


def test_module_docstring_examples():
    rng = random.Random(0)
    assert perturb(["a", "b", "c", "d", "e"], "reverse", 2, rng) == (["e", "c", "d", "a", "b"], [4, 2, 3, 0, 1])
    assert perturb(["a", "b", "c", "d", "e"], "speed", 2, rng) == (["a", "c", "e"], [0, 2, 4])


def test_r_sets_the_strength_of_swap_speed_and_repeat():
    for n in SIZES:
        rs = sorted(CURRICULUM)  # 2, 4, 8, 16

        def broken(order):  # transitions that are not "the next clip"
            return sum(b != a + 1 for a, b in zip(order, order[1:]))

        swaps = [broken(perturb(range(n), "swap", r, random.Random(0))[1]) for r in rs]
        kept = [len(perturb(range(n), "speed", r, random.Random(0))[1]) for r in rs]
        loops = [broken(perturb(range(n), "repeat", r, random.Random(0))[1]) for r in rs]
        assert swaps == sorted(swaps)  # larger r: more order errors, as shuffle and reverse
        assert kept == sorted(kept, reverse=True)  # larger r: fewer clips, as drop
        assert loops == sorted(loops)  # larger r: more loops


def broken_share(n, order):
    """The share of the clean list's transitions (i, i + 1) that the perturbed order no longer shows in a row."""
    shown = set(zip(order, order[1:]))
    return sum((i, i + 1) not in shown for i in range(n - 1)) / (n - 1)


def expected_broken_share(n, kind, r):
    """broken_share averaged over the random draw: drop keeps k = max(1, n // r) clips, a uniform k-subset in which
    each neighbouring pair survives with probability k (k - 1) / (n (n - 1)); shuffle permutes m chunks uniformly
    over the m! - 1 other orders, keeping the n - m transitions inside chunks and, on average, (m - 1)((m - 1)! - 1)
    / (m! - 1) of the m - 1 between them. The other kinds draw nothing."""
    if kind == "drop":
        k = max(1, n // r)
        return 1 - k * (k - 1) / (n * (n - 1))
    if kind == "shuffle":
        m = len(perturb_module.chunks(n, max(1, n // r)))
        if m == 1:
            return 0.0
        between = (m - 1) * (math.factorial(m - 1) - 1) / (math.factorial(m) - 1)
        return 1 - (n - m + between) / (n - 1)
    return broken_share(n, perturb(range(n), kind, r, random.Random(0))[1])


def test_the_expected_shares_of_drop_and_shuffle_are_exact():
    for n in range(4, 9):
        for r in (1, 2, 4, 8, 16):
            k = max(1, n // r)
            subsets = list(itertools.combinations(range(n), k))
            assert expected_broken_share(n, "drop", r) == pytest.approx(
                sum(broken_share(n, list(s)) for s in subsets) / len(subsets))
            chunked = perturb_module.chunks(n, max(1, n // r))
            others = [p for p in itertools.permutations(chunked) if list(p) != chunked] or [chunked]
            assert expected_broken_share(n, "shuffle", r) == pytest.approx(
                sum(broken_share(n, [i for c in p for i in c]) for p in others) / len(others))


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_larger_r_breaks_a_larger_share_of_the_clean_transitions(kind):
    """What "larger r = stronger" means for every kind, along the curriculum (each stage halves r): the share of the
    clean order's clip-to-clip transitions the perturbed list breaks never falls as r doubles (drop and shuffle:
    on average over their random draw)."""
    for n in range(4, 41):
        shares = [expected_broken_share(n, kind, r) for r in (1, 2, 4, 8, 16, 32)]
        assert shares == sorted(shares), (n, shares)
        assert shares[0] == 0 < shares[1]  # r = 1 is the clean list; r = 2 breaks something


def test_the_number_of_inversions_is_not_the_measure():
    """Swap at r = 2 exchanges the two halves (n / 2 squared inversions), at r = 4 the quarters pairwise (fewer)."""
    def inversions(order):
        return sum(a > b for i, a in enumerate(order) for b in order[i + 1:])

    assert [inversions(perturb(range(8), "swap", r, None)[1]) for r in (2, 4, 8)] == [16, 8, 4]


# ---- standing alone -------------------------------------------------------------------------------------------------

def test_perturb_py_imports_nothing_from_this_project():
    source = open(perturb_module.__file__).read()
    tree = ast.parse(source)
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= sys.stdlib_module_names
    project = {os.path.basename(path)[:-3] for path in glob.glob(os.path.join(ROOT, "*.py"))}
    with tempfile.TemporaryDirectory() as alone:  # perturb.py by itself, in a directory with nothing else
        shutil.copy(perturb_module.__file__, alone)
        script = (f"import sys; sys.path.insert(0, {alone!r}); import random, perturb\n"
                  f"print(perturb.perturb(range(8), 'swap', 4, random.Random(0))[1],"
                  f" sorted(set(sys.modules) & {project!r} - {{'perturb'}}))")
        result = subprocess.run([sys.executable, "-I", "-c", script], cwd=alone, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[2, 3, 0, 1, 6, 7, 4, 5] []"
