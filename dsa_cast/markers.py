"""End-of-turn and end-of-sequence markers that frameworks leave at the end of decoded text.

A framework that decodes generated tokens with ``skip_special_tokens=False`` (OpenRLHF decodes
prompt + response that way) hands the reward function a completion ending in the chat
template's stop marker: ``...</answer><end_of_turn>`` for Gemma, ``...<|im_end|>`` for Qwen.
The rubric sees that marker as text after the answer block, so a completion that ended normally
would score less than the same completion cut at the length limit. The adapters therefore strip
a trailing run of these markers (and the whitespace between them) before grading; the list is
configurable (``end_markers=...``; ``()`` turns stripping off).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["END_MARKERS", "strip_end_markers", "check_end_markers"]

END_MARKERS: tuple[str, ...] = (
    "<end_of_turn>",  # Gemma: end of a chat turn
    "<eos>",  # Gemma: end of sequence
    "</s>",  # Llama 2, Mistral, T5, SentencePiece default
    "<|im_end|>",  # ChatML (Qwen, ...): end of a turn
    "<|endoftext|>",  # GPT-2 family, Qwen's end of sequence / padding
    "<|eot_id|>",  # Llama 3: end of a turn
    "<|eom_id|>",  # Llama 3: end of a tool-call message
    "<|end_of_text|>",  # Llama 3: end of sequence
    "<|end|>",  # Phi-3: end of a turn
    "<pad>",  # Gemma / T5 padding, when padded ids are decoded too
)
"""Stop markers of common chat templates, stripped from the end of a completion by default."""


def check_end_markers(markers: Iterable[str], where: str = "end_markers") -> tuple[str, ...]:
    """``markers`` as a tuple of non-empty strings, or ``ValueError``/``TypeError`` naming ``where``.

    Accepts any iterable of str (a list, a tuple, an OmegaConf ``ListConfig`` from a verl
    config); a single str is refused because iterating it would give characters."""
    if isinstance(markers, (str, bytes)):
        raise TypeError(f"{where} must be a sequence of str, got one {type(markers).__name__}")
    try:
        out = tuple(markers)
    except TypeError:
        raise TypeError(f"{where} must be a sequence of str, got {type(markers).__name__}") from None
    for i, m in enumerate(out):
        if not isinstance(m, str) or not m:
            raise ValueError(f"{where}[{i}] must be a non-empty str, got {m!r}")
    return out


def strip_end_markers(text: str, markers: tuple[str, ...] = END_MARKERS) -> str:
    """``text`` without the trailing run of ``markers`` and the whitespace around them.

    Only the end is touched: ``"...</answer><end_of_turn>\\n<eos>"`` becomes
    ``"...</answer>"``; a text that does not end (whitespace aside) in a marker is returned as it
    is, and a marker anywhere else stays (the rubric judges it). Linear in the length stripped.
    """
    end = len(text)
    stripped = False
    while True:
        j = end
        while j > 0 and text[j - 1].isspace():
            j -= 1
        for m in markers:
            if text.endswith(m, 0, j):
                end = j - len(m)
                stripped = True
                break
        else:
            break
    if not stripped:
        return text
    while end > 0 and text[end - 1].isspace():
        end -= 1
    return text[:end]
