"""Progress bars (tqdm on stderr): drawn only on a terminal and when asked for."""

from __future__ import annotations

import io
import logging

import pytest

from sam3d_ros._progress import progress_bar
from sam3d_ros.sim.dataset import _collect


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _stderr(monkeypatch: pytest.MonkeyPatch, stream: io.StringIO) -> io.StringIO:
    """Replace stderr inside the test (pytest's capture resets it after fixtures)."""
    monkeypatch.setattr("sys.stderr", stream)
    return stream


def test_bar_is_drawn_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    term = _stderr(monkeypatch, _Terminal())
    recs = _collect(iter([{"i": 0}, {"i": 1}, {"i": 2}]), 3, progress=True)
    assert recs == [{"i": 0}, {"i": 1}, {"i": 2}]
    out = term.getvalue()
    assert "generate" in out and "3/3" in out and "frame/s" in out


def test_no_bar_when_not_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    term = _stderr(monkeypatch, _Terminal())
    assert _collect(iter([{"i": 0}]), 1, progress=False) == [{"i": 0}]
    assert term.getvalue() == ""


def test_no_bar_when_stderr_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = _stderr(monkeypatch, io.StringIO())  # isatty() is False
    with progress_bar(total=2, desc="x") as bar:
        bar.update(2)
        assert bar.disable
    assert pipe.getvalue() == ""


def test_log_lines_are_written_above_the_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    term = _stderr(monkeypatch, _Terminal())
    root = logging.getLogger()
    handler = logging.StreamHandler()  # the console handler of basicConfig: sys.stderr
    root.addHandler(handler)
    try:
        with progress_bar(total=2, desc="x") as bar:
            assert handler not in root.handlers  # replaced by tqdm's while the bar is shown
            logging.getLogger("sam3d_ros.test").warning("in the middle")
            bar.update(2)
        assert handler in root.handlers
    finally:
        root.removeHandler(handler)
    out = term.getvalue()
    assert "in the middle" in out and "2/2" in out
