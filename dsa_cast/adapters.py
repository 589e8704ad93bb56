"""Reward adapters for four RL stacks: Tunix, TRL, verl and OpenRLHF.

Each adapter follows its framework's documented calling convention and needs no framework
import (numpy arrays and torch tensors are handled by duck typing; torch is imported only to
*return* tensors to OpenRLHF, and only when it is installed). Pages with copy-paste examples:
``docs/adapters/{tunix,trl,verl,openrlhf}.md``.

* :func:`tunix_rewards` / :func:`trl_rewards`: one named reward callable per rubric component,
  so the trainer logs each as ``rewards/<name>`` and its sum is ``grade(...).total``. All the
  callables of one call share a :class:`BatchGrader`, which grades a batch once and serves the
  other components from a small, lock-protected cache kept on that object (no global state).
* :func:`compute_score` / :func:`compute_score_batch`: verl's custom reward function (single
  and batch reward managers), returning ``{"score": total, ...breakdown}``.
* :func:`reward_func`: OpenRLHF's ``reward_func.py`` convention (``--reward.remote_url``).

Every adapter strips a trailing run of chat-template stop markers (``<end_of_turn>``,
``<|im_end|>``, ``<eos>``, ...: :data:`dsa_cast.markers.END_MARKERS`) from each completion before
grading, so a completion decoded with its stop token scores as one without; ``end_markers=()``
turns this off.

Everything here is plain module-level classes and functions: picklable (spawned worker
processes), thread-safe (worker threads, ``asyncio.to_thread``), and free of signal-based
timeouts (grading is bounded by the core's own limits).
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from dsa_cast.columns import column, plain_value, sequence
from dsa_cast.markers import END_MARKERS, check_end_markers, strip_end_markers
from dsa_cast.rubrics import Grade, Rubric, RubricCode, get_rubric, resolve_rubric

log = logging.getLogger(__name__)

ON_ERROR = ("min", "raise")
"""What an RL adapter does with an item whose reference it cannot read: ``"min"`` (default) scores
that item with the rubric's minimum (:meth:`~dsa_cast.rubrics.Rubric.minimum_grade`, issue
``unreadable_reference``) and logs a warning naming it, so one bad dataset row does not end a long
run; ``"raise"`` raises ``TypeError``/``ValueError`` naming the item (``answer[3]``)."""

__all__ = [
    "ON_ERROR",
    "AdapterConfig",
    "BatchGrader",
    "ComponentReward",
    "TunixReward",
    "TRLReward",
    "tunix_rewards",
    "trl_rewards",
    "compute_score",
    "compute_score_batch",
    "reward_func",
    "completion_text",
    "strip_prompt",
]


# --------------------------------------------------------------------------------------
# Shared plumbing.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdapterConfig:
    """How an adapter reads a batch.

    Attributes:
      answer_field: batch column holding the reference (GSM8K ``####`` text, a number...).
        TRL's math datasets often call it ``solution``.
      question_field: batch column holding the problem text, passed to the rubric (``dsa-cast``
        grounds Evidence claims in the question's numbers); ignored when absent.
      cache_batches: how many recent batches a :class:`BatchGrader` keeps graded (the N
        component functions are called one after another on the same batch: 1 suffices; a
        few more cover interleaved train/eval calls from several threads).
      end_markers: stop markers stripped from the end of each completion before grading
        (:func:`dsa_cast.markers.strip_end_markers`); ``()`` keeps completions as they are.
      on_error: an item whose reference cannot be read: ``"min"`` scores it with the rubric's
        minimum and logs it, ``"raise"`` raises (see :data:`ON_ERROR`).
    """

    answer_field: str = "answer"
    question_field: str | None = "question"
    cache_batches: int = 4
    end_markers: tuple[str, ...] = END_MARKERS
    on_error: str = "min"

    def __post_init__(self) -> None:
        if not isinstance(self.answer_field, str) or not self.answer_field:
            raise ValueError(f"answer_field must be a non-empty str, got {self.answer_field!r}")
        if self.question_field is not None and not isinstance(self.question_field, str):
            raise ValueError(f"question_field must be a str or None, got {self.question_field!r}")
        if isinstance(self.cache_batches, bool) or not isinstance(self.cache_batches, int) or self.cache_batches < 1:
            raise ValueError(f"cache_batches must be an int >= 1, got {self.cache_batches!r}")
        object.__setattr__(self, "end_markers", check_end_markers(self.end_markers))
        _check_on_error(self.on_error)


def _check_on_error(on_error: object) -> str:
    if not isinstance(on_error, str) or on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {', '.join(map(repr, ON_ERROR))}, got {on_error!r}")
    return on_error


class _Unreadable:
    """A batch cell that could not be read as text (bytes that are not UTF-8): the item's
    reference is unreadable, which ``on_error`` decides about when it is graded."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"<unreadable: {self.reason}>"


def _column(values: object, n: int, name: str, *, unreadable_ok: bool = False) -> list[object]:
    """One plain value per completion from batch column ``name`` (:func:`dsa_cast.columns.column`);
    with ``unreadable_ok`` a cell that is not UTF-8 becomes an :class:`_Unreadable` marker."""
    return column(values, n, f"batch column {name!r}", unreadable=_Unreadable if unreadable_ok else None)


def completion_text(completion: object) -> str:
    """The text of one completion: a str, or a conversational list of messages.

    For TRL's conversational format (``[{"role": "assistant", "content": ...}, ...]``) the
    assistant messages' contents are joined with newlines (a single message is just its
    content); a content given as parts (``[{"type": "text", "text": ...}]``) joins its text parts.
    """
    completion = plain_value(completion)
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        completion = [completion]
    if isinstance(completion, Sequence) and not isinstance(completion, (bytes, bytearray)):
        texts = []
        for i, msg in enumerate(completion):
            if not isinstance(msg, Mapping) or "content" not in msg:
                raise TypeError(
                    f"conversational completion message {i} must be a mapping with 'content', got {type(msg).__name__}"
                )
            if msg.get("role", "assistant") != "assistant":
                continue
            texts.append(_content_text(msg["content"]))
        return "\n".join(texts)
    raise TypeError(f"a completion must be a str or a list of messages, got {type(completion).__name__}")


def _content_text(content: object) -> str:
    content = plain_value(content)
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        texts = []
        for j, part in enumerate(content):
            part = plain_value(part)
            if isinstance(part, str):  # a plain string part is text too
                texts.append(part)
            elif isinstance(part, Mapping):
                if part.get("type", "text") == "text" and "text" in part:  # images etc. carry none
                    texts.append(_content_text(part["text"]))
            else:
                raise TypeError(f"message content part {j} must be a str or a mapping, got {type(part).__name__}")
        return "".join(texts)
    raise TypeError(f"message content must be a str or a list of parts, got {type(content).__name__}")


def _rubric(rubric: str | Rubric, options: Mapping[str, object]) -> Rubric:
    if options:
        if not isinstance(rubric, str):
            raise TypeError(
                "rubric options can only be given with a rubric name; "
                "configure a Rubric object through its own fields instead"
            )
        return get_rubric(rubric, **options)
    return resolve_rubric(rubric)


def _uses_reference(rubric: Rubric) -> bool:
    """Whether the rubric reads references at all (the ``format`` rubric does not).

    Decided by behaviour, not by type: a rubric that reports ``correct=None`` for a completion
    whose answer equals a given reference ignores references."""
    probe = rubric.score("<answer>1</answer>", 1)
    return probe.correct is not None


# A batch as a cache key: its texts, its references (made hashable) and its questions.
_BatchKey = tuple[tuple[str, ...], tuple[object, ...], tuple[str | None, ...]]


def _hashable(value: object) -> object:
    try:
        hash(value)
    except TypeError:
        return ("unhashable", type(value).__name__, repr(value))
    return value


def _component_name(rubric: Rubric, component: str) -> str:
    raw = f"{rubric.name}_{component}"
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in raw)


def _score_all(
    rubric: Rubric,
    texts: Sequence[str],
    refs: Sequence[object],
    questions: Sequence[str | None],
    where: str,
    on_error: str = "raise",
) -> list[Grade]:
    """Grade a batch. An item whose reference cannot be read raises an error naming it
    (``where[i]``), or with ``on_error="min"`` gets the rubric's minimum grade and a logged
    warning. A rubric with ``reference_value`` (dsa-cast) reads each distinct reference text
    once: the G generations of a prompt share it."""
    score = rubric.score
    read = getattr(rubric, "reference_value", None)
    values: dict[str, object] = {}
    minimum: Grade | None = None
    out = []
    for i, (t, a, q) in enumerate(zip(texts, refs, questions, strict=True)):
        try:
            if isinstance(a, _Unreadable):
                raise ValueError(a.reason)
            if read is not None and isinstance(a, str):
                if a not in values:
                    values[a] = read(a)
                a = values[a]
            out.append(score(t, a, q))
        except (TypeError, ValueError) as err:
            if on_error == "raise":
                raise type(err)(f"{where}[{i}]: {err}") from err
            log.warning(
                "%s[%d]: %s; scored with the rubric's minimum (%g) instead (on_error='min')",
                where,
                i,
                err,
                rubric.min_total,
            )
            if minimum is None:
                minimum = rubric.minimum_grade(RubricCode.UNREADABLE_REFERENCE)
            out.append(minimum)
    return out


# --------------------------------------------------------------------------------------
# Batch grading with a per-adapter cache.
# --------------------------------------------------------------------------------------


class BatchGrader:
    """Grades whole batches with one rubric, remembering the last few batches.

    The cache key is the batch's content: the completions, the references and the questions
    (prompts are not part of it because a grade does not depend on them). Lookups compare
    tuples of the very string objects the trainer passes, so a hit costs O(batch) pointer
    comparisons. The cache is bounded (``config.cache_batches``) and guarded by a lock; grading
    itself runs outside the lock, so threads never wait on each other's grading. Pickling keeps
    the rubric and config and drops the cache and lock (a spawned worker starts empty).

    It also tells the component functions which of them is the first call of a *round* (one
    trainer step calling every function on one batch, :meth:`starts_round`), so that per-batch
    logging happens exactly once per step even when an identical batch comes back from the cache.
    """

    def __init__(self, rubric: Rubric, config: AdapterConfig) -> None:
        self.rubric = rubric
        self.config = config
        self.uses_reference = _uses_reference(rubric)
        self._lock = threading.Lock()
        self._cache: OrderedDict[_BatchKey, tuple[Grade, ...]] = OrderedDict()
        self._round: tuple[_BatchKey | None, set[str]] = (None, set())  # (batch key, components called)
        self.graded_batches = 0  # batches graded (not served from the cache): for tests/metrics

    def __getstate__(self) -> dict[str, object]:
        return {"rubric": self.rubric, "config": self.config, "uses_reference": self.uses_reference}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.rubric = state["rubric"]
        self.config = state["config"]
        self.uses_reference = state["uses_reference"]
        self._lock = threading.Lock()
        self._cache = OrderedDict()
        self._round = (None, set())
        self.graded_batches = 0

    def read_batch(
        self, who: str, completions: object, kwargs: Mapping[str, object]
    ) -> tuple[list[str], list[object], list[str | None]]:
        """Texts, references and questions of a batch, validated, one per completion."""
        if completions is None:
            raise TypeError(f"{who}: missing 'completions'")
        texts = []
        markers = self.config.end_markers
        for i, c in enumerate(sequence(completions, f"{who}: completions")):
            try:
                texts.append(strip_end_markers(completion_text(c), markers))
            except (TypeError, ValueError) as err:
                raise type(err)(f"{who}: completions[{i}]: {err}") from err
        n = len(texts)
        field = self.config.answer_field
        if field in kwargs and kwargs[field] is not None:
            answers = _column(kwargs[field], n, field, unreadable_ok=True)
        elif self.uses_reference:
            if field in kwargs:  # present, but None
                raise KeyError(
                    f"{who}: the batch's {field!r} column is None, not one reference per "
                    f"completion; pass the references, or use rubric='format'"
                )
            cols = ", ".join(sorted(k for k in kwargs if not callable(kwargs[k]))) or "none"
            raise KeyError(
                f"{who}: the batch has no {field!r} column (columns: {cols}); pass "
                f"answer_field=... to name the reference column, or use rubric='format'"
            )
        else:
            answers = [None] * n
        qf = self.config.question_field
        questions: list[str | None] = [None] * n
        if qf is not None and kwargs.get(qf) is not None:
            questions = [q if isinstance(q, str) else None for q in _column(kwargs[qf], n, qf, unreadable_ok=True)]
        return texts, answers, questions

    @staticmethod
    def _key(texts: list[str], answers: list[object], questions: list[str | None]) -> _BatchKey:
        return (tuple(texts), tuple(map(_hashable, answers)), tuple(questions))

    def starts_round(
        self, texts: list[str], answers: list[object], questions: list[str | None], component: str
    ) -> bool:
        """Whether this call of ``component`` on this batch opens a new round.

        A round is the sequence of component calls a trainer makes on one batch. It opens when
        the batch differs from the current round's, or when a component that was already called
        on it is called again (the same batch came back for a new step). Unlike "graded now",
        this is true once per step even when the grades come from the cache (batches A, B, A)."""
        key = self._key(texts, answers, questions)
        with self._lock:
            current, called = self._round
            if key != current or component in called:
                self._round = (key, {component})
                return True
            called.add(component)
            return False

    def grades(
        self, texts: list[str], answers: list[object], questions: list[str | None], who: str = "reward"
    ) -> tuple[tuple[Grade, ...], bool]:
        """The batch's grades and whether they were computed now (False: from the cache)."""
        key = self._key(texts, answers, questions)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit, False
        out = _score_all(
            self.rubric, texts, answers, questions, f"{who}: {self.config.answer_field}", self.config.on_error
        )
        result = tuple(out)
        with self._lock:
            self._cache[key] = result
            self._cache.move_to_end(key)
            while len(self._cache) > self.config.cache_batches:
                self._cache.popitem(last=False)
            self.graded_batches += 1
        return result, True


class ComponentReward:
    """One rubric component as a reward function (base of the Tunix and TRL callables).

    ``__name__`` is ``<rubric>_<component>`` with non-identifier characters as ``_``
    (``dsa_cast_correctness``): trainers use it as the metric name."""

    def __init__(self, grader: BatchGrader, component: str) -> None:
        if component not in grader.rubric.components:
            raise ValueError(
                f"rubric {grader.rubric.name!r} has no component {component!r}; components: {grader.rubric.components}"
            )
        self.grader = grader
        self.component = component
        self.__name__ = self.__qualname__ = _component_name(grader.rubric, component)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.__name__}>"


class TunixReward(ComponentReward):
    """Tunix reward function: ``fn(prompts=..., completions=..., **batch_columns, mode=...)``.

    Extra dataset columns arrive as numpy arrays repeated per generation; the reference comes
    from ``config.answer_field``. Returns one float per completion, never None (an item without
    a reference is graded without one: its correctness is 0)."""

    def __call__(self, prompts: object = None, completions: object = None, **kwargs: Any) -> list[float]:
        who = f"tunix reward {self.__name__}"
        texts, answers, questions = self.grader.read_batch(who, completions, kwargs)
        grades, _ = self.grader.grades(texts, answers, questions, who)
        c = self.component
        return [g.components[c] for g in grades]


class TRLReward(ComponentReward):
    """TRL ``GRPOTrainer`` reward function: ``fn(prompts, completions, completion_ids=None, **kwargs)``.

    Completions may be plain strings or conversational (lists of messages). Returns one float
    per completion, or None for an item without a reference when the rubric reads references
    (TRL then ignores this function for that item). When the trainer passes ``log_extra`` /
    ``log_metric``, the batch's breakdown is logged once per step (by the first component
    function called on the batch, :meth:`BatchGrader.starts_round`): columns
    ``dsa_cast/predicted``, ``dsa_cast/correct``, ``dsa_cast/issues``; metrics
    ``dsa_cast/accuracy``, ``dsa_cast/clean_rate`` and ``dsa_cast/total`` (the mean reward over
    the items TRL scores, i.e. without the reference-less items it skips)."""

    def __call__(
        self, prompts: object = None, completions: object = None, completion_ids: object = None, **kwargs: Any
    ) -> list[float | None]:
        who = f"TRL reward {self.__name__}"
        texts, answers, questions = self.grader.read_batch(who, completions, kwargs)
        grades, _ = self.grader.grades(texts, answers, questions, who)
        skip = self.grader.uses_reference
        scored = [not (skip and a is None) for a in answers]
        log_extra, log_metric = kwargs.get("log_extra"), kwargs.get("log_metric")
        if (callable(log_extra) or callable(log_metric)) and self.grader.starts_round(
            texts, answers, questions, self.component
        ):
            _trl_log(grades, scored, log_extra, log_metric)
        c = self.component
        return [g.components[c] if s else None for g, s in zip(grades, scored, strict=True)]


def _trl_log(grades: Sequence[Grade], scored: Sequence[bool], log_extra: object, log_metric: object) -> None:
    """TRL's hooks: ``log_extra(column, values)`` adds a completions-table column (one value
    per completion), ``log_metric(name, value)`` records a scalar. ``dsa_cast/total`` averages
    the ``scored`` items only, as TRL's own ``reward`` leaves out items every function skipped."""
    if callable(log_extra):
        log_extra("dsa_cast/predicted", [g.predicted if g.predicted is not None else "" for g in grades])
        log_extra("dsa_cast/correct", [g.correct for g in grades])
        log_extra("dsa_cast/issues", [", ".join(g.issues) for g in grades])
    if callable(log_metric) and grades:
        judged = [g.correct for g in grades if g.correct is not None]
        if judged:
            log_metric("dsa_cast/accuracy", sum(judged) / len(judged))
        log_metric("dsa_cast/clean_rate", sum(not g.issues for g in grades) / len(grades))
        totals = [g.total for g, s in zip(grades, scored, strict=True) if s]
        if totals:
            log_metric("dsa_cast/total", sum(totals) / len(totals))


_Reward = TypeVar("_Reward", bound="ComponentReward")


def _component_rewards(
    cls: type[_Reward], rubric: str | Rubric, config: AdapterConfig, options: Mapping[str, object]
) -> list[_Reward]:
    grader = BatchGrader(_rubric(rubric, options), config)
    return [cls(grader, c) for c in grader.rubric.components]


def tunix_rewards(
    rubric: str | Rubric = "dsa-cast",
    *,
    answer_field: str = "answer",
    question_field: str | None = "question",
    cache_batches: int = 4,
    end_markers: Iterable[str] = END_MARKERS,
    on_error: str = "min",
    **options: object,
) -> list[TunixReward]:
    """Reward functions for Tunix's ``GRPOLearner(reward_fns=...)``: one per rubric component.

    Tunix sums them, so the summed reward is ``grade(...).total``; each is logged as
    ``rewards/<rubric>_<component>``. ``options`` are rubric fields (``get_rubric(rubric,
    **options)``), e.g. ``partial_credit=True``. ``end_markers``: see :class:`AdapterConfig`;
    ``on_error``: see :data:`ON_ERROR`.
    """
    config = AdapterConfig(answer_field, question_field, cache_batches, check_end_markers(end_markers), on_error)
    return _component_rewards(TunixReward, rubric, config, options)


def trl_rewards(
    rubric: str | Rubric = "dsa-cast",
    *,
    answer_field: str = "answer",
    question_field: str | None = "question",
    cache_batches: int = 4,
    end_markers: Iterable[str] = END_MARKERS,
    on_error: str = "min",
    **options: object,
) -> list[TRLReward]:
    """Reward functions for TRL's ``GRPOTrainer(reward_funcs=...)``: one per rubric component.

    TRL sums them (with unit ``reward_weights``) to ``grade(...).total``. The reference column
    is ``answer_field`` (``"answer"``; TRL's math datasets use ``"solution"``). Picklable.
    ``end_markers``: see :class:`AdapterConfig`; ``on_error``: see :data:`ON_ERROR`.
    """
    config = AdapterConfig(answer_field, question_field, cache_batches, check_end_markers(end_markers), on_error)
    return _component_rewards(TRLReward, rubric, config, options)


# --------------------------------------------------------------------------------------
# verl.
# --------------------------------------------------------------------------------------


def _named_rubric(rubric: str | Rubric, rubric_options: Mapping[str, object] | None) -> Rubric:
    return _rubric(rubric, dict(rubric_options or {}))


def _verl_question(extra_info: object) -> str | None:
    if isinstance(extra_info, Mapping):
        q = plain_value(extra_info.get("question"))
        return q if isinstance(q, str) else None
    return None


def _verl_result(g: Grade) -> dict[str, float | str]:
    out: dict[str, float | str] = {
        "score": g.total,
        "acc": 1.0 if g.correct else 0.0,
        "pred": g.predicted if g.predicted is not None else "",
    }
    for name, value in g.components.items():
        out[name] = value
    return out


def compute_score(
    data_source: object,
    solution_str: str,
    ground_truth: object,
    extra_info: object = None,
    *,
    rubric: str | Rubric = "dsa-cast",
    rubric_options: Mapping[str, object] | None = None,
    end_markers: Iterable[str] = END_MARKERS,
    on_error: str = "min",
    **kwargs: Any,
) -> dict[str, float | str]:
    """verl custom reward function (``custom_reward_function.name: compute_score``).

    Returns ``{"score": total, "acc": 1.0|0.0, "pred": predicted-or-"", <component>: value...}``
    with the same keys for every item (verl stacks them into ``reward_extra_info``). The
    ``data_source`` is not used (every source is graded with ``rubric``); a ``question`` in
    ``extra_info`` is passed to the rubric. ``rubric`` / ``rubric_options`` / ``end_markers`` /
    ``on_error`` (see :data:`ON_ERROR`) can be set from ``reward_kwargs``; other keyword arguments
    are accepted and ignored.
    """
    r = _named_rubric(rubric, rubric_options)
    text = strip_end_markers(completion_text(solution_str), check_end_markers(end_markers))
    ref = _column([ground_truth], 1, "ground_truth", unreadable_ok=True)
    grades = _score_all(
        r, [text], ref, [_verl_question(extra_info)], "compute_score: ground_truth", _check_on_error(on_error)
    )
    return _verl_result(grades[0])


def compute_score_batch(
    data_sources: Sequence[object],
    solution_strs: Sequence[str],
    ground_truths: Sequence[object],
    extra_infos: Sequence[object] | None = None,
    *,
    rubric: str | Rubric = "dsa-cast",
    rubric_options: Mapping[str, object] | None = None,
    end_markers: Iterable[str] = END_MARKERS,
    on_error: str = "min",
    **kwargs: Any,
) -> list[dict[str, float | str]]:
    """verl batch reward function (the ``batch`` reward manager of verl before 0.9): the
    plural arguments verl's ``BatchRewardManager`` passes, one result dict per item (see
    :func:`compute_score`)."""
    r = _named_rubric(rubric, rubric_options)
    markers = check_end_markers(end_markers)
    texts = []
    for i, s in enumerate(sequence(solution_strs, "solution_strs")):
        try:
            texts.append(strip_end_markers(completion_text(s), markers))
        except (TypeError, ValueError) as err:
            raise type(err)(f"compute_score_batch: solution_strs[{i}]: {err}") from err
    n = len(texts)
    refs = _column(ground_truths, n, "ground_truths", unreadable_ok=True)
    infos = _column(extra_infos, n, "extra_infos", unreadable_ok=True) if extra_infos is not None else [None] * n
    questions = [_verl_question(info) for info in infos]
    grades = _score_all(r, texts, refs, questions, "compute_score_batch: ground_truths", _check_on_error(on_error))
    return [_verl_result(g) for g in grades]


# --------------------------------------------------------------------------------------
# OpenRLHF.
# --------------------------------------------------------------------------------------


def strip_prompt(query: str, prompt: str) -> str:
    """The response part of an OpenRLHF query (prompt + response).

    The prompt is removed when the query starts with it, else after its first occurrence
    (detokenisation can change leading whitespace); a query that does not contain the prompt
    is returned whole."""
    if prompt and query.startswith(prompt):
        return query[len(prompt) :]
    k = query.find(prompt) if prompt else -1
    if k >= 0:
        return query[k + len(prompt) :]
    return query


def _as_tensors(values: dict[str, list[float]], as_tensors: bool | None) -> dict[str, Any]:
    use = importlib.util.find_spec("torch") is not None if as_tensors is None else as_tensors
    if not use:
        return values
    import torch  # only to hand OpenRLHF the tensors it expects

    return {k: torch.tensor(v, dtype=torch.float32) for k, v in values.items()}


def reward_func(
    queries: Sequence[str],
    prompts: Sequence[str],
    labels: Sequence[object],
    *,
    rubric: str | Rubric = "dsa-cast",
    rubric_options: Mapping[str, object] | None = None,
    as_tensors: bool | None = None,
    end_markers: Iterable[str] = END_MARKERS,
    on_error: str = "min",
    **kwargs: Any,
) -> dict[str, Any]:
    """OpenRLHF reward function (``--reward.remote_url reward_func.py``, ``--data.label_key answer``).

    ``queries`` are prompt + response, decoded by OpenRLHF with ``skip_special_tokens=False``:
    the prompt is stripped (:func:`strip_prompt`) and so are trailing stop markers such as
    ``<end_of_turn>`` (``end_markers``) before grading against ``labels``. Returns
    ``{"rewards": totals, "scores": 1.0 if correct else 0.0 (OpenRLHF's 0-1 score for dynamic
    filtering), "extra_logs": {"dsa_cast/<component>": ...,
    "dsa_cast/accuracy": ...}}``, each one value per query: ``torch.float32`` tensors when torch
    is installed (OpenRLHF's own convention), plain lists otherwise; ``as_tensors`` forces one.
    ``on_error``: see :data:`ON_ERROR`.
    """
    qs = sequence(queries, "queries")
    n = len(qs)
    qs = _column(qs, n, "queries")
    ps = _column(prompts, n, "prompts") if prompts is not None else [""] * n
    refs = _column(labels, n, "labels", unreadable_ok=True) if labels is not None else [None] * n
    r = _named_rubric(rubric, rubric_options)
    markers = check_end_markers(end_markers)
    texts = []
    for i, (q, p) in enumerate(zip(qs, ps, strict=True)):
        try:
            texts.append(strip_end_markers(strip_prompt(completion_text(q), p if isinstance(p, str) else ""), markers))
        except (TypeError, ValueError) as err:
            raise type(err)(f"reward_func: queries[{i}]: {err}") from err
    grades = _score_all(r, texts, refs, [None] * n, "reward_func: labels", _check_on_error(on_error))
    columns: dict[str, list[float]] = {
        "rewards": [g.total for g in grades],
        "scores": [1.0 if g.correct else 0.0 for g in grades],
    }
    logs = {f"dsa_cast/{c}": [g.components[c] for g in grades] for c in r.components}
    logs["dsa_cast/accuracy"] = columns["scores"]
    out = _as_tensors(columns, as_tensors)
    out["extra_logs"] = _as_tensors(logs, as_tensors)
    return out
