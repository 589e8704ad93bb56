"""Uncertainty of evaluation metrics: percentile bootstrap intervals over items, and paired
differences between two evaluations of the same items (numpy only).

An evaluation of a few dozen items moves by several points from item sampling alone, so every
headline metric is reported with a 95 % interval, and a comparison of two models on the same
items with the interval of their paired difference (items resampled jointly, so the
item-to-item variation both models share cancels).

- :func:`bootstrap` / :func:`bootstrap_mean`: the metric on ``resamples`` item samples drawn
  with replacement; the interval is the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2``
  order statistics of the resampled values (no interpolation, so the difference of ``b`` and
  ``a`` is exactly the mirror image of that of ``a`` and ``b``).
- :func:`paired` / :func:`paired_difference`: the same resamples applied to both evaluations;
  per resample, metric(a) - metric(b).

A metric is a :data:`Column`: a per-item array whose mean is the metric (accuracy: 0/1 per item;
mean total: the totals), or a :class:`Ratio` of two per-item arrays whose sums divide (evidence
validity: true claims / checked claims, 0 when nothing was checked). Resampling is seeded
(``numpy.random.default_rng(seed)``): each resample is a row of item counts, and one matrix
product per block of at most :data:`BLOCK_ELEMENTS` counts gives every metric on every resample,
so memory stays bounded for any number of items (20 metrics, 1,319 items, 10,000 resamples:
about 0.75 s on one core).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

RESAMPLES = 10_000
"""Default number of bootstrap resamples."""
CONFIDENCE = 0.95
"""Default interval coverage."""
SEED = 0
"""Default resampling seed."""
BLOCK_ELEMENTS = 4_000_000
"""Largest block of resample counts held at once (32 MB of float64)."""


@dataclass(frozen=True)
class Ratio:
    """A metric that is ``sum(numerator) / sum(denominator)`` over items (``0.0`` when the
    denominator sums to 0), e.g. true claims over checked claims."""

    numerator: Any
    denominator: Any


Column = Union[Sequence[float], np.ndarray, Ratio]
"""Per-item values whose mean is the metric, or a :class:`Ratio`."""


@dataclass(frozen=True)
class Interval:
    """A metric's value on the items and its bootstrap interval."""

    estimate: float
    """The metric on the items as observed (a mean, a ratio, or a paired difference)."""
    low: float
    high: float
    n: int
    """Items (pairs, for a difference) the metric is computed over."""
    confidence: float
    resamples: int

    @property
    def width(self) -> float:
        return self.high - self.low

    def as_dict(self) -> dict[str, Any]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "n": self.n,
                "confidence": self.confidence, "resamples": self.resamples}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Interval:
        return cls(float(data["estimate"]), float(data["low"]), float(data["high"]), int(data["n"]),
                   float(data["confidence"]), int(data["resamples"]))

    def format(self, digits: int = 3, *, signed: bool = False) -> str:
        """``0.500 [0.250, 0.750]`` (``+0.125 [-0.062, +0.312]`` with ``signed``)."""
        sign = "+" if signed else ""
        return (f"{self.estimate:{sign}.{digits}f} "
                f"[{self.low:{sign}.{digits}f}, {self.high:{sign}.{digits}f}]")


_Prepared = Union[np.ndarray, tuple[np.ndarray, np.ndarray]]


def _as_column(column: Column, n: int | None = None) -> _Prepared:
    """A mean column as one float array, a ratio as (numerator, denominator); checked."""
    if isinstance(column, Ratio):
        out: _Prepared = (np.asarray(column.numerator, dtype=np.float64),
                          np.asarray(column.denominator, dtype=np.float64))
        arrays: tuple[np.ndarray, ...] = out
    else:
        out = np.asarray(column, dtype=np.float64)
        arrays = (out,)
    for a in arrays:
        if a.ndim != 1:
            raise ValueError(f"a metric column must hold one value per item, got shape {a.shape}")
        if a.shape[0] != (arrays[0].shape[0] if n is None else n):
            raise ValueError(f"metric columns differ in length: {a.shape[0]} vs {arrays[0].shape[0] if n is None else n}")
        if not np.all(np.isfinite(a)):
            raise ValueError("metric values must be finite")
    return out


def _items(column: Column) -> int:
    c = _as_column(column)
    n = int((c[0] if isinstance(c, tuple) else c).shape[0])
    if n == 0:
        raise ValueError("a bootstrap needs at least one item")
    return n


def _value(column: _Prepared) -> float:
    """The metric on the observed items."""
    if isinstance(column, tuple):
        den = float(column[1].sum())
        return float(column[0].sum()) / den if den else 0.0
    return float(column.mean())


def _constant(column: _Prepared) -> bool:
    """Whether every resample gives the observed value (no spread to resample)."""
    if isinstance(column, tuple):  # 0 / anything is 0: no claims, or no true claims, is always 0
        return not np.any(column[0]) or not np.any(column[1])
    return bool(np.ptp(column) == 0)


class _Design:
    """The columns of several metrics stacked into one item x k matrix, so that one matrix product
    of per-resample item counts gives every metric's sums on every resample."""

    def __init__(self, columns: Mapping[str, _Prepared]):
        arrays: list[np.ndarray] = []
        self.spec: dict[str, tuple[int, ...]] = {}
        for name, col in columns.items():
            parts = col if isinstance(col, tuple) else (col,)
            self.spec[name] = tuple(range(len(arrays), len(arrays) + len(parts)))
            arrays.extend(parts)
        self.matrix = np.stack(arrays, axis=1)

    def resampled(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        """Each metric on each resample (``counts``: resamples x items, how often each item is drawn)."""
        sums = counts @ self.matrix
        n = counts[0].sum()
        out = {}
        for name, cols in self.spec.items():
            if len(cols) == 1:
                out[name] = sums[:, cols[0]] / n
            else:
                num, den = sums[:, cols[0]], sums[:, cols[1]]
                out[name] = np.divide(num, den, out=np.zeros_like(num), where=den != 0)
        return out


def resample_counts(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> Iterator[np.ndarray]:
    """Blocks of resamples as item counts (one row per resample: how often each of the ``n`` items
    was drawn, ``n`` draws with replacement), ``resamples`` rows in all; the same
    ``(n, resamples, seed)`` always gives the same rows."""
    if n <= 0:
        raise ValueError("a bootstrap needs at least one item")
    if resamples <= 0:
        raise ValueError(f"resamples must be > 0, got {resamples}")
    rng = np.random.default_rng(seed)
    rows = max(1, BLOCK_ELEMENTS // n)
    done = 0
    while done < resamples:
        take = min(rows, resamples - done)
        idx = rng.integers(0, n, size=(take, n)) + (np.arange(take) * n)[:, None]
        yield np.bincount(idx.ravel(), minlength=take * n).reshape(take, n).astype(np.float64)
        done += take


def _bounds(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """The two order statistics that bound the central ``confidence`` share of ``values``."""
    ordered = np.sort(values)
    k = int(np.floor((1.0 - confidence) / 2.0 * len(ordered)))
    k = min(max(k, 0), (len(ordered) - 1) // 2)
    return float(ordered[k]), float(ordered[len(ordered) - 1 - k])


def _check(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be within (0, 1), got {confidence!r}")


def _intervals(estimates: Mapping[str, float], draws: Mapping[str, list[np.ndarray]], constant: Mapping[str, bool],
               n: int, confidence: float, resamples: int) -> dict[str, Interval]:
    out = {}
    for name, estimate in estimates.items():
        if constant[name]:
            low = high = estimate
        else:
            low, high = _bounds(np.concatenate(draws[name]), confidence)
            # Monte Carlo noise on very skewed data may leave the estimate just outside: the
            # interval always holds what was observed.
            low, high = min(low, estimate), max(high, estimate)
        out[name] = Interval(estimate, low, high, n, confidence, resamples)
    return out


def bootstrap(columns: Mapping[str, Column], *, resamples: int = RESAMPLES, confidence: float = CONFIDENCE,
              seed: int = SEED) -> dict[str, Interval]:
    """Each metric's value and percentile-bootstrap interval; all metrics share the resamples."""
    _check(confidence)
    if not columns:
        return {}
    n = _items(next(iter(columns.values())))
    data = {name: _as_column(col, n) for name, col in columns.items()}
    estimates = {name: _value(col) for name, col in data.items()}
    constant = {name: _constant(col) for name, col in data.items()}
    varying = {name: col for name, col in data.items() if not constant[name]}
    draws: dict[str, list[np.ndarray]] = {name: [] for name in varying}
    if varying:
        design = _Design(varying)
        for counts in resample_counts(n, resamples, seed):
            for name, values in design.resampled(counts).items():
                draws[name].append(values)
    return _intervals(estimates, draws, constant, n, confidence, resamples)


def bootstrap_mean(values: Sequence[float] | np.ndarray, *, resamples: int = RESAMPLES,
                   confidence: float = CONFIDENCE, seed: int = SEED) -> Interval:
    """The mean of ``values`` and its percentile-bootstrap interval."""
    return bootstrap({"mean": values}, resamples=resamples, confidence=confidence, seed=seed)["mean"]


def paired(a: Mapping[str, Column], b: Mapping[str, Column], *, resamples: int = RESAMPLES,
           confidence: float = CONFIDENCE, seed: int = SEED) -> dict[str, Interval]:
    """metric(a) - metric(b) for each metric both hold, with its interval; row ``i`` of every
    column of ``a`` and ``b`` is the same item (see :func:`paired_by_id` to match by id)."""
    _check(confidence)
    names = [name for name in a if name in b]
    if not names:
        return {}
    n = _items(a[names[0]])
    cols = {name: (_as_column(a[name], n), _as_column(b[name], n)) for name in names}
    estimates = {name: _value(ca) - _value(cb) for name, (ca, cb) in cols.items()}
    constant = {name: _paired_constant(ca, cb) for name, (ca, cb) in cols.items()}
    varying = [name for name in names if not constant[name]]
    draws: dict[str, list[np.ndarray]] = {name: [] for name in varying}
    if varying:
        design_a = _Design({name: cols[name][0] for name in varying})
        design_b = _Design({name: cols[name][1] for name in varying})
        for counts in resample_counts(n, resamples, seed):
            va, vb = design_a.resampled(counts), design_b.resampled(counts)
            for name in varying:
                draws[name].append(va[name] - vb[name])
    return _intervals(estimates, draws, constant, n, confidence, resamples)


def _paired_constant(a: _Prepared, b: _Prepared) -> bool:
    if isinstance(a, tuple) or isinstance(b, tuple):
        return _constant(a) and _constant(b)
    return bool(np.ptp(a - b) == 0)


def align(ids_a: Sequence[str], ids_b: Sequence[str]) -> tuple[list[int], list[int], list[str]]:
    """Row positions in ``a`` and in ``b`` of the ids both hold, in sorted id order (so the pairing
    does not depend on file order or on which side comes first), and those ids.

    A repeated id on either side is an error: it would make the pairing ambiguous."""
    pos_a, pos_b = _positions(ids_a, "first"), _positions(ids_b, "second")
    common = sorted(set(pos_a) & set(pos_b))
    return [pos_a[i] for i in common], [pos_b[i] for i in common], common


def _positions(ids: Sequence[str], side: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for i, item in enumerate(ids):
        key = str(item)
        if key in out:
            raise ValueError(f"item id {key!r} appears twice in the {side} evaluation (rows {out[key]} and {i})")
        out[key] = i
    return out


def take(columns: Mapping[str, Column], rows: Sequence[int]) -> dict[str, Column]:
    """The columns restricted to ``rows`` (in that order)."""
    index = np.asarray(rows, dtype=np.int64)
    out: dict[str, Column] = {}
    for name, col in columns.items():
        c = _as_column(col)
        out[name] = Ratio(c[0][index], c[1][index]) if isinstance(c, tuple) else c[index]
    return out


@dataclass(frozen=True)
class PairedResult:
    """Paired differences of two evaluations matched by item id."""

    differences: Mapping[str, Interval]
    """metric(a) - metric(b) per metric, on the matched items."""
    matched: int
    only_a: int
    """Items of ``a`` with no counterpart in ``b`` (left out of the differences)."""
    only_b: int


def paired_by_id(ids_a: Sequence[str], a: Mapping[str, Column], ids_b: Sequence[str], b: Mapping[str, Column], *,
                 resamples: int = RESAMPLES, confidence: float = CONFIDENCE, seed: int = SEED) -> PairedResult:
    """:func:`paired` on the items both evaluations hold, matched by id."""
    rows_a, rows_b, common = align(ids_a, ids_b)
    if not common:
        raise ValueError("the two evaluations share no item id: nothing to pair")
    diffs = paired(take(a, rows_a), take(b, rows_b), resamples=resamples, confidence=confidence, seed=seed)
    return PairedResult(diffs, len(common), len(ids_a) - len(common), len(ids_b) - len(common))


def paired_difference(a: Mapping[str, float], b: Mapping[str, float], *, resamples: int = RESAMPLES,
                      confidence: float = CONFIDENCE, seed: int = SEED) -> Interval:
    """mean(a) - mean(b) over the item ids both hold (``{id: value}``), with its interval."""
    ids_a, ids_b = list(a), list(b)
    res = paired_by_id(ids_a, {"mean": [a[i] for i in ids_a]}, ids_b, {"mean": [b[i] for i in ids_b]},
                       resamples=resamples, confidence=confidence, seed=seed)
    return res.differences["mean"]
