"""Per-key request rate limit: a token bucket for each API key, in this process.

A bucket holds up to a minute's allowance and refills continuously, so short bursts pass and a
sustained rate above the limit gets 429 with a Retry-After. With several server processes each
one counts on its own; the limit is a guard against runaway clients, not billing.
"""

from __future__ import annotations

import math
import threading
import time

from memvault.errors import RateLimited


class RateLimiter:
    def __init__(self, per_minute: int, *, max_keys: int = 100_000) -> None:
        self.capacity = float(per_minute)
        self.refill_per_second = per_minute / 60.0
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, last time)
        self._lock = threading.Lock()

    def check(self, key_id: str) -> None:
        """Take one token for `key_id`, or raise `RateLimited` saying when to come back."""
        if self.capacity <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key_id, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.refill_per_second)
            if tokens < 1:
                self._buckets[key_id] = (tokens, now)
                wait = math.ceil((1 - tokens) / self.refill_per_second)
                raise RateLimited("too many requests for this key", details={"retry_after": wait})
            if len(self._buckets) >= self.max_keys and key_id not in self._buckets:
                self._buckets.clear()  # bounded memory; forgetting only ever lets more through
            self._buckets[key_id] = (tokens - 1, now)
