"""What one session may ask of a shared server: a cap on its heavy requests waiting or running, checked
before gradio queues another (an event `validator`), and what happens when its page closes."""
from __future__ import annotations

import functools

import gradio as gr


class Admission:
    """`guard(handler)` makes the validator of a heavy event (generation, comparison, dreaming,
    evaluation, synthesis, training control): a session with `limit` such requests already waiting or
    running gets a message instead of another place in the line."""

    def __init__(self, limit: int):
        self.limit = limit
        self.blocks: gr.Blocks | None = None  # set once the app is built

    def waiting(self, session: str) -> int:
        """The session's guarded requests in gradio's queue (waiting or running).

        Reads the queue's own bookkeeping (gradio 6): the ids of a session's unfinished events and the
        events they name; a test against a real server (tests/test_hosted_server.py) pins it."""
        queue = getattr(self.blocks, "_queue", None)
        if queue is None:
            return 0
        events = (queue.event_ids_to_events.get(i) for i in list(queue.pending_event_ids_session.get(session, ())))
        return sum(1 for e in events if e is not None and getattr(e.fn.validator, "admission", None) is self)

    def guard(self, handler):
        """A validator with `handler`'s signature (so gradio passes it the same inputs and the request)."""
        @functools.wraps(handler)
        def check(*args, **kwargs):
            values = [*args, *kwargs.values()]
            request = next((a for a in values if isinstance(a, gr.Request)), None)
            session = getattr(request, "session_hash", None)
            if session and self.waiting(session) >= self.limit:
                raise ValueError(f"This page already has {self.limit} requests waiting or running on this "
                                 "server; wait for them to finish (or press Stop) before starting another.")
            checks = [gr.validate(True, "") for a in values if a is not request]  # one per input: all fine
            return checks[0] if len(checks) == 1 else checks
        check.admission = self
        return check


__all__ = ["Admission"]
