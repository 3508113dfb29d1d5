"""compute.py: with use_one_thread() all tensor work runs on one thread; without it, on the caller's."""
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from retree_core import compute


def test_without_one_thread_work_runs_on_the_caller():
    code = ("import threading; from retree_core import compute; "
            "assert compute.run(threading.current_thread) is threading.main_thread(); "
            "assert compute.start(threading.current_thread).result(timeout=10).name == 'retree-background'; "
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_one_thread_serves_every_caller():
    compute.use_one_thread()
    with ThreadPoolExecutor(4) as pool:
        threads = set(pool.map(lambda _: compute.run(threading.current_thread), range(8)))
    assert len(threads) == 1 and threads.pop().name.startswith("retree-compute")
    assert compute.run(lambda: compute.run(lambda: 7)) == 7  # nested calls run inline, no deadlock
    with pytest.raises(ZeroDivisionError):
        compute.run(lambda: 1 / 0)
    assert compute.start(threading.current_thread).result(timeout=10).name.startswith("retree-compute")


def test_decorated_functions_hop_to_the_compute_thread():
    compute.use_one_thread()
    where = compute.on_compute_thread(threading.current_thread)
    assert where() is not threading.current_thread()
