"""Live generation for an interactive front end: frames with timings, and a Stop that works per user.

`live_frames` wraps `FundusPipeline.stream`: it adds the elapsed time to every frame and, when the
caller's stop event is set, closes the stream (the sampler ends at its next step) and hands back the
last prediction of the clean image, finished by the pipeline, as the result. `StopSignals` keeps one
stop event per session, so a Stop button stops that session's run only.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from retree_core.config import SampleConfig
from retree_core.pipeline import FundusPipeline, MaskSource, masks_at


@dataclass
class LiveFrame:
    step: int
    total: int
    x_t: np.ndarray  # uint8 HxWx3; on the final frame the last state: the sample, or where a stop left it
    x0: np.ndarray  # current prediction of the clean image at the model's size
    elapsed_s: float
    final: bool = False
    stopped: bool = False  # ended early by the stop event; x0 is the last prediction
    image: np.ndarray | None = None  # final frame: x0 finished by the pipeline (super-resolution, aperture)
    mask: np.ndarray | None = None  # final frame: the mask at the image's size, cut to the aperture


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

    def stop_session(self, session: str) -> None:
        """Stop everything a session runs (its keys: the session, or "session:what") and forget it."""
        with self._lock:
            keys = [k for k in self._events if k == session or k.startswith(f"{session}:")]
            events = [self._events.pop(k) for k in keys]
        for event in events:
            event.set()



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


def live_frames(pipe: FundusPipeline, masks: MaskSource, options: SampleConfig, *,
                stop: threading.Event | None = None, min_interval_s: float = 0.0) -> Iterator[LiveFrame]:
    """Frames of one generation (the first mask, seed options.seed), newest first: the sampler runs at
    full speed in its own thread and a slow consumer (a browser) skips frames instead of slowing it down;
    `min_interval_s` caps the frame rate (each frame shown costs image encoding). The last frame has
    final=True and the finished image (finished, or stopped by `stop`: then of the last prediction).
    Closing this iterator also stops the sampler."""
    options = pipe.options(options)  # bad options fail here, in the caller's thread
    start = time.perf_counter()
    mailbox = _Latest()
    abandoned = threading.Event()

    def pump() -> None:
        frames = pipe.stream(masks, options)
        last = None
        try:
            for frame in frames:
                elapsed = time.perf_counter() - start
                if frame.final:
                    mailbox.put(LiveFrame(frame.step, frame.total, frame.x0, frame.x0, elapsed, final=True,
                                          image=frame.images[0], mask=frame.masks[0]), final=True)
                    return
                last = LiveFrame(frame.step, frame.total, frame.x_t, frame.x0, elapsed)
                mailbox.put(last)
                if abandoned.is_set() or (stop is not None and stop.is_set()):
                    break
            frames.close()
            if last is None:
                raise RuntimeError("generation stopped before its first step")
            image, mask = pipe.finish(last.x0, masks_at(masks, pipe.output_px)[0], options)
            mailbox.put(LiveFrame(last.step, last.total, last.x_t, last.x0, time.perf_counter() - start,
                                  final=True, stopped=True, image=image, mask=mask), final=True)
        except Exception as exc:  # raised in the consumer's thread
            mailbox.put(exc, final=True)
        finally:
            frames.close()

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
