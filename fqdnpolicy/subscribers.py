"""A list of callbacks to hand values to: subscribe, cancel, publish, from any thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Subscribers"]

T = TypeVar("T")


class Subscribers(Generic[T]):
    """Callbacks subscribed to a stream of values, called in subscription order.

    Subscribing and cancelling are thread-safe and may happen while values are being
    published, also from inside a callback: each publication calls the callbacks subscribed
    when it started (a snapshot), and a change takes effect from the next one.

    :attr:`callbacks` is that snapshot, an immutable tuple replaced on every change, so a
    caller can take it at one moment and call the callbacks later (the DNS cache takes it
    under its lock, when it makes a batch, and delivers the batch after releasing the lock).
    """

    __slots__ = ("_entries", "_lock", "callbacks")

    def __init__(self) -> None:
        """Start with no subscribers."""
        self._lock = threading.Lock()
        # One token per subscription, so cancelling one of two subscriptions of the same
        # callback removes only that one.
        self._entries: tuple[tuple[object, Callable[[T], None]], ...] = ()
        #: The callbacks subscribed now, in subscription order.
        self.callbacks: tuple[Callable[[T], None], ...] = ()

    def add(self, callback: Callable[[T], None]) -> Callable[[], None]:
        """Subscribe ``callback``, after the callbacks already subscribed.

        Args:
            callback: Called with each value published from now on.

        Returns:
            A function that cancels this subscription; calling it again does nothing.
        """
        token = object()
        with self._lock:
            self._set((*self._entries, (token, callback)))

        def cancel() -> None:
            with self._lock:
                self._set(tuple(entry for entry in self._entries if entry[0] is not token))

        return cancel

    def _set(self, entries: tuple[tuple[object, Callable[[T], None]], ...]) -> None:
        self._entries = entries
        self.callbacks = tuple(callback for _, callback in entries)

    def publish(self, value: T) -> None:
        """Call each subscribed callback with ``value``, in subscription order.

        Raises:
            Exception: Whatever a callback raised; the callbacks after it are not called.
        """
        for callback in self.callbacks:
            callback(value)

    __call__ = publish

    def __len__(self) -> int:
        """Return how many subscriptions there are."""
        return len(self.callbacks)

    def __bool__(self) -> bool:
        """Return whether there is any subscription."""
        return bool(self.callbacks)
