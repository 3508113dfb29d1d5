"""Start `app.py` in a subprocess on a free localhost port for browser and client tests; always stopped."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_app(weights_dir: Path, tmp_dir: Path, *extra: str, env: dict | None = None) -> Iterator[str]:
    """Serve the app with models from `weights_dir`, runs and downloads under `tmp_dir` (and `env` added
    to its environment); yield its URL."""
    port = free_port()
    log = open(tmp_dir / "app.log", "w")
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1", **(env or {})}
    env.pop("SPACE_ID", None)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--port", str(port), "--weights-dir", str(weights_dir),
         "--runs-dir", str(tmp_dir / "runs"), "--work-dir", str(tmp_dir / "work"), "--no-warm-up", *extra],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"app exited with {proc.returncode}:\n{(tmp_dir / 'app.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"app did not start in {START_TIMEOUT_S} s")
            time.sleep(0.3)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def app_log(tmp_dir: Path) -> str:
    path = tmp_dir / "app.log"
    return path.read_text() if path.exists() else ""


class QueueSession:
    """One page's session speaking gradio's queue protocol, as the page's JavaScript does: it can call
    any event by name, private ones included, as a hostile visitor reading the page could."""

    def __init__(self, url: str, session_hash: str | None = None):
        import uuid

        import httpx

        self.http, self.base = httpx, url.rstrip("/") + "/gradio_api"
        self.session = session_hash or uuid.uuid4().hex[:12]
        config = httpx.get(url.rstrip("/") + "/config", timeout=10).json()
        self.dependencies = config["dependencies"]
        self.fn_index = {d["api_name"]: d["id"] for d in self.dependencies}

    def submit(self, name: str, *data) -> tuple[int, str]:
        """Join the queue; (HTTP status, event id or the refusal's text)."""
        r = self.http.post(f"{self.base}/queue/join", timeout=30, json={
            "data": list(data), "fn_index": self.fn_index[name], "session_hash": self.session,
            "event_data": None, "trigger_id": None})
        body = r.json()
        return r.status_code, body.get("event_id") if r.status_code == 200 else str(body.get("detail"))

    def call(self, name: str, *data, timeout_s: float = 60) -> tuple[bool, object]:
        """Call an event and wait: (True, its outputs) or (False, the error message it showed)."""
        status, event_id = self.submit(name, *data)
        if status != 200:
            return False, event_id
        return self.results([event_id], timeout_s)[event_id]

    def results(self, event_ids: list[str], timeout_s: float = 60) -> dict[str, tuple[bool, object]]:
        """Wait for submitted events on one stream (as a page does: leaving it early drops the rest)."""
        import json

        found = {}
        with self.http.stream("GET", f"{self.base}/queue/data", params={"session_hash": self.session},
                              timeout=timeout_s) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("event_id") in event_ids and msg.get("msg") == "process_completed":
                    output = msg.get("output") or {}
                    found[msg["event_id"]] = ((True, output.get("data")) if msg.get("success") else
                                              (False, str(output.get("error"))))
                    if len(found) == len(event_ids):
                        return found
        raise TimeoutError(f"no result for {set(event_ids) - set(found)}")

    @contextlib.contextmanager
    def page_open(self) -> Iterator[None]:
        """Hold the session's heartbeat as an open page does; leaving the block closes the page."""
        import threading

        closed = threading.Event()

        def beat() -> None:
            with self.http.stream("GET", f"{self.base}/heartbeat/{self.session}", timeout=None) as stream:
                for _ in stream.iter_raw():
                    if closed.is_set():
                        return

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            closed.set()
            thread.join(30)


def post_upload(url: str, size: int) -> tuple[int, bytes]:
    """POST a file of `size` bytes to gradio's upload route; (status, body)."""
    import http.client

    host, port = url.split("//")[1].strip("/").split(":")
    boundary = "retree-limit-test"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="huge.png"\r\n'
            "Content-Type: image/png\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    connection.putrequest("POST", "/gradio_api/upload")
    connection.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
    connection.putheader("Content-Length", str(len(head) + size + len(tail)))
    connection.endheaders()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the server may stop reading early
        connection.send(head)
        chunk = bytes(2**20)
        for _ in range(size // len(chunk)):
            connection.send(chunk)
        connection.send(bytes(size % len(chunk)))
        connection.send(tail)
    response = connection.getresponse()
    result = response.status, response.read()
    connection.close()
    return result
