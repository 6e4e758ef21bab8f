"""Child processes that do not outlive the process that started them.

Linux's parent-death signal (`prctl(PR_SET_PDEATHSIG)`), set in the child between fork and
exec, makes the kernel kill the child the moment its parent dies, however it dies (`kill -9`
included). It is what Ray itself uses for its GCS and raylet (`fate_share`), so a Ray Serve
stage killed this way takes its Ray processes with it. Chosen over a watchdog in each stage
(a thread polling the parent pid) because it needs no code in the child, works for processes
we do not write (the broker binary) and acts at once, not on the next poll.

Caveat: the kernel ties the signal to the parent *thread* that forked the child, so start
children from a thread that lives as long as they should (the stack starts them from its
caller's thread, normally the main one).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from typing import Callable

PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if sys.platform.startswith("linux") else None


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A `preexec_fn` for `subprocess.Popen`: the child gets `sig` when this process dies.
    None off Linux (no parent-death signal there; the stack's stop() still stops children)."""
    if _libc is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        if _libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return preexec


# --- the sweep: processes that escape the parent-death signal ------------------------------------
#
# Ray's raylet starts its workers (Serve controller, replicas, agents) itself; killed with
# SIGKILL it cannot stop them, and they linger. Every process of a stack carries one
# environment variable naming the stack, inherited by grandchildren whatever their session, so
# a sweep finds them all: the stack runs it on stop, and a reaper process runs it when the stack
# process dies without stopping.

STACK_ID_ENV = "SWITCHYARD_STACK_ID"


def marked(stack_id: str) -> list[int]:
    """Pids of live processes whose environment names this stack (never this process)."""
    needle = f"{STACK_ID_ENV}={stack_id}".encode() + b"\0"
    me, found = os.getpid(), []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                if needle in f.read():
                    found.append(int(entry.name))
        except OSError:  # gone, a zombie, or not ours to read
            continue
    return found


def sweep(stack_id: str, sig: int = signal.SIGKILL) -> int:
    """Signal every process of the stack; returns how many."""
    pids = marked(stack_id)
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    return len(pids)


def reaper_command(stack_id: str) -> list[str]:
    """The reaper: waits for its parent (the stack) to die, then sweeps the stack's processes."""
    return [sys.executable, "-m", "infra.lifetime", stack_id]


def _reap(stack_id: str) -> None:
    import time

    parent = os.getppid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the stack, not for us
    while os.getppid() == parent:
        time.sleep(0.2)
    for _ in range(3):  # a process forked during the sweep is caught by the next one
        if not sweep(stack_id):
            break
        time.sleep(0.5)


if __name__ == "__main__":
    _reap(sys.argv[1])
