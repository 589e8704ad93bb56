"""DSA-CAST: exact, fast, hardened grading of structured-reasoning completions.

The public entry point is :mod:`dsa_cast.score` (``grade``, ``grade_batch`` and the
framework adapters). This package imports only the standard library and ``regex``.
"""

__version__ = "0.1.0"
