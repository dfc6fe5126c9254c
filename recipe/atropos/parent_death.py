"""A child process that does not outlive the process that started it (Linux's PR_SET_PDEATHSIG)."""

from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded at import, before any fork: the child only calls into it


def signal_on_parent_death(sig: signal.Signals, parent: int) -> None:
    """For a `preexec_fn`, in the forked child before exec: `sig` reaches it when the thread that forked
    it dies, even by SIGKILL. Exits the child when that cannot be set up or `parent` died already."""
    if _LIBC.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0 or os.getppid() != parent:
        os._exit(1)
