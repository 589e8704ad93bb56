"""Framework adapters, tested against each framework's documented calling convention.

No framework is imported: numpy columns are imitated by a duck-typed array (and checked with
real numpy when it is installed), TRL's logging hooks by recorders.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import pickle
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsa_cast import adapters
from dsa_cast.adapters import (
    BatchGrader,
    completion_text,
    compute_score,
    compute_score_batch,
    reward_func,
    strip_prompt,
    trl_rewards,
    tunix_rewards,
)
from dsa_cast.rubrics import RUBRICS, DsaCastRubric, Grade
from dsa_cast.score import grade, grade_batch

QUESTION = "A shop packs 6 boxes with 7 apples in each box. How many apples are packed?"
GOOD = (
    "<reasoning>\nPlan:\nMultiply the number of boxes by the apples per box.\n"
    "Reasoning:\nThere are 6 boxes and each holds 7 apples, so 6 times 7 gives 42 apples.\n"
    "Evidence:\nCALC: 6*7 = 42\n"
    "Sanity_check:\nDividing 42 apples by 7 per box gives back 6 boxes.\n"
    "</reasoning>\n<answer>42</answer>"
)
WRONG = GOOD.replace("<answer>42</answer>", "<answer>41</answer>")
MALFORMED = "Plan: just guess\n<answer>42"
TEXTS = [GOOD, WRONG, MALFORMED, ""]


class FakeArray:
    """The parts of a numpy array the adapters may touch (``tolist``, iteration, ``len``)."""

    def __init__(self, values):
        self._values = list(values)

    def tolist(self):
        return list(self._values)

    def __iter__(self):
        return iter(self._values)

    def __len__(self):
        return len(self._values)


@dataclass(frozen=True)
class CountingRubric(DsaCastRubric):
    """dsa-cast, recording every completion it grades (module level: picklable)."""

    calls: list = field(default_factory=list, compare=False, hash=False)

    def score(self, text, answer=None, question=None, detail=False):
        self.calls.append(text)
        return super().score(text, answer, question, detail)


def _tunix_call(fn, completions, answers, questions=None, **extra):
    cols = {"answer": FakeArray(answers)}
    if questions is not None:
        cols["question"] = FakeArray(questions)
    return fn(
        prompts=["p"] * len(completions),
        completions=completions,
        mode="train",
        trajectory_ids=list(range(len(completions))),
        **cols,
        **extra,
    )


# -- names and sums ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RUBRICS))
def test_one_named_function_per_component(name):
    rubric = RUBRICS[name]
    for factory in (tunix_rewards, trl_rewards):
        fns = factory(name)
        prefix = name.replace("-", "_")
        assert [f.__name__ for f in fns] == [f"{prefix}_{c}" for c in rubric.components]
        assert all(f.__name__.isidentifier() for f in fns)
        assert len({id(f.grader) for f in fns}) == 1  # one shared grader per call


@pytest.mark.parametrize("name", sorted(RUBRICS))
def test_tunix_components_sum_to_grade_total(name):
    fns = tunix_rewards(name)
    answers = ["42", "#### 42", 42, "1,234"]
    questions = [QUESTION] * 4
    per_fn = [_tunix_call(f, TEXTS, answers, questions) for f in fns]
    for i, text in enumerate(TEXTS):
        g = grade(text, answers[i], rubric=name, question=questions[i])
        values = [col[i] for col in per_fn]
        assert values == list(g.components.values())
        assert math.fsum(values) == pytest.approx(g.total, abs=1e-12)


@given(
    texts=st.lists(
        st.text(alphabet=st.sampled_from(list("<>/reasoninganswrPlRmEvdcSy_k:= 0123456789*+\n")), max_size=120),
        min_size=1,
        max_size=4,
    ),
    ref=st.integers(-50, 50),
)
def test_property_tunix_never_none_finite_and_sums(texts, ref):
    fns = tunix_rewards()
    cols = [_tunix_call(f, texts, [str(ref)] * len(texts)) for f in fns]
    for i, text in enumerate(texts):
        values = [c[i] for c in cols]
        assert all(isinstance(v, float) and math.isfinite(v) for v in values)
        assert math.fsum(values) == pytest.approx(grade(text, ref).total, abs=1e-9)
    assert fns[0].grader.graded_batches == 1  # every component served from one grading


# -- Tunix convention ----------------------------------------------------------------------


def test_tunix_numpy_like_columns_repeated_per_generation_and_extra_params():
    fns = tunix_rewards()
    completions = [GOOD, WRONG, GOOD, MALFORMED]  # rows p0,p0,p1,p1
    out = [
        f(
            prompts=["p0", "p0", "p1", "p1"],
            completions=completions,
            answer=FakeArray(["42", "42", "7", "7"]),
            question=FakeArray([QUESTION] * 4),
            mode="eval",
            trajectory_ids=["a", "b", "c", "d"],
            num_generations=2,
        )
        for f in fns
    ]
    correctness = dict(zip([f.__name__ for f in fns], out, strict=True))["dsa_cast_correctness"]
    assert correctness == [5.0, 0.0, 0.0, 0.0]
    assert all(len(col) == 4 and None not in col for col in out)


def test_tunix_with_real_numpy_arrays():
    np = pytest.importorskip("numpy")  # only in the full venv; the duck-typed test covers core
    fns = tunix_rewards()
    answers = np.repeat(np.array(["42", "#### 41"]), 2)  # '<U7' array, repeated per generation
    out = [
        f(
            prompts=["a", "a", "b", "b"],
            completions=[GOOD, WRONG, GOOD, WRONG],
            answer=answers,
            question=np.array([QUESTION] * 4, dtype=object),
            mode="train",
        )
        for f in fns
    ]
    assert [c[2] for c in out][2] == 0.0 and [c[0] for c in out][2] == 5.0
    num = tunix_rewards()[2](prompts=["x"], completions=[GOOD], answer=np.array([42]))
    assert num == [5.0]  # numpy integer references read as plain ints


def test_tunix_item_without_reference_is_graded_not_none():
    fns = tunix_rewards()
    out = [_tunix_call(f, [GOOD, GOOD], ["42", None]) for f in fns]
    assert all(None not in col for col in out)
    assert out[2] == [5.0, 0.0]


def test_missing_reference_column_is_a_clear_error_but_not_for_format():
    fn = tunix_rewards()[0]
    with pytest.raises(KeyError, match="'answer'"):
        fn(prompts=["p"], completions=[GOOD], mode="train")
    assert tunix_rewards("format")[0](prompts=["p"], completions=[GOOD]) == [1.0]


def test_bad_reference_names_the_item():
    fn = tunix_rewards(on_error="raise")[0]
    with pytest.raises(ValueError, match=r"answer\[1\]"):
        _tunix_call(fn, [GOOD, GOOD], ["42", "not a number"])


def test_column_length_mismatch_is_reported():
    with pytest.raises(ValueError, match="'answer' has 1 entries for 2 completions"):
        _tunix_call(tunix_rewards()[0], [GOOD, GOOD], ["42"])


def test_rubric_options_are_passed_to_the_rubric():
    fns = tunix_rewards("dsa-cast", partial_credit=True)
    assert fns[0].grader.rubric.partial_credit is True
    near = GOOD.replace("<answer>42</answer>", "<answer>40</answer>")
    col = _tunix_call(fns[2], [near], ["42"])
    assert 0.0 < col[0] < 5.0
    with pytest.raises(ValueError, match="no option"):
        tunix_rewards("dsa-cast", no_such_option=1)
    with pytest.raises(TypeError, match="rubric name"):
        tunix_rewards(RUBRICS["dsa-cast"], partial_credit=True)


# -- grading once per batch -----------------------------------------------------------


def test_batch_is_graded_once_for_all_components_and_cache_is_bounded():
    rubric = CountingRubric()
    fns = tunix_rewards(rubric, cache_batches=2)
    rubric.calls.clear()  # construction probes whether the rubric reads references
    batch = [GOOD, WRONG, MALFORMED]
    for f in fns:
        _tunix_call(f, batch, ["42"] * 3)
    assert len(rubric.calls) == 3  # 5 components, each completion graded once
    assert fns[0].grader.graded_batches == 1
    # a copy with equal content (new list, new str objects) is still a hit
    for f in fns:
        _tunix_call(f, [s + "" for s in list(batch)], ["42"] * 3)
    assert len(rubric.calls) == 3
    # different references are a different batch
    _tunix_call(fns[0], batch, ["41"] * 3)
    assert len(rubric.calls) == 6
    # bounded: two newer batches evict the first one
    _tunix_call(fns[0], [GOOD], ["1"])
    _tunix_call(fns[0], batch, ["42"] * 3)
    assert len(rubric.calls) == 10
    assert len(fns[0].grader._cache) == 2


def test_separate_adapters_do_not_share_a_cache():
    a, b = tunix_rewards(), tunix_rewards()
    _tunix_call(a[0], [GOOD], ["42"])
    assert a[0].grader.graded_batches == 1 and b[0].grader.graded_batches == 0


# -- TRL convention ------------------------------------------------------------------------


def test_trl_plain_and_conversational_completions_agree():
    fns = trl_rewards()
    conv = [[{"role": "assistant", "content": t}] for t in TEXTS]
    plain = [f(["p"] * 4, TEXTS, completion_ids=[[1, 2]] * 4, answer=["42"] * 4) for f in fns]
    chat = [f([[{"role": "user", "content": "q"}]] * 4, conv, None, answer=["42"] * 4) for f in fns]
    assert plain == chat
    for i, t in enumerate(TEXTS):
        assert math.fsum(c[i] for c in plain) == pytest.approx(grade(t, "42").total)


def test_trl_reference_column_is_configurable_and_none_skips():
    fns = trl_rewards(answer_field="solution")
    out = [f(["p"] * 3, [GOOD] * 3, solution=["42", None, "#### 42"], trainer_state=object()) for f in fns]
    assert all(col[1] is None for col in out)
    assert out[2] == [5.0, None, 5.0]
    fmt = trl_rewards("format")[0](["p"], [GOOD])  # a rubric that reads no reference never skips
    assert fmt == [1.0]


def test_trl_logs_breakdown_once_per_batch():
    extra: list[tuple[str, list]] = []
    metrics: list[tuple[str, float]] = []
    fns = trl_rewards()
    kw = {
        "answer": ["42", "42", "42"],
        "log_extra": lambda c, v: extra.append((c, v)),
        "log_metric": lambda n, v: metrics.append((n, v)),
    }
    for f in fns:
        f(["p"] * 3, [GOOD, WRONG, MALFORMED], **kw)
    assert [c for c, _ in extra] == ["dsa_cast/predicted", "dsa_cast/correct", "dsa_cast/issues"]
    assert all(len(v) == 3 for _, v in extra)
    assert dict(extra)["dsa_cast/predicted"] == ["42", "41", "42"]
    assert dict(extra)["dsa_cast/correct"] == [True, False, False]
    m = dict(metrics)
    assert set(m) == {"dsa_cast/accuracy", "dsa_cast/clean_rate", "dsa_cast/total"}
    assert m["dsa_cast/accuracy"] == pytest.approx(1 / 3)
    assert len(metrics) == 3  # logged by the grading call only


def test_trl_logs_once_per_step_even_when_the_batch_comes_from_the_cache():
    """Batches A, B, A (and A, A): every step logs its own predictions and metrics once."""
    extra: list[tuple[str, list]] = []
    metrics: list[tuple[str, float]] = []
    fns = trl_rewards()
    hooks = {"log_extra": lambda c, v: extra.append((c, v)), "log_metric": lambda n, v: metrics.append((n, v))}
    a = ([GOOD, WRONG], ["42", "42"])
    b = ([WRONG, MALFORMED], ["42", "42"])
    steps = [a, b, a, a]
    for completions, answers in steps:
        for f in fns:
            f(["p"] * 2, completions, answer=answers, **hooks)
    assert fns[0].grader.graded_batches == 2  # A and B graded once each, the rest from the cache
    predicted = [v for c, v in extra if c == "dsa_cast/predicted"]
    assert predicted == [["42", "41"], ["41", "42"], ["42", "41"], ["42", "41"]]
    totals = [v for n, v in metrics if n == "dsa_cast/total"]
    assert len(totals) == len(steps)
    assert totals[2] == totals[0] == pytest.approx((grade(GOOD, "42").total + grade(WRONG, "42").total) / 2)


def test_trl_total_leaves_out_reference_less_items_like_trl():
    metrics: dict[str, float] = {}
    fns = trl_rewards()
    kw = {"answer": ["42", None, "42"], "log_metric": lambda n, v: metrics.__setitem__(n, v)}
    out = [f(["p"] * 3, [GOOD, GOOD, WRONG], **kw) for f in fns]
    rows = [sum(col[i] for col in out) if out[0][i] is not None else None for i in range(3)]
    assert rows[1] is None
    assert metrics["dsa_cast/total"] == pytest.approx((rows[0] + rows[2]) / 2)  # TRL's own `reward`
    assert metrics["dsa_cast/accuracy"] == pytest.approx(0.5)
    metrics.clear()
    for f in fns:
        f(["p"], [GOOD], **kw | {"answer": [None]})
    assert "dsa_cast/total" not in metrics and "dsa_cast/accuracy" not in metrics
    assert metrics["dsa_cast/clean_rate"] == 1.0


@pytest.mark.parametrize("tail", ["<end_of_turn>", "<end_of_turn>\n<eos>", "<|im_end|>", "</s>"])
def test_every_adapter_strips_trailing_stop_markers(tail):
    text = GOOD + tail
    want = grade(GOOD, "42", question=QUESTION).total
    assert want == 10.0 and grade(text, "42", question=QUESTION).total < want
    for factory in (tunix_rewards, trl_rewards):
        got = [f(["p"], [text], answer=["42"], question=[QUESTION]) for f in factory()]
        assert math.fsum(c[0] for c in got) == want
        kept = [f(["p"], [text], answer=["42"], question=[QUESTION]) for f in factory(end_markers=())]
        assert math.fsum(c[0] for c in kept) < want
    assert compute_score("gsm8k", text, "42", {"question": QUESTION})["score"] == want
    assert compute_score("gsm8k", text, "42", {"question": QUESTION}, end_markers=[])["score"] < want
    assert compute_score_batch(["gsm8k"], [text], ["42"], [{"question": QUESTION}])[0]["score"] == want
    prompt = "<start_of_turn>user\nq<end_of_turn>\n<start_of_turn>model\n"
    out = reward_func([prompt + text], [prompt], ["42"], as_tensors=False)
    assert out["rewards"] == [grade(GOOD, "42").total] == [10.0]
    assert reward_func([prompt + text], [prompt], ["42"], as_tensors=False, end_markers=())["rewards"][0] == 9.5
    custom = reward_func([prompt + GOOD + "<STOP>"], [prompt], ["42"], as_tensors=False, end_markers=["<STOP>"])
    assert custom["rewards"] == [10.0]


def test_end_markers_are_checked():
    with pytest.raises(TypeError, match="end_markers"):
        trl_rewards(end_markers="<end_of_turn>")
    with pytest.raises(ValueError, match=r"end_markers\[0\]"):
        compute_score("gsm8k", GOOD, "42", end_markers=[""])


def test_completion_text_formats():
    assert completion_text("x") == "x"
    assert completion_text([{"role": "assistant", "content": "a"}]) == "a"
    assert completion_text({"role": "assistant", "content": "a"}) == "a"
    assert (
        completion_text(
            [{"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "image"}, {"text": "b"}]}]
        )
        == "ab"
    )
    assert (
        completion_text(
            [
                {"role": "tool", "content": "t"},
                {"role": "assistant", "content": "a"},
                {"role": "assistant", "content": "b"},
            ]
        )
        == "a\nb"
    )
    with pytest.raises(TypeError, match="message 0"):
        completion_text(["bare string"])
    with pytest.raises(TypeError):
        completion_text(42)


# -- verl convention ----------------------------------------------------------------------


def test_verl_compute_score_single_and_batch():
    single = compute_score("openai/gsm8k", GOOD, "42", {"question": QUESTION, "split": "train"})
    g = grade(GOOD, "42", question=QUESTION)
    assert single["score"] == g.total and single["acc"] == 1.0 and single["pred"] == "42"
    assert {k: single[k] for k in g.components} == dict(g.components)
    results = compute_score_batch(
        data_sources=FakeArray(["openai/gsm8k"] * 4),
        solution_strs=TEXTS,
        ground_truths=FakeArray(["42"] * 4),
        extra_infos=FakeArray([{"question": QUESTION}] * 4),
    )
    assert results[0] == single
    assert len({tuple(r) for r in results}) == 1  # same keys for every item (reward_extra_info)
    assert [r["score"] for r in results] == [grade(t, "42", question=QUESTION).total for t in TEXTS]
    assert compute_score_batch(["s"], [GOOD], ["42"]) == [compute_score("s", GOOD, "42")]


def test_verl_reward_kwargs_select_the_rubric():
    r = compute_score("s", GOOD, "42", None, rubric="seed")
    assert set(r) == {"score", "acc", "pred", "format_exact", "format_soft", "cast"}
    r = compute_score("s", WRONG, "42", rubric_options={"partial_credit": True}, unknown_kw=1)
    assert r["correctness"] > 0.0 and r["acc"] == 0.0
    with pytest.raises(ValueError, match=r"ground_truths\[0\]"):
        compute_score_batch(["s"], [GOOD], ["n/a"], on_error="raise")


# -- OpenRLHF convention ------------------------------------------------------------------


def test_openrlhf_strips_prompt_and_returns_lists_without_torch(monkeypatch):
    real = adapters.importlib.util.find_spec
    monkeypatch.setattr(
        adapters.importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    prompt = "<start_of_turn>user\nQ<end_of_turn>\n<start_of_turn>model\n"
    out = reward_func([prompt + GOOD, prompt + WRONG], [prompt, prompt], ["42", "42"])
    assert out["rewards"] == [grade(GOOD, "42").total, grade(WRONG, "42").total]
    assert out["scores"] == [1.0, 0.0]
    logs = out["extra_logs"]
    assert set(logs) == {f"dsa_cast/{c}" for c in RUBRICS["dsa-cast"].components} | {"dsa_cast/accuracy"}
    assert all(len(v) == 2 for v in logs.values())


def test_openrlhf_tensors_when_torch_is_installed():
    torch = pytest.importorskip("torch")
    out = reward_func(["p" + GOOD], ["p"], ["42"])
    assert isinstance(out["rewards"], torch.Tensor) and out["rewards"].dtype == torch.float32
    assert isinstance(out["extra_logs"]["dsa_cast/accuracy"], torch.Tensor)


def test_openrlhf_as_tensors_false_forces_lists_and_errors_name_label():
    assert reward_func(["p" + GOOD], ["p"], ["42"], as_tensors=False)["rewards"] == [10.0]
    with pytest.raises(ValueError, match=r"labels\[0\]"):
        reward_func(["p" + GOOD], ["p"], ["??"], as_tensors=False, on_error="raise")


def test_strip_prompt():
    assert strip_prompt("PROMPTabc", "PROMPT") == "abc"
    assert strip_prompt("  PROMPTabc", "PROMPT") == "abc"  # detokenised leading whitespace
    assert strip_prompt("abc", "zzz") == "abc"
    assert strip_prompt("abc", "") == "abc"


# -- concurrency and pickling -------------------------------------------------------------


def _sequential(fns, batches):
    return [[f(["p"] * len(b), b, answer=["42"] * len(b)) for f in fns] for b in batches]


BATCHES = [[GOOD, WRONG], [MALFORMED, GOOD, ""], [WRONG], [GOOD] * 5]


@pytest.mark.parametrize("factory", [tunix_rewards, trl_rewards])
def test_pickle_round_trip(factory):
    fns = factory()
    _sequential(fns, BATCHES[:1])  # populate the cache: it must not travel
    copies = pickle.loads(pickle.dumps(fns))
    assert [c.__name__ for c in copies] == [f.__name__ for f in fns]
    assert copies[0].grader is copies[1].grader  # still one shared grader after unpickling
    assert copies[0].grader.graded_batches == 0 and not copies[0].grader._cache
    assert _sequential(copies, BATCHES) == _sequential(fns, BATCHES)
    for f in (compute_score, compute_score_batch, reward_func):
        assert pickle.loads(pickle.dumps(f)) is f


def _call_all(fns, batch):
    return [f(["p"] * len(batch), batch, answer=["42"] * len(batch)) for f in fns]


def test_spawned_process_pool():
    fns = trl_rewards()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        remote = pool.starmap(_call_all, [(fns, b) for b in BATCHES])
        verl = pool.starmap(compute_score, [("s", GOOD, "42")])
    assert remote == _sequential(fns, BATCHES)
    assert verl == [compute_score("s", GOOD, "42")]


def test_thread_pool_and_asyncio_to_thread():
    fns = tunix_rewards()
    expected = _sequential(tunix_rewards(), BATCHES)
    jobs = [(i % len(BATCHES), f) for i in range(40) for f in fns]
    with ThreadPoolExecutor(max_workers=8) as ex:
        results = list(
            ex.map(
                lambda j: (
                    j[0],
                    j[1].__name__,
                    j[1](["p"] * len(BATCHES[j[0]]), BATCHES[j[0]], answer=["42"] * len(BATCHES[j[0]])),
                ),
                jobs,
            )
        )
    names = [f.__name__ for f in fns]
    for b, name, values in results:
        assert values == expected[b][names.index(name)]

    async def main():
        return await asyncio.gather(
            *(asyncio.to_thread(compute_score_batch, ["s"] * len(b), b, ["42"] * len(b)) for b in BATCHES)
        )

    assert asyncio.run(main()) == [compute_score_batch(["s"] * len(b), b, ["42"] * len(b)) for b in BATCHES]


def test_batch_grader_reports_type_errors_with_index():
    grader = BatchGrader(RUBRICS["dsa-cast"], adapters.AdapterConfig())
    with pytest.raises(TypeError, match=r"completions\[1\]"):
        grader.read_batch("t", [GOOD, 3], {"answer": ["1", "2"]})
    with pytest.raises(TypeError, match="one str"):
        grader.read_batch("t", GOOD, {"answer": ["1"]})


def test_grade_objects_are_what_grade_returns():
    grader = BatchGrader(RUBRICS["dsa-cast"], adapters.AdapterConfig())
    grades, fresh = grader.grades([GOOD], [Fraction(42)], [None])
    assert fresh and isinstance(grades[0], Grade) and grades[0] == grade(GOOD, Fraction(42))
    assert grader.grades([GOOD], [Fraction(42)], [None]) == (grades, False)


# -- the docs' runnable examples -----------------------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "adapters"
_TESTED_BLOCK = re.compile(r"<!-- test -->\n```python\n(.*?)```", re.DOTALL)


@pytest.mark.parametrize("page", ["tunix.md", "trl.md", "verl.md", "openrlhf.md"])
def test_docs_examples_run(page):
    text = (DOCS / page).read_text(encoding="utf-8")
    blocks = _TESTED_BLOCK.findall(text)
    assert blocks, f"docs/adapters/{page} has no tested example"
    for code in blocks:
        if "import numpy" in code:
            pytest.importorskip("numpy")  # the Tunix page uses real numpy columns
        exec(compile(code, f"docs/adapters/{page}", "exec"), {})


def _plain_signature(fn) -> str:
    """``name(a, b=1, *, c="x", **kw)``: the signature without annotations, as the docs write it."""
    import inspect

    parts, star = [], False
    for p in inspect.signature(fn).parameters.values():
        if p.kind is p.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        if p.kind is p.VAR_KEYWORD:
            parts.append(f"**{p.name}")
        elif p.default is p.empty:
            parts.append(p.name)
        elif p.default is adapters.END_MARKERS:
            parts.append(f"{p.name}=END_MARKERS")
        else:
            default = f'"{p.default}"' if isinstance(p.default, str) else repr(p.default)
            parts.append(f"{p.name}={default}")
    return f"{fn.__name__}({', '.join(parts)})"


@pytest.mark.parametrize(
    "page, fns",
    [
        ("tunix.md", [tunix_rewards]),
        ("trl.md", [trl_rewards]),
        ("verl.md", [compute_score, compute_score_batch]),
        ("openrlhf.md", [reward_func]),
    ],
)
def test_docs_state_the_real_signatures(page, fns):
    text = (DOCS / page).read_text(encoding="utf-8")
    for fn in fns:
        assert _plain_signature(fn) in text, _plain_signature(fn)


# -- issue 10: unreadable references, bytes, batch shapes -------------------------------------


def test_unreadable_reference_scores_the_minimum_and_is_logged_by_default(caplog):
    batch, refs = [GOOD, GOOD, GOOD], ["42", "not a number", b"\xff\xfe"]
    with caplog.at_level("WARNING", logger="dsa_cast.adapters"):
        tunix = [_tunix_call(f, batch, refs) for f in tunix_rewards()]
    assert [col[1] for col in tunix] == [0.0] * 5 and [col[2] for col in tunix] == [0.0] * 5
    assert sum(col[0] for col in tunix) == grade(GOOD, "42").total  # the readable item is graded
    logged = [r.getMessage() for r in caplog.records]
    assert any("answer[1]" in m and "minimum" in m for m in logged)
    assert any("answer[2]" in m and "not UTF-8" in m for m in logged)
    seed = [_tunix_call(f, batch, refs) for f in tunix_rewards("seed")]  # "not a number" pays 0 accuracy there
    assert sum(col[2] for col in seed) == RUBRICS["seed"].min_total == -5.0
    trl = [f(prompts=["p"] * 3, completions=batch, answer=refs) for f in trl_rewards()]
    assert [col[1] for col in trl] == [0.0] * 5
    out = reward_func(["p" + GOOD] * 3, ["p"] * 3, refs, as_tensors=False)
    assert out["rewards"][1:] == [0.0, 0.0] and out["rewards"][0] == 10.0
    assert compute_score("s", GOOD, "??")["score"] == 0.0
    assert [r["score"] for r in compute_score_batch(["s"] * 3, batch, refs)][1:] == [0.0, 0.0]
    grader = tunix_rewards()[0].grader
    grades, _ = grader.grades(*grader.read_batch("t", batch, {"answer": refs}))
    assert grades[1].issues == ("unreadable_reference",) and grades[1].correct is None


def test_on_error_raise_names_the_item_and_bad_values_are_refused():
    with pytest.raises(ValueError, match=r"answer\[2\]: bytes that are not UTF-8 text \(invalid byte 0xff"):
        _tunix_call(tunix_rewards(on_error="raise")[0], [GOOD] * 3, ["1", "2", b"\xff"])
    with pytest.raises(ValueError, match="on_error must be one of"):
        tunix_rewards(on_error="ignore")
    with pytest.raises(ValueError, match="on_error must be one of"):
        reward_func(["q"], ["p"], ["1"], on_error="skip")


def test_completion_bytes_that_are_not_utf8_name_the_item():
    fn = tunix_rewards()[0]
    with pytest.raises(ValueError, match=r"completions\[1\]: bytes that are not UTF-8"):
        fn(prompts=["p", "p"], completions=[GOOD.encode(), b"\xffx"], answer=["42", "42"])
    with pytest.raises(ValueError, match=r"solution_strs\[0\]: bytes that are not UTF-8"):
        compute_score_batch(["s"], [b"\xff"], ["1"])
    with pytest.raises(ValueError, match=r"'queries'\[0\]: bytes that are not UTF-8"):
        reward_func([b"\xff"], [""], ["1"])
    with pytest.raises(ValueError, match=r"grade_batch\(\): answers\[1\]: bytes that are not UTF-8"):
        grade_batch([GOOD, GOOD], ["42", b"\xff"])


def test_answer_column_present_but_none_says_so():
    fn = tunix_rewards()[0]
    with pytest.raises(KeyError, match="the batch's 'answer' column is None"):
        fn(prompts=["p"], completions=[GOOD], answer=None)


def test_mappings_and_sets_are_not_columns():
    with pytest.raises(TypeError, match="grade_batch\\(\\): answers must be a sequence .* got one dict"):
        grade_batch([GOOD], {"a": 1})
    with pytest.raises(TypeError, match="got one dict"):
        grade_batch({GOOD: 1}, None)
    with pytest.raises(TypeError, match="got one set"):
        tunix_rewards()[0](prompts=["p"], completions=[GOOD], answer={"42"})
    with pytest.raises(TypeError, match="got one dict"):
        reward_func({"q": 1}, ["p"], ["1"])


def test_trl_content_as_a_list_of_plain_strings_is_its_text():
    msg = [
        {
            "role": "assistant",
            "content": [GOOD[:50], {"type": "text", "text": GOOD[50:]}, {"type": "image", "url": "x"}],
        }
    ]
    assert completion_text(msg) == GOOD
    fns = trl_rewards()
    assert sum(f(prompts=["p"], completions=[msg], answer=["42"])[0] for f in fns) == grade(GOOD, "42").total
    with pytest.raises(TypeError, match="content part 1 must be a str or a mapping, got int"):
        completion_text([{"role": "assistant", "content": ["a", 3]}])
