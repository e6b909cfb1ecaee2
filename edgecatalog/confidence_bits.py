"""An image's annotation confidences as bits (``image.confidence_bits``), so the review queue
"a confidence in [low, high]" is counted from a count table instead of a distinct count over
the annotations (half a million images at 1M, about a second). No Flask.

Confidence 0..1 is cut at every multiple of 0.05 into ``BUCKETS`` buckets: the multiples
themselves (0, 0.05, ..., 1: even buckets) and the open intervals between them (odd ones), so
that a queue with round bounds, [0.4, 0.6] inclusive, is a set of whole buckets. With
``x = c*20``: ``bucket(c) = 2*floor(x) + (x > floor(x))`` (the engines compute the same in SQL,
on the same doubles), and bit ``k`` of an image is set when one of its annotations has a
confidence in bucket ``k`` (41 bits: a BIGINT). Triggers on ``annotation``
(migration 0020) keep the bits; the bulk writer gives a new image its bits as it inserts it
(``bits_of``), so its annotations' triggers find them set and do nothing.

A range [low, high] is exact from the bits because ``bucket`` is monotone: a bucket strictly
between ``bucket(low)`` and ``bucket(high)`` holds only confidences inside the range, and so
do the end buckets when no confidence outside the range can fall into them (``full_mask``).
Only a partly covered end bucket is rechecked against the annotations themselves, through
the confidence index, over that bucket's part of the range (``Split.partial``): for round
bounds (0.4..0.6) there is none.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

STEPS = 20  # multiples of 0.05
BUCKETS = 2 * STEPS + 1
# Confidences in a bucket lie within this of its nominal bounds (rounding of c*20 is ~1e-16):
# a generous margin for the index range a partial bucket is rechecked over.
MARGIN = 1e-9


def bucket(confidence: float) -> int:
    x = confidence * STEPS
    whole = math.floor(x)
    return 2 * whole + (x > whole)


def _nominal(k: int) -> tuple[float, float]:
    """The values bucket ``k`` stands for: a multiple of 0.05, or the interval above one."""
    step = k // 2
    return step / STEPS, (step + k % 2) / STEPS


def bits_of(confidences: Iterable[float | None]) -> int:
    """The bits of an image whose annotations have these confidences (None: a manual one)."""
    bits = 0
    for c in confidences:
        if c is not None:
            bits |= 1 << bucket(c)
    return bits


@dataclass(frozen=True)
class Split:
    """A range [low, high] as the buckets wholly inside it (``full``, a bit mask) and the
    partly covered end buckets: (bucket, index range low, index range high) each, whose
    confidences are rechecked against the range one by one."""

    full: int
    partial: tuple[tuple[int, float, float], ...]


def split(low: float, high: float) -> Split:
    k_low, k_high = bucket(low), bucket(high)
    # Nothing below low falls into low's bucket when the next smaller double does not (or
    # nothing is below: 0); nothing above high into high's, likewise (or high is 1).
    clean_below = low <= 0 or bucket(math.nextafter(low, -math.inf)) < k_low
    clean_above = high >= 1 or bucket(math.nextafter(high, math.inf)) > k_high
    full = 0
    for k in range(k_low + 1, k_high):
        full |= 1 << k
    partial = []
    ends = [k_low] if k_low == k_high else [k_low, k_high]
    for k in ends:
        inside = (k > k_low or clean_below) and (k < k_high or clean_above)
        if low > high:
            continue
        if inside:
            full |= 1 << k
        else:
            start, end = _nominal(k)
            lo, hi = max(low, start - MARGIN), min(high, end + MARGIN)
            partial.append((k, lo, hi))
    return Split(full, tuple(partial))
