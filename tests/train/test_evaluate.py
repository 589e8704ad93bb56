"""Evaluation: grading helpers, majority vote, aggregation, reports, and an end-to-end run."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
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


@settings(max_examples=200, deadline=None)
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


@settings(max_examples=100, deadline=None)
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


def test_markdown_and_chart(tmp_path):
    import matplotlib.image

    s1 = evaluate.summarize(_rows(), vote_k=2)
    s2 = dict(s1, strict_accuracy=0.25)
    config = cfg.load_preset("tiny")
    evaluate.write_markdown(tmp_path / "s.md", ["after", "before"], [s1, s2], config)
    text = (tmp_path / "s.md").read_text()
    assert "| metric | after | before | after - before |" in text
    assert "| strict_accuracy | 0.500 | 0.250 | 0.250 |" in text
    assert "| component:correctness | 0.500 | 0.500 | 0.000 |" in text
    evaluate.write_chart(tmp_path / "s.png", ["after", "before"], [s1, s2])
    image = matplotlib.image.imread(tmp_path / "s.png")
    assert image.shape[0] > 100 and image.shape[1] > 100


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
    md = (run_dir / "summary.md").read_text()
    for label, summary in zip(result.labels, result.summaries):
        assert label in md
    assert f"| strict_accuracy | {result.summaries[0]['strict_accuracy']:.3f} | " in md
    assert (run_dir / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((run_dir / "config.json").read_text())["eval"]["compare"] == "base"
    # the same directory again needs --overwrite
    from dsa_cast_train import runs

    with pytest.raises(runs.RunDirError, match="--overwrite"):
        evaluate.run(config, run_dir)
