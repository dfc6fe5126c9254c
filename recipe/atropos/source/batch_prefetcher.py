"""The next step's `/batch` poll, run in a background thread while the current step trains.

A queue of one: at most one poll is outstanding, and its batch waits for the trainer to take it.
The poll function journals what it pulls (the batch is popped on the server), so a crash while a
prefetched batch waits loses nothing. The trainer counts the batch's policy lag when it trains it,
as for any batch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from recipe.atropos.data.scored_group import AtroposBatch

PollFunction = Callable[[threading.Event], "AtroposBatch | None"]


class BatchPrefetcher:
    def __init__(self, poll: PollFunction) -> None:
        self._poll = poll
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="atropos-prefetch")
        self._future: Future | None = None
        self._stop = threading.Event()

    @property
    def pending(self) -> bool:
        return self._future is not None

    def start(self) -> None:
        """Start polling for the next batch (no-op when a poll is already outstanding)."""
        if self._future is None:
            self._stop.clear()
            self._future = self._executor.submit(self._poll, self._stop)

    def take(self) -> tuple[AtroposBatch | None, float]:
        """Wait for the outstanding poll: (its batch or None, seconds the caller waited). Re-raises
        what the poll raised (unavailable, not registered) for the caller's usual handling."""
        if self._future is None:
            raise RuntimeError("BatchPrefetcher.take() without start()")
        future, self._future = self._future, None
        started = time.monotonic()
        try:
            batch = future.result()
        finally:
            waited = time.monotonic() - started
        return batch, waited

    def close(self, timeout: float) -> AtroposBatch | None:
        """Stop the outstanding poll (it returns at its next check, within one request timeout) and
        the thread; returns a batch it had already pulled (journaled by the poll function)."""
        self._stop.set()
        batch = None
        if self._future is not None:
            future, self._future = self._future, None
            try:
                batch = future.result(timeout=timeout)
            except Exception:  # noqa: BLE001 - shutting down: the error was the poll's, nothing to train
                batch = None
        self._executor.shutdown(wait=False, cancel_futures=True)
        return batch
