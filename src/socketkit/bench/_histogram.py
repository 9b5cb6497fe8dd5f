"""A log-linear latency histogram in the style of HdrHistogram.

Strategy: values (nanoseconds, integers) below ``2**SUB_BITS`` get a bucket
each; above, every power of two is split into ``2**(SUB_BITS-1)`` equal
buckets. With ``SUB_BITS = 8`` a recorded value is known to within 1/128
(0.8 %) of itself at every magnitude, in a few kilobytes, and recording is
one ``bit_length`` and a dict increment. Percentiles report the highest value
of the bucket they fall in (as HdrHistogram's ``value_at_percentile`` does),
clipped to the largest value recorded, so they never understate.

Histograms from several processes merge exactly by adding counts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["SUB_BITS", "Histogram"]

#: Precision: 2**(SUB_BITS-1) buckets per power of two (relative error < 2**-(SUB_BITS-1)).
SUB_BITS = 8
_LINEAR = 1 << SUB_BITS
_HALF = _LINEAR >> 1


def bucket_of(value: int) -> int:
    """The bucket index of a non-negative integer value."""
    if value < _LINEAR:
        return value
    shift = value.bit_length() - SUB_BITS
    return _LINEAR + (shift - 1) * _HALF + ((value >> shift) - _HALF)


def bucket_bounds(index: int) -> tuple[int, int]:
    """The lowest and highest value a bucket holds."""
    if index < _LINEAR:
        return index, index
    shift = (index - _LINEAR) // _HALF + 1
    top = (index - _LINEAR) % _HALF + _HALF
    low = top << shift
    return low, low + (1 << shift) - 1


class Histogram:
    """Counts of values (nanoseconds) in log-linear buckets."""

    __slots__ = ("count", "counts", "max", "min", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.count = 0
        self.total = 0
        self.min = 0
        self.max = 0

    def record(self, value: int, times: int = 1) -> None:
        """Record ``value`` (clamped at 0) ``times`` times."""
        value = max(0, int(value))
        index = bucket_of(value)
        self.counts[index] = self.counts.get(index, 0) + times
        if self.count == 0 or value < self.min:
            self.min = value
        self.max = max(self.max, value)
        self.count += times
        self.total += value * times

    def merge(self, other: Histogram) -> None:
        """Add ``other``'s counts to this histogram."""
        if other.count == 0:
            return
        for index, n in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + n
        self.min = other.min if self.count == 0 else min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.count += other.count
        self.total += other.total

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def percentile(self, percent: float) -> int:
        """The value at or below which ``percent`` % of the values lie (0 when empty)."""
        if self.count == 0:
            return 0
        rank = max(1, math.ceil(percent / 100.0 * self.count))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                return min(bucket_bounds(index)[1], self.max)
        return self.max

    def buckets(self) -> list[tuple[int, int]]:
        """(highest value of the bucket, count) pairs, in increasing order."""
        return [(min(bucket_bounds(i)[1], self.max), self.counts[i]) for i in sorted(self.counts)]

    def to_counts(self) -> dict[str, object]:
        """A JSON- and pickle-friendly form (``from_counts`` reads it back)."""
        return {
            "counts": sorted(self.counts.items()),
            "min": self.min,
            "max": self.max,
            "total": self.total,
        }

    @classmethod
    def from_counts(cls, data: dict[str, object]) -> Histogram:
        hist = cls()
        pairs = data["counts"]
        assert isinstance(pairs, Iterable)
        for index, n in pairs:
            hist.counts[int(index)] = int(n)
            hist.count += int(n)
        hist.min = int(data["min"])  # type: ignore[call-overload]
        hist.max = int(data["max"])  # type: ignore[call-overload]
        hist.total = int(data["total"])  # type: ignore[call-overload]
        return hist
