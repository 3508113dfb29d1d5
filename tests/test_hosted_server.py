"""A hosted app (`--hosted`) against two real sessions speaking gradio's queue protocol, as two pages (or a
visitor scripting the page's private events) would: runs stay their owner's, a closed page frees the
training slot, a session cannot fill the queue, uploads stop at the hosted limit."""
import time

import pytest

from app_server import QueueSession, post_upload, running_app

pytest.importorskip("httpx", reason="httpx (installed with gradio) is missing")
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def app(tiny_weights, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hosted_app")
    with running_app(tiny_weights.parent, tmp, "--hosted", env={"GRADIO_HEARTBEAT_INTERVAL": "0.5"}) as url:
        yield url, tmp


def train_args(name: str, steps: int = 4000) -> list:
    """The Train tab's Start inputs: a tiny concat on the embedded example."""
    return ["concat", "embedded", None, None, "tiny", 16, 2, steps, 1e-3, 5, name, 0.0, None, 0.5, "", 0.0, False, 0]


def status_of(session: QueueSession) -> str:
    ok, out = session.call("train_poll", None)
    assert ok, out
    return out[0]


def wait_until(predicate, timeout_s: float = 90) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return False


def test_a_second_session_cannot_see_download_resume_or_stop_the_first_ones_run(app):
    url, tmp = app
    a, b = QueueSession(url), QueueSession(url)
    ok, out = a.call("train_start", *train_args("secret_run"))
    assert ok, out
    folder = next(p.name for p in (tmp / "runs").iterdir() if p.name.startswith("secret_run-"))
    assert wait_until(lambda: "step" in status_of(a) and "running" in status_of(a))
    for moment in ("running", "finished"):
        ok, out = b.call("train_poll", None)
        assert ok and "secret_run" not in out[0] and out[2] is None  # no name, no sample grid (training photos)
        assert out[4]["visible"] is False  # no model download
        ok, runs = b.call("train_runs")
        assert ok and folder not in str(runs)
        ok, message = b.call("train_resume", folder, 5000)  # gradio refuses a run not in B's list; the
        assert not ok and ("another session" in message or "not in the list" in message)  # jobs would too
        ok, message = b.call("train_stop")
        if moment == "running":
            assert not ok and "only that session can stop it" in message
            ok, out = a.call("train_stop")  # its owner can
            assert ok, out
            assert wait_until(lambda: "**stopped**" in status_of(a))
    ok, out = a.call("train_poll", None)
    assert ok and out[4]["visible"] is True and out[4]["value"]["path"].endswith("model.safetensors")
    ok, runs = a.call("train_runs")
    assert ok and folder in str(runs)


def test_closing_the_page_that_started_a_training_frees_the_slot(app):
    url, _ = app
    a, b = QueueSession(url), QueueSession(url)
    with a.page_open():
        ok, out = a.call("train_start", *train_args("left_behind"))
        assert ok, out
        assert wait_until(lambda: "busy" in status_of(b))  # B sees a training, not whose
    assert wait_until(lambda: "busy" not in status_of(b), 60)  # A's page closed: its run stopped
    ok, out = b.call("train_start", *train_args("next_in_line", steps=3))
    assert ok, out  # the slot is free for B


def test_stop_also_cancels_a_start_still_waiting_in_the_queue(app):
    deps = QueueSession(app[0]).dependencies
    ids = {d["api_name"]: d["id"] for d in deps}
    stop_targets = next(d["targets"] for d in deps if d["id"] == ids["train_stop"])
    cancelling = [d for d in deps if d["targets"] == stop_targets and d.get("cancels")]
    assert cancelling and set(cancelling[0]["cancels"]) == {ids["train_start"], ids["train_resume"]}


def test_one_session_cannot_fill_the_queue_and_others_still_get_in(app):
    url, _ = app
    a, b = QueueSession(url), QueueSession(url)
    work = ["concat", None, "procedural", 2, 0, "ddim", 20, False, False, "any", False, False]  # seconds each: still queued
    admitted = [a.submit("synthesise", *work) for _ in range(2)]  # StudioSettings.make_hosted: 2 per session
    assert [status for status, _ in admitted] == [200, 200]
    status, message = a.submit("synthesise", *work)
    assert status == 400 and "already has 2 requests waiting or running" in message
    status, event = b.submit("synthesise", *work)
    assert status == 200  # another session is admitted
    for session, events in ((a, [e for _, e in admitted]), (b, [event])):
        assert all(ok for ok, _ in session.results(events, 120).values())
    assert a.submit("evaluate", "segmenter", "classical", "concat", "embedded", None, None, "all", 1, 1)[0] == 200


def test_uploads_over_the_hosted_limit_are_refused(app):
    status, body = post_upload(app[0], 100 * 2**20 + 2**20)  # make_hosted: max_upload_mb 100
    assert status == 413 and b"maximum allowed size" in body
