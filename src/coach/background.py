"""A blocking generator (the coach's stream) consumed from async code (the web server) without blocking it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Generator
from typing import Any, TypeVar

from coach.llm.base import Stop, stop_this_thread_with

T = TypeVar("T")


async def in_background(steps: Callable[[], Generator[T, None, None]]) -> AsyncIterator[T]:
    """The items of a blocking generator, produced on a worker thread.

    A stop (the event cancelled: the stop button, a closed tab) is felt at once, even while the model is
    silent; it is also the answer's llm.base.Stop, so a backend waiting on a server ends that wait (and its
    connection) at once; the generator is then closed on its own thread, which stops the model.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()
    stop = Stop()

    def put(item: tuple[bool, Any]) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the server's loop is gone
            pass

    def produce() -> None:
        stop_this_thread_with(stop)
        items = steps()
        try:
            for item in items:
                if stop.is_set():
                    break
                put((False, item))
        except Exception as exc:  # handed to the event, as if raised there
            put((True, exc))
        finally:
            items.close()  # GeneratorExit in the coach's stream: the model stops
            put((True, None))

    threading.Thread(target=produce, name="coach-answer", daemon=True).start()
    try:
        while True:
            done, item = await queue.get()
            if done:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
