"""Process-wide thread settings of numerical libraries.

numpy's OpenBLAS starts one thread per core and lets them spin-wait after every call. The
pipeline's matrix products are tiny (4x4 transforms, N x 3 points), so these threads gain
nothing, but their spinning takes the cores ONNX Runtime's intra-op threads need: on a
2-core machine the network ran 1.5x slower right after numpy work. The pipeline therefore
limits BLAS to ``blas_threads`` (default 1) through ``threadpoolctl``.
"""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_applied: int | None = None


def limit_blas_threads(threads: int) -> bool:
    """Limit the BLAS libraries loaded in this process to ``threads`` threads.

    Process-wide and idempotent; ``threads <= 0`` leaves them as they are. Returns whether
    a limit is in force (False without ``threadpoolctl``, logged once).
    """
    global _applied
    if threads <= 0:
        return False
    with _lock:
        if _applied == threads:
            return True
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            if _applied is None:
                logger.warning("threadpoolctl is not installed: numpy's BLAS threads are not limited")
                _applied = -1
            return False
        threadpool_limits(limits=threads, user_api="blas")
        _applied = threads
        logger.debug("BLAS limited to %d thread(s)", threads)
        return True
