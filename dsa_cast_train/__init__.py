"""Thin Tunix (JAX) trainers for the DSA format: data, SFT, GRPO, evaluation, export.

Needs the ``[train]`` extra. Importing this package is cheap; heavy imports (JAX, Tunix)
happen inside the stage modules. Importing it adds the XLA:CPU memory-minimising scheduler flag
to ``XLA_FLAGS`` (unless already set): see :mod:`dsa_cast_train.xla_flags` for why; and sets
two glibc ``malloc`` limits that return large freed host buffers to the kernel (unless set by the
user or ``DSA_CAST_MALLOC_TUNING=0``): see :mod:`dsa_cast_train.malloc`.
"""

from dsa_cast_train import malloc as _malloc
from dsa_cast_train import xla_flags as _xla_flags

_xla_flags.apply()
_malloc.apply()
