"""Where tensor work runs: on the calling thread, or, in a server, on one long-lived compute thread.

PyTorch's OpenMP runtime gives every thread that computes its own team of worker threads. Once the
teams hold more threads than the machine has cores, every parallel region waits by sleeping instead of
spinning, and on the 2-core CPU a sampler then runs about half as fast (20 DPM-Solver++ steps of the
lean 256 px model: 2.3 s on the thread that computed first, 4.0 s on a second thread once the first
has computed; `bench/thread_overhead.py`). A server answers from many threads, so the app calls `use_one_thread()`:
from then on `run` (and every function wrapped by `on_compute_thread`: model loading, sampling)
executes on one thread, and only one team exists. The command line computes on its main thread and
never turns this on. Work on the compute thread must not wait for other threads that need it (such as
`pipeline.stream`'s consumer loop): call those from any other thread.
"""
from __future__ import annotations

import functools
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")

_state = threading.local()
_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None


def _mark_compute_thread() -> None:
    _state.is_compute = True


def use_one_thread() -> None:
    """Run all tensor work of this process that goes through `run` on one compute thread (idempotent)."""
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(1, thread_name_prefix="retree-compute",
                                           initializer=_mark_compute_thread)


def run(fn: Callable[..., T], *args, **kwargs) -> T:
    """fn(*args, **kwargs) on the compute thread when one is in use (waiting for it, exceptions
    re-raised here), else right here."""
    executor = _executor
    if executor is None or getattr(_state, "is_compute", False):
        return fn(*args, **kwargs)
    return executor.submit(fn, *args, **kwargs).result()


def start(fn: Callable[[], T]) -> Future:
    """fn() in the background: queued on the compute thread when one is in use, else on a new thread."""
    if _executor is not None:
        return _executor.submit(fn)
    future: Future = Future()
    future.set_running_or_notify_cancel()  # it starts at once: cancel() must not claim it never ran

    def work() -> None:
        try:
            future.set_result(fn())
        except BaseException as exc:  # handed to whoever reads the future
            future.set_exception(exc)

    threading.Thread(target=work, daemon=True, name="retree-background").start()
    return future


def on_compute_thread(fn: Callable[..., T]) -> Callable[..., T]:
    """Decorator: calls of fn go through `run`."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return run(fn, *args, **kwargs)
    return wrapper


__all__ = ["use_one_thread", "run", "start", "on_compute_thread"]
