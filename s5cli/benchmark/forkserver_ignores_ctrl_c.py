"""Imported by the benchmark's forkserver before anything else (`worker_process.WORKER_PRELOAD`): from then
on that process, and every worker forked from it, ignores Ctrl-C. Never import it anywhere else.

Why: multiprocessing's forkserver ignores SIGINT itself only after its preloads, seconds of importing torch,
so a Ctrl-C in the first seconds of `s5 benchmark` also reached it mid-import and printed a ~33-line
KeyboardInterrupt traceback under the parent's one-line "error: interrupted". Workers inherit the setting
(the forkserver restores in each fork the handlers it found): Ctrl-C is the parent's to handle, and the
parent ends every worker itself (SIGKILL) when it stops, keeping what they measured. SIGTERM is left as it
is. Work at import on purpose: a forkserver preload can only be a module to import; only in a forkserver
(started as `python -c "from multiprocessing.forkserver import main; ..."`), so that a tool importing every
module (autodoc, doctest collection) keeps its own Ctrl-C.
"""

import signal
import sys


def in_forkserver() -> bool:
    """Whether this process is multiprocessing's forkserver (running its preloads)."""
    return sys.argv[:1] == ["-c"] and "multiprocessing.forkserver" in sys.modules


if in_forkserver():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
