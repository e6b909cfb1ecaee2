"""Pacing of upstream traffic: the bandwidth cap over a sliding 10 s window, the exponential
backoff with full jitter, and the parsing of ``Retry-After``.
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
from collections import deque
from collections.abc import Callable

WINDOW_SECONDS = 10.0
MAX_RETRY_AFTER = 3600.0  # a server asking for more than an hour is not believed


class BandwidthLimiter:
    """At most ``rate * 10`` bytes in any 10 s window (0 = unlimited).

    A sliding log of (time, bytes) rather than a token bucket: a bucket allows its burst on top
    of the rate, so a window could carry up to twice the cap. Callers ask before each chunk.
    """

    def __init__(
        self,
        bytes_per_second: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = bytes_per_second
        self.budget = int(bytes_per_second * WINDOW_SECONDS)
        self._log: deque[tuple[float, int]] = deque()
        self._used = 0
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()

    @property
    def chunk_size(self) -> int:
        """Chunks small enough that one never exceeds the window's budget."""
        return 64 * 1024 if not self.rate else max(1, min(64 * 1024, self.budget // 32))

    def acquire(self, n: int) -> None:
        if not self.rate or n <= 0:
            return
        n = min(n, self.budget)  # chunk_size keeps real chunks below this
        with self._lock:
            while True:
                now = self._clock()
                while self._log and self._log[0][0] <= now - WINDOW_SECONDS:
                    self._used -= self._log.popleft()[1]
                if self._used + n <= self.budget:
                    self._log.append((now, n))
                    self._used += n
                    return
                # Wait until enough of the oldest entries leave the window.
                need, freed, until = self._used + n - self.budget, 0, now
                for stamp, size in self._log:
                    freed += size
                    until = stamp + WINDOW_SECONDS
                    if freed >= need:
                        break
                self._sleep(max(until - now, 0.001))


def backoff_delay(
    failures: int,
    cap: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
    base: float = 1.0,
) -> float:
    """Seconds to wait after ``failures`` consecutive transient failures (1, 2, ...).

    Full jitter between ``base`` and ``min(cap, base * 2**(failures-1))``; the lower bound of
    one base keeps a flapping link from being hammered. ``Retry-After`` is a floor.
    """
    ceiling = min(cap, base * 2 ** min(max(failures - 1, 0), 30))
    delay = (rng or random).uniform(min(base, ceiling), ceiling)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return delay


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent
    or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)
