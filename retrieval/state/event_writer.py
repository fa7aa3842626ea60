"""Group commit for events: many concurrent requests, one durable write.

Requests hand their rows to ``EventWriter.submit`` and wait for their report. One writer thread
takes everything queued, validates it and commits it to the log in one transaction, then answers
every request of that batch; the more requests arrive while a commit runs, the larger the next
batch. A second thread writes the affected profiles afterwards, off the requests' path; until it
has, ``Profiles.vector`` computes them from the log, so the next read reflects every acknowledged
event.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from retrieval.state.profiles import EventReport, Profiles

log = logging.getLogger("hybridrec.events")


class WriterBusy(RuntimeError):
    """More rows are waiting to be committed than the writer accepts; retry shortly."""


@dataclass
class _Request:
    rows: list[Any]
    future: Future


_STOP = object()


class EventWriter:
    """Commits events of concurrent callers together.

    Example::

        writer = EventWriter(lambda: engine.profiles)
        report = writer.submit([{"user_id": "u1", "type": "click", "item_id": "sku-1"}]).result()
        writer.close()
    """

    def __init__(self, profiles: Callable[[], Profiles], max_pending_rows: int = 20_000,
                 max_batch_rows: int = 5_000, flush_seconds: float = 5.0):
        self._profiles = profiles
        self.flush_seconds = flush_seconds
        self.max_pending_rows = max_pending_rows
        self.max_batch_rows = max_batch_rows
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending_rows = 0
        self._count_lock = threading.Lock()
        self._refresh_wanted = threading.Event()
        self._closing = False
        self._refresh_stop = False
        self._started = False
        self._start_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    @property
    def pending_rows(self) -> int:
        """Rows handed in and not yet committed."""
        return self._pending_rows

    def submit(self, rows: list[Any]) -> Future:
        """Queue one request's rows; the future resolves to its ``EventReport`` once they are
        durable. Raises ``WriterBusy`` when the queue is full (nothing was queued)."""
        if self._closing:
            raise RuntimeError("the event writer is closed")
        self._start()
        with self._count_lock:
            if self._pending_rows and self._pending_rows + len(rows) > self.max_pending_rows:
                raise WriterBusy(f"{self._pending_rows} events are waiting to be written")
            self._pending_rows += len(rows)
        request = _Request(rows, Future())
        self._queue.put(request)
        return request.future

    def profiles_changed(self) -> None:
        """Profiles went stale outside this writer (another instance's events): write them soon."""
        if not self._closing:
            self._start()
            self._refresh_wanted.set()

    def _start(self) -> None:
        if self._started:
            return
        with self._start_lock:
            if self._started:
                return
            for target, name in ((self._commit_loop, "event-commit"), (self._refresh_loop, "profile-refresh")):
                thread = threading.Thread(target=target, name=name, daemon=True)
                thread.start()
                self._threads.append(thread)
            self._started = True

    def _take_batch(self) -> tuple[list[_Request], bool]:
        """Block for one request, then take whatever else is queued (up to the batch size)."""
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch, rows = [first], len(first.rows)
        while rows < self.max_batch_rows:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                break
            if more is _STOP:
                return batch, True
            batch.append(more)
            rows += len(more.rows)
        return batch, False

    def _commit_loop(self) -> None:
        stop = False
        while not stop:
            batch, stop = self._take_batch()
            if not batch:
                continue
            try:
                reports: list[EventReport] = self._profiles().commit([r.rows for r in batch])
            except BaseException as err:  # nothing of the batch was committed: every caller hears why
                log.exception("committing %d event requests failed", len(batch))
                for request in batch:
                    request.future.set_exception(err)
            else:
                for request, report in zip(batch, reports):
                    request.future.set_result(report)
                self._refresh_wanted.set()
            finally:
                with self._count_lock:
                    self._pending_rows -= sum(len(r.rows) for r in batch)

    def _refresh_loop(self) -> None:
        """Write stale profiles as commits arrive; flush them (a slow, whole-shard write) at most
        every ``flush_seconds``, and once more when the writes stop."""
        last_flush = time.monotonic()
        while True:
            profiles = self._profiles()
            self._refresh_wanted.wait(self.flush_seconds if profiles.unflushed else None)
            self._refresh_wanted.clear()
            last_round = self._refresh_stop  # read before the round: it then runs after the last commit
            durable = last_round or time.monotonic() - last_flush >= self.flush_seconds
            try:
                self._profiles().refresh_stale(durable=durable)
                if durable:
                    last_flush = time.monotonic()
            except Exception:  # profiles stay computable from the log; the next round retries
                log.exception("refreshing profiles failed; they are computed from the log until a retry succeeds")
            if last_round:
                return

    def close(self) -> None:
        """Commit what is queued, write the stale profiles, stop both threads."""
        self._closing = True
        if not self._started:
            return
        self._queue.put(_STOP)
        commit_thread, refresh_thread = self._threads
        commit_thread.join()
        self._refresh_stop = True  # set before the wake-up, so the last round runs after the last commit
        self._refresh_wanted.set()
        refresh_thread.join()
