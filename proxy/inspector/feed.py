"""The inspector's event stream fan-out: one bounded queue per page, never a wait.

Publishing is synchronous and puts without waiting; a page whose queue is full (it
stopped reading, or reads slower than exchanges happen) is dropped on the spot. The
proxied streams never wait on a page; a dropped page reconnects and starts afresh.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# Messages a page may fall behind by before it is dropped.
QUEUE_SIZE = 256


class Subscriber:
    """One page's queue of preformatted messages; None means the stream is over."""

    def __init__(self, queue_size: int, on_drop: Callable[[], None]) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=queue_size)
        self.on_drop = on_drop
        self.dropped = False


class Feed:
    def __init__(self, queue_size: int = QUEUE_SIZE) -> None:
        self.queue_size = queue_size
        self._subscribers: set[Subscriber] = set()

    def __len__(self) -> int:
        return len(self._subscribers)

    def subscribe(self, on_drop: Callable[[], None]) -> Subscriber:
        subscriber = Subscriber(self.queue_size, on_drop)
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    def publish(self, message: str) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber.queue.put_nowait(message)
            except asyncio.QueueFull:
                self.drop(subscriber)

    def drop(self, subscriber: Subscriber) -> None:
        """Stop feeding a page that fell behind: its queue is emptied and ended."""
        self._subscribers.discard(subscriber)
        subscriber.dropped = True
        _end(subscriber)
        subscriber.on_drop()

    def close(self) -> None:
        """End every page's stream (at shutdown): pending messages are still sent."""
        for subscriber in list(self._subscribers):
            self._subscribers.discard(subscriber)
            if subscriber.queue.full():
                _end(subscriber)
            else:
                subscriber.queue.put_nowait(None)


def _end(subscriber: Subscriber) -> None:
    queue = subscriber.queue
    while not queue.empty():
        queue.get_nowait()
    queue.put_nowait(None)
