"""Fault injection for the embedded Hub, so retries and resumes are tested rather than assumed.

A `FaultPlan` says what to break; the server wraps it in a `FaultInjector` that counts how many
times each fault has fired. Replacing the server's plan starts the counts again. Three faults:

- error: answer `error_status` (a 5xx or 429, with `Retry-After` when set) to the first
  `error_times` requests whose route name is `error_route` (`"*"` matches every route);
- drop: close the connection after `drop_after_bytes` bytes of a resolve response body, for
  the first `drop_times` responses long enough to be cut;
- throttle: pace every response body at no more than `bytes_per_second`;
- race: just before each of the first `concurrent_commits` commit requests, another writer
  commits to the same branch, so the request's `parentCommit` is genuinely stale (HTTP 412);
- lost answer: the first `lost_answers` successful requests to `lost_answer_route` are carried
  out, but the client is answered 502, as when a proxy loses the Hub's answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pipeline.rehearsal.hub.stats import ServerStats

ANY_ROUTE = "*"
# Ten pacing steps a second keep a throttled stream smooth without busy sleeping.
_PACING_STEPS_PER_SECOND = 10


@dataclass(frozen=True)
class FaultPlan:
    """What to break and how often; the default plan breaks nothing."""

    error_status: int | None = None
    error_route: str = ANY_ROUTE
    error_times: int = 1
    retry_after: int | None = None
    drop_after_bytes: int | None = None
    drop_times: int = 1
    bytes_per_second: int | None = None
    concurrent_commits: int = 0
    lost_answers: int = 0
    lost_answer_route: str = "tag_create"

    def __post_init__(self) -> None:
        if self.error_status is not None and not (self.error_status == 429 or 500 <= self.error_status <= 599):
            raise ValueError(f"error_status must be 429 or a 5xx, not {self.error_status}")
        if min(self.error_times, self.drop_times, self.concurrent_commits, self.lost_answers) < 0:
            raise ValueError("error_times, drop_times, concurrent_commits and lost_answers must be >= 0")
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError("retry_after must be >= 0 seconds")
        if self.drop_after_bytes is not None and self.drop_after_bytes < 0:
            raise ValueError("drop_after_bytes must be >= 0")
        if self.bytes_per_second is not None and self.bytes_per_second <= 0:
            raise ValueError("bytes_per_second must be > 0")


@dataclass(frozen=True)
class InjectedError:
    """An error response to send instead of the real one."""

    status: int
    retry_after: int | None


class FaultInjector:
    """Applies one `FaultPlan`, counting fired faults in the server's stats; thread-safe."""

    def __init__(self, plan: FaultPlan, stats: ServerStats) -> None:
        self.plan = plan
        self._stats = stats
        self._lock = threading.Lock()
        self._errors_left = plan.error_times if plan.error_status is not None else 0
        self._drops_left = plan.drop_times if plan.drop_after_bytes is not None else 0
        self._races_left = plan.concurrent_commits
        self._losses_left = plan.lost_answers

    def race_due(self) -> bool:
        """Whether another writer should commit before this commit request is handled."""
        with self._lock:
            if self._races_left <= 0:
                return False
            self._races_left -= 1
        self._stats.record_fault("race")
        return True

    def answer_lost(self, route: str) -> bool:
        """Whether the answer to this (successful) request should be lost on its way back."""
        if self.plan.lost_answer_route not in (ANY_ROUTE, route):
            return False
        with self._lock:
            if self._losses_left <= 0:
                return False
            self._losses_left -= 1
        self._stats.record_fault("lost_answer")
        return True

    def error_for(self, route: str) -> InjectedError | None:
        """The error to answer instead of handling this request, if one is due."""
        plan = self.plan
        if plan.error_status is None or plan.error_route not in (ANY_ROUTE, route):
            return None
        with self._lock:
            if self._errors_left <= 0:
                return None
            self._errors_left -= 1
        self._stats.record_fault("error")
        return InjectedError(plan.error_status, plan.retry_after)

    def drop_limit(self, body_length: int) -> int | None:
        """How many body bytes to send before dropping the connection, if this body is cut."""
        limit = self.plan.drop_after_bytes
        if limit is None or body_length <= limit:
            return None
        with self._lock:
            if self._drops_left <= 0:
                return None
            self._drops_left -= 1
        self._stats.record_fault("drop")
        return limit

    def pace(self, body: Iterable[bytes]) -> Iterable[bytes]:
        """The body, slowed down to the plan's bandwidth cap if it has one."""
        rate = self.plan.bytes_per_second
        if rate is None:
            return body
        self._stats.record_fault("throttle")
        return _paced(body, rate)


def _paced(body: Iterable[bytes], rate: int) -> Iterator[bytes]:
    step = max(1, rate // _PACING_STEPS_PER_SECOND)
    started = time.monotonic()
    sent = 0
    try:
        for chunk in body:
            for offset in range(0, len(chunk), step):
                piece = chunk[offset : offset + step]
                yield piece
                sent += len(piece)
                # Sleep until the bytes sent so far fit under the cap.
                delay = started + sent / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
