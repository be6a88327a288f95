"""SIGTERM handled like Ctrl-C by the programs that start Triton, Envoy and the other local processes.

Those processes start in sessions of their own, so that a terminal's Ctrl-C reaches only the
program, which then stops them in its own order.  The other side of that choice: a program that is
ended outright leaves them running, holding their ports and the machine's CPUs, and a benchmark run
after it measures against them.  Python's default for SIGTERM (what ``timeout``, ``kill`` and
``make benchmark``'s time limit send) ends the program without running a ``finally`` block.
:func:`interrupt_on_sigterm` makes SIGTERM raise ``KeyboardInterrupt`` in the main thread instead,
so the cleanup that runs on Ctrl-C runs on SIGTERM too.  Nothing can catch SIGKILL: a program
killed that way still leaves its processes behind.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType


def interrupt_on_sigterm() -> None:
    """From now on the first SIGTERM raises ``KeyboardInterrupt`` in the main thread; later ones only
    say that it is still stopping, so that a second signal cannot cut the cleanup short.  (A handler,
    not SIG_IGN: a process started during the cleanup would inherit SIG_IGN and ignore its own stop.)
    Call it from the main thread (the ``if __name__ == "__main__"`` block of a program), not from a
    library."""

    def still_stopping(signum: int, _frame: FrameType | None) -> None:
        print(f"{signal.Signals(signum).name}: still stopping ...", file=sys.stderr, flush=True)

    def interrupted(signum: int, _frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, still_stopping)
        print(f"\n{signal.Signals(signum).name}: stopping what this program started ...", file=sys.stderr,
              flush=True)
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupted)
