"""A job on a worker thread, holding the network lock, with each sampler step handed to the page as it comes."""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator

NETWORK = threading.Lock()


class Stopped(Exception):
    """Raised inside a sampler's callback when the user pressed Stop."""


def stream(work: Callable[[Callable], Any], stop: threading.Event) -> Iterator[tuple[str, Any]]:
    """Run work(callback) on a worker thread; yield ("step", (i, t, x_t, x0)) while it runs, then ("done", result).

    Steps that arrive faster than the page takes them are skipped to the newest one (the last step is always
    shown). Setting stop, or closing the iterator, makes the callback raise Stopped at the next step; the worker
    is waited for before this returns.
    """
    events: queue.Queue = queue.Queue()
    closed = threading.Event()  # this iterator was closed early: its work is not wanted any more

    def callback(i, t, x, x0):
        if stop.is_set() or closed.is_set():
            raise Stopped
        events.put(("step", (i, int(t), x.detach().float().cpu().clone(), x0.detach().float().cpu().clone())))

    def target():
        with NETWORK:
            try:
                events.put(("done", work(callback)))
            except BaseException as exc:  # handed to the page's thread, which raises it there
                events.put(("error", exc))

    worker = threading.Thread(target=target, name="ddpmlab-studio-job", daemon=True)
    worker.start()
    try:
        later = None
        while True:
            kind, item = later or events.get()
            later = None
            while kind == "step" and not events.empty():  # skip to the newest step, but show the last one
                later = events.get()
                if later[0] != "step":
                    break
                item, later = later[1], None
            if kind == "error":
                raise item
            yield kind, item
            if kind == "done":
                return
    finally:
        closed.set()
        worker.join()
