"""Thin Tunix (JAX) trainers for the DSA format: data, SFT, GRPO, evaluation, export.

Needs the ``[train]`` extra. Importing this package is cheap; heavy imports (JAX, Tunix)
happen inside the stage modules.
"""
