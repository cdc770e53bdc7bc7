"""Progress of long work — evaluation, calibration, profiling, training, sweeps — reported, never printed.

Library code wraps its loops in :func:`task` (or :func:`track`); by default that costs nothing and
shows nothing. Whoever runs the work decides what a report becomes by installing a reporter for
a block of code with :func:`reporting`: the CLI installs :func:`console` (a tqdm bar with the time
left on an interactive terminal, a periodic log line otherwise, nothing with ``--quiet``); a
notebook can do the same::

    from adacal import progress
    with progress.reporting(progress.console()):
        metrics = adacal.evaluate(snn, test_loader, timesteps=8)

The reporter lives in a :mod:`contextvars` variable, so nested tasks (a sweep > a conversion >
profiling) find it without passing callbacks through every function, and threads or async tasks
that did not install one report nothing.
"""
from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import IO, Any, Protocol, TypeVar

__all__ = ["Handle", "LogReporter", "Reporter", "TqdmReporter", "console", "eta_seconds", "format_seconds",
           "length_of", "reporting", "task", "track"]

log = logging.getLogger("adacal.progress")

T = TypeVar("T")

#: Seconds between two log lines of one task when no terminal bar is drawn.
LOG_INTERVAL_S = 30.0


class Handle(Protocol):
    """One running task: ``advance(n)`` after every n units of work."""

    def advance(self, n: int = 1) -> None: ...


class Reporter(Protocol):
    """Turns tasks into something a person sees; ``start`` returns the task's handle, ``finish`` ends it."""

    def start(self, name: str, total: int | None, unit: str) -> Any: ...

    def finish(self, handle: Any) -> None: ...


class _Silent:
    def advance(self, n: int = 1) -> None:
        pass


_SILENT = _Silent()
_REPORTER: ContextVar[Reporter | None] = ContextVar("adacal_progress_reporter", default=None)


@contextlib.contextmanager
def reporting(reporter: Reporter | None) -> Iterator[Reporter | None]:
    """Report the progress of everything run inside the block to ``reporter`` (None: to nobody)."""
    token = _REPORTER.set(reporter)
    try:
        yield reporter
    finally:
        _REPORTER.reset(token)


@contextlib.contextmanager
def task(name: str, total: int | None = None, unit: str = "it") -> Iterator[Handle]:
    """A unit of long work with ``total`` steps (None: unknown); a no-op unless a reporter is installed."""
    reporter = _REPORTER.get()
    if reporter is None:
        yield _SILENT
        return
    handle = reporter.start(name, total, unit)
    try:
        yield handle
    finally:
        reporter.finish(handle)


def track(items: Iterable[T], name: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """``items`` one by one, reporting each as a step of task ``name`` (``total`` from ``len`` if omitted)."""
    with task(name, length_of(items) if total is None else total, unit) as handle:
        for item in items:
            yield item
            handle.advance()


def length_of(items: Any, limit: int | None = None) -> int | None:
    """``len(items)`` capped at ``limit``, or None when the iterable has no length (a generator)."""
    try:
        n = len(items)
    except TypeError:
        return limit
    return n if limit is None else min(n, limit)


# ------------------------------------------------------------------------------------- pure maths
def eta_seconds(done: float, total: float | None, elapsed: float) -> float | None:
    """Time left at the average rate so far, or None when it cannot be told yet (or the total is unknown)."""
    if total is None or done <= 0 or elapsed <= 0 or total <= 0:
        return None
    return max(0.0, elapsed * (total - done) / done)


def format_seconds(seconds: float | None) -> str:
    """``45s``, ``12:05``, ``3:04:27``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


# ------------------------------------------------------------------------------------- reporters
class _LogTask:
    def __init__(self, owner: LogReporter, name: str, path: str, total: int | None, unit: str) -> None:
        self.owner, self.name, self.path, self.total, self.unit = owner, name, path, total, unit
        self.done = 0
        self.start = self.last = owner.clock()

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = self.owner.clock()
        if now - self.last >= self.owner.interval:
            self.last = now
            self.owner.emit(self.line(now))

    def line(self, now: float) -> str:
        elapsed = now - self.start
        if self.total:
            pct = 100.0 * self.done / self.total
            return (f"{self.path}: {self.done}/{self.total} {self.unit} ({pct:.0f}%), {format_seconds(elapsed)} "
                    f"elapsed, ~{format_seconds(eta_seconds(self.done, self.total, elapsed))} left")
        return f"{self.path}: {self.done} {self.unit}, {format_seconds(elapsed)} elapsed"


class LogReporter:
    """A log line per task every ``interval`` seconds (``adacal.progress`` logger, INFO), with the time
    left, and a closing line for tasks that took at least that long: for logs and pipes, where a bar
    would be noise."""

    def __init__(self, interval: float | None = None, *, logger: logging.Logger | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = LOG_INTERVAL_S if interval is None else float(interval)
        self.logger = logger or log
        self.clock = clock
        self._stack: list[_LogTask] = []

    def emit(self, text: str) -> None:
        self.logger.info("%s", text)

    def start(self, name: str, total: int | None, unit: str) -> _LogTask:
        path = " > ".join([*(t.name for t in self._stack), name])
        handle = _LogTask(self, name, path, total, unit)
        self._stack.append(handle)
        return handle

    def finish(self, handle: _LogTask) -> None:
        if handle in self._stack:
            self._stack.remove(handle)
        elapsed = self.clock() - handle.start
        if elapsed >= self.interval:
            self.emit(f"{handle.path}: done, {handle.done} {handle.unit} in {format_seconds(elapsed)}")


class TqdmReporter:
    """A tqdm bar per task (nested tasks below their parent; inner bars vanish when done), with the
    rate and the time left — for an interactive terminal."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream
        self._bars: list[Any] = []

    def start(self, name: str, total: int | None, unit: str) -> Any:
        from tqdm import tqdm

        depth = len(self._bars)
        bar = tqdm(total=total, desc=name, unit=unit, file=self.stream or sys.stderr, position=depth,
                   leave=depth == 0, dynamic_ncols=True, mininterval=0.5)
        self._bars.append(bar)
        return _TqdmHandle(bar)

    def finish(self, handle: Any) -> None:
        bar = handle.bar
        if bar in self._bars:
            self._bars.remove(bar)
        bar.close()


class _TqdmHandle:
    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def advance(self, n: int = 1) -> None:
        self.bar.update(n)


def console(stream: IO[str] | None = None, *, interval: float | None = None) -> Reporter:
    """A bar on an interactive terminal (``stream``, default stderr), log lines every ``interval`` s otherwise."""
    s = stream or sys.stderr
    isatty = getattr(s, "isatty", None)
    return TqdmReporter(s) if callable(isatty) and isatty() else LogReporter(interval)
