"""Ctrl-C, noted where it cannot be lost.

The CLI's SIGINT handler notes the interrupt here before raising KeyboardInterrupt. Two cases need the note:
- Lightning turns the KeyboardInterrupt into `sys.exit(1)` during `fit`, so the exception alone cannot tell an
  interrupted run from a failed one.
- Python drops an exception raised while a finalizer runs (`__del__`, a weakref callback: "Exception ignored
  in ..."). A Ctrl-C landing there would let training go on, so every trainer checks the note after each
  batch (`run.StopOnInterrupt`).
"""

from __future__ import annotations

import signal

_requested = False


def interrupt_requested() -> bool:
    return _requested


class InterruptWatch:
    """While entered, SIGINT is noted (`interrupt_requested()`, `seen`) and then handled as before."""

    def __init__(self):
        self.seen = False

    def __enter__(self):
        self.previous = signal.getsignal(signal.SIGINT)
        if callable(self.previous):
            signal.signal(signal.SIGINT, self._note)
        return self

    def _note(self, signum, frame):
        global _requested
        self.seen = _requested = True
        self.previous(signum, frame)

    def __exit__(self, *exc):
        global _requested
        _requested = False
        if callable(self.previous):
            signal.signal(signal.SIGINT, self.previous)
