"""``python -m dsa_cast``: grade (streaming report, joins, bad input) and explain."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dsa_cast.cli import main
from dsa_cast.report import BoundedHistogram, ItemResult, ReportConfig, Summary, format_table
from dsa_cast.score import grade

GSM8K_TEST = Path(__file__).resolve().parents[2] / "dsa_cast_train" / "assets" / "gsm8k" / "test.jsonl.gz"
"""The GSM8K test split shipped in the package (read by path: the core venv has no numpy)."""

GOOD = (
    "<reasoning>\nPlan:\nMultiply the number of boxes by the apples per box.\n"
    "Reasoning:\nThere are 6 boxes and each holds 7 apples, so 6 times 7 gives 42 apples.\n"
    "Evidence:\nCALC: 6*7 = 42\nCALC: 6+7 = 14\n"
    "Sanity_check:\nDividing 42 apples by 7 per box gives back 6 boxes.\n"
    "</reasoning>\n<answer>42</answer>"
)
WRONG = GOOD.replace("<answer>42</answer>", "<answer>41</answer>")


def run(*argv: str, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -- grade -------------------------------------------------------------------------------


def test_grade_with_references_in_the_records(tmp_path):
    src = write_jsonl(
        tmp_path / "outs.jsonl",
        [
            {"id": "a", "completion": GOOD, "answer": "42"},
            {"id": "b", "completion": WRONG, "answer": "#### 42"},
            {"id": "c", "completion": "<answer>42</answer>", "answer": 42},
        ],
    )
    code, out, err = run("grade", str(src), "--out", str(tmp_path / "rep"), "--no-plots")
    assert code == 0, err
    for label in (
        "accuracy",
        "format adherence",
        "section Plan",
        "section Sanity_check",
        "evidence validity",
        "coherence",
        "mean total",
        "top issues",
    ):
        assert label in out
    results = read_jsonl(tmp_path / "rep" / "results.jsonl")
    assert [r["id"] for r in results] == ["a", "b", "c"]
    assert [r["line"] for r in results] == [1, 2, 3]
    assert results[0]["total"] == grade(GOOD, "42").total
    assert results[0]["components"] == dict(grade(GOOD, "42").components)
    assert results[0]["claims"] == 2 and results[0]["claims_true"] == 1
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert summary["complete"] is True and summary["n"] == 3
    assert summary["accuracy"] == pytest.approx(2 / 3)
    assert summary["section_presence"]["Plan"] == pytest.approx(2 / 3)
    assert summary["evidence_validity"] == pytest.approx(2 / 4)
    assert summary["issue_counts"]["false_claim"] == 2


def test_grade_joins_gsm8k_answers_by_order_and_by_id(tmp_path):
    refs = write_jsonl(
        tmp_path / "refs.jsonl",
        [
            {"question": "Six boxes of 7 apples. How many apples?", "answer": "6*7=<<6*7=42>>42\n#### 42"},
            {"question": "What is 3 + 4?", "answer": "3+4=7\n#### 7"},
        ],
    )
    outs = write_jsonl(tmp_path / "outs.jsonl", [{"completion": GOOD}, {"completion": GOOD}])
    code, _, err = run("grade", str(outs), "--answers", str(refs), "--out", str(tmp_path / "o"), "--no-plots")
    assert code == 0, err
    assert [r["correct"] for r in read_jsonl(tmp_path / "o" / "results.jsonl")] == [True, False]
    # by id: a GSM8K file has no id field, so its record numbers are the ids
    by_id = write_jsonl(tmp_path / "ids.jsonl", [{"id": 1, "completion": GOOD}, {"id": "0", "completion": GOOD}])
    code, _, err = run(
        "grade", str(by_id), "--answers", str(refs), "--join", "id", "--out", str(tmp_path / "i"), "--no-plots"
    )
    assert code == 0, err
    assert [r["correct"] for r in read_jsonl(tmp_path / "i" / "results.jsonl")] == [False, True]


def test_grade_against_the_real_gsm8k_test_file(tmp_path):
    refs = tmp_path / "test.jsonl"
    refs.write_bytes(gzip.decompress(GSM8K_TEST.read_bytes()))
    first = json.loads(refs.read_text(encoding="utf-8").splitlines()[0])  # answer 18
    outs = write_jsonl(
        tmp_path / "outs.jsonl",
        [
            {"id": 0, "completion": GOOD.replace("42", "18")},
            {"id": 1, "completion": GOOD.replace("42", "3")},
        ],
    )
    code, out, err = run("grade", str(outs), "--answers", str(refs), "--out", str(tmp_path / "o"), "--no-plots")
    assert code == 0, err  # join auto -> id (the outputs have ids)
    assert first["answer"].endswith("#### 18")
    assert [r["correct"] for r in read_jsonl(tmp_path / "o" / "results.jsonl")] == [True, True]
    assert "100.0% (2/2" in out


def test_bad_line_names_file_and_line_and_keeps_what_was_written(tmp_path):
    src = write_jsonl(
        tmp_path / "outs.jsonl",
        [
            {"completion": GOOD, "answer": 42},
            {"completion": WRONG, "answer": 42},
            "{not json",
            {"completion": GOOD, "answer": 42},
        ],
    )
    code, out, err = run("grade", str(src), "--out", str(tmp_path / "rep"), "--no-plots")
    assert code == 2
    assert f"{src}:3: invalid JSON" in err
    assert len(read_jsonl(tmp_path / "rep" / "results.jsonl")) == 2  # lines 1-2 kept
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert summary["complete"] is False and summary["n"] == 2 and ":3:" in summary["error"]


@pytest.mark.parametrize(
    "record, message",
    [
        ({"text": GOOD}, "no 'completion' field (fields: text); use --completion-field"),
        ({"completion": GOOD, "answer": "lots"}, "reference (field 'answer'): answer 'lots'"),
        ({"completion": 5}, "field 'completion': a completion must be a str"),
        ([1, 2], "expected a JSON object, got list"),
    ],
)
def test_each_kind_of_bad_record(tmp_path, record, message):
    src = write_jsonl(tmp_path / "o.jsonl", [{"completion": GOOD}, record])
    code, _, err = run("grade", str(src), "--out", str(tmp_path / "r"), "--no-plots")
    assert code == 2 and f"{src}:2: " in err and message in err


def test_skip_bad_goes_on_and_counts(tmp_path):
    src = write_jsonl(
        tmp_path / "o.jsonl",
        [
            {"completion": GOOD, "answer": 42},
            "nope",
            "",
            {"completion": 1},
            "\xff",
            {"completion": WRONG, "answer": 42},
        ],
    )
    src.write_bytes(src.read_bytes().replace("\xff".encode(), b"\xff"))  # a non-UTF-8 line
    code, out, err = run("grade", str(src), "--skip-bad", "--out", str(tmp_path / "r"), "--no-plots")
    assert code == 0
    assert err.count("skipped ") == 3 and f"{src}:5: not UTF-8" in err
    assert "skipped bad lines" in out
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["n"] == 2 and summary["n_skipped"] == 3


def test_join_errors(tmp_path):
    refs = write_jsonl(tmp_path / "refs.jsonl", [{"id": "x", "answer": "#### 1"}, {"id": "x", "answer": "#### 2"}])
    outs = write_jsonl(tmp_path / "outs.jsonl", [{"id": "x", "completion": GOOD}])
    code, _, err = run("grade", str(outs), "--answers", str(refs), "--out", str(tmp_path / "r"))
    assert code == 2 and f"{refs}:2: duplicate id 'x' (first at line 1)" in err
    refs = write_jsonl(tmp_path / "refs.jsonl", [{"id": "x", "answer": "#### 1"}])
    outs = write_jsonl(tmp_path / "outs.jsonl", [{"id": "y", "completion": GOOD}])
    code, _, err = run("grade", str(outs), "--answers", str(refs), "--out", str(tmp_path / "r"))
    assert code == 2 and f"{outs}:1: id 'y' is not in {refs}" in err
    outs = write_jsonl(tmp_path / "outs.jsonl", [{"completion": GOOD}, {"completion": GOOD}])
    code, _, err = run("grade", str(outs), "--answers", str(refs), "--join", "order", "--out", str(tmp_path / "r"))
    assert code == 2 and f"{outs}:2: no matching record in {refs} (it has only 1 records)" in err
    refs = write_jsonl(tmp_path / "refs.jsonl", [{"solution": "1"}])
    code, _, err = run("grade", str(outs), "--answers", str(refs), "--join", "order", "--out", str(tmp_path / "r"))
    assert code == 2 and f"{refs}:1: no 'answer' field" in err


def test_usage_errors_exit_2(tmp_path):
    assert run()[0] == 2
    assert run("grade", str(tmp_path / "missing.jsonl"))[0] == 2
    assert run("grade", "x.jsonl", "--rubric", "nope")[0] == 2
    assert run("frobnicate")[0] == 2


def test_plots_without_matplotlib_and_progress_without_tqdm(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "tqdm", None)
    src = write_jsonl(tmp_path / "o.jsonl", [{"completion": GOOD, "answer": 42}])
    code, out, err = run("grade", str(src), "--out", str(tmp_path / "r"), "--progress", "on")
    assert code == 0, err
    assert "accuracy" in out and "no plots: install matplotlib" in out
    assert not list((tmp_path / "r").glob("*.png"))


def test_plots_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")  # the plot extra; the table test above covers core
    src = write_jsonl(tmp_path / "o.jsonl", [{"completion": GOOD, "answer": 42}, {"completion": "x", "answer": 42}])
    code, out, _ = run("grade", str(src), "--out", str(tmp_path / "r"))
    assert code == 0
    for name in ("components.png", "issues.png"):
        data = (tmp_path / "r" / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 1000


def test_conversational_completions_and_custom_fields(tmp_path):
    src = write_jsonl(
        tmp_path / "o.jsonl", [{"uid": 7, "messages": [{"role": "assistant", "content": GOOD}], "gold": "42"}]
    )
    code, _, err = run(
        "grade",
        str(src),
        "--completion-field",
        "messages",
        "--answer-field",
        "gold",
        "--id-field",
        "uid",
        "--out",
        str(tmp_path / "r"),
        "--no-plots",
        "--rubric",
        "seed",
    )
    assert code == 0, err
    (rec,) = read_jsonl(tmp_path / "r" / "results.jsonl")
    assert rec["id"] == 7 and rec["correct"] is True
    assert rec["total"] == grade(GOOD, "42", rubric="seed").total


_PEAK_RSS = """
import io, resource, sys
from dsa_cast.cli import main
out = io.StringIO()
rc = main(sys.argv[1:], stdout=out)
print(rc, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, out.getvalue().splitlines()[0])
"""


def _grade_in_fresh_process(src: Path, out: Path) -> tuple[int, int, str]:
    """Exit code, peak RSS (KiB, Linux) and the table's first line of a fresh interpreter."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _PEAK_RSS,
            "grade",
            str(src),
            "--rubric",
            "format",
            "--out",
            str(out),
            "--no-plots",
            "--progress",
            "off",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    rc, rss, first = proc.stdout.split(maxsplit=2)
    return int(rc), int(rss), first.strip()


def test_streams_100k_lines_in_bounded_memory(tmp_path):
    def make(n: int) -> Path:
        src = tmp_path / f"n{n}.jsonl"
        with src.open("w", encoding="utf-8") as fh:
            for i in range(n):
                fh.write(
                    json.dumps({"id": i, "completion": f"<reasoning>Plan: x{i}</reasoning><answer>{i % 7}</answer>"})
                    + "\n"
                )
        return src

    rc_small, rss_small, _ = _grade_in_fresh_process(make(1_000), tmp_path / "r1")
    rc_big, rss_big, first = _grade_in_fresh_process(make(100_000), tmp_path / "r2")
    assert rc_small == rc_big == 0
    assert first == "completions               100000"
    with (tmp_path / "r2" / "results.jsonl").open(encoding="utf-8") as fh:
        assert sum(1 for _ in fh) == 100_000
    # 100x the lines, (almost) the same peak: holding 100k graded results would add >100 MiB
    assert rss_big - rss_small < 16 * 1024, f"peak RSS grew by {(rss_big - rss_small) / 1024:.1f} MiB"


def test_summary_state_is_constant_size():
    def item(i: int) -> ItemResult:
        return ItemResult(
            total=(i * 7919) % 1000 / 100.0,
            max_total=10.0,
            components={"a": i % 3 / 2.0, "b": ((i * 31) % 997) / 99.7},
            correct=bool(i % 2),
            issues=("x", f"code{i % 5}"),
            exact_format=i % 4 == 0,
            sections_present=("Plan",),
            evidence_checked=i % 3,
            evidence_ok=i % 2,
            coherence=0.5,
        )

    def size(s: Summary) -> int:
        hists = [s.total_hist, *s.component_hists.values()]
        return len(s.issue_counts) + len(s.component_sums) + len(s.section_counts) + sum(len(h.bins) for h in hists)

    s = Summary(ReportConfig(histogram_bins=64))
    for i in range(1_000):
        s.add(item(i))
    small = size(s)
    for i in range(1_000, 100_000):
        s.add(item(i))
    assert size(s) <= small + 3 * 64  # histograms only ever merge, counters are per code
    assert all(len(h.bins) <= 64 for h in [s.total_hist, *s.component_hists.values()])
    assert sum(c for _, _, c in s.total_hist.items()) == 100_000  # counts stay exact
    d = s.to_dict()
    assert d["n"] == 100_000 and d["accuracy"] == 0.5 and d["coherence"] == 0.5
    assert "top issues" in format_table(s)


def test_bounded_histogram_merges_exactly():
    h = BoundedHistogram(max_bins=4, resolution=1.0)
    for v in [0, 1, 2, 3, 4, 5, 6, 7, float("nan")]:
        h.add(v)
    assert h.count == 8 and len(h.bins) <= 4 and h.width == 2.0
    assert [c for _, _, c in h.items()] == [2, 2, 2, 2]
    width, bins = h.display_bins(2)
    assert width == 3.5 and sum(c for _, c in bins) == 8


# -- explain ------------------------------------------------------------------------------


def test_explain_argument_shows_parse_issues_claims_and_components():
    code, out, err = run("explain", "--answer", "42", GOOD + " thanks")
    assert code == 0, err
    for needle in (
        "total:",
        "correct: True",
        "predicted: 42",
        "components:",
        "correctness",
        "Plan",
        "Sanity_check",
        "text_after",
        "false_claim",
        "ok    calc       6*7 = 42",
        "FALSE calc       6+7 = 14  -> 13  [mismatch]",
    ):
        assert needle in out


@pytest.mark.parametrize("args", [["-"], []])
def test_explain_reads_stdin(args):
    code, out, _ = run("explain", "--answer", "42", *args, stdin="<answer>41")
    assert code == 0
    assert "UNCLOSED" in out and "missing_reasoning" in out and "correct: False" in out


def test_explain_json_and_errors():
    code, out, _ = run("explain", "--answer", "42", "--json", GOOD)
    assert code == 0
    data = json.loads(out)
    g = grade(GOOD, "42")
    assert data["total"] == g.total and data["components"] == dict(g.components)
    assert [c["ok"] for c in data["claims"]] == [True, False]
    assert [s["name"] for s in data["sections"]] == ["Plan", "Reasoning", "Evidence", "Sanity_check"]
    code, _, err = run("explain", "--answer", "forty", GOOD)
    assert code == 2 and "--answer" in err


def test_python_dash_m_entry_point(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "dsa_cast", "explain", "--answer", "42", "-"],
        input=GOOD,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and "correct: True" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "dsa_cast", "grade"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "usage" in proc.stderr


def test_docs_cli_lists_exactly_the_parser_options():
    import re

    from dsa_cast.cli import build_parser

    doc = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text(encoding="utf-8")
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices  # argparse keeps them here
    for name in ("grade", "explain"):
        flags = {s for a in sub[name]._actions for s in a.option_strings if s.startswith("--")}
        flags.discard("--help")
        section = doc.split(f"## `{name}`")[1].split("\n## ")[0]
        section = "\n".join(
            line
            for line in section.splitlines()  # another script's flags
            if not line.startswith("$ python benchmarks/")
        )
        assert flags == set(re.findall(r"--[a-z][a-z-]+", section)), name


def test_grade_the_labelled_benchmark_corpus_end_to_end(tmp_path, monkeypatch):
    """The realistic corpus (benchmarks/corpus.py) through the CLI: every item's ``correct``
    equals the label it was built with."""
    from dataclasses import asdict

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from corpus import CorpusConfig, build_corpus

    items = build_corpus(CorpusConfig(limit=40), path=GSM8K_TEST)
    src = write_jsonl(tmp_path / "corpus.jsonl", [asdict(it) for it in items])
    code, out, err = run("grade", str(src), "--answer-field", "reference", "--out", str(tmp_path / "r"), "--no-plots")
    assert code == 0, err
    results = read_jsonl(tmp_path / "r" / "results.jsonl")
    wrong = [
        (it.id, it.kind, it.style) for it, r in zip(items, results, strict=True) if r["correct"] != it.expected_correct
    ]
    assert not wrong
    expected = sum(it.expected_correct for it in items)
    assert f"({expected}/{len(items)} with a reference)" in out


# -- issue 10: nothing lost, every bad input a located error ----------------------------------

HOSTILE_LINES = {
    "5000-digit integer": b'{"completion": "x", "answer": ' + b"9" * 5000 + b"}",
    "100k-deep arrays": b'{"completion": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "invalid UTF-8": b'{"completion": "\xff"}',
    "NUL": b'{"completion": "a"}\x00',
    "BOM inside": b'{"completion": \xef\xbb\xbf"a"}',
    "lone surrogate": b'{"completion": "\\ud800"}',
}


def _good_line() -> bytes:
    return json.dumps({"completion": GOOD, "answer": 42}).encode()


@pytest.mark.parametrize("where", ["outputs", "answers"])
def test_grade_refuses_to_write_over_its_input(tmp_path, where):
    rep = tmp_path / "rep"
    rep.mkdir()
    inp = rep / "results.jsonl"
    inp.write_bytes(_good_line() + b"\n")
    before = inp.read_bytes()
    if where == "outputs":
        code, _, err = run("grade", str(inp), "--out", str(rep), "--no-plots")
    else:
        outs = write_jsonl(tmp_path / "o.jsonl", [{"completion": GOOD}])
        code, _, err = run("grade", str(outs), "--answers", str(inp), "--out", str(rep), "--no-plots")
    assert code == 2 and "it is the input" in err and str(inp) in err
    assert inp.read_bytes() == before and not (rep / "summary.json").exists()
    # a symbolic link to the input is the input too
    link = tmp_path / "link"
    link.mkdir()
    (link / "summary.json").symlink_to(inp)
    code, _, err = run("grade", str(inp), "--out", str(link), "--no-plots")
    assert code == 2 and "it is the input" in err and inp.read_bytes() == before


def test_grade_results_replace_the_old_ones_only_when_written(tmp_path, monkeypatch):
    import dsa_cast.cli as cli

    src = write_jsonl(tmp_path / "o.jsonl", [{"completion": GOOD, "answer": 42}] * 3)
    rep = tmp_path / "rep"
    assert run("grade", str(src), "--out", str(rep), "--no-plots")[0] == 0
    old = (rep / "results.jsonl").read_bytes()

    def crash(*args, **kw):
        raise RuntimeError("killed mid-run")

    monkeypatch.setattr(cli, "_score_chunk", crash)  # one chunk: graded in this process
    with pytest.raises(RuntimeError):
        run("grade", str(src), "--out", str(rep), "--no-plots", "--jobs", "1")
    assert (rep / "results.jsonl").read_bytes() == old  # the earlier complete results survive
    assert sorted(p.name for p in rep.iterdir()) == ["results.jsonl", "summary.json"]  # no temp left


@pytest.mark.parametrize("name", sorted(HOSTILE_LINES))
@pytest.mark.parametrize("where", ["outputs", "answers"])
def test_grade_hostile_line_is_a_located_error(tmp_path, name, where):
    hostile = HOSTILE_LINES[name]
    if where == "outputs":
        src = tmp_path / "o.jsonl"
        src.write_bytes(_good_line() + b"\n" + hostile + b"\n" + _good_line() + b"\n")
        args = [str(src)]
        bad = src
    else:
        src = write_jsonl(tmp_path / "o.jsonl", [{"completion": GOOD}] * 3)
        bad = tmp_path / "refs.jsonl"
        bad.write_bytes(
            b'{"answer": "#### 42"}\n' + hostile.replace(b'"completion"', b'"answer"') + b'\n{"answer": "#### 42"}\n'
        )
        args = [str(src), "--answers", str(bad), "--join", "order"]
    code, _, err = run("grade", *args, "--out", str(tmp_path / "r"), "--no-plots")
    assert code == 2 and err.startswith(f"error: {bad}:2: ") and "Traceback" not in err
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["complete"] is False and f"{bad}:2:" in summary["error"]
    code, _, err = run("grade", *args, "--skip-bad", "--out", str(tmp_path / "s"), "--no-plots")
    assert code == 0 and f"skipped {bad}:2: " in err
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["complete"] is True and summary["n"] == 2 and summary["n_skipped"] == 1


def test_grade_answers_by_id_with_a_bad_line(tmp_path):
    outs = write_jsonl(tmp_path / "o.jsonl", [{"id": 1, "completion": GOOD}, {"id": 2, "completion": GOOD}])
    refs = tmp_path / "refs.jsonl"
    refs.write_bytes(b'{"id": 1, "answer": "42"}\n{"id": 2, "answer": ' + b"7" * 5000 + b"}\n")
    code, _, err = run("grade", str(outs), "--answers", str(refs), "--out", str(tmp_path / "r"), "--no-plots")
    assert code == 2 and f"error: {refs}:2: invalid JSON: Exceeds the limit (4300 digits)" in err
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["complete"] is False
    code, _, err = run(
        "grade", str(outs), "--answers", str(refs), "--skip-bad", "--out", str(tmp_path / "s"), "--no-plots"
    )
    assert code == 0 and f"skipped {refs}:2:" in err and f"skipped {outs}:2: id '2' is not in {refs}" in err


def test_grade_inputs_directory_stdin_unreadable_and_out_file(tmp_path):
    code, _, err = run("grade", str(tmp_path), "--out", str(tmp_path / "r"))
    assert code == 2 and err == f"error: {tmp_path}: is a directory, not a file\n"
    code, _, err = run("grade", str(tmp_path / "nope.jsonl"))
    assert code == 2 and err == f"error: {tmp_path / 'nope.jsonl'}: no such file\n"
    code, _, err = run("grade", "/proc/self/mem", "--out", str(tmp_path / "r"))
    assert code == 2 and err == "error: /proc/self/mem:1: cannot read: Input/output error\n"
    (tmp_path / "afile").write_text("x")
    src = write_jsonl(tmp_path / "o.jsonl", [{"completion": GOOD, "answer": 42}])
    code, _, err = run("grade", str(src), "--out", str(tmp_path / "afile"))
    assert code == 2 and "exists and is not a directory" in err
    code, out, err = run("grade", "-", "--out", str(tmp_path / "std"), "--no-plots", stdin=src.read_text())
    assert code == 0, err
    assert json.loads((tmp_path / "std" / "summary.json").read_text())["outputs"] == "-"
    refs = write_jsonl(tmp_path / "refs.jsonl", [{"answer": "42"}])
    code, _, err = run("grade", "-", "--answers", "-", "--out", str(tmp_path / "x"))
    assert code == 2 and "cannot both be standard input" in err

    class Pipe(io.BytesIO):
        def seekable(self):
            return False

    err = io.StringIO()
    code = main(
        ["grade", str(src), "--answers", "-", "--join", "id", "--out", str(tmp_path / "x")],
        stdin=Pipe(refs.read_bytes()),
        stdout=io.StringIO(),
        stderr=err,
    )
    assert code == 2 and "must be a regular file" in err.getvalue()
    code, _, err = run(
        "grade", str(src), "--answers", "-", "--out", str(tmp_path / "y"), "--no-plots", stdin=refs.read_text()
    )
    assert code == 0, err  # joined by order, standard input is fine


def test_grade_reads_dev_stdin_and_dash_in_a_real_process(tmp_path):
    data = _good_line() + b"\n"
    for name in ("-", "/dev/stdin"):
        proc = subprocess.run(
            [sys.executable, "-m", "dsa_cast", "grade", name, "--out", str(tmp_path / "r"), "--no-plots"],
            input=data,
            capture_output=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert len(read_jsonl(tmp_path / "r" / "results.jsonl")) == 1


def test_top_issues_must_be_a_count(capsys):
    assert run("grade", "x.jsonl", "--top-issues", "-5")[0] == 2  # argparse prints the usage error
    assert "argument --top-issues: expected an integer >= 0, got -5" in capsys.readouterr().err
    assert run("grade", "x.jsonl", "--top-issues", "many")[0] == 2
    assert "expected an integer >= 0, got 'many'" in capsys.readouterr().err


def test_explain_invalid_bytes_and_unencodable_output():
    code, _, err = run("explain", "--answer", "42", "-", stdin="")
    assert code == 0
    out, errs = io.StringIO(), io.StringIO()
    code = main(["explain", "--answer", "42", "-"], stdin=io.BytesIO(GOOD.encode() + b"\xff"), stdout=out, stderr=errs)
    assert code == 2 and errs.getvalue().startswith("error: standard input: not UTF-8: invalid byte 0xff")
    # an argument holding bytes that are not UTF-8 (surrogate escapes) is a located error
    code, _, err = run("explain", "--answer", "42", "bad \udcff text")
    assert code == 2 and "the completion argument: not UTF-8: invalid byte 0xff" in err
    # a stream that cannot encode the text gets escapes, not a UnicodeEncodeError
    ascii_out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    text = GOOD.replace("CALC: 6*7 = 42", "CALC: 6×7 = 42 ✓")
    assert main(["explain", "--answer", "42", text], stdin=io.StringIO(), stdout=ascii_out, stderr=io.StringIO()) == 0
    ascii_out.flush()
    assert b"\\xd7" in ascii_out.buffer.getvalue()


def test_explain_strict_utf8_locale_in_a_real_process():
    env = {**__import__("os").environ, "LC_ALL": "C.UTF-8", "PYTHONIOENCODING": "utf-8:strict"}
    proc = subprocess.run(
        [sys.executable, "-m", "dsa_cast", "explain", "--answer", "42"],
        input=GOOD.encode() + b"\xff\xfe",
        capture_output=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 2 and b"Traceback" not in proc.stderr
    assert proc.stderr.startswith(b"error: standard input: not UTF-8")
    proc = subprocess.run(
        [sys.executable, "-m", "dsa_cast", "explain", "--answer", "42", b"x \xff y"],
        capture_output=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 2 and b"Traceback" not in proc.stderr


_LINE_KINDS = st.one_of(
    st.sampled_from(list(HOSTILE_LINES.values())),
    st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")),
    st.just(b""),
    st.builds(
        lambda c, a: json.dumps({"completion": c, "answer": a}).encode(),
        st.sampled_from([GOOD, WRONG, "", "<answer>4</answer>"]),
        st.sampled_from([42, "42", "#### 7"]),
    ),
)


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(_LINE_KINDS, min_size=1, max_size=8))
@example(lines=[b"\xef\xbb\xbf"])  # a first line that is only a byte-order mark is blank
def test_fuzz_grade_cli_hostile_lines(tmp_path, lines):
    """Any mix of hostile and good lines: exit 2 naming FILE:LINE of the first bad line (or 0 when
    all are good), never an exception; with --skip-bad exit 0 and every bad line counted."""
    src = tmp_path / "fuzz.jsonl"
    data = b"\n".join(lines) + b"\n"
    src.write_bytes(data)
    # The reader drops a byte-order mark at the start of the file first: a first line holding
    # only one is blank (found by the thorough Hypothesis profile; the reader always did this).
    rows = data.split(b"\n")[:-1]
    blank = [
        not (line[3:] if n == 1 and line.startswith(b"\xef\xbb\xbf") else line).strip()
        for n, line in enumerate(rows, 1)
    ]
    bad = [n for n, (line, empty) in enumerate(zip(rows, blank, strict=True), 1) if not empty and not _is_good(line)]
    code, _, err = run("grade", str(src), "--out", str(tmp_path / "r"), "--no-plots")
    if bad:
        assert code == 2 and err.startswith(f"error: {src}:{bad[0]}: "), err
    else:
        assert code == 0, err
    code, _, err = run("grade", str(src), "--skip-bad", "--out", str(tmp_path / "s"), "--no-plots")
    assert code == 0, err
    assert json.loads((tmp_path / "s" / "summary.json").read_text())["n_skipped"] == len(bad)


def _is_good(line: bytes) -> bool:
    try:
        rec = json.loads(line.decode("utf-8").lstrip("\ufeff"))
    except (ValueError, RecursionError):
        return False
    if b"\x00" in line or not isinstance(rec, dict) or not isinstance(rec.get("completion"), str):
        return False
    try:
        rec["completion"].encode("utf-8")
        grade(rec["completion"], rec.get("answer"))
    except (TypeError, ValueError):
        return False
    return True


def test_hostile_file_in_a_real_process_never_prints_a_traceback(tmp_path):
    src = tmp_path / "h.jsonl"
    src.write_bytes(b"\n".join(HOSTILE_LINES.values()) + b"\n")
    for extra in ([], ["--skip-bad"]):
        proc = subprocess.run(
            [sys.executable, "-m", "dsa_cast", "grade", str(src), "--out", str(tmp_path / "r"), "--no-plots", *extra],
            capture_output=True,
            timeout=120,
        )
        assert b"Traceback" not in proc.stderr
        assert proc.returncode == (0 if extra else 2)
        assert proc.stderr.startswith(b"skipped " if extra else f"error: {src}:1: ".encode())


# -- grade --jobs ----------------------------------------------------------------------------

LINES = [  # good, wrong, bad JSON, no completion field, bad reference, conversational, blank
    {"id": 1, "completion": GOOD, "answer": "42"},
    {"id": 2, "completion": WRONG, "answer": "#### 42"},
    "{not json",
    {"id": 4, "text": GOOD},
    {"id": 5, "completion": GOOD, "answer": "no number"},
    {"id": 6, "completion": [{"role": "assistant", "content": GOOD}], "answer": 42},
    "",
    {"id": 8, "completion": "<answer>7</answer>", "answer": "7", "question": "What is 3 + 4?"},
]


def _grade_files(tmp_path: Path, name: str, lines: list, *args: str) -> tuple[int, str, str, dict]:
    src = write_jsonl(tmp_path / f"{name}.jsonl", lines)
    out_dir = tmp_path / f"{name}.out"
    code, out, err = run("grade", str(src), "--out", str(out_dir), "--no-plots", "--progress", "off", *args)
    files = (
        {p.name: p.read_bytes().replace(str(src).encode(), b"SRC") for p in sorted(out_dir.iterdir())}
        if out_dir.exists()
        else {}
    )
    return code, out.replace(str(out_dir), "OUT"), err.replace(str(src), "SRC"), files


@pytest.mark.parametrize("extra", [["--skip-bad"], [], ["--skip-bad", "--rubric", "seed"]])
def test_jobs_give_byte_identical_output(tmp_path, monkeypatch, extra):
    from dsa_cast import cli

    monkeypatch.setattr(cli, "CONFIG", cli.CliConfig(jobs_chunk_records=3))  # many chunks
    lines = LINES * 4
    one = _grade_files(tmp_path, "one", lines, "--jobs", "1", *extra)
    two = _grade_files(tmp_path, "two", lines, "--jobs", "2", *extra)
    assert one[0] == two[0] == (0 if "--skip-bad" in extra else 2)
    assert one[1:] == two[1:]
    results = one[3].get("results.jsonl", b"").decode().splitlines()
    if "--skip-bad" not in extra:
        assert len(results) == 2  # stopped at line 3
    else:  # the seed rubric reads "no number" as no reference instead of refusing it
        assert len(results) == (16 if "seed" not in extra else 20)


def test_jobs_with_an_order_joined_answers_file(tmp_path, monkeypatch):
    from dsa_cast import cli

    monkeypatch.setattr(cli, "CONFIG", cli.CliConfig(jobs_chunk_records=2))
    outs = [{"completion": GOOD if i % 3 else WRONG} for i in range(11)] + ["{bad"]
    refs = write_jsonl(
        tmp_path / "refs.jsonl", [{"question": f"q{i}", "answer": f"#### {42 + i % 2}"} for i in range(11)]
    )
    got = [
        _grade_files(tmp_path, f"j{j}", outs, "--answers", str(refs), "--skip-bad", "--jobs", str(j)) for j in (1, 2)
    ]
    assert got[0][1:] == got[1][1:]
    assert len(got[0][3]["results.jsonl"].decode().splitlines()) == 11


def test_jobs_must_be_positive(tmp_path, capsys):
    src = write_jsonl(tmp_path / "o.jsonl", [{"completion": GOOD}])
    for bad in ("0", "-2", "many"):
        code, _, _ = run("grade", str(src), "--jobs", bad)
        assert code == 2 and "--jobs" in capsys.readouterr().err  # argparse's usage error


@pytest.mark.parametrize(
    "stdin_text, argv",
    [
        ("", ["explain", "--answer", "18"]),
        ("", ["explain", "--answer", "18", ""]),
        ("  \n", ["explain", "--answer", "18", "-"]),
    ],
)
def test_explain_warns_that_an_empty_completion_is_empty(stdin_text, argv):
    """`"$(cat missing.txt)"` expands to nothing: the grade is still printed, with a warning."""
    code, out, err = run(*argv, stdin=stdin_text)
    assert code == 0 and "total: 0.000 / 10" in out
    assert err.startswith("warning: the completion is empty")
    code, out, err = run("explain", "--answer", "42", GOOD)
    assert code == 0 and err == ""


def test_plot_axes_span_each_components_possible_range():
    from dsa_cast.report import BoundedHistogram, _axis_range, component_ranges
    from dsa_cast.rubrics import get_rubric

    ranges = component_ranges(get_rubric("dsa-cast"))
    assert ranges == {
        "total": (0.0, 10.0),
        "format": (0.0, 1.0),
        "structure": (0.0, 1.5),
        "correctness": (0.0, 5.0),
        "evidence": (0.0, 1.5),
        "coherence": (0.0, 1.0),
    }
    assert component_ranges(get_rubric("format")) == {"total": (0.0, 1.0), "format": (0.0, 1.0)}
    assert component_ranges(get_rubric("seed"))["total"] == (-5.0, 16.0)
    zeros = BoundedHistogram()
    for _ in range(5):
        zeros.add(0.0)
    # an all-zero component is drawn at 0 on its whole range, not as a block filling a 0-0.03 axis
    assert _axis_range(zeros, ranges["evidence"]) == (0.0, 1.5)
    assert _axis_range(zeros, None) == (0.0, 1.0)


def test_grade_writes_readable_plots(tmp_path):
    pytest.importorskip("matplotlib")  # the plot extra; the core-only CI venv checks the table instead
    import matplotlib.image

    src = write_jsonl(
        tmp_path / "o.jsonl", [{"completion": "no format", "answer": 1}, {"completion": GOOD, "answer": 42}]
    )
    code, out, err = run("grade", str(src), "--out", str(tmp_path / "r"))
    assert code == 0, err
    for name in ("components.png", "issues.png"):
        image = matplotlib.image.imread(tmp_path / "r" / name)
        assert image.shape[0] > 150 and image.shape[1] > 400
