"""BLAS threads are limited by the pipeline (they would spin on the network's cores)."""

from __future__ import annotations

import numpy as np
import pytest

from sam3d_ros.backends.registry import create_backend
from sam3d_ros.core import threads
from sam3d_ros.core.config import default_config
from sam3d_ros.core.pipeline import FramePipeline

threadpoolctl = pytest.importorskip("threadpoolctl")


def _blas_threads() -> set[int]:
    np.ones((2, 2)) @ np.ones((2, 2))  # BLAS is loaded
    return {int(i["num_threads"]) for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"}


def test_pipeline_limits_blas_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _blas_threads(), "numpy has no BLAS that threadpoolctl sees"
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        monkeypatch.setattr(threads, "_applied", None)
        cfg = default_config()
        assert cfg.blas_threads == 1
        FramePipeline(cfg, create_backend(cfg, "geometric")).close()
        assert _blas_threads() == {1}
        # 0 leaves the setting alone
        threadpoolctl.threadpool_limits(limits=2, user_api="blas")
        monkeypatch.setattr(threads, "_applied", None)
        assert not threads.limit_blas_threads(0)
        assert _blas_threads() == {2}
