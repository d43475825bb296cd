"""Progress of long work, readable both in a terminal and in a log file.

On a terminal (stderr is a TTY) ``progress_bar`` is a tqdm bar. Elsewhere (a log file, CI, a job
scheduler's output) a bar would write a ``\\r`` line per update, so it logs one line through the
``m3net.progress`` logger every ``M3NET_PROGRESS_SECONDS`` seconds (default 30) and one at the end:
"train m3net: 1200/60000 ep (2.0%), 8.31 ep/s, loss=0.912".
"""
import logging
import os
import sys
import time

from tqdm import tqdm

logger = logging.getLogger(__name__)
INTERVAL_ENV = "M3NET_PROGRESS_SECONDS"


def _interval():
    try:
        return max(float(os.environ.get(INTERVAL_ENV, "30")), 0.0)
    except ValueError:
        return 30.0


class LogProgress:
    """tqdm's interface as far as m3net uses it (update, set_postfix, iteration, close, ``with``),
    writing a log line at most every ``interval`` seconds instead of redrawing a bar."""

    def __init__(self, iterable=None, total=None, initial=0, desc="", unit="it", interval=None):
        self.iterable, self.desc, self.unit = iterable, desc, unit
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.n = self.start_n = initial
        self.postfix = ""
        self.interval = _interval() if interval is None else interval
        self.started = self.last = time.monotonic()
        self.closed = False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def set_postfix(self, **values):
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def update(self, n=1):
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._log(now)

    def _log(self, now):
        done = f"{self.n}/{self.total}" if self.total else str(self.n)
        share = f" ({100 * self.n / self.total:.1f}%)" if self.total else ""
        rate = (self.n - self.start_n) / max(now - self.started, 1e-9)
        postfix = f", {self.postfix}" if self.postfix else ""
        logger.info("%s: %s %s%s, %.2f %s/s%s", self.desc, done, self.unit, share, rate, self.unit, postfix)

    def close(self):
        if not self.closed:
            self.closed = True
            if self.n > self.start_n:
                self._log(time.monotonic())


def progress_bar(iterable=None, *, total=None, initial=0, desc="", unit="it", enabled=True):
    """A tqdm bar on a terminal, periodic log lines elsewhere, nothing when not ``enabled``."""
    if not enabled:
        return tqdm(iterable, total=total, initial=initial, disable=True)
    if sys.stderr.isatty():
        return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)
    return LogProgress(iterable, total=total, initial=initial, desc=desc, unit=unit)
