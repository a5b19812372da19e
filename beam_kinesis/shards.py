"""Kinesis shards: which shard a partition key lands on, and what a shard takes per second.

A provisioned Kinesis shard takes up to 1,000 records and 1 MiB (data blobs plus partition
keys) per second of writes (Kinesis Developer Guide, "Quotas and limits"); an entry over
either limit fails with `ProvisionedThroughputExceededException` while the other entries of
the same `PutRecords` succeed. The shard of an entry is the one whose hash-key range holds
the MD5 of its partition key, read as a 128-bit big-endian integer (the sink sends no
explicit hash keys).

Used by `beam-kinesis plan` (how long a send takes at the limits, and how it spreads over the
shards) and by the test suite's shard-limited proxy (which entries a stream would take now),
so that the estimate and the stand-in for Kinesis share one model of the limit.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import threading
import time
from typing import Callable, Iterable

__all__ = [
    'BURST_SECONDS',
    'BYTES_PER_SHARD_SECOND',
    'HASH_KEY_SPACE',
    'RECORDS_PER_SHARD_SECOND',
    'ShardLimits',
    'ShardMap',
    'even_shards',
    'hash_key',
    'shard_seconds',
]

# Write limits of one provisioned shard (Kinesis Developer Guide, "Quotas and limits").
RECORDS_PER_SHARD_SECOND = 1000
BYTES_PER_SHARD_SECOND = 1024 * 1024
# Seconds of quota a quiet shard has at hand. Kinesis documents per-second limits and no
# burst; a shard that took nothing in the last second takes one second's worth at once (the
# limit is counted over a second), which is what a token bucket of one second models.
BURST_SECONDS = 1.0
# Hash keys are 128-bit: MD5 digests read as unsigned big-endian integers.
HASH_KEY_SPACE = 1 << 128


def hash_key(partition_key: str) -> int:
    """The 128-bit hash key Kinesis derives from a partition key (MD5 of its UTF-8 bytes)."""
    return int.from_bytes(
        hashlib.md5(partition_key.encode('utf-8', 'surrogatepass')).digest(), 'big'
    )


def even_shards(count: int) -> list[dict]:
    """The shards of a new stream of `count` shards, in ListShards' form.

    CreateStream splits the hash-key space evenly: shard i starts at i * floor(2**128 / n),
    the last one ends at 2**128 - 1 (kinesalite does the same), so a stream whose shards were
    never split or merged has exactly these ranges.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f'a stream has at least one shard, not {count!r}')
    width = HASH_KEY_SPACE // count
    return [
        {
            'ShardId': f'shardId-{index:012d}',
            'HashKeyRange': {
                'StartingHashKey': str(width * index),
                'EndingHashKey': str(
                    (width * (index + 1) if index < count - 1 else HASH_KEY_SPACE) - 1
                ),
            },
        }
        for index in range(count)
    ]


class ShardMap:
    """The open shards of a stream and the hash-key range of each.

    Picklable and small (one tuple per shard), so a pipeline step can carry it to workers.
    """

    def __init__(self, shards: Iterable[dict]) -> None:
        """Args:
          shards: ListShards' `Shards` (each with `ShardId` and `HashKeyRange`); closed
            shards (with an `EndingSequenceNumber`) take no writes and are left out.

        Raises:
          ValueError: when no shard is open.
        """
        ranges = sorted(
            (
                int(shard['HashKeyRange']['StartingHashKey']),
                int(shard['HashKeyRange']['EndingHashKey']),
                shard['ShardId'],
            )
            for shard in shards
            if not shard.get('SequenceNumberRange', {}).get('EndingSequenceNumber')
        )
        if not ranges:
            raise ValueError('a stream needs at least one open shard')
        self._ranges = tuple(ranges)
        self._starts = tuple(start for start, _, _ in ranges)

    @classmethod
    def even(cls, count: int) -> ShardMap:
        """The map of a new stream of `count` shards (see `even_shards`)."""
        return cls(even_shards(count))

    def __len__(self) -> int:
        return len(self._ranges)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ShardMap) and other._ranges == self._ranges

    def __hash__(self) -> int:
        return hash(self._ranges)

    def __repr__(self) -> str:
        return f'ShardMap({len(self)} shards)'

    @property
    def shard_ids(self) -> list[str]:
        """The open shards' ids, in hash-key order."""
        return [shard_id for _, _, shard_id in self._ranges]

    @property
    def ranges(self) -> tuple[tuple[int, int, str], ...]:
        """`(starting hash key, ending hash key, shard id)` of each open shard."""
        return self._ranges

    def shard_of_hash(self, key: int) -> str:
        """The shard whose hash-key range holds `key`."""
        index = bisect.bisect_right(self._starts, key) - 1
        if index < 0 or key > self._ranges[index][1]:
            raise ValueError(f'no open shard holds hash key {key}')
        return self._ranges[index][2]

    def shard_of(self, partition_key: str) -> str:
        """The shard whose hash-key range holds the partition key's MD5."""
        return self.shard_of_hash(hash_key(partition_key))


def shard_seconds(
    records: int,
    size: int,
    records_per_second: float = RECORDS_PER_SHARD_SECOND,
    bytes_per_second: float = BYTES_PER_SHARD_SECOND,
    burst_seconds: float = BURST_SECONDS,
) -> float:
    """Least time one shard needs to take `records` records of `size` bytes in all at its
    limits, starting quiet: the slower of the two limits, less the burst a quiet shard takes
    at once (so never negative; a send within the burst takes no time at the limits)."""
    if records <= 0:
        return 0.0
    return max(
        0.0, records / records_per_second - burst_seconds, size / bytes_per_second - burst_seconds
    )


class ShardLimits:
    """Per-shard token buckets of records and bytes, refilled continuously.

    Each bucket holds at most `burst_seconds` worth of its rate and starts full. An entry is
    admitted when both buckets of its shard hold enough; it then takes its record and its
    bytes. A refused entry takes nothing (Kinesis does not charge throttled entries). Pure
    bookkeeping with an injectable clock, thread-safe.
    """

    def __init__(
        self,
        shards: Iterable[dict] | ShardMap,
        records_per_second: float = RECORDS_PER_SHARD_SECOND,
        bytes_per_second: float = BYTES_PER_SHARD_SECOND,
        burst_seconds: float = BURST_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Args:
        shards: a `ShardMap`, or ListShards' `Shards`.
        records_per_second: records a shard takes per second.
        bytes_per_second: data + partition key bytes a shard takes per second.
        burst_seconds: how many seconds of quota a quiet shard saves up.
        clock: monotonic seconds.
        """
        self._map = shards if isinstance(shards, ShardMap) else ShardMap(shards)
        for name, value in (
            ('records_per_second', records_per_second),
            ('bytes_per_second', bytes_per_second),
            ('burst_seconds', burst_seconds),
        ):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f'{name} {value!r} must be a positive number')
        self._rates = (float(records_per_second), float(bytes_per_second))
        self._burst = float(burst_seconds)
        self._clock = clock
        self._lock = threading.Lock()
        now = clock()
        self._buckets = {
            shard_id: [self._rates[0] * self._burst, self._rates[1] * self._burst, now]
            for shard_id in self._map.shard_ids
        }

    @property
    def shard_map(self) -> ShardMap:
        return self._map

    @property
    def shard_ids(self) -> list[str]:
        return self._map.shard_ids

    def shard_of(self, partition_key: str) -> str:
        """The shard whose hash-key range holds the partition key's MD5."""
        return self._map.shard_of(partition_key)

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
            records_cap = self._rates[0] * self._burst
            bytes_cap = self._rates[1] * self._burst
            for partition_key, size in entries:
                shard_id = self.shard_of(partition_key)
                bucket = self._buckets[shard_id]
                elapsed = max(0.0, now - bucket[2])
                bucket[0] = min(records_cap, bucket[0] + elapsed * self._rates[0])
                bucket[1] = min(bytes_cap, bucket[1] + elapsed * self._rates[1])
                bucket[2] = now
                admitted = bucket[0] >= 1 and bucket[1] >= size
                if admitted:
                    bucket[0] -= 1
                    bucket[1] -= size
                decided.append((shard_id, admitted))
            return decided
