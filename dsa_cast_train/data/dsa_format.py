"""The DSA response format and the Gemma chat template used for training and sampling.

A DSA response is a ``<reasoning>`` block holding four headed sections in a fixed order, then an
``<answer>`` block holding only the final value. Prompts follow the Gemma chat turns used by the
seed notebook: Gemma has no system role, so the system prompt opens the user turn.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsa_cast.schema import DSA

# The tags and headings are the grader's (dsa_cast.schema.DSA), so training data, prompts and
# grading cannot drift apart.
REASONING_START = f"<{DSA.reasoning_tag}>"
REASONING_END = f"</{DSA.reasoning_tag}>"
ANSWER_START = f"<{DSA.answer_tag}>"
ANSWER_END = f"</{DSA.answer_tag}>"
DSA_TAGS: tuple[str, ...] = (REASONING_START, REASONING_END, ANSWER_START, ANSWER_END)
"""The four block tags, in the order they appear in a response."""
SECTION_HEADINGS: tuple[str, ...] = tuple(f"{name}:" for name in DSA.sections)
"""``Plan:``, ``Reasoning:``, ``Evidence:``, ``Sanity_check:``: the schema's sections, in order."""
PREFILL = f"{REASONING_START}\n"
"""What a pre-filled prompt ends with (``data.prefill_reasoning``); the completion continues after it,
so grading puts it back in front (:func:`dsa_cast_train.evaluate.completion_for_grading`)."""
CALC_PREFIX = "CALC:"

START_OF_TURN = "<start_of_turn>"
END_OF_TURN = "<end_of_turn>"
USER_TURN = f"{START_OF_TURN}user\n"
MODEL_TURN = f"{START_OF_TURN}model\n"

SYSTEM_PROMPT = (
    "You are a careful math solver. Answer in exactly this format and nothing else:\n"
    f"{REASONING_START}\n"
    "Plan:\n"
    "a short numbered list of the steps you will take\n"
    "Reasoning:\n"
    "the worked solution, one step per line\n"
    "Evidence:\n"
    f"one line per calculation, written as {CALC_PREFIX} expression = result\n"
    "Sanity_check:\n"
    "restate the final value and check it against what the question asks\n"
    f"{REASONING_END}\n"
    f"{ANSWER_START}\n"
    "the final numeric value only, written once\n"
    f"{ANSWER_END}"
)
"""The DSA instruction placed at the top of the user turn (Gemma has no system role)."""


@dataclass(frozen=True)
class Example:
    """One supervised item: the question, the full DSA response (without ``<end_of_turn>``) and
    the bare final answer used by rewards and evaluation.

    ``prompt`` is empty for ordinary items (the prompt is built from ``question`` with
    :func:`build_prompt`); it holds the exact prompt text of a prebuilt chat record, which is
    then used verbatim so that no second system prompt is added.
    """

    question: str
    response: str
    answer: str
    source: str = ""
    id: str = ""
    prompt: str = ""

    def prompt_text(self, *, system_prompt: str = SYSTEM_PROMPT, prefill: bool = False) -> str:
        """The prompt for this item: the prebuilt one if present, else :func:`build_prompt`."""
        if self.prompt:
            return self.prompt + (PREFILL if prefill else "")
        return build_prompt(self.question, system_prompt=system_prompt, prefill=prefill)


def build_prompt(question: str, *, system_prompt: str = SYSTEM_PROMPT, prefill: bool = False) -> str:
    """Gemma chat prompt ending at the model turn, optionally pre-filled with ``<reasoning>\\n``.

    ``<start_of_turn>user\\n{system}\\n\\n{question}<end_of_turn>\\n<start_of_turn>model\\n``; an
    empty ``system_prompt`` leaves the user turn holding only the question.
    """
    user = f"{system_prompt}\n\n{question}" if system_prompt else question
    prompt = f"{USER_TURN}{user}{END_OF_TURN}\n{MODEL_TURN}"
    return prompt + (PREFILL if prefill else "")


def render_response(plan: str, reasoning: str, evidence: str, sanity_check: str, answer: str) -> str:
    """Assemble a DSA response from the four section bodies and the final value."""
    bodies = (plan, reasoning, evidence, sanity_check)
    sections = "\n".join(f"{heading}\n{body.strip()}" for heading, body in zip(SECTION_HEADINGS, bodies))
    return (
        f"{REASONING_START}\n{sections}\n{REASONING_END}\n"
        f"{ANSWER_START}\n{answer.strip()}\n{ANSWER_END}"
    )


def ensure_block(text: str, start: str, end: str) -> str:
    """``text`` unchanged if it already holds both tags, else its stripped body wrapped in them."""
    if start in text and end in text:
        return text.strip()
    return f"{start}\n{text.strip()}\n{end}"


def block_body(text: str, start: str, end: str) -> str | None:
    """The stripped text between the first ``start`` and the next ``end``; None if absent."""
    i = text.find(start)
    if i < 0:
        return None
    j = text.find(end, i + len(start))
    if j < 0:
        return None
    return text[i + len(start) : j].strip()
