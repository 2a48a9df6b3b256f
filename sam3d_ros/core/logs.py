"""Logging helpers shared by the core modules."""

from __future__ import annotations

import logging
import threading

#: (logger name, kind) of every fallback already reported by :func:`warn_once`.
_warned: set[tuple[str, str]] = set()
_lock = threading.Lock()


def warn_once(logger: logging.Logger, kind: str, message: str, *args: object) -> bool:
    """Log ``message % args`` at WARNING on ``logger`` the first time this process reports
    ``kind`` there (one line per kind of fallback, not one per object or frame).

    Returns:
        True when the message was logged, False when ``kind`` had been reported before.
    """
    key = (logger.name, kind)
    with _lock:
        if key in _warned:
            return False
        _warned.add(key)
    logger.warning(message, *args)
    return True
