"""DSA training data: GSM8K and competition loaders, GSM8K -> DSA conversion, the Gemma chat
template, tokenisation with an exact loss mask, and grain pipelines.

Importing this package pulls in numpy only; grain is imported inside the pipeline functions and
HuggingFace ``datasets`` / TFDS only when asked for. The rules are documented in ``docs/data.md``.
"""

from dsa_cast_train.data.competition import (
    ANSWER_FIELDS,
    CSV_COLUMNS,
    QUESTION_FIELDS,
    REASONING_FIELDS,
    LoadResult,
    load_dsa_jsonl,
    load_extra_csv,
    record_to_example,
    split_examples,
)
from dsa_cast_train.data.dsa_format import (
    ANSWER_END,
    ANSWER_START,
    CALC_PREFIX,
    DSA_TAGS,
    END_OF_TURN,
    PREFILL,
    REASONING_END,
    REASONING_START,
    SECTION_HEADINGS,
    START_OF_TURN,
    SYSTEM_PROMPT,
    Example,
    build_prompt,
    render_response,
)
from dsa_cast_train.data.gsm8k import (
    EMBEDDED_GSM8K_DIR,
    GSM8KSource,
    GSM8KUnavailable,
    default_gsm8k_dir,
    describe_gsm8k_source,
    gsm8k_to_dsa,
    load_gsm8k,
)
from dsa_cast_train.data.gsm8k_solution import (
    Calculation,
    ConvertConfig,
    GSM8KSolution,
    Substitution,
    normalize_expression,
    normalize_final,
    parse_solution,
)
from dsa_cast_train.data.jsonl import BadLine, DataFormatError, JsonlRecords, read_jsonl
from dsa_cast_train.data.pipelines import SFTStats, grpo_dataset, sft_dataset, tokenize_examples
from dsa_cast_train.data.tokenization import TokenizedExample, tokenize_example, tokenize_with_reason

__all__ = [
    "ANSWER_END",
    "ANSWER_FIELDS",
    "ANSWER_START",
    "CALC_PREFIX",
    "CSV_COLUMNS",
    "DSA_TAGS",
    "EMBEDDED_GSM8K_DIR",
    "END_OF_TURN",
    "PREFILL",
    "QUESTION_FIELDS",
    "REASONING_END",
    "REASONING_FIELDS",
    "REASONING_START",
    "SECTION_HEADINGS",
    "START_OF_TURN",
    "SYSTEM_PROMPT",
    "BadLine",
    "Calculation",
    "ConvertConfig",
    "DataFormatError",
    "Example",
    "GSM8KSolution",
    "GSM8KSource",
    "GSM8KUnavailable",
    "JsonlRecords",
    "LoadResult",
    "SFTStats",
    "Substitution",
    "TokenizedExample",
    "build_prompt",
    "default_gsm8k_dir",
    "describe_gsm8k_source",
    "grpo_dataset",
    "gsm8k_to_dsa",
    "load_dsa_jsonl",
    "load_extra_csv",
    "load_gsm8k",
    "normalize_expression",
    "normalize_final",
    "parse_solution",
    "read_jsonl",
    "record_to_example",
    "render_response",
    "sft_dataset",
    "split_examples",
    "tokenize_example",
    "tokenize_examples",
    "tokenize_with_reason",
]
