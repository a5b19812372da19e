"""Kinesis's per-shard write limits, as token buckets: which entries a stream would take now.

A provisioned Kinesis shard takes up to 1,000 records and 1 MiB (data blobs plus partition
keys) per second of writes (Kinesis Developer Guide, "Quotas and limits"); an entry over
either limit fails with `ProvisionedThroughputExceededException` while the other entries of
the same `PutRecords` succeed. The shard of an entry is the one whose hash-key range holds
the MD5 of its partition key, read as a 128-bit big-endian integer (no explicit hash keys
here, as the sink sends none).

`ShardLimits` is pure bookkeeping with an injectable clock: the fault proxy uses it to throttle
what it forwards to kinesalite, and an estimate of send time can use it with a simulated clock.
"""

from __future__ import annotations

import bisect
import hashlib
import threading
import time
from typing import Callable, Iterable

__all__ = ['BYTES_PER_SHARD_SECOND', 'RECORDS_PER_SHARD_SECOND', 'ShardLimits', 'hash_key']

# Write limits of one provisioned shard (Kinesis Developer Guide, "Quotas and limits").
RECORDS_PER_SHARD_SECOND = 1000
BYTES_PER_SHARD_SECOND = 1024 * 1024


def hash_key(partition_key: str) -> int:
    """The 128-bit hash key Kinesis derives from a partition key (MD5 of its UTF-8 bytes)."""
    return int.from_bytes(hashlib.md5(partition_key.encode('utf-8')).digest(), 'big')


class ShardLimits:
    """Per-shard token buckets of records and bytes, refilled continuously.

    Each bucket holds at most `burst_seconds` worth of its rate and starts full. An entry is
    admitted when both buckets of its shard hold enough; it then takes its record and its
    bytes. A refused entry takes nothing (Kinesis does not charge throttled entries).
    """

    def __init__(self, shards: Iterable[dict],
                 records_per_second: float = RECORDS_PER_SHARD_SECOND,
                 bytes_per_second: float = BYTES_PER_SHARD_SECOND,
                 burst_seconds: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """Args:
          shards: ListShards' `Shards` (each with `ShardId` and `HashKeyRange`); closed
            shards (with an `EndingSequenceNumber`) take no writes and are left out.
          records_per_second: records a shard takes per second.
          bytes_per_second: data + partition key bytes a shard takes per second.
          burst_seconds: how many seconds of quota a quiet shard saves up.
          clock: monotonic seconds.
        """
        open_shards = sorted(
            (int(shard['HashKeyRange']['StartingHashKey']),
              int(shard['HashKeyRange']['EndingHashKey']), shard['ShardId'])
             for shard in shards
             if not shard.get('SequenceNumberRange', {}).get('EndingSequenceNumber'))
        if not open_shards:
            raise ValueError('a stream needs at least one open shard')
        if records_per_second <= 0 or bytes_per_second <= 0 or burst_seconds <= 0:
            raise ValueError('rates and burst must be positive')
        self._starts = [start for start, _, _ in open_shards]
        self._ranges = open_shards
        self._rates = (float(records_per_second), float(bytes_per_second))
        self._burst = burst_seconds
        self._clock = clock
        self._lock = threading.Lock()
        now = clock()
        self._buckets = {shard_id: [self._rates[0] * burst_seconds,
                                    self._rates[1] * burst_seconds, now]
                         for _, _, shard_id in open_shards}

    @property
    def shard_ids(self) -> list[str]:
        return [shard_id for _, _, shard_id in self._ranges]

    def shard_of(self, partition_key: str) -> str:
        """The shard whose hash-key range holds the partition key's MD5."""
        key = hash_key(partition_key)
        index = bisect.bisect_right(self._starts, key) - 1
        if index < 0 or key > self._ranges[index][1]:
            raise ValueError(f'no open shard holds hash key {key}')
        return self._ranges[index][2]

    def admit(self, entries: Iterable[tuple[str, int]]) -> list[tuple[str, bool]]:
        """Decides a request's entries, in order.

        Args:
          entries: `(partition_key, size)` of each entry, size being data + key bytes.

        Returns:
          `(shard_id, admitted)` for each entry.
        """
        with self._lock:
            now = self._clock()
            decided = []
            for partition_key, size in entries:
                shard_id = self.shard_of(partition_key)
                bucket = self._buckets[shard_id]
                elapsed = max(0.0, now - bucket[2])
                bucket[0] = min(self._rates[0] * self._burst, bucket[0] + elapsed * self._rates[0])
                bucket[1] = min(self._rates[1] * self._burst, bucket[1] + elapsed * self._rates[1])
                bucket[2] = now
                admitted = bucket[0] >= 1 and bucket[1] >= size
                if admitted:
                    bucket[0] -= 1
                    bucket[1] -= size
                decided.append((shard_id, admitted))
            return decided

    def seconds_for(self, entries: Iterable[tuple[str, int]]) -> float:
        """Least time the stream needs to take `entries` at the limits, from empty buckets:
        the busiest shard's records or bytes divided by its rate (a lower bound for a plan)."""
        records: dict[str, int] = {}
        sizes: dict[str, int] = {}
        for partition_key, size in entries:
            shard_id = self.shard_of(partition_key)
            records[shard_id] = records.get(shard_id, 0) + 1
            sizes[shard_id] = sizes.get(shard_id, 0) + size
        return max([max(records[s] / self._rates[0], sizes[s] / self._rates[1])
                    for s in records] or [0.0])
