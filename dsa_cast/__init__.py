"""DSA-CAST: exact, fast, hardened grading of structured-reasoning completions.

"DSA" names the output format graded here (a ``<reasoning>`` block with the sections Plan,
Reasoning, Evidence and Sanity_check, then an ``<answer>`` block; ``docs/format.md``) and "CAST"
the seed notebook's main reward, ``reward_cast_math_and_completeness`` (answer accuracy,
section completeness, a format bonus and ``CALC:`` consistency; ``docs/rewards.md``). Neither
acronym is spelled out anywhere in this project's sources, so it is not expanded here.

The public entry point is :mod:`dsa_cast.score` (``grade``, ``grade_batch`` and the
framework adapters). This package imports only the standard library.
"""

__version__ = "0.1.0"
