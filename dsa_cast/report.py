"""Grading reports: per-item records and a summary built in constant memory, plus optional plots.

:class:`Summary` takes one :class:`ItemResult` at a time and keeps only running counts, sums and
bounded histograms, so ``python -m dsa_cast grade`` can report on a 100k-line file without
holding the results. :func:`write_plots` draws the distributions with matplotlib when it is
installed (the ``plot`` extra); everything else needs only the standard library.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BoundedHistogram",
    "component_ranges",
    "ItemResult",
    "ReportConfig",
    "Summary",
    "format_table",
    "write_plots",
]


@dataclass(frozen=True)
class ReportConfig:
    """Knobs of the summary; every bound that keeps its memory constant is here.

    Attributes:
      histogram_bins: most bins one component histogram may hold; past it, bins merge pairwise.
      histogram_resolution: initial bin width (score units); widths only ever double from it.
      max_issue_codes: distinct issue codes counted one by one; any further ones count as "other"
        (issue codes come from a fixed enum, so this only guards against a misbehaving rubric).
      top_issues: how many of the most frequent issue codes the table shows.
      plot_bins: bars per histogram in the PNGs.
    """

    histogram_bins: int = 256
    histogram_resolution: float = 1e-3
    max_issue_codes: int = 256
    top_issues: int = 8
    plot_bins: int = 30

    def __post_init__(self) -> None:
        if self.histogram_bins < 2:
            raise ValueError(f"ReportConfig.histogram_bins must be >= 2, got {self.histogram_bins}")
        if not self.histogram_resolution > 0:
            raise ValueError(f"ReportConfig.histogram_resolution must be > 0, got {self.histogram_resolution}")
        if self.max_issue_codes < 1 or self.top_issues < 0:
            raise ValueError("ReportConfig.max_issue_codes must be >= 1 and top_issues >= 0")


@dataclass(frozen=True)
class ItemResult:
    """What the report needs from one graded completion (the CLI builds it from a Grade).

    ``evidence_checked``/``evidence_ok`` count checkable claims and those that held; ``coherence``
    is the rubric's coherence score in [0, 1] when it has one.
    """

    total: float
    max_total: float
    components: Mapping[str, float]
    correct: bool | None
    issues: tuple[str, ...]
    exact_format: bool
    sections_present: tuple[str, ...]
    evidence_checked: int = 0
    evidence_ok: int = 0
    coherence: float | None = None


class BoundedHistogram:
    """Exact counts in at most ``max_bins`` equal-width bins; the width doubles when needed.

    A value ``v`` falls in bin ``floor(v / width)``. When a new value would make more than
    ``max_bins`` distinct bins, the width doubles and bins merge pairwise (counts stay exact,
    resolution halves), so memory is O(max_bins) whatever the number or spread of values.
    """

    __slots__ = ("max_bins", "width", "bins", "count", "low", "high")

    def __init__(self, max_bins: int = 256, resolution: float = 1e-3) -> None:
        self.max_bins = max_bins
        self.width = resolution
        self.bins: dict[int, int] = {}
        self.count = 0
        self.low = math.inf
        self.high = -math.inf

    def add(self, value: float) -> None:
        if not math.isfinite(value):
            return
        self.count += 1
        self.low = min(self.low, value)
        self.high = max(self.high, value)
        key = math.floor(value / self.width)
        self.bins[key] = self.bins.get(key, 0) + 1
        while len(self.bins) > self.max_bins:
            self.width *= 2
            merged: dict[int, int] = {}
            for k, c in self.bins.items():
                merged[k // 2] = merged.get(k // 2, 0) + c
            self.bins = merged

    def items(self) -> list[tuple[float, float, int]]:
        """``(left_edge, right_edge, count)`` for every non-empty bin, left to right."""
        return [(k * self.width, (k + 1) * self.width, c) for k, c in sorted(self.bins.items())]

    def display_bins(self, n: int) -> tuple[float, list[tuple[float, int]]]:
        """At most ``n`` equal bins spanning the observed range, for drawing: ``(width,
        [(left_edge, count), ...])``. Stored bins are assigned whole, by their left edge."""
        if not self.count:
            return self.width, []
        span = (self.high - self.low) or 1.0
        width = max(self.width, span / n)
        out: dict[int, int] = {}
        for k, c in self.bins.items():
            j = max(0, min(int((k * self.width - self.low) // width), n - 1))
            out[j] = out.get(j, 0) + c
        return width, [(self.low + j * width, c) for j, c in sorted(out.items())]


@dataclass
class Summary:
    """Running aggregates over graded items: O(components + sections + issue codes) memory."""

    config: ReportConfig = field(default_factory=ReportConfig)
    n: int = 0
    n_referenced: int = 0
    n_correct: int = 0
    n_exact_format: int = 0
    n_skipped: int = 0  # bad input lines skipped with --skip-bad
    total_sum: float = 0.0
    max_total: float = 0.0
    component_sums: dict[str, float] = field(default_factory=dict)
    section_counts: dict[str, int] = field(default_factory=dict)
    evidence_checked: int = 0
    evidence_ok: int = 0
    n_with_evidence: int = 0
    coherence_sum: float = 0.0
    n_coherence: int = 0
    issue_counts: dict[str, int] = field(default_factory=dict)
    total_hist: BoundedHistogram | None = None
    component_hists: dict[str, BoundedHistogram] = field(default_factory=dict)

    def _hist(self) -> BoundedHistogram:
        return BoundedHistogram(self.config.histogram_bins, self.config.histogram_resolution)

    def declare_sections(self, names: Iterable[str]) -> None:
        """Name the schema's sections up front so absent ones report a 0 % presence rate."""
        for name in names:
            self.section_counts.setdefault(name, 0)

    def add(self, item: ItemResult) -> None:
        """Fold one item into the aggregates (constant work and memory per item)."""
        self.n += 1
        if item.correct is not None:
            self.n_referenced += 1
            self.n_correct += bool(item.correct)
        self.n_exact_format += bool(item.exact_format)
        self.total_sum += item.total
        self.max_total = max(self.max_total, item.max_total)
        if self.total_hist is None:
            self.total_hist = self._hist()
        self.total_hist.add(item.total)
        for name, value in item.components.items():
            self.component_sums[name] = self.component_sums.get(name, 0.0) + value
            hist = self.component_hists.get(name)
            if hist is None:
                hist = self.component_hists[name] = self._hist()
            hist.add(value)
        for name in item.sections_present:
            self.section_counts[name] = self.section_counts.get(name, 0) + 1
        if item.evidence_checked:
            self.n_with_evidence += 1
            self.evidence_checked += item.evidence_checked
            self.evidence_ok += item.evidence_ok
        if item.coherence is not None:
            self.n_coherence += 1
            self.coherence_sum += item.coherence
        for code in item.issues:
            if code in self.issue_counts or len(self.issue_counts) < self.config.max_issue_codes:
                self.issue_counts[code] = self.issue_counts.get(code, 0) + 1
            else:
                self.issue_counts["other"] = self.issue_counts.get("other", 0) + 1

    @staticmethod
    def _rate(num: float, den: int) -> float | None:
        return num / den if den else None

    def top_issues(self, k: int | None = None) -> list[tuple[str, int]]:
        k = self.config.top_issues if k is None else k
        return sorted(self.issue_counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready data (rates are None where their denominator is 0)."""
        return {
            "n": self.n,
            "n_skipped": self.n_skipped,
            "n_referenced": self.n_referenced,
            "accuracy": self._rate(self.n_correct, self.n_referenced),
            "format_adherence": self._rate(self.n_exact_format, self.n),
            "section_presence": {k: self._rate(v, self.n) for k, v in self.section_counts.items()},
            "evidence_validity": self._rate(self.evidence_ok, self.evidence_checked),
            "evidence_claims_checked": self.evidence_checked,
            "completions_with_evidence": self.n_with_evidence,
            "coherence": self._rate(self.coherence_sum, self.n_coherence),
            "mean_total": self._rate(self.total_sum, self.n),
            "max_total": self.max_total,
            "mean_components": {k: v / self.n for k, v in self.component_sums.items()} if self.n else {},
            "issue_counts": dict(sorted(self.issue_counts.items(), key=lambda kv: (-kv[1], kv[0]))),
            "histograms": {
                name: [[lo, hi, c] for lo, hi, c in h.items()]
                for name, h in {"total": self.total_hist, **self.component_hists}.items()
                if h is not None
            },
        }


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def format_table(summary: Summary) -> str:
    """A plain-text summary table (no third-party dependency)."""
    d = summary.to_dict()
    rows: list[tuple[str, str]] = [("completions", str(d["n"]))]
    if d["n_skipped"]:
        rows.append(("skipped bad lines", str(d["n_skipped"])))
    rows += [
        ("accuracy", f"{_pct(d['accuracy'])} ({summary.n_correct}/{d['n_referenced']} with a reference)"),
        ("format adherence (exact)", _pct(d["format_adherence"])),
    ]
    rows += [(f"section {name}", _pct(rate)) for name, rate in d["section_presence"].items()]
    rows += [
        ("evidence validity", f"{_pct(d['evidence_validity'])} of {d['evidence_claims_checked']} checked claims"),
        ("coherence", "n/a" if d["coherence"] is None else f"{d['coherence']:.3f}"),
        ("mean total", "n/a" if d["mean_total"] is None else f"{d['mean_total']:.3f} / {d['max_total']:g}"),
    ]
    rows += [(f"  {name}", f"{mean:.3f}") for name, mean in d["mean_components"].items()]
    top = summary.top_issues()
    rows.append(("top issues", ", ".join(f"{c} ({n})" for c, n in top) if top else "none"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def component_ranges(rubric: Any) -> dict[str, tuple[float, float]]:
    """``name -> (lowest, highest)`` possible value of the total and of each component whose
    range the rubric states (a ``weights`` dataclass or a single ``weight``), for plot axes."""
    import contextlib
    import dataclasses

    out: dict[str, tuple[float, float]] = {}
    with contextlib.suppress(AttributeError, NotImplementedError):
        out["total"] = (float(rubric.min_total), float(rubric.max_total))
    weights = getattr(rubric, "weights", None)
    if dataclasses.is_dataclass(weights):
        out.update({f.name: (0.0, float(getattr(weights, f.name))) for f in dataclasses.fields(weights)})
    elif isinstance(getattr(rubric, "weight", None), (int, float)) and len(getattr(rubric, "components", ())) == 1:
        out[rubric.components[0]] = (0.0, float(rubric.weight))
    return out


def _axis_range(h: BoundedHistogram, known: tuple[float, float] | None) -> tuple[float, float]:
    """The x range of a histogram: the component's possible range when known, else the observed
    one widened to include 0 and to be at least 1 wide (so one value is not a full-width block)."""
    lo, hi = known if known is not None else (min(0.0, h.low), max(h.high, 0.0))
    lo, hi = min(lo, h.low), max(hi, h.high)
    if hi - lo < 1.0 and known is None:
        hi = lo + 1.0
    return lo, hi


def write_plots(summary: Summary, out_dir: Path, rubric: Any = None) -> list[Path]:
    """Draw per-component histograms and issue frequencies as PNGs; [] without matplotlib.

    Each histogram spans the component's possible range (from ``rubric``, see
    :func:`component_ranges`), counts are whole numbers, and every panel and figure says what
    it shows, so a PNG reads on its own."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    ranges = component_ranges(rubric) if rubric is not None else {}
    label = f" ({rubric.name} rubric)" if getattr(rubric, "name", None) else ""
    every = {"total": summary.total_hist, **summary.component_hists}
    hists = {k: h for k, h in every.items() if h is not None and h.count}
    if hists:
        written.append(_plot_components(plt, summary, hists, ranges, label, out_dir / "components.png"))
    if summary.issue_counts:
        written.append(_plot_issues(plt, summary, label, out_dir / "issues.png"))
    return written


def _plot_components(
    plt: Any,
    summary: Summary,
    hists: dict[str, BoundedHistogram],
    ranges: dict[str, tuple[float, float]],
    label: str,
    path: Path,
) -> Path:
    """One histogram panel per component (and the total), written to ``path``."""
    from matplotlib.ticker import MaxNLocator

    means = (
        {
            "total": summary.total_sum / summary.n if summary.n else 0.0,
            **{k: v / summary.n for k, v in summary.component_sums.items()},
        }
        if summary.n
        else {}
    )
    cols = min(3, len(hists))
    rows = math.ceil(len(hists) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows + 0.6), squeeze=False)
    for ax in axes.flat[len(hists) :]:
        ax.axis("off")
    for ax, (comp, h) in zip(axes.flat, hists.items(), strict=False):  # more axes than histograms
        lo, hi = _axis_range(h, ranges.get(comp))
        width, bins = h.display_bins(summary.config.plot_bins)
        bar = max(width * 0.9, (hi - lo) / 60)  # a single value stays a visible, narrow bar
        xs = [h.low] if h.low == h.high else [left + width / 2 for left, _ in bins]  # one value: on it
        ax.bar(xs, [c for _, c in bins], width=bar, align="center")
        pad = (hi - lo) * 0.04
        ax.set_xlim(lo - pad, hi + pad)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        of = f" of {hi:g}" if comp in ranges else ""
        ax.set_title(f"{comp}: mean {means.get(comp, 0.0):.3g}{of}", fontsize=10)
        ax.set_xlabel("score" if comp != "total" else "total score")
        ax.set_ylabel("completions")
    fig.suptitle(f"Score distributions of {summary.n} completions" + label, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_issues(plt: Any, summary: Summary, label: str, path: Path) -> Path:
    """Issue frequencies as horizontal bars, most frequent on top, written to ``path``."""
    from matplotlib.ticker import MaxNLocator

    top = summary.top_issues(k=len(summary.issue_counts))
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(top) + 1.2))
    ax.barh([c for c, _ in reversed(top)], [n for _, n in reversed(top)])
    for i, (_, n) in enumerate(reversed(top)):
        ax.text(n, i, f" {n}", va="center", fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0, max(n for _, n in top) * 1.12)
    ax.set_xlabel(f"completions with the issue (of {summary.n})")
    ax.set_title(f"Issue frequencies, {summary.n} completions" + label)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
