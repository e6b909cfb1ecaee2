"""Load generation: latency percentiles at concurrency 1 and throughput at concurrency N.

Each client is a ``requests.Session`` (keep-alive, as a browser or a script would be); every
phase runs for a bounded wall-clock duration and a bounded number of requests. A non-200
answer is counted as an error and excluded from the latencies, so errors never look fast.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

import requests

MAX_REQUESTS = 100_000


@dataclass(frozen=True)
class Latency:
    p50_ms: float
    p95_ms: float
    p99_ms: float
    requests: int
    errors: int


@dataclass(frozen=True)
class Throughput:
    rps: float
    requests: int
    errors: int


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (p in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def measure_latency(
    url: str, headers: dict[str, str], duration: float, min_requests: int = 20
) -> Latency:
    """Sequential requests for ``duration`` seconds (and at least ``min_requests``, time
    permitting); always at least one."""
    times, errors = [], 0
    with requests.Session() as session:
        session.headers.update(headers)
        began = time.monotonic()
        deadline, hard_stop = began + duration, began + 4 * duration
        # Past the deadline, keep going up to min_requests for stabler percentiles, but never
        # past hard_stop: a query taking seconds gets fewer samples, not a longer run.
        while len(times) + errors < MAX_REQUESTS and (
            time.monotonic() < deadline
            or (len(times) + errors < min_requests and time.monotonic() < hard_stop)
        ):
            started = time.perf_counter()
            response = session.get(url, timeout=60)
            _ = response.content
            elapsed = time.perf_counter() - started
            if response.status_code == 200:
                times.append(elapsed)
            else:
                errors += 1
            if errors > 50 and not times:
                break  # nothing but errors: no point hammering on
    times.sort()
    return Latency(
        percentile(times, 50) * 1000,
        percentile(times, 95) * 1000,
        percentile(times, 99) * 1000,
        len(times),
        errors,
    )


def measure_throughput(
    url: str, headers: dict[str, str], duration: float, concurrency: int = 8
) -> Throughput:
    """``concurrency`` clients each looping for ``duration`` seconds; completed 200s per second."""
    counts = [0] * concurrency
    errors = [0] * concurrency
    start = threading.Barrier(concurrency + 1)
    deadline_box: list[float] = []

    def client(slot: int) -> None:
        with requests.Session() as session:
            session.headers.update(headers)
            start.wait()
            deadline = deadline_box[0]
            while time.monotonic() < deadline and counts[slot] < MAX_REQUESTS:
                try:
                    response = session.get(url, timeout=60)
                    _ = response.content
                except requests.RequestException:
                    errors[slot] += 1
                    continue
                if response.status_code == 200:
                    counts[slot] += 1
                else:
                    errors[slot] += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    began = time.monotonic()
    deadline_box.append(began + duration)
    start.wait()
    for thread in threads:
        thread.join(timeout=duration + 120)
    elapsed = time.monotonic() - began
    return Throughput(sum(counts) / elapsed, sum(counts), sum(errors))
