"""The inspector's memory: the most recent exchanges, a bounded ring keyed by sequence number."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Ring(Generic[T]):
    """At most `size` values, oldest evicted first; keys are the inspector's own sequence.

    A request id cannot be the key: a client chooses it (X-Request-Id) and may repeat it.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a ring holds at least one value")
        self.size = size
        self._values: OrderedDict[int, T] = OrderedDict()

    def add(self, key: int, value: T) -> list[T]:
        """Keep `value` as the newest; return the values evicted to make room."""
        self._values[key] = value
        evicted = []
        while len(self._values) > self.size:
            evicted.append(self._values.popitem(last=False)[1])
        return evicted

    def get(self, key: int) -> T | None:
        return self._values.get(key)

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[T]:
        """Oldest first."""
        return iter(list(self._values.values()))
