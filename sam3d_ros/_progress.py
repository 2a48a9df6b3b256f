"""Progress bars for the commands a person waits on (generate, eval, train): tqdm on stderr."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm


@contextmanager
def progress_bar(*, enabled: bool = True, **kwargs: Any) -> Iterator[tqdm]:
    """A tqdm bar on stderr, closed on exit; ``kwargs`` go to :class:`tqdm.tqdm` (``total``,
    ``desc``, ``unit``, ...).

    The bar is disabled (every call on it does nothing) unless ``enabled`` and stderr is a
    terminal. While it is shown, log records of the root logger's console handlers are
    written above it instead of through it.
    """
    bar = tqdm(file=sys.stderr, disable=not (enabled and sys.stderr.isatty()), dynamic_ncols=True, **kwargs)
    try:
        if bar.disable:
            yield bar
        else:
            with logging_redirect_tqdm():
                yield bar
    finally:
        bar.close()
