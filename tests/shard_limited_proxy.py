"""A Kinesis endpoint with Kinesis's per-shard write limits, for tests and the plan benchmark.

`ShardLimitedProxy` is an HTTP proxy on 127.0.0.1 in front of kinesalite (which has no write
limits) that enforces 1,000 records/s and 1 MiB/s (data + partition key) per shard, as a
provisioned Kinesis stream does: each entry's shard is the one whose hash-key range (read from
upstream's ListShards) holds the MD5 of its partition key; each shard has a token bucket of
records and one of bytes that holds one second of quota and starts full
(`beam_kinesis.shards.ShardLimits`, the model `beam-kinesis plan` estimates with); an entry over
its shard's quota fails with ProvisionedThroughputExceededException naming the shard, in a
PutRecords answer beside the entries that were stored, and only the admitted entries reach
kinesalite.

It is the fault proxy (tests/fault_proxy.py) with only its shard limits on, plus a timeline of
the PutRecords it saw (when each came, how many entries, how many were admitted, when its
forward finished), from which `send_seconds` says how long a send took as Kinesis saw it.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from typing import Any, Callable, Iterator

import pytest

from beam_kinesis.shards import (
    BURST_SECONDS,
    BYTES_PER_SHARD_SECOND,
    RECORDS_PER_SHARD_SECOND,
    ShardLimits,
)
from tests.fault_proxy import PUT_OPERATIONS, TARGET_PREFIX, FaultProxy, FaultSchedule

__all__ = ['PutSeen', 'ShardLimitedProxy', 'shard_limited_proxy']


@dataclasses.dataclass
class PutSeen:
    """One PutRecords/PutRecord the proxy answered."""

    arrived: float  # monotonic seconds when the request came
    entries: int  # records in it
    admitted: int  # records within their shard's quota, forwarded upstream
    finished: float | None = None  # when upstream's answer came back (None: not forwarded)


class ShardLimitedProxy(FaultProxy):
    """A shard-limited endpoint in front of `upstream_url` (kinesalite).

    Attributes:
      endpoint_url: where clients send their requests.
      puts: a `PutSeen` per PutRecords/PutRecord, in arrival order.
    """

    def __init__(
        self,
        upstream_url: str,
        upstream_client: Callable[[], Any],
        records_per_second: float = RECORDS_PER_SHARD_SECOND,
        bytes_per_second: float = BYTES_PER_SHARD_SECOND,
        burst_seconds: float = BURST_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        region: str = 'us-east-1',
    ) -> None:
        """Args:
        upstream_url: kinesalite's `http://127.0.0.1:<port>`.
        upstream_client: makes a boto3 client of upstream, for ListShards.
        records_per_second: records each shard takes per second.
        bytes_per_second: data + partition key bytes each shard takes per second.
        burst_seconds: seconds of quota a quiet shard holds.
        clock: monotonic seconds of the token buckets (a test may step it).
        """
        super().__init__(upstream_url, region=region, upstream_client=upstream_client)
        self._rates = (records_per_second, bytes_per_second)
        self._burst = burst_seconds
        self._clock = clock
        self._timeline_lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Quiet shards (full buckets, shard maps read again) and an empty timeline."""
        self.schedule = FaultSchedule(
            shard_records_per_second=self._rates[0], shard_bytes_per_second=self._rates[1]
        )
        with self._timeline_lock:
            self.puts: list[PutSeen] = []
            self._pending: dict[int, PutSeen] = {}

    def _limits_of(self, stream: str, schedule: FaultSchedule) -> ShardLimits:
        with self._lock:
            limits = self._limits.get(stream)
        if limits is not None:
            return limits
        client = self._upstream_client()
        try:
            shards, token = [], None
            while True:
                page = (
                    client.list_shards(NextToken=token)
                    if token
                    else client.list_shards(StreamName=stream)
                )
                shards.extend(page['Shards'])
                token = page.get('NextToken')
                if not token:
                    break
        finally:
            client.close()
        limits = ShardLimits(
            shards,
            records_per_second=self._rates[0],
            bytes_per_second=self._rates[1],
            burst_seconds=self._burst,
            clock=self._clock,
        )
        with self._lock:
            return self._limits.setdefault(stream, limits)

    def handle(self, operation: str, headers: dict[str, str], body: bytes) -> tuple[str, Any]:
        arrived = time.monotonic()
        action, detail = super().handle(operation, headers, body)
        if operation not in PUT_OPERATIONS:
            return action, detail
        if action == 'forward_merged':
            total, failures, _ = detail[1]
            entries, admitted = total, total - len(failures)
        else:
            request = json.loads(body)
            entries = len(request.get('Records') or []) if operation == 'PutRecords' else 1
            admitted = entries if action == 'forward' else 0
        seen = PutSeen(arrived, entries, admitted)
        with self._timeline_lock:
            self.puts.append(seen)
            if admitted:
                # The handler forwards in this same thread right after `handle` returns.
                self._pending[threading.get_ident()] = seen
        return action, detail

    def forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        answer = super().forward(method, path, headers, body)
        target = {name.lower(): value for name, value in headers.items()}.get('x-amz-target', '')
        if target[len(TARGET_PREFIX) :] in PUT_OPERATIONS:
            with self._timeline_lock:
                seen = self._pending.pop(threading.get_ident(), None)
            if seen is not None:
                seen.finished = time.monotonic()
        return answer

    def send_seconds(self) -> float:
        """How long the send took as Kinesis saw it: from the first PutRecords' arrival to
        the end of the last one that stored records (0 with none)."""
        with self._timeline_lock:
            stored = [put.finished for put in self.puts if put.admitted and put.finished]
            if not stored:
                return 0.0
            return max(stored) - min(put.arrived for put in self.puts)

    def totals(self) -> dict[str, int]:
        """Requests, entries (attempts) and admitted entries seen."""
        with self._timeline_lock:
            return {
                'requests': len(self.puts),
                'entries': sum(put.entries for put in self.puts),
                'admitted': sum(put.admitted for put in self.puts),
            }


@pytest.fixture
def shard_limited_proxy(kinesalite) -> Iterator[ShardLimitedProxy]:
    """A shard-limited endpoint (1,000 records/s, 1 MiB/s per shard) in front of the
    session's kinesalite."""
    proxy = ShardLimitedProxy(kinesalite.endpoint_url, kinesalite.client).start()
    yield proxy
    proxy.stop()
