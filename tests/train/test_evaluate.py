"""Evaluation: grading helpers, majority vote, aggregation, reports, and an end-to-end run."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsa_cast_train import config as cfg
from dsa_cast_train import evaluate


@pytest.fixture(scope="module")
def converted(gsm8k_dir):
    from dsa_cast_train import data

    return [data.gsm8k_to_dsa(r) for r in data.load_gsm8k(gsm8k_dir, "train", limit=5)]


def _grade(example, completion=None, tolerance=0.1):
    from dsa_cast import numbers

    return evaluate.grade_completion(completion if completion is not None else example.response,
                                     example.answer, example.question, rubric="dsa-cast",
                                     tolerance=tolerance, reference=numbers.extract_reference(example.answer))


# ---------------------------------------------------------------------------- grading helpers


def test_reference_responses_grade_as_correct_and_exact(converted):
    for ex in converted:
        g = _grade(ex)
        assert g["correct"] and g["approx_correct"] and g["exact_format"], (ex.id, g["issues"])
        assert g["predicted"] == ex.answer
        assert g["claims_checked"] == ex.response.count("CALC:") == g["claims_true"] > 0
        assert g["total"] == pytest.approx(sum(g["components"].values()))
        assert 0 < g["total"] <= g["max_total"]


def test_close_and_far_answers(converted):
    ex = converted[0]  # Natalia: 72
    assert ex.answer == "72"
    close = _grade(ex, ex.response.replace("<answer>\n72\n</answer>", "<answer>\n70\n</answer>"))
    assert not close["correct"] and close["approx_correct"] and close["predicted"] == "70"
    far = _grade(ex, ex.response.replace("<answer>\n72\n</answer>", "<answer>\n7\n</answer>"))
    assert not far["correct"] and not far["approx_correct"]
    strict = _grade(ex, ex.response.replace("<answer>\n72\n</answer>", "<answer>\n70\n</answer>"), tolerance=0.0)
    assert not strict["approx_correct"]
    broken = _grade(ex, "72")
    assert not broken["exact_format"] and broken["claims_checked"] == 0


@given(pred=st.integers(-1000, 1000), ref=st.integers(-1000, 1000), tol=st.sampled_from([0.0, 0.05, 0.1, 0.5]))
def test_approx_correct_is_a_relative_band(pred, ref, tol):
    got = evaluate.approx_correct(str(pred), Fraction(ref), tol)
    assert got == (abs(pred - ref) <= Fraction(tol).limit_denominator(10**6) * abs(ref))
    if pred == ref:
        assert got
    assert evaluate.approx_correct(None, Fraction(ref), tol) is False
    assert evaluate.approx_correct(str(pred), None, tol) is False


def _g(predicted, correct=False, approx=None, **kw):
    base = {"completion": f"<answer>{predicted}</answer>", "total": 1.0 if correct else 0.0, "max_total": 10.0,
            "components": {"correctness": 1.0 if correct else 0.0, "format": 0.5},
            "correct": correct, "approx_correct": correct if approx is None else approx,
            "predicted": predicted, "exact_format": True, "claims_checked": 2, "claims_true": 1, "issues": []}
    base.update(kw)
    return base


def test_majority_vote_ties_abstain_and_correctness():
    vote = evaluate.majority_vote([_g("3"), _g("4", True), _g("4", True), _g("3")])
    assert (vote["answer"], vote["count"]) == ("3", 2) and vote["correct"] is False  # tie: first seen
    assert vote["any_correct"] is True
    vote = evaluate.majority_vote([_g(None), _g("5", True), _g(None), _g(None)])
    assert (vote["answer"], vote["count"], vote["correct"]) == ("5", 1, True)  # answerless samples abstain
    vote = evaluate.majority_vote([_g(None), _g(None)])
    assert vote == {"answer": None, "count": 0, "correct": False, "approx_correct": False, "any_correct": False}


@given(st.lists(st.one_of(st.none(), st.sampled_from(["1", "2", "3"])), min_size=1, max_size=9))
def test_majority_vote_properties(answers):
    graded = [_g(a, correct=(a == "2")) for a in answers]
    vote = evaluate.majority_vote(graded)
    given_answers = [a for a in answers if a is not None]
    if not given_answers:
        assert vote["answer"] is None
        return
    counts = {a: given_answers.count(a) for a in given_answers}
    assert vote["count"] == max(counts.values()) == counts[vote["answer"]]
    assert vote["answer"] == next(a for a in given_answers if counts[a] == vote["count"])
    assert vote["correct"] == (vote["answer"] == "2")
    assert vote["any_correct"] == ("2" in given_answers)


def _rows():
    return [
        {"label": "m", "index": 0, "greedy": _g("1", True), "vote": {"k": 2, "samples": [_g("1", True), _g("2")],
                                                                    "majority": evaluate.majority_vote([_g("1", True), _g("2")])}},
        {"label": "m", "index": 1, "greedy": _g("9", approx=True, exact_format=False, claims_checked=0, claims_true=0),
         "vote": {"k": 2, "samples": [_g(None), _g(None)], "majority": evaluate.majority_vote([_g(None), _g(None)])}},
    ]


def test_summarize_means():
    s = evaluate.summarize(_rows(), vote_k=2)
    assert s["items"] == 2
    assert s["strict_accuracy"] == 0.5 and s["approx_accuracy"] == 1.0 and s["format_adherence"] == 0.5
    assert s["evidence_validity"] == 0.5 and s["greedy"]["claims_checked"] == 2
    assert s["mean_total"] == 0.5 and s["mean_total_fraction"] == 0.05
    assert s["greedy"]["components"] == {"correctness": 0.5, "format": 0.5}
    assert s["vote_strict_accuracy"] == 0.5 and s["vote"]["abstained"] == 0.5 and s["vote"]["any_correct"] == 0.5
    assert s["vote"]["samples"]["completions"] == 4 and s["vote"]["samples"]["answered"] == 0.5


def _model_rows(label, correct, fmt, totals, ids=None):
    """Greedy-only rows of one model: per item correctness, exact format and total."""
    ids = ids or [f"gsm8k-test-{i + 1}" for i in range(len(correct))]
    return [{"label": label, "index": i, "id": ids[i],
             "greedy": _g(str(i), c, exact_format=f, total=t, components={"correctness": 5.0 * c, "format": t - 5.0 * c},
                          claims_checked=2 if f else 0, claims_true=1 if f and c else 0),
             "vote": None}
            for i, (c, f, t) in enumerate(zip(correct, fmt, totals))]


@given(st.lists(st.tuples(st.booleans(), st.booleans(), st.integers(0, 2), st.integers(0, 2),
                          st.sampled_from([None, "1", "2"])), min_size=1, max_size=12))
def test_every_interval_is_around_the_value_the_summary_reports(items):
    """Whatever the grades, each metric's interval estimate is the summary's own value, and the
    interval holds it."""
    rows = []
    for i, (correct, fmt, checked, true, vote_answer) in enumerate(items):
        samples = [_g(vote_answer, vote_answer == "1"), _g("1", True)]
        rows.append({"index": i, "id": f"q{i}",
                     "greedy": _g(str(i), correct, exact_format=fmt, claims_checked=checked,
                                  claims_true=min(true, checked), total=2.0 * correct + fmt,
                                  components={"correctness": 2.0 * correct, "format": float(fmt)},
                                  sections_present=["Plan"] if fmt else [], answer_block=correct),
                     "vote": {"k": 2, "samples": samples, "majority": evaluate.majority_vote(samples)}})
    summary = evaluate.summarize(rows, vote_k=2)
    checked_rows = 0
    for name, values in evaluate.report_rows([summary]):
        iv = summary["intervals"].get(name)
        if values[0] is None:
            continue
        assert iv is not None, name
        assert iv["estimate"] == pytest.approx(values[0]), name
        assert iv["low"] <= iv["estimate"] <= iv["high"] and iv["n"] == len(rows)
        checked_rows += 1
    assert checked_rows >= 15  # headline, sections, components and vote metrics all carry one


def test_markdown_shows_intervals_and_the_paired_difference(tmp_path):
    after = _model_rows("after", [1, 1, 0, 1], [1, 1, 1, 0], [7.0, 7.0, 2.0, 5.0])
    before = _model_rows("before", [0, 1, 0, 0], [0, 1, 1, 0], [0.0, 7.0, 2.0, 0.0])
    s1, s2 = evaluate.summarize(after, vote_k=0), evaluate.summarize(before, vote_k=0)
    comparison = evaluate.paired_comparison("after", after, "before", before)
    assert comparison["matched"] == 4 and comparison["only_a"] == comparison["only_b"] == 0
    diff = comparison["differences"]["strict_accuracy"]
    assert diff["estimate"] == pytest.approx(0.5) and diff["low"] >= 0.0  # never worse on any item
    config = cfg.load_preset("tiny")
    evaluate.write_markdown(tmp_path / "s.md", ["after", "before"], [s1, s2], config, comparison, source="embedded GSM8K")
    text = (tmp_path / "s.md").read_text()
    assert "| metric | after | before | after - before |" in text
    iv = s1["intervals"]["strict_accuracy"]
    row = next(line for line in text.splitlines() if line.startswith("| strict_accuracy |"))
    assert row.startswith(f"| strict_accuracy | 0.750 [{iv['low']:.3f}, {iv['high']:.3f}] | 0.250 [")
    assert row.endswith(f"| +0.500 [{diff['low']:+.3f}, {diff['high']:+.3f}] |")
    assert "Paired on 4 items" in text and "Data: embedded GSM8K." in text
    for name in ("format_adherence", "evidence_validity", "mean_total", "component:correctness",
                 "component:format", "section:Plan"):
        assert any(line.startswith(f"| {name} | ") and line.count("[") == 3 for line in text.splitlines()), name


def _colour_pixels(path, rgb, tol=0.02):
    import matplotlib.image
    import numpy as np

    image = matplotlib.image.imread(path)[..., :3]
    return int((np.abs(image - np.array(rgb)).max(axis=2) < tol).sum())


def test_chart_draws_every_bar_even_at_zero_and_a_difference_panel(tmp_path):
    from matplotlib.colors import to_rgb

    zeros = _model_rows("base", [0, 0, 0], [0, 0, 0], [0.0, 0.0, 0.0])
    some = _model_rows("tuned", [1, 0, 1], [1, 1, 0], [7.0, 2.0, 5.0])
    s0, s1 = evaluate.summarize(zeros, vote_k=0), evaluate.summarize(some, vote_k=0)
    evaluate.write_chart(tmp_path / "zero.png", ["base"], [s0])
    assert _colour_pixels(tmp_path / "zero.png", to_rgb("C0")) > 50  # all-zero bars still show
    comparison = evaluate.paired_comparison("tuned", some, "base", zeros)
    evaluate.write_chart(tmp_path / "two.png", ["base", "tuned"], [s0, s1], [comparison])
    assert _colour_pixels(tmp_path / "two.png", to_rgb("C3")) > 20  # the paired-difference points
    assert not list(tmp_path.glob(".*tmp*"))  # written under a temporary name, then renamed


def test_targets_and_labels(tmp_path):
    ev = cfg.EvalConfig()
    assert evaluate.targets(ev) == [("base", None, None)]
    (tmp_path / "run" / "checkpoints" / "30" / "model_params").mkdir(parents=True)
    ck = str(tmp_path / "run" / "checkpoints")
    got = evaluate.targets(cfg.EvalConfig(checkpoint=ck, compare="base"))
    assert got == [("run", ck, None), ("base", None, None)]
    step_dir = str(tmp_path / "run" / "checkpoints" / "30")
    assert evaluate.targets(cfg.EvalConfig(checkpoint=step_dir))[0][0] == "run@30"
    with pytest.raises(cfg.ConfigError, match="same model"):
        evaluate.targets(cfg.EvalConfig(compare="base"))


# ---------------------------------------------------------------------------- with the tiny model


@pytest.mark.train
def test_generate_is_deterministic_padded_and_stops(tiny_loaded):
    prompts = ["<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
               "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
               "<start_of_turn>user\nHow many?<end_of_turn>\n<start_of_turn>model\n"]
    a = evaluate.generate(tiny_loaded, prompts, max_new_tokens=6, max_prompt_length=32, batch_size=2)
    b = evaluate.generate(tiny_loaded, prompts, max_new_tokens=6, max_prompt_length=32, batch_size=2)
    assert len(a) == 3 and a == b
    single = evaluate.generate(tiny_loaded, prompts[:1], max_new_tokens=6, max_prompt_length=32, batch_size=2)
    assert single == a[:1]  # padding the batch does not change a row
    s1 = evaluate.generate(tiny_loaded, prompts, max_new_tokens=6, max_prompt_length=32, batch_size=2,
                           temperature=1.0, top_k=20, seed=3)
    s2 = evaluate.generate(tiny_loaded, prompts, max_new_tokens=6, max_prompt_length=32, batch_size=2,
                           temperature=1.0, top_k=20, seed=3)
    assert s1 == s2
    assert all("<end_of_turn>" not in t for t in a + s1)
    long_prompt = "word " * 80
    assert evaluate.prompt_budget(tiny_loaded.tokenizer, [long_prompt], 16) > 16


@pytest.mark.train
def test_evaluation_reports_are_consistent(trained_run, tmp_path):
    config, sft_result = trained_run
    config = cfg.apply_overrides(config, [("eval.checkpoint", sft_result.checkpoint_dir), ("eval.compare", "base")])
    result = evaluate.run(config, tmp_path / "eval")
    run_dir = Path(result.run_dir)
    assert result.labels == ("run", "base")
    assert result.summaries[0]["step"] == 6 and result.summaries[1]["step"] is None
    rows = [json.loads(line) for line in (run_dir / "items.jsonl").read_text().splitlines()]
    n = config.eval.num_items
    assert len(rows) == 2 * n
    for label, summary in zip(result.labels, result.summaries):
        mine = [r for r in rows if r["label"] == label]
        assert [r["index"] for r in mine] == list(range(n))
        for r in mine:
            assert r["prompt"].endswith("<start_of_turn>model\n")
            assert len(r["vote"]["samples"]) == config.eval.vote_k
            assert r["vote"]["majority"] == evaluate.majority_vote(r["vote"]["samples"])
            assert r["greedy"]["total"] == pytest.approx(sum(r["greedy"]["components"].values()))
        assert summary == json.loads(json.dumps(evaluate.summarize(mine, vote_k=config.eval.vote_k)
                                                | {"label": label, "checkpoint": summary["checkpoint"],
                                                   "step": summary["step"]}))
        greedy = [r["greedy"] for r in mine]
        assert summary["strict_accuracy"] == sum(g["correct"] for g in greedy) / n
        assert summary["format_adherence"] == sum(g["exact_format"] for g in greedy) / n
        assert summary["mean_total"] == pytest.approx(sum(g["total"] for g in greedy) / n)
    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved["labels"] == list(result.labels) and saved["summaries"] == list(result.summaries)
    by_label = {label: [r for r in rows if r["label"] == label] for label in result.labels}
    assert saved["comparison"] == json.loads(json.dumps(evaluate.paired_comparison(
        "run", by_label["run"], "base", by_label["base"])))
    assert saved["comparison"]["matched"] == n
    assert saved["data_source"]["kind"] == "embedded" and set(saved["data_source"]["sha256"]) == {"test"}
    md = (run_dir / "summary.md").read_text()
    for label, summary in zip(result.labels, result.summaries):
        assert label in md
    assert f"| strict_accuracy | {result.summaries[0]['strict_accuracy']:.3f} [" in md
    assert "Data: embedded GSM8K" in md and saved["data_source"]["sha256"]["test"] in md
    assert (run_dir / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((run_dir / "config.json").read_text())["eval"]["compare"] == "base"
    # the same directory again needs --overwrite
    from dsa_cast_train import runs

    with pytest.raises(runs.RunDirError, match="--overwrite"):
        evaluate.run(config, run_dir)


# ---------------------------------------------------------------------------- regrading saved items

REPO = Path(__file__).resolve().parents[2]
GOOD = ("<reasoning>\nPlan:\nMultiply the boxes by the apples in each.\nReasoning:\nThere are 6 boxes of 7 apples, "
        "so 6 * 7 = 42 apples.\nEvidence:\nCALC: 6 * 7 = 42\nSanity_check:\n42 apples in 6 boxes is 7 per box.\n"
        "</reasoning>\n<answer>42</answer>")
QUESTION = "Six boxes hold 7 apples each. How many apples are there?"


def _items_file(path, label, answers, ids=None):
    """A per-item file as evaluate writes it: one greedy completion per item, answering ``answers``."""
    ids = ids or [f"q{i}" for i in range(len(answers))]
    with path.open("w", encoding="utf-8") as fh:
        for i, (item_id, a) in enumerate(zip(ids, answers)):
            completion = GOOD.replace("<answer>42</answer>", f"<answer>{a}</answer>") if a is not None else "no idea"
            fh.write(json.dumps({"label": label, "index": i, "id": item_id, "question": QUESTION, "answer": "42",
                                 "greedy": {"completion": completion, "total": -1.0}, "vote": None}) + "\n")
    return path


def test_regrade_recomputes_grades_intervals_and_paired_differences(tmp_path, capsys):
    base = _items_file(tmp_path / "eval_base_items.jsonl", "base", [None, None, 41, None, 42, None])
    # the same items in another order, better on three of them
    tuned = _items_file(tmp_path / "eval_sft_items.jsonl", "sft", [42, 42, 41, 42, 42, None][::-1],
                        ids=[f"q{i}" for i in range(6)][::-1])
    res = evaluate.regrade([base, tuned], resamples=2000)
    assert res.labels == ("base", "sft") and res.sources == (str(base), str(tuned))
    assert [s["strict_accuracy"] for s in res.summaries] == [pytest.approx(1 / 6), pytest.approx(4 / 6)]
    assert res.summaries[0]["greedy"]["completions"] == 6  # the stored total (-1) is not trusted: regraded
    diff = res.comparisons[0]
    assert (diff["a"], diff["b"], diff["matched"]) == ("sft", "base", 6)
    acc = diff["differences"]["strict_accuracy"]
    assert acc["estimate"] == pytest.approx(0.5) and acc["low"] >= 0.0  # paired by id, despite the order
    same = evaluate.regrade([base, base], resamples=2000)  # one file twice: kept apart, zero difference
    assert same.labels == ("base", "base (eval_base)")
    assert all(d["estimate"] == d["low"] == d["high"] == 0.0 for d in same.comparisons[0]["differences"].values())
    code = evaluate.main(["--regrade", str(base), str(tuned), "--resamples", "500", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0 and "| strict_accuracy | 0.167 [" in out and "sft - base" in out
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["labels"] == ["base", "sft"] and saved["comparisons"][0]["matched"] == 6
    assert (tmp_path / "out" / "summary.png").read_bytes()[:4] == b"\x89PNG"
    # a second run into the same directory is refused, nothing overwritten
    before = (tmp_path / "out" / "summary.json").read_bytes()
    assert evaluate.main(["--regrade", str(base), "--out", str(tmp_path / "out")]) == 2
    assert "not an empty directory" in capsys.readouterr().err
    assert (tmp_path / "out" / "summary.json").read_bytes() == before


def test_regrade_bad_input_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "items.jsonl"
    good = {"id": "a", "answer": "42", "greedy": {"completion": GOOD}}
    bad.write_text(json.dumps(good) + "\n" + json.dumps({"id": "b", "answer": "42", "greedy": {"text": 1}}) + "\n")
    assert evaluate.main(["--regrade", str(bad)]) == 2
    assert f"error: {bad}:2: field 'greedy'" in capsys.readouterr().err
    bad.write_text(json.dumps(good) + "\n{oops\n")
    assert evaluate.main(["--regrade", str(bad)]) == 2
    assert f"{bad}:2: invalid JSON" in capsys.readouterr().err
    assert evaluate.main(["--regrade", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err


def test_regrade_the_committed_demo_results():
    """The per-item files kept under docs/results/ regrade with an interval around every metric."""
    files = sorted((REPO / "docs" / "results" / "demo-cpu").glob("eval_*_items.jsonl"))
    order = {"base": 0, "sft": 1, "grpo": 2}
    files.sort(key=lambda f: order.get(f.name.split("_")[1], 9))
    res = evaluate.regrade(files, resamples=1000)
    assert len(res.labels) == len(files) >= 2 and len(res.comparisons) == len(files) - 1
    for s in res.summaries:
        for name in ("strict_accuracy", "format_adherence", "evidence_validity", "mean_total"):
            iv = s["intervals"][name]
            assert s[name] == pytest.approx(iv["estimate"]), name
            assert iv["low"] <= iv["estimate"] <= iv["high"], name
    for c in res.comparisons:
        assert c["matched"] == res.summaries[0]["items"] and c["only_a"] == c["only_b"] == 0
