"""SIGTERM and SIGHUP handled like Ctrl-C by the programs that start Triton, Envoy and the other
local processes.

Those processes start in sessions of their own, so that a terminal's Ctrl-C reaches only the
program, which then stops them in its own order.  The other side of that choice: a program that is
ended outright leaves them running, holding their ports and the machine's CPUs, and a benchmark run
after it measures against them.  Python's default for SIGTERM (what ``timeout``, ``kill`` and
``make benchmark``'s time limit send) and for SIGHUP (the terminal was closed) ends the program
without running a ``finally`` block.  :func:`interrupt_on_stop_signals` makes them raise
``KeyboardInterrupt`` in the main thread instead, so the cleanup that runs on Ctrl-C runs then too;
:func:`on_stop_signals` installs any handler for the same signals (``make up`` stops in its own
order).  A SIGHUP already ignored when the program started (``nohup``) stays ignored.  Nothing can
catch SIGKILL: a program killed that way still leaves its processes behind.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from types import FrameType

Handler = Callable[[int, FrameType | None], None]


def stop_signals(*, with_sigint: bool = False) -> list[signal.Signals]:
    """SIGTERM and SIGHUP (not when ignored, as under ``nohup``), and SIGINT if asked."""
    signals = [signal.SIGINT] if with_sigint else []
    signals.append(signal.SIGTERM)
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signals.append(signal.SIGHUP)
    return signals


def on_stop_signals(handler: Handler, *, with_sigint: bool = False) -> list[signal.Signals]:
    """``handler`` for every signal of :func:`stop_signals`; returns them.  Main thread only."""
    signals = stop_signals(with_sigint=with_sigint)
    for sig in signals:
        signal.signal(sig, handler)
    return signals


def say(text: str) -> None:
    """Print to stderr from a signal handler; after SIGHUP the terminal may be gone, and a failed
    write must not replace the interrupt with an OSError that some ``except OSError`` swallows."""
    try:
        print(text, file=sys.stderr, flush=True)
    except OSError:
        pass


def interrupt_on_stop_signals() -> None:
    """From now on the first SIGTERM or SIGHUP raises ``KeyboardInterrupt`` in the main thread; later
    ones only say that it is still stopping, so that a second signal cannot cut the cleanup short.
    (A handler, not SIG_IGN: a process started during the cleanup would inherit SIG_IGN and ignore
    its own stop.)  Call it from the main thread (the ``if __name__ == "__main__"`` block of a
    program), not from a library."""

    def still_stopping(signum: int, _frame: FrameType | None) -> None:
        say(f"{signal.Signals(signum).name}: still stopping ...")

    def interrupted(signum: int, _frame: FrameType | None) -> None:
        on_stop_signals(still_stopping)
        say(f"\n{signal.Signals(signum).name}: stopping what this program started ...")
        raise KeyboardInterrupt(signal.Signals(signum).name)

    on_stop_signals(interrupted)
