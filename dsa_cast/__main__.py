"""``python -m dsa_cast``: the grading CLI (see :mod:`dsa_cast.cli`)."""

from dsa_cast.cli import main

raise SystemExit(main())
