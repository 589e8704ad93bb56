"""Bootstrap intervals and paired differences (dsa_cast_train.stats): invariants and known values."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsa_cast_train import stats

B = 300  # resamples in property tests: the invariants hold for any count
values = st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=40)
binary = st.lists(st.sampled_from([0.0, 1.0]), min_size=1, max_size=40)
seeds = st.integers(0, 2**32 - 1)


@given(values, seeds)
def test_interval_holds_the_mean_and_lies_within_the_data(xs, seed):
    iv = stats.bootstrap_mean(xs, resamples=B, seed=seed)
    assert iv.estimate == pytest.approx(float(np.mean(xs)))
    assert iv.low <= iv.estimate <= iv.high
    tol = 1e-9 * max(1.0, max(abs(x) for x in xs))
    assert min(xs) - tol <= iv.low and iv.high <= max(xs) + tol  # every resample mean does
    assert iv.n == len(xs) and iv.resamples == B and iv.confidence == 0.95


@given(st.floats(-1e6, 1e6, allow_nan=False), st.integers(1, 50), seeds)
def test_constant_data_gives_a_zero_width_interval_at_that_value(value, n, seed):
    iv = stats.bootstrap_mean([value] * n, resamples=B, seed=seed)
    assert iv.low == iv.high == iv.estimate == pytest.approx(value)
    assert iv.width == 0.0


@given(values, seeds)
def test_paired_difference_of_identical_evaluations_is_exactly_zero(xs, seed):
    a = {f"item-{i}": x for i, x in enumerate(xs)}
    iv = stats.paired_difference(a, dict(a), resamples=B, seed=seed)
    assert (iv.estimate, iv.low, iv.high, iv.width) == (0.0, 0.0, 0.0, 0.0)


@given(values, seeds)
def test_same_seed_same_interval(xs, seed):
    assert stats.bootstrap_mean(xs, resamples=B, seed=seed) == stats.bootstrap_mean(xs, resamples=B, seed=seed)


@given(st.lists(st.tuples(st.sampled_from([0.0, 1.0]), st.floats(0, 10)), min_size=1, max_size=40), seeds)
def test_paired_difference_is_antisymmetric(pairs, seed):
    a = {f"q{i}": x for i, (x, _) in enumerate(pairs)}
    b = {f"q{i}": y for i, (_, y) in enumerate(pairs)}
    ab = stats.paired_difference(a, b, resamples=B, seed=seed)
    ba = stats.paired_difference(b, a, resamples=B, seed=seed)
    assert (ab.estimate, ab.low, ab.high) == (-ba.estimate, -ba.high, -ba.low)
    assert ab.low <= ab.estimate <= ab.high


@given(binary, binary, seeds, st.randoms(use_true_random=False))
def test_pairing_is_by_id_whatever_the_order_of_either_file(xs, ys, seed, rnd):
    n = min(len(xs), len(ys))
    a = {f"id{i}": xs[i] for i in range(n)}
    b_items = [(f"id{i}", ys[i]) for i in range(n)]
    rnd.shuffle(b_items)
    shuffled = stats.paired_difference(a, dict(b_items), resamples=B, seed=seed)
    ordered = stats.paired_difference(a, {f"id{i}": ys[i] for i in range(n)}, resamples=B, seed=seed)
    assert shuffled == ordered
    assert shuffled.estimate == pytest.approx(sum(xs[:n]) / n - sum(ys[:n]) / n)


def test_bernoulli_interval_has_the_textbook_width():
    """A fair coin over 400 items: the 95 % interval is about mean +- 1.96 sqrt(p(1-p)/n)."""
    xs = [1.0] * 200 + [0.0] * 200
    iv = stats.bootstrap_mean(xs)  # default 10,000 resamples, seed 0
    half = 1.96 * math.sqrt(0.25 / 400)
    assert iv.estimate == 0.5 and iv.resamples == 10_000
    assert iv.low == pytest.approx(0.5 - half, abs=0.006) and iv.high == pytest.approx(0.5 + half, abs=0.006)
    assert stats.bootstrap_mean(xs, seed=1) != iv  # another seed, other resamples
    assert stats.bootstrap_mean(xs, confidence=0.5).width < iv.width


def test_paired_interval_is_narrower_than_the_unpaired_one_when_items_vary_together():
    """Two models that differ on 10 of 200 items, both right on the same easy half: pairing
    removes the shared item-to-item variation."""
    rnd = random.Random(3)
    easy = [float(rnd.random() < 0.5) for _ in range(200)]
    better = list(easy)
    for i in [i for i, x in enumerate(easy) if x == 0.0][:10]:
        better[i] = 1.0
    ids = [f"gsm8k-test-{i + 1}" for i in range(200)]
    diff = stats.paired_difference(dict(zip(ids, better)), dict(zip(ids, easy)))
    assert diff.estimate == pytest.approx(10 / 200)
    assert 0.0 < diff.low < diff.estimate < diff.high < 0.1  # a clear gain
    unpaired = stats.bootstrap_mean(better).width + stats.bootstrap_mean(easy).width
    assert diff.width < unpaired / 3


def test_ratio_metric_is_sum_over_sum_and_zero_without_a_denominator():
    res = stats.bootstrap({"evidence": stats.Ratio([1, 0, 3], [2, 0, 4]),
                           "none": stats.Ratio([0, 0, 0], [0, 0, 0]),
                           "acc": [1, 0, 1]}, resamples=500)
    assert res["evidence"].estimate == pytest.approx(4 / 6)
    assert 0.0 <= res["evidence"].low <= 4 / 6 <= res["evidence"].high <= 1.0
    assert (res["none"].estimate, res["none"].width) == (0.0, 0.0)
    assert res["acc"].estimate == pytest.approx(2 / 3)


def test_many_metrics_share_resamples_and_match_one_at_a_time():
    rng = np.random.default_rng(7)
    cols = {"x": rng.random(50), "y": (rng.random(50) < 0.3).astype(float)}
    together = stats.bootstrap(cols, resamples=2000, seed=5)
    for name in cols:  # same resamples; the matrix product may round the last bit differently
        alone = stats.bootstrap({name: cols[name]}, resamples=2000, seed=5)[name]
        assert together[name].as_dict() == pytest.approx(alone.as_dict(), rel=1e-12)


def test_blocks_bound_memory_without_changing_the_count(monkeypatch):
    monkeypatch.setattr(stats, "BLOCK_ELEMENTS", 1000)
    blocks = list(stats.resample_counts(300, resamples=25, seed=0))
    assert [b.shape for b in blocks] == [(3, 300)] * 8 + [(1, 300)]
    assert all((b.sum(axis=1) == 300).all() for b in blocks)  # n draws per resample


def test_paired_by_id_reports_unmatched_items_and_refuses_ambiguity():
    res = stats.paired_by_id(["a", "b", "c"], {"acc": [1, 0, 1]}, ["b", "c", "d", "e"], {"acc": [0, 0, 1, 1]},
                             resamples=200)
    assert (res.matched, res.only_a, res.only_b) == (2, 1, 2)
    assert res.differences["acc"].estimate == pytest.approx(0.5)  # b: 0-0, c: 1-0
    with pytest.raises(ValueError, match="appears twice"):
        stats.paired_by_id(["a", "a"], {"acc": [1, 0]}, ["a"], {"acc": [1]})
    with pytest.raises(ValueError, match="no item id"):
        stats.paired_by_id(["a"], {"acc": [1]}, ["b"], {"acc": [1]})


@pytest.mark.parametrize("bad, message", [
    ([], "at least one item"),
    ([1.0, float("nan")], "finite"),
    ([[1.0, 2.0]], "one value per item"),
])
def test_bad_input_is_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        stats.bootstrap_mean(bad)


def test_interval_round_trips_and_formats():
    iv = stats.Interval(0.125, -0.0625, 0.3125, 16, 0.95, 10_000)
    assert stats.Interval.from_dict(iv.as_dict()) == iv
    assert iv.format() == "0.125 [-0.062, 0.312]"
    assert iv.format(signed=True) == "+0.125 [-0.062, +0.312]"
    with pytest.raises(ValueError, match="confidence"):
        stats.bootstrap_mean([1.0, 2.0], confidence=1.0)
    with pytest.raises(ValueError, match="differ in length"):
        stats.bootstrap({"a": [1.0, 2.0], "b": [1.0]})
