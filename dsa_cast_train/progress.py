"""Progress of long loops (evaluation passes, training steps): rate and time left, never silence.

On a terminal a tqdm bar is drawn on stderr; elsewhere (a log file, CI) the same figures go to the
log as one line at most every ``interval`` seconds, so a redirected run neither stays silent for
minutes nor fills its log with bar redraws. Both read ``done/total unit [elapsed<left, rate]``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import IO, Any

log = logging.getLogger("dsa_cast_train.progress")

LOG_INTERVAL_S = 30.0
"""Seconds between two progress log lines when no terminal shows a bar."""
BAR_FORMAT = "{desc}: {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}, {rate_fmt}]"


def eta_text(done: int, total: int, elapsed: float, unit: str) -> str:
    """``3/16 items [00:42<03:02, 14.00s/items]``: tqdm's meter without the bar."""
    from tqdm import tqdm

    text = tqdm.format_meter(done, total, elapsed, unit=unit, bar_format="{n_fmt}/{total_fmt} "
                             "{unit} [{elapsed}<{remaining}, {rate_fmt}]")
    return " ".join(text.split())  # tqdm pads the rate to a fixed width


class Progress:
    """Count work done towards ``total``; show it as a bar (terminal) or as log lines.

    ``bar=None`` decides from ``stream.isatty()``. Use as a context manager; :meth:`update`
    after each unit (or batch) of work.
    """

    def __init__(self, total: int, desc: str, *, unit: str = "items", bar: bool | None = None,
                 stream: IO[str] | None = None, interval: float = LOG_INTERVAL_S,
                 logger: logging.Logger | None = None):
        self.total, self.desc, self.unit, self.interval = int(total), desc, unit, interval
        self.stream = stream if stream is not None else sys.stderr
        self.logger = logger or log
        self.done = 0
        self.lines = 0
        """Progress log lines written (no-terminal mode)."""
        self._start = self._last = time.perf_counter()
        use_bar = bar if bar is not None else bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar: Any = None
        if use_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True,
                             leave=False, bar_format=BAR_FORMAT)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.perf_counter()
        if now - self._last >= self.interval and self.done < self.total:
            self._last = now
            self.lines += 1
            self.logger.info("%s: %s", self.desc, eta_text(self.done, self.total, now - self._start, self.unit))

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
