"""Thin Tunix (JAX) trainers for the DSA format: data, SFT, GRPO, evaluation, export.

Needs the ``[train]`` extra. Importing this package is cheap; heavy imports (JAX, Tunix)
happen inside the stage modules. Importing it adds the XLA:CPU memory-minimising scheduler flag
to ``XLA_FLAGS`` (unless already set): see :mod:`dsa_cast_train.xla_flags` for why.
"""

from dsa_cast_train import xla_flags as _xla_flags

_xla_flags.apply()
