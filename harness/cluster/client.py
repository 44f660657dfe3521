"""Progress through Ray Client: Tune runs ``Tuner.fit`` (and its callbacks) on the head node, so
:class:`ClientLog` carries the progress lines back to the client through a Ray queue.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class ClientLog:
    """A picklable ``log`` for callbacks that run on the head under Ray Client: lines go to a Ray queue
    the client drains (:meth:`drain`) while ``Tuner.fit`` runs."""

    def __init__(self) -> None:
        from ray.util.queue import Queue

        self.queue = Queue(actor_options={"num_cpus": 0})

    def __call__(self, msg: str) -> None:
        self.queue.put(str(msg))

    def drain(self, log: Callable[[str], None]) -> None:
        from ray.util.queue import Empty

        while True:
            try:
                log(self.queue.get_nowait())
            except Empty:
                return

    def shutdown(self) -> None:
        self.queue.shutdown()


def fit_streaming(
    fit: Callable[[], Any], sink: ClientLog, log: Callable[[str], None], every: float = 0.5
) -> Any:
    """Run ``fit`` (a Ray Client ``Tuner.fit``) on a helper thread; print ``sink``'s lines meanwhile."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="sl2o-fit") as pool:
        future = pool.submit(fit)
        while not future.done():
            sink.drain(log)
            time.sleep(every)
        sink.drain(log)
        return future.result()
