"""Live generation for an interactive front end: frames with timings, and a Stop that works per user.

`live_frames` wraps `pipeline.stream`: it adds the elapsed time to every frame and, when the caller's
stop event is set, closes the stream (the sampler ends at its next step) and hands back the last
prediction of the clean image as the result. `StopSignals` keeps one stop event per session, so a
Stop button stops that session's run only.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .pipeline import check_options, stream
from .weights import LoadedModel


@dataclass
class LiveFrame:
    step: int
    total: int
    x_t: np.ndarray | None  # uint8 HxWx3; None on the final frame
    x0: np.ndarray  # current prediction of the clean image; the result on the final frame
    elapsed_s: float
    final: bool = False
    stopped: bool = False  # ended early by the stop event; x0 is the last prediction


class StopSignals:
    """One stop event per key (a session); a new run clears its key's event."""

    def __init__(self) -> None:
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def arm(self, key: str) -> threading.Event:
        with self._lock:
            event = self._events.setdefault(key, threading.Event())
            event.clear()
            return event

    def stop(self, key: str) -> bool:
        """Set the key's event; False if that key never ran anything."""
        with self._lock:
            event = self._events.get(key)
        if event is None:
            return False
        event.set()
        return True

    def forget(self, key: str) -> None:
        with self._lock:
            self._events.pop(key, None)


class _Latest:
    """A one-item mailbox: the producer overwrites, the consumer takes the newest unseen item.
    A final item (or an exception) is never overwritten."""

    def __init__(self) -> None:
        self._item = None
        self._fresh = False
        self._sealed = False
        self._cond = threading.Condition()

    def put(self, item, final: bool = False) -> None:
        with self._cond:
            if self._sealed:
                return
            self._item, self._fresh, self._sealed = item, True, final
            self._cond.notify()

    def take(self):
        with self._cond:
            self._cond.wait_for(lambda: self._fresh)
            self._fresh = False
            return self._item


def live_frames(model: LoadedModel, mask: np.ndarray | None, seed: int, *, sampler: str, steps: int,
                guidance: float, stop: threading.Event | None = None,
                min_interval_s: float = 0.0) -> Iterator[LiveFrame]:
    """Frames of one generation, newest first: the sampler runs at full speed in its own thread and a
    slow consumer (a browser) skips frames instead of slowing it down; `min_interval_s` caps the frame
    rate (each frame shown costs image encoding). The last frame has final=True (finished, or stopped
    by `stop`: then it holds the last prediction). Closing this iterator also stops the sampler."""
    check_options(sampler, steps, guidance, model.diffusion_cfg.timesteps)
    start = time.perf_counter()
    mailbox = _Latest()
    abandoned = threading.Event()

    def pump() -> None:
        frames = stream(model, mask, [int(seed)], sampler=sampler, steps=steps, guidance=guidance)
        last = None
        try:
            for frame in frames:
                elapsed = time.perf_counter() - start
                if frame.final:
                    mailbox.put(LiveFrame(frame.step, frame.total, None, frame.x0, elapsed, final=True), final=True)
                    return
                last = LiveFrame(frame.step, frame.total, frame.x_t, frame.x0, elapsed)
                mailbox.put(last)
                if abandoned.is_set() or (stop is not None and stop.is_set()):
                    break
        except Exception as exc:  # raised in the consumer's thread
            mailbox.put(exc, final=True)
            return
        finally:
            frames.close()
        if last is not None:
            mailbox.put(LiveFrame(last.step, last.total, None, last.x0, time.perf_counter() - start,
                                  final=True, stopped=True), final=True)
        else:
            mailbox.put(RuntimeError("generation stopped before its first step"), final=True)

    thread = threading.Thread(target=pump, daemon=True, name="live-frames")
    thread.start()
    shown_at = 0.0
    try:
        while True:
            wait_s = min_interval_s - (time.perf_counter() - shown_at)
            if wait_s > 0:
                time.sleep(wait_s)
            item = mailbox.take()
            shown_at = time.perf_counter()
            if isinstance(item, Exception):
                raise item
            yield item
            if item.final:
                thread.join(timeout=5.0)  # let the sampler's threads wind down before the caller moves on
                return
    finally:
        abandoned.set()


__all__ = ["LiveFrame", "StopSignals", "live_frames"]
