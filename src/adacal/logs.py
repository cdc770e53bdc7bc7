"""How adacal's warnings reach a user who configured no logging.

adacal reports what it does through :mod:`logging` (``adacal.*`` loggers): INFO for progress,
WARNING for results that are degraded but usable (a channel that never fired during calibration,
an op kept in floating point, an energy count that had to approximate). A library that only
attached a ``NullHandler`` would hide those warnings from a user who never called
``logging.basicConfig`` — they would be accepted silently. :class:`FallbackHandler` shows
WARNING and above on stderr *only while no other handler would receive the record* (the same
rule as Python's ``logging.lastResort``, with adacal's name in front): as soon as the application
configures logging — ``basicConfig``, a handler on ``adacal``, pytest's capture, the CLI — it steps
aside, so nothing is printed twice and nothing is printed by a library that was told where to log.
"""
from __future__ import annotations

import logging
import sys
import weakref
from typing import Any

__all__ = ["FallbackHandler", "install_fallback", "warn_once"]

_SEEN: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


def warn_once(logger: logging.Logger, about: Any, message: str, *args: Any) -> None:
    """``logger.warning(message % args)`` the first time it is said about the object ``about`` (a model):
    a search that recalibrates a network twenty times warns about its dead channels once."""
    text = message % args if args else message
    seen = _SEEN.setdefault(about, set())
    if text not in seen:
        seen.add(text)
        logger.warning("%s", text, stacklevel=2)


def _handled_elsewhere(record: logging.LogRecord, me: logging.Handler) -> bool:
    """Whether a handler other than ``me`` (and other than NullHandlers) would emit ``record``."""
    logger: logging.Logger | None = logging.getLogger(record.name)
    while logger is not None:
        for h in logger.handlers:
            if h is not me and not isinstance(h, logging.NullHandler) and record.levelno >= h.level:
                return True
        if not logger.propagate:
            return False
        logger = logger.parent  # type: ignore[assignment]
    return False


class FallbackHandler(logging.Handler):
    """WARNING and above to stderr (looked up at each record), unless logging is configured elsewhere."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if _handled_elsewhere(record, self):
            return
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # a closed stream must not break the computation that warned
            self.handleError(record)


def install_fallback(name: str = "adacal") -> FallbackHandler:
    """Attach the fallback handler to logger ``name`` once (idempotent: reimports do not add another)."""
    logger = logging.getLogger(name)
    for h in logger.handlers:
        if isinstance(h, FallbackHandler):
            return h
    handler = FallbackHandler()
    logger.addHandler(handler)
    return handler
