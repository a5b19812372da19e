"""Tests of the Kinesis sink: configuration, partition keys, batching, retries, errors, metrics.

Most tests drive the private DoFn with `ScriptedKinesis`, a client double that records every
call and answers from a script, and a fake clock, so no test sleeps. A few use moto's
`mock_aws` to check that records really land.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import math
import pickle
import threading
import traceback
import uuid
from types import SimpleNamespace
from typing import Any, Callable

import apache_beam as beam
import boto3
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from moto import mock_aws

from beam_kinesis import kinesis
from beam_kinesis.kinesis import (
    DEFAULT_MAX_RECORD_BYTES,
    MAX_REQUEST_BYTES,
    SINK_COUNTERS,
    SINK_DISTRIBUTIONS,
    KinesisConfig,
    KinesisStreamError,
    KinesisWriteError,
    WriteToKinesis,
    _AimdRateLimiter,
    _Batcher,
    _make_entry,
    _PutRecordsFn,
    check_stream,
    make_client,
    partition_key_for,
)
from beam_kinesis.local_kinesis import read_stream
from beam_kinesis.shards import ShardLimits, ShardMap, shard_seconds
from tests.kinesis_servers import free_port

SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'
STREAM = 'profiles'


# ---------------------------------------------------------------------------------------------
# Test doubles


class FakeClock:
    """Monotonic time that moves only when something sleeps; remembers every sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += max(seconds, 0.0)


def client_error(
    code: str, message: str = 'scripted', status: int = 400, operation: str = 'PutRecords'
) -> ClientError:
    return ClientError(
        {
            'Error': {'Code': code, 'Message': message},
            'ResponseMetadata': {'HTTPStatusCode': status},
        },
        operation,
    )


def accept(operation: str, records: list[tuple[str, bytes]]) -> dict:
    """Script step: every record lands."""
    if operation == 'PutRecord':
        return {'ShardId': 'shardId-000000000000', 'SequenceNumber': '1'}
    return {
        'FailedRecordCount': 0,
        'Records': [
            {'ShardId': 'shardId-000000000000', 'SequenceNumber': str(i)}
            for i in range(len(records))
        ],
    }


def fail_keys(failures: dict[str, str]) -> Callable:
    """Script step: the records whose partition key is in `failures` fail with that code."""

    def step(operation: str, records: list[tuple[str, bytes]]) -> dict:
        if operation == 'PutRecord':
            key = records[0][0]
            if key in failures:
                raise client_error(
                    failures[key], f'{failures[key]} for {key}', operation='PutRecord'
                )
            return accept(operation, records)
        results = []
        for i, (key, _) in enumerate(records):
            if key in failures:
                results.append(
                    {'ErrorCode': failures[key], 'ErrorMessage': f'{failures[key]} for {key}'}
                )
            else:
                results.append({'ShardId': 'shardId-000000000000', 'SequenceNumber': str(i)})
        return {'FailedRecordCount': sum('ErrorCode' in r for r in results), 'Records': results}

    return step


def raise_(error: Exception) -> Callable:
    """Script step: the whole request fails with `error`."""

    def step(operation: str, records: list[tuple[str, bytes]]) -> dict:
        raise error

    return step


class ScriptedKinesis:
    """A Kinesis client double: records each call, answers with the next script step.

    Once the script is used up, `default` answers (every record lands unless told otherwise).
    """

    def __init__(self, *steps: Callable, default: Callable = accept) -> None:
        self.steps = list(steps)
        self.default = default
        self.calls: list[tuple[str, list[tuple[str, bytes]]]] = []
        self.closed = False
        self.meta = SimpleNamespace(
            region_name='us-east-1', endpoint_url='https://kinesis.us-east-1.amazonaws.com'
        )
        self._lock = threading.Lock()

    def _answer(self, operation: str, records: list[tuple[str, bytes]]) -> dict:
        with self._lock:
            self.calls.append((operation, records))
            step = self.steps.pop(0) if self.steps else self.default
        return step(operation, records)

    def put_records(self, StreamName: str, Records: list[dict]) -> dict:  # noqa: N803
        assert StreamName == STREAM
        return self._answer('PutRecords', [(r['PartitionKey'], r['Data']) for r in Records])

    def put_record(self, StreamName: str, PartitionKey: str, Data: bytes) -> dict:  # noqa: N803
        assert StreamName == STREAM
        return self._answer('PutRecord', [(PartitionKey, Data)])

    def close(self) -> None:
        self.closed = True

    def sent(self) -> list[tuple[str, bytes]]:
        """Every record of every call, in call order (resends included)."""
        return [record for _, records in self.calls for record in records]


# Clients of pipeline tests, found again after the DoFn is pickled (the runner is in-process).
_CLIENTS: dict[str, Any] = {}


class ClientFactory:
    """A picklable client factory handing out one registered client."""

    def __init__(self, client: Any) -> None:
        self.name = uuid.uuid4().hex
        _CLIENTS[self.name] = client

    def __call__(self, config: KinesisConfig) -> Any:
        return _CLIENTS[self.name]


_OPERATIONS: dict[str, list[str]] = {}


class SpyingFactory:
    """A picklable factory of real clients that remembers the operations they call."""

    def __init__(self) -> None:
        self.name = uuid.uuid4().hex
        _OPERATIONS[self.name] = []

    @property
    def operations(self) -> list[str]:
        return _OPERATIONS[self.name]

    def __call__(self, config: KinesisConfig) -> Any:
        client = make_client(config)
        operations = _OPERATIONS[self.name]
        client.meta.events.register(
            'before-call.kinesis', lambda model, **_: operations.append(model.name)
        )
        return client


def config(**options: Any) -> KinesisConfig:
    options.setdefault('region', 'us-east-1')
    options.setdefault('base_backoff_seconds', 0.1)
    return KinesisConfig(STREAM, **options)


def make_fn(
    client: ScriptedKinesis, clock: FakeClock | None = None, **options: Any
) -> _PutRecordsFn:
    return fn_on_clock(lambda _: client, clock or FakeClock(), **options)


def fn_on_clock(
    client_factory: Any, clock: FakeClock, jitter: float = 0.5, **options: Any
) -> _PutRecordsFn:
    """The sink's DoFn with clients from `client_factory` (called with each client's config),
    time and sleeps on the fake `clock`, and a fixed `jitter` draw, so backoffs are exact."""
    return _PutRecordsFn(
        config(**options),
        client_factory,
        clock=clock.monotonic,
        sleep=clock.sleep,
        rng=lambda: jitter,
    )


def run_fn(fn: _PutRecordsFn, elements: list[tuple[str, bytes]]) -> list[dict]:
    """Runs one bundle through the DoFn; returns its dead letters."""
    fn.setup()
    try:
        fn.start_bundle()
        letters = []
        for element in elements:
            letters.extend(fn.process(element))
        for value in fn.finish_bundle():
            assert isinstance(value, WindowedValue)
            assert value.windows == (GlobalWindow(),)
            letters.append(value.value)
        return letters
    finally:
        fn.teardown()


def records(n: int, size: int = 10, prefix: str = 'p') -> list[tuple[str, bytes]]:
    return [(f'{prefix}-{i:05d}', b'x' * size) for i in range(n)]


# ---------------------------------------------------------------------------------------------
# Configuration and secrets


def test_config_never_shows_the_secret():
    cfg = config(aws_access_key_id='AKIAEXAMPLE', aws_secret_access_key=SECRET)

    assert SECRET not in repr(cfg)
    assert SECRET not in str(cfg)
    assert 'aws_secret_access_key=***' in repr(cfg)
    assert str(cfg.aws_secret_access_key) == '***'
    assert cfg.aws_secret_access_key.reveal() == SECRET


def test_config_survives_pickling_with_its_secret():
    cfg = config(aws_access_key_id='AKIAEXAMPLE', aws_secret_access_key=SECRET)

    copy = pickle.loads(pickle.dumps(cfg))

    assert copy == cfg
    assert copy.aws_secret_access_key.reveal() == SECRET


@pytest.mark.parametrize(
    'name, value',
    [
        ('stream_name', ''),
        ('stream_name', 'no spaces allowed'),
        ('max_record_bytes', 0),
        ('max_record_bytes', 10 * 1024 * 1024 + 1),
        ('max_batch_records', 0),
        ('max_batch_records', 501),
        ('max_batch_bytes', MAX_REQUEST_BYTES + 1),
        ('max_in_flight', 0),
        ('max_retries', -1),
        ('retry_deadline_seconds', 0),
        ('read_timeout_seconds', -1.0),
        ('retry_mode', 'legacy'),
    ],
)
def test_config_rejects_bad_values(name, value):
    options = {'stream_name': STREAM, name: value}

    with pytest.raises(ValueError, match=name):
        KinesisConfig(**options)


def test_config_needs_both_keys_or_neither():
    with pytest.raises(ValueError, match='together'):
        KinesisConfig(STREAM, aws_secret_access_key=SECRET)
    with pytest.raises(ValueError, match='together'):
        KinesisConfig(STREAM, aws_access_key_id='AKIAEXAMPLE')


def test_make_client_sets_retries_timeouts_and_pool():
    cfg = config(
        max_in_flight=16,
        connect_timeout_seconds=2.0,
        read_timeout_seconds=7.0,
        retry_mode='adaptive',
        request_attempts=4,
        aws_access_key_id='AKIAEXAMPLE',
        aws_secret_access_key=SECRET,
    )

    client = make_client(cfg)
    try:
        botocore_config = client.meta.config
        assert botocore_config.retries == {'mode': 'adaptive', 'total_max_attempts': 4}
        assert botocore_config.connect_timeout == 2.0
        assert botocore_config.read_timeout == 7.0
        assert botocore_config.max_pool_connections >= 16
        assert client.meta.region_name == 'us-east-1'
    finally:
        client.close()


# ---------------------------------------------------------------------------------------------
# Partition keys


def test_partition_key_is_the_profile_key_up_to_256_characters():
    assert partition_key_for('p-0001') == 'p-0001'
    assert partition_key_for('k' * 256) == 'k' * 256
    # 256 characters of the basic plane are 768 UTF-8 bytes: still one key per character.
    assert partition_key_for('\u00e9\u4e2d' * 128) == '\u00e9\u4e2d' * 128


def test_longer_partition_keys_are_hashed_stably():
    long_key = 'k' * 257

    hashed = partition_key_for(long_key)

    assert hashed == 'sha256:' + hashlib.sha256(long_key.encode()).hexdigest()
    assert partition_key_for(long_key) == hashed
    assert partition_key_for('j' * 257) != hashed
    assert len(hashed) == 71


def test_partition_key_length_counts_utf16_code_units():
    # An emoji is one code point but two UTF-16 code units, which is what Kinesis counts.
    assert partition_key_for('\U0001f600' * 128) == '\U0001f600' * 128
    assert partition_key_for('\U0001f600' * 129).startswith('sha256:')


def test_partition_key_must_be_a_non_empty_string():
    with pytest.raises(ValueError, match='empty'):
        partition_key_for('')
    with pytest.raises(TypeError):
        partition_key_for(42)


# ---------------------------------------------------------------------------------------------
# Batching


def test_batcher_closes_a_batch_at_500_records():
    batcher = _Batcher(500, MAX_REQUEST_BYTES)

    full = [batch for key, data in records(1001) for batch in batcher.add(_make_entry(key, data))]

    assert [len(batch) for batch in full] == [500, 500]
    assert len(batcher.drain()) == 1
    assert batcher.drain() == []


def test_batcher_counts_partition_key_bytes_towards_5_mib():
    # 20 blobs of 256 KiB are exactly 5 MiB; their 10-byte keys push the 20th out.
    batcher = _Batcher(500, MAX_REQUEST_BYTES)
    entries = [_make_entry(f'k{i:09d}', b'x' * (256 * 1024)) for i in range(20)]

    full = [batch for entry in entries for batch in batcher.add(entry)]

    assert [len(batch) for batch in full] == [19]
    assert sum(entry.size for entry in full[0]) <= MAX_REQUEST_BYTES
    assert len(batcher.drain()) == 1


def test_batcher_sends_a_record_larger_than_a_request_alone():
    batcher = _Batcher(500, 100)

    first = batcher.add(_make_entry('a', b'x' * 39))
    second = batcher.add(_make_entry('b', b'x' * 149))

    assert first == []
    assert [[entry.key for entry in batch] for batch in second] == [['a'], ['b']]


def test_batcher_closes_a_batch_that_fills_the_byte_limit_exactly():
    batcher = _Batcher(500, 100)

    assert batcher.add(_make_entry('a', b'x' * 49)) == []
    full = batcher.add(_make_entry('b', b'x' * 49))

    assert [[entry.key for entry in batch] for batch in full] == [['a', 'b']]


# ---------------------------------------------------------------------------------------------
# Sending


def test_sends_batches_of_500_and_a_lone_record_with_put_record():
    client = ScriptedKinesis()
    elements = records(1001)

    letters = run_fn(make_fn(client), elements)

    assert letters == []
    assert sorted((op, len(recs)) for op, recs in client.calls) == [
        ('PutRecord', 1),
        ('PutRecords', 500),
        ('PutRecords', 500),
    ]
    assert sorted(client.sent()) == sorted(elements)


def test_requests_stay_under_5_mib_counting_partition_keys():
    client = ScriptedKinesis()
    elements = [(f'k{i:09d}', b'x' * (256 * 1024)) for i in range(20)]

    run_fn(make_fn(client), elements)

    assert sorted((op, len(recs)) for op, recs in client.calls) == [
        ('PutRecord', 1),
        ('PutRecords', 19),
    ]
    for _, recs in client.calls:
        assert sum(len(key) + len(data) for key, data in recs) <= MAX_REQUEST_BYTES


def test_only_failed_entries_are_resent():
    elements = records(6)
    client = ScriptedKinesis(
        fail_keys(
            {'p-00001': 'InternalFailure', 'p-00004': 'ProvisionedThroughputExceededException'}
        )
    )

    letters = run_fn(make_fn(client), elements)

    assert letters == []
    assert client.calls == [('PutRecords', elements), ('PutRecords', [elements[1], elements[4]])]


def test_a_lone_failed_entry_is_resent_with_put_record():
    elements = records(3)
    client = ScriptedKinesis(fail_keys({'p-00002': 'InternalFailure'}))

    run_fn(make_fn(client), elements)

    assert client.calls == [('PutRecords', elements), ('PutRecord', [elements[2]])]


def test_per_entry_throttling_sets_the_rate_to_the_goodput_and_backs_off():
    clock = FakeClock()
    elements = records(500)
    rates = []
    fn = None

    def throttle_half(operation, recs):
        rates.append(fn._limiter.rate)
        clock.sleep(0.2)  # the round trip
        return fail_keys(
            {key: 'ProvisionedThroughputExceededException' for key, _ in recs[: len(recs) // 2]}
        )(operation, recs)

    def watch(operation, recs):
        rates.append(fn._limiter.rate)
        return accept(operation, recs)

    client = ScriptedKinesis(throttle_half, throttle_half, default=watch)
    fn = make_fn(client, clock, max_in_flight=1)

    letters = run_fn(fn, elements)

    assert letters == []
    assert [len(recs) for _, recs in client.calls] == [500, 250, 125]
    shortest_span = kinesis._GOODPUT_WINDOW_SECONDS / 4
    # Unlimited at first; then what Kinesis acknowledged per second (250 records, over no
    # less than the shortest span), below the 500 records sent in the last second.
    assert rates[0] == math.inf
    assert rates[1] == pytest.approx(250 / shortest_span)
    # Then the 250 + 125 records acknowledged over the time between the two answers: the
    # first backoff (rng 0.5: half of 0.1 s), the wait for 250 records at rates[1], and the
    # round trip.
    span = 0.05 + 250 / rates[1] + 0.2
    assert rates[2] == pytest.approx(min(rates[1], 375 / max(span, shortest_span)))
    # The second backoff (half of 0.2 s) and the limiter's wait, in slices, add up to the
    # time 125 records take at the new rate.
    after_second = clock.sleeps[clock.sleeps.index(0.2, 1) + 1 :]
    assert after_second[0] == pytest.approx(0.1)
    assert sum(after_second) == pytest.approx(125 / rates[2])


def test_a_throttle_sets_the_rate_to_the_goodput_and_halves_it_without_one():
    clock = FakeClock()
    limiter = _AimdRateLimiter(500, clock.monotonic, clock.sleep)
    limiter.on_throttle(limiter.acquire(2000))  # 2000 sent in the last second, none acked
    assert limiter.rate == 1000
    for _ in range(4):  # Kinesis acknowledges 200 records every 0.5 s
        clock.sleep(0.5)
        limiter.acknowledged(200)
    # 800 records over the 1.5 s from the first answer to the last.
    limiter.on_throttle(limiter.acquire(0))
    assert limiter.rate == pytest.approx(800 / 1.5)
    clock.sleep(kinesis._GOODPUT_WINDOW_SECONDS)  # nothing acknowledged since: halving
    before = limiter.rate
    limiter.on_throttle(limiter.acquire(0))
    assert limiter.rate == pytest.approx(before / 2)


def test_known_shards_start_the_pace_at_what_they_take():
    """With the stream's shards known, the first requests go at their limit, not at once:
    1,000 records/s a shard, or 1 MiB/s when the records are large enough to bind first."""
    clock = FakeClock()
    limiter = _AimdRateLimiter(500, clock.monotonic, clock.sleep, shards=2)
    for _ in range(8):  # 4,000 small records: the records limit binds
        limiter.acquire(500, 500 * 100)
    assert limiter.rate == 2000
    # A second's worth (2,000) goes at once, as quiet shards take it; the next 2,000 take 1 s.
    assert sum(clock.sleeps) == pytest.approx(2000 / 2000)

    big = FakeClock()
    limiter = _AimdRateLimiter(500, big.monotonic, big.sleep, shards=1)
    limiter.acquire(100, 100 * 4096)  # 4 KiB records: 256 a second fill 1 MiB
    assert limiter.rate == pytest.approx((1 << 20) / 4096)

    unknown = _AimdRateLimiter(500, clock.monotonic, clock.sleep)
    unknown.acquire(500, 500 * 100)
    assert math.isinf(unknown.rate)  # unlimited until Kinesis throttles


def test_known_shards_cap_the_rate_where_unknown_ones_let_it_grow():
    """Clean answers raise a rate that holds senders back, but never above what the known
    shards take; larger records lower that ceiling at once."""
    clock = FakeClock()
    limiter = _AimdRateLimiter(500, clock.monotonic, clock.sleep, shards=1)
    for _ in range(6):
        limiter.acquire(500, 500 * 100)  # held back after the first second's worth
        limiter.on_success(500)
    assert limiter.rate == 1000
    limiter.acquire(100, 100 * 2048)  # 2 KiB records: 512 a second fill 1 MiB
    assert limiter.rate == pytest.approx(512)

    unknown = _AimdRateLimiter(500, clock.monotonic, clock.sleep)
    unknown.on_throttle(unknown.acquire(1000))  # nothing acknowledged yet: halved
    assert unknown.rate == 500
    for _ in range(3):
        unknown.acquire(500)  # held back
        unknown.on_success(500)
    assert unknown.rate == 500 + 3 * kinesis._GROWTH_PER_RECORD * 500  # no ceiling


def test_the_shard_count_check_stream_found_paces_the_sink():
    config_ = config()
    assert kinesis.paced_for(config_, {'OpenShardCount': 4}).stream_shards == 4
    # ListStreams says nothing of shards; a count given by the user stands.
    assert kinesis.paced_for(config_, {'StreamStatus': 'ACTIVE'}) is config_
    given = config(stream_shards=2)
    assert kinesis.paced_for(given, {'OpenShardCount': 4}).stream_shards == 2
    for bad in (0, True, '3', None):
        assert kinesis.paced_for(config_, {'OpenShardCount': bad}).stream_shards is None
    with pytest.raises(ValueError, match='stream_shards'):
        config(stream_shards=0)


def test_a_throttle_never_raises_the_rate():
    clock = FakeClock()
    limiter = _AimdRateLimiter(500, clock.monotonic, clock.sleep)
    limiter.on_throttle(limiter.acquire(100))  # 100 sent in the last second: 50/s
    assert limiter.rate == 50
    limiter.acknowledged(400)  # a goodput above the rate is no reason to go faster
    limiter.on_throttle(limiter.acquire(0))
    assert limiter.rate == 50


def test_whole_request_throttling_slows_the_sender():
    clock = FakeClock()
    throttled = client_error('ProvisionedThroughputExceededException', 'Rate exceeded')
    client = ScriptedKinesis(raise_(throttled), raise_(throttled))
    fn = make_fn(client, clock, max_in_flight=1)

    letters = run_fn(fn, records(500))

    assert letters == []
    assert [len(recs) for _, recs in client.calls] == [500, 500, 500]
    # Nothing acknowledged: inf -> 250 -> 125; then the clean request, which waited on the
    # rate, raises it by a share of its records.
    assert fn._limiter.rate == 125 + kinesis._GROWTH_PER_RECORD * 500
    assert len(clock.sleeps) >= 2


def test_rate_limiter_lowers_once_per_round_trip_and_grows_only_while_holding_back():
    clock = FakeClock()
    limiter = _AimdRateLimiter(500, clock.monotonic, clock.sleep)
    first = limiter.acquire(100)
    stale = limiter.acquire(100)

    limiter.on_throttle(first)
    limiter.on_throttle(stale)  # sent before the decrease: not counted twice

    assert limiter.rate == 100  # half of the 200 records granted in the last second
    limiter.on_success(100)  # no sender waited on the rate: it is not what limits
    assert limiter.rate == 100
    limiter.acquire(50)  # waits 0.5 s
    limiter.on_success(50)
    assert limiter.rate == 100 + kinesis._GROWTH_PER_RECORD * 50
    limiter.on_success(50)  # once per wait
    assert limiter.rate == 100 + kinesis._GROWTH_PER_RECORD * 50
    limiter.on_throttle(limiter.acquire(0))
    assert limiter.rate == (100 + kinesis._GROWTH_PER_RECORD * 50) / 2


def test_rate_limiter_makes_senders_wait_for_their_records():
    clock = FakeClock()
    limiter = _AimdRateLimiter(500, clock.monotonic, clock.sleep)
    limiter.on_throttle(limiter.acquire(200))  # rate 100 records/s, no savings

    waited = []
    for count in (50, 150):
        before = clock.now
        limiter.acquire(count)
        waited.append(clock.now - before)

    assert waited == pytest.approx([0.5, 1.5])
    assert max(clock.sleeps) <= kinesis._PACE_SLICE_SECONDS * 1.5  # in slices


def test_a_raised_rate_shortens_the_wait_of_a_sender_already_waiting():
    clock = FakeClock()
    limiter = None

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if len(clock.sleeps) == 1:  # another sender's request comes back clean meanwhile
            limiter.on_success(900)

    limiter = _AimdRateLimiter(500, clock.monotonic, sleep)
    limiter.on_throttle(limiter.acquire(200))  # rate 100 records/s, no savings

    limiter.acquire(100)  # 1 s at 100 records/s

    raised = 100 + kinesis._GROWTH_PER_RECORD * 900
    first = kinesis._PACE_SLICE_SECONDS
    assert clock.now - 1000.0 == pytest.approx(first + (100 - 100 * first) / raised)


def shard_limited(limits: ShardLimits, clock: FakeClock, round_trip: float) -> Callable:
    """Script step: a stream with Kinesis's per-shard limits, answering after `round_trip`."""

    def step(operation: str, recs: list[tuple[str, bytes]]) -> dict:
        clock.sleep(round_trip)
        decided = limits.admit([(key, len(data) + len(key)) for key, data in recs])
        results = [
            {'ShardId': shard, 'SequenceNumber': '1'}
            if admitted
            else {
                'ErrorCode': 'ProvisionedThroughputExceededException',
                'ErrorMessage': f'Rate exceeded for shard {shard} in stream {STREAM}',
            }
            for shard, admitted in decided
        ]
        if operation == 'PutRecord':
            if 'ErrorCode' in results[0]:
                raise client_error(
                    results[0]['ErrorCode'], results[0]['ErrorMessage'], operation='PutRecord'
                )
            return results[0]
        return {'FailedRecordCount': sum('ErrorCode' in r for r in results), 'Records': results}

    return step


@pytest.mark.parametrize('shards', [1, 2])
def test_the_sink_reaches_and_holds_a_throttled_streams_limit(shards):
    # A send of 10 s per shard at the limits: the sink starts unlimited, is throttled, and
    # must then keep every shard busy (a rate well below the limit, or one that climbs back
    # slowly after each throttle, leaves shards idle and the send takes longer).
    clock = FakeClock()
    limits = ShardLimits(ShardMap.even(shards), clock=clock.monotonic)
    elements = records(11_000 * shards, size=1000)
    at_limits = max(
        shard_seconds(count, count * 1010)
        for count in collections.Counter(limits.shard_of(key) for key, _ in elements).values()
    )
    client = ScriptedKinesis(default=shard_limited(limits, clock, round_trip=0.05))
    fn = make_fn(client, clock, max_in_flight=1)
    started = clock.now

    letters = run_fn(fn, elements)

    assert letters == []
    landed = [key for _, recs in client.calls for key, _ in recs]
    assert set(landed) == {key for key, _ in elements}
    assert fn._limiter.rate < math.inf  # it was throttled
    assert clock.now - started <= 1.1 * at_limits


def test_rate_never_falls_below_the_floor():
    clock = FakeClock()
    limiter = _AimdRateLimiter(500, clock.monotonic, clock.sleep)

    for _ in range(20):
        limiter.on_throttle(limiter.acquire(1))

    assert limiter.rate == kinesis._MIN_RECORDS_PER_SECOND


def test_oversize_records_are_dead_lettered_with_their_size_and_never_sent():
    client = ScriptedKinesis()
    too_big = ('big', b'x' * (DEFAULT_MAX_RECORD_BYTES - 2))  # 3-byte key: limit + 1
    just_fits = ('fit', b'y' * (DEFAULT_MAX_RECORD_BYTES - 3))  # exactly the limit

    letters = run_fn(make_fn(client), [too_big, just_fits])

    assert len(letters) == 1
    assert letters[0]['stage'] == 'write'
    assert letters[0]['source'] == 'profile big'
    assert f'{DEFAULT_MAX_RECORD_BYTES + 1} bytes' in letters[0]['error']
    assert str(DEFAULT_MAX_RECORD_BYTES) in letters[0]['error']
    assert letters[0]['record'] == too_big[1].decode()
    assert client.sent() == [just_fits]


def test_raised_record_limit_lets_larger_records_through():
    client = ScriptedKinesis()
    big = ('big', b'x' * (2 * 1024 * 1024))

    letters = run_fn(make_fn(client, max_record_bytes=3 * 1024 * 1024), [big])

    assert letters == []
    assert client.calls == [('PutRecord', [big])]


@pytest.mark.parametrize(
    'error',
    [
        client_error('InternalFailure', 'Internal service failure.', status=500),
        client_error('ServiceUnavailable', 'Service unavailable.', status=503),
        client_error('ProvisionedThroughputExceededException', 'Rate exceeded for stream.'),
        EndpointConnectionError(endpoint_url='https://kinesis.example'),
        ReadTimeoutError(endpoint_url='https://kinesis.example'),
    ],
)
def test_transient_request_errors_are_retried(error):
    client = ScriptedKinesis(raise_(error))
    elements = records(5)

    letters = run_fn(make_fn(client), elements)

    assert letters == []
    assert client.calls == [('PutRecords', elements), ('PutRecords', elements)]


def test_request_errors_are_dead_lettered_when_the_retry_count_runs_out():
    clock = FakeClock()
    client = ScriptedKinesis(default=raise_(client_error('InternalFailure', 'boom', status=500)))
    elements = records(5)

    letters = run_fn(make_fn(client, clock, max_retries=3), elements)

    assert len(client.calls) == 4
    assert sorted(letter['source'] for letter in letters) == [f'profile {k}' for k, _ in elements]
    for letter in letters:
        assert 'after 4 attempts' in letter['error']
        assert 'InternalFailure: boom' in letter['error']
    # Backoff doubles its cap each resend (rng 0.5: half of 0.1, 0.2, 0.4).
    assert clock.sleeps == [0.05, 0.1, 0.2]


def test_per_entry_failures_are_dead_lettered_when_the_retry_count_runs_out():
    client = ScriptedKinesis(
        default=fail_keys({'p-00000': 'ProvisionedThroughputExceededException'})
    )
    elements = records(2)

    letters = run_fn(make_fn(client, max_retries=2), elements)

    assert [letter['source'] for letter in letters] == ['profile p-00000']
    assert 'ProvisionedThroughputExceededException' in letters[0]['error']
    assert 'after 3 attempts' in letters[0]['error']
    assert client.sent().count(elements[1]) == 1


def test_retries_stop_when_the_time_budget_runs_out():
    clock = FakeClock()
    client = ScriptedKinesis(default=raise_(client_error('InternalFailure', 'boom', status=500)))
    fn = fn_on_clock(
        lambda _: client,
        clock,
        jitter=0.99,
        max_retries=100,
        retry_deadline_seconds=1.0,
        base_backoff_seconds=0.4,
    )

    letters = run_fn(fn, records(3))

    # 0.396 s fits the 1 s budget; 0.396 + 0.792 does not.
    assert len(client.calls) == 2
    assert len(letters) == 3
    assert 'retry time budget of 1 s' in letters[0]['error']
    assert 'InternalFailure: boom' in letters[0]['error']


@pytest.mark.parametrize(
    'code',
    [
        'ResourceNotFoundException',
        'AccessDeniedException',
        'KMSAccessDeniedException',
        'KMSNotFoundException',
        'KMSDisabledException',
        'UnrecognizedClientException',
    ],
)
def test_systemic_request_errors_raise(code):
    error = client_error(code, f'{code} for stream {STREAM}')
    client = ScriptedKinesis(default=raise_(error))
    fn = make_fn(client)

    with pytest.raises(KinesisWriteError, match=code) as raised:
        run_fn(fn, records(5))

    assert raised.value.__cause__ is error
    assert STREAM in str(raised.value)
    assert len(client.calls) == 1


def test_every_entry_of_a_request_rejected_raises():
    client = ScriptedKinesis(
        default=fail_keys({key: 'InvalidArgumentException' for key, _ in records(20)})
    )

    with pytest.raises(KinesisWriteError, match='all 20 records'):
        run_fn(make_fn(client), records(20))


def test_a_few_rejected_entries_in_a_small_request_are_dead_lettered():
    elements = records(3)
    client = ScriptedKinesis(
        default=fail_keys({key: 'InvalidArgumentException' for key, _ in elements})
    )

    letters = run_fn(make_fn(client), elements)

    assert len(letters) == 3
    assert len(client.calls) == 1


def test_per_entry_kms_error_raises():
    client = ScriptedKinesis(fail_keys({'p-00001': 'KMSAccessDeniedException'}))

    with pytest.raises(KinesisWriteError, match='KMSAccessDeniedException'):
        run_fn(make_fn(client), records(4))


def test_a_rejected_entry_is_dead_lettered_with_code_and_message_not_retried():
    elements = records(5)
    client = ScriptedKinesis(fail_keys({'p-00002': 'InvalidArgumentException'}))

    letters = run_fn(make_fn(client), elements)

    assert len(letters) == 1
    assert letters[0]['source'] == 'profile p-00002'
    assert letters[0]['error'] == (
        'Kinesis rejected the record: InvalidArgumentException: '
        'InvalidArgumentException for p-00002'
    )
    assert len(client.calls) == 1


def test_a_request_rejected_because_of_one_record_is_halved_until_it_is_found():
    poison = 'p-00005'

    def reject_poison(operation, recs):
        if any(key == poison for key, _ in recs):
            raise client_error('ValidationException', 'Member must have length <= 1048576')
        return accept(operation, recs)

    client = ScriptedKinesis(default=reject_poison)
    elements = records(8)

    letters = run_fn(make_fn(client), elements)

    assert [letter['source'] for letter in letters] == [f'profile {poison}']
    assert 'ValidationException' in letters[0]['error']
    landed = [
        rec
        for op, recs in client.calls
        for rec in recs
        if not any(key == poison for key, _ in recs)
    ]
    assert sorted(landed) == sorted(e for e in elements if e[0] != poison)


def test_long_keys_are_sent_hashed_and_dead_lettered_under_the_profile_key():
    long_key = 'x' * 300
    client = ScriptedKinesis(
        default=fail_keys({partition_key_for(long_key): 'InvalidArgumentException'})
    )

    letters = run_fn(make_fn(client), [(long_key, b'{}')])

    assert client.calls[0][1] == [(partition_key_for(long_key), b'{}')]
    assert letters[0]['source'] == f'profile {long_key}'


def test_empty_key_is_dead_lettered_and_bad_elements_raise():
    client = ScriptedKinesis()
    fn = make_fn(client)

    letters = run_fn(fn, [('', b'{}')])

    assert 'empty' in letters[0]['error']
    assert client.calls == []
    fn.setup()
    with pytest.raises(TypeError, match='bytes'):
        list(fn.process(('k', 'not bytes')))
    with pytest.raises(TypeError, match='tuples'):
        list(fn.process(['k', b'']))
    fn.teardown()


def test_several_requests_are_in_flight_but_never_more_than_max_in_flight():
    max_in_flight = 4
    barrier = threading.Barrier(max_in_flight, timeout=10)
    lock = threading.Lock()
    state = {'now': 0, 'peak': 0, 'outstanding': 0}
    fn = None

    def together(operation, recs):
        with lock:
            state['now'] += 1
            state['peak'] = max(state['peak'], state['now'])
            state['outstanding'] = max(state['outstanding'], len(fn._in_flight))
        try:
            barrier.wait()  # breaks (and fails the test) unless 4 requests are out at once
            return accept(operation, recs)
        finally:
            with lock:
                state['now'] -= 1

    client = ScriptedKinesis(default=together)
    fn = make_fn(client, max_in_flight=max_in_flight, max_batch_records=100)

    letters = run_fn(fn, records(1200))

    assert letters == []
    assert len(client.calls) == 12
    assert state['peak'] == max_in_flight
    assert state['outstanding'] <= max_in_flight


def test_client_is_made_once_in_setup_and_closed_in_teardown():
    made = []

    def factory(cfg):
        made.append(ScriptedKinesis())
        return made[-1]

    fn = _PutRecordsFn(config(), factory)
    fn.setup()
    for _ in range(3):
        fn.start_bundle()
        for element in records(10):
            list(fn.process(element))
        list(fn.finish_bundle())

    assert len(made) == 1
    assert not made[0].closed
    fn.teardown()
    assert made[0].closed
    assert len(made[0].calls) == 3


# ---------------------------------------------------------------------------------------------
# The transform in a pipeline: metrics and dead letters


def test_metrics_and_dead_letters_of_a_pipeline():
    elements = records(7, size=20)
    oversize = ('huge', b'x' * DEFAULT_MAX_RECORD_BYTES)
    client = ScriptedKinesis(
        fail_keys(
            {
                'p-00002': 'ProvisionedThroughputExceededException',
                'p-00005': 'ProvisionedThroughputExceededException',
            }
        )
    )
    cfg = config(base_backoff_seconds=0.001)

    pipeline = TestPipeline(runner='FnApiRunner')
    letters = (
        pipeline
        | beam.Create(elements + [oversize])
        | WriteToKinesis(cfg, client_factory=ClientFactory(client))
    )
    assert_that(
        letters | beam.Map(lambda letter: (letter['source'], letter['stage'])),
        equal_to([('profile huge', 'write')]),
    )
    result = pipeline.run()
    result.wait_until_finish()

    metrics = result.metrics().query(MetricsFilter().with_namespace('beam_kinesis'))
    counters = {c.key.metric.name: c.committed for c in metrics['counters']}
    throttling_msecs = counters.pop('throttling_msecs')
    # The run report's counters: per shard acknowledged, and per second of wall clock.
    per_second = {
        name: counters.pop(name) for name in list(counters) if name.startswith(kinesis.TIMELINE)
    }
    assert counters.pop(kinesis.SENT_TO_SHARD + 'shardId-000000000000') == 7
    for kind, total in (('sent', 7), ('throttled', 2), ('retried', 2)):
        assert (
            sum(
                value
                for name, value in per_second.items()
                if name.startswith(f'{kinesis.TIMELINE}{kind}_')
            )
            == total
        ), kind
    assert counters == {
        'records_sent': 7,
        'bytes_sent': sum(len(key) + len(data) for key, data in elements),
        'put_records_calls': 2,
        'records_retried': 2,
        'records_throttled': 2,
        'records_dead_lettered': 1,
        'records_throttled_on_unknown': 2,  # the scripted message names no shard
    }
    assert set(counters) | {'throttling_msecs'} == set(SINK_COUNTERS) - {
        'records_already_acknowledged'
    } | {'records_throttled_on_unknown'}
    assert 0 <= throttling_msecs < 1000  # the backoff after the throttled answer
    distributions = {d.key.metric.name: d.committed for d in metrics['distributions']}
    assert set(distributions) == set(SINK_DISTRIBUTIONS)
    assert distributions['request_records'].count == 2
    assert (distributions['request_records'].min, distributions['request_records'].max) == (2, 7)
    assert distributions['request_bytes'].sum == counters['bytes_sent'] + 2 * 27


def test_records_land_in_moto_and_a_lone_record_uses_put_record():
    with mock_aws():
        setup_client = boto3.client('kinesis', region_name='us-east-1')
        setup_client.create_stream(StreamName=STREAM, ShardCount=2)
        cfg = config(aws_access_key_id='AKIAEXAMPLE', aws_secret_access_key=SECRET)
        elements = records(50)
        spy = SpyingFactory()

        pipeline = TestPipeline(runner='FnApiRunner')
        letters = pipeline | beam.Create(elements) | WriteToKinesis(cfg, client_factory=spy)
        assert_that(letters, equal_to([]))
        pipeline.run().wait_until_finish()

        landed = read_stream(setup_client, STREAM)
        assert sorted(r for shard in landed.values() for r in shard) == sorted(elements)
        assert spy.operations == ['PutRecords']

        lone = SpyingFactory()
        pipeline = TestPipeline(runner='FnApiRunner')
        _ = (
            pipeline
            | beam.Create([('alone', b'{"a":1}')])
            | WriteToKinesis(cfg, client_factory=lone)
        )
        pipeline.run().wait_until_finish()

        assert lone.operations == ['PutRecord']
        landed = read_stream(setup_client, STREAM)
        assert sum(shard.count(('alone', b'{"a":1}')) for shard in landed.values()) == 1


# ---------------------------------------------------------------------------------------------
# check_stream


class DescribingClient(ScriptedKinesis):
    """Answers the stream check from a script of describe and list answers."""

    def __init__(self, describe: Callable, list_pages: list | Callable | None = None) -> None:
        super().__init__()
        self.describe = describe
        self.list_pages = list_pages
        self.list_calls: list[dict] = []

    def describe_stream_summary(self, StreamName: str) -> dict:  # noqa: N803
        return self.describe(StreamName)

    def list_streams(self, **kwargs: Any) -> dict:
        self.list_calls.append(kwargs)
        if callable(self.list_pages):
            return self.list_pages(**kwargs)
        return self.list_pages.pop(0)


def summary(status: str) -> Callable:
    return lambda name: {'StreamDescriptionSummary': {'StreamName': name, 'StreamStatus': status}}


def fails(error: Exception) -> Callable:
    def answer(*args: Any, **kwargs: Any) -> dict:
        raise error

    return answer


def check(client: ScriptedKinesis, **options: Any) -> dict:
    return check_stream(config(**options), client_factory=lambda _: client)


@pytest.mark.parametrize('status', ['ACTIVE', 'UPDATING'])
def test_check_accepts_writable_streams(status):
    client = DescribingClient(summary(status))

    assert check(client)['StreamStatus'] == status
    assert client.closed


@pytest.mark.parametrize('status', ['CREATING', 'DELETING'])
def test_check_rejects_streams_that_cannot_be_written(status):
    with pytest.raises(KinesisStreamError, match=f"'{STREAM}' in region 'us-east-1' is {status}"):
        check(DescribingClient(summary(status)))


def test_check_falls_back_to_list_streams_when_describe_is_denied():
    denied = client_error('AccessDeniedException', 'not authorized', operation='Describe')
    client = DescribingClient(
        fails(denied),
        [
            {'StreamNames': ['a', 'b'], 'HasMoreStreams': True},
            {
                'StreamNames': [STREAM],
                'HasMoreStreams': False,
                'StreamSummaries': [{'StreamName': STREAM, 'StreamStatus': 'ACTIVE'}],
            },
        ],
    )

    assert check(client) == {'StreamName': STREAM, 'StreamStatus': 'ACTIVE'}
    assert client.list_calls[1]['ExclusiveStartStreamName'] == 'b'


def test_check_via_list_streams_reports_a_missing_stream():
    denied = client_error('AccessDeniedException', 'not authorized', operation='Describe')
    client = DescribingClient(fails(denied), [{'StreamNames': ['other'], 'HasMoreStreams': False}])

    with pytest.raises(KinesisStreamError, match='not found by ListStreams'):
        check(client)


def test_check_says_when_neither_describe_nor_list_is_allowed():
    denied = client_error('AccessDeniedException', 'not authorized')
    client = DescribingClient(fails(denied), fails(denied))

    with pytest.raises(KinesisStreamError, match='kinesis:DescribeStreamSummary'):
        check(client)


@pytest.mark.parametrize(
    'code', ['UnrecognizedClientException', 'ExpiredTokenException', 'InvalidSignatureException']
)
def test_check_reports_rejected_credentials_without_the_secret(code, caplog):
    caplog.set_level(logging.DEBUG)
    # Even if a server echoed the secret, the sentence must not carry it.
    error = client_error(code, f'signature for {SECRET} does not match')
    client = DescribingClient(fails(error))

    with pytest.raises(KinesisStreamError, match='credentials were rejected') as raised:
        check(client, aws_access_key_id='AKIAEXAMPLE', aws_secret_access_key=SECRET)

    assert code in str(raised.value)
    assert SECRET not in str(raised.value)
    assert SECRET not in caplog.text


def test_check_reports_missing_credentials():
    with pytest.raises(KinesisStreamError, match='No AWS credentials'):
        check(DescribingClient(fails(NoCredentialsError())))


def test_check_reports_an_unreachable_endpoint_without_the_secret(caplog):
    caplog.set_level(logging.DEBUG)
    endpoint = f'http://127.0.0.1:{free_port()}'  # nothing listens there
    cfg = config(
        endpoint_url=endpoint,
        aws_access_key_id='AKIAEXAMPLE',
        aws_secret_access_key=SECRET,
        request_attempts=1,
        connect_timeout_seconds=1,
    )

    with pytest.raises(KinesisStreamError, match='unreachable') as raised:
        check_stream(cfg)

    assert endpoint in str(raised.value)
    assert SECRET not in str(raised.value)
    assert SECRET not in caplog.text


def test_check_against_moto_finds_unknown_streams_and_wrong_regions():
    with mock_aws():
        boto3.client('kinesis', region_name='us-east-1').create_stream(
            StreamName=STREAM, ShardCount=1
        )
        keys = {'aws_access_key_id': 'AKIAEXAMPLE', 'aws_secret_access_key': SECRET}

        assert check_stream(config(**keys))['StreamStatus'] == 'ACTIVE'
        with pytest.raises(KinesisStreamError, match="'missing' in region 'us-east-1' was not"):
            check_stream(KinesisConfig('missing', region='us-east-1', **keys))
        with pytest.raises(
            KinesisStreamError, match=f"'{STREAM}' in region 'eu-west-1' was not found"
        ):
            check_stream(config(region='eu-west-1', **keys))


# ---------------------------------------------------------------------------------------------
# Secrets in errors and logs


def test_write_errors_and_logs_never_show_the_secret(caplog):
    caplog.set_level(logging.DEBUG)
    echo = client_error('AccessDeniedException', f'user with key {SECRET} is not authorized')
    client = ScriptedKinesis(
        fail_keys({'p-00000': 'InvalidArgumentException'}), default=raise_(echo)
    )
    fn = make_fn(
        client, aws_access_key_id='AKIAEXAMPLE', aws_secret_access_key=SECRET, max_batch_records=2
    )

    with pytest.raises(KinesisWriteError) as raised:
        run_fn(fn, records(4))

    assert 'AccessDeniedException' in str(raised.value)
    assert SECRET not in str(raised.value)
    assert SECRET not in caplog.text
    assert SECRET not in repr(fn._config)


def test_an_instance_writes_again_after_a_failed_bundle():
    client = ScriptedKinesis(raise_(client_error('ResourceNotFoundException', 'gone')))
    fn = make_fn(client, max_in_flight=2, max_batch_records=5)
    fn.setup()
    try:
        fn.start_bundle()
        with pytest.raises(KinesisWriteError):
            for element in records(20):
                list(fn.process(element))
            list(fn.finish_bundle())

        fn.start_bundle()
        for element in records(5, prefix='q'):
            list(fn.process(element))
        assert list(fn.finish_bundle()) == []
    finally:
        fn.teardown()

    assert client.calls[-1] == ('PutRecords', records(5, prefix='q'))


# ---------------------------------------------------------------------------------------------
# One classifier; systemic signature errors; credentials echoed by a server


@pytest.mark.parametrize(
    'code, kind, about',
    [
        ('ProvisionedThroughputExceededException', kinesis.ErrorKind.THROTTLE, ''),
        ('ThrottlingException', kinesis.ErrorKind.THROTTLE, ''),
        ('Throttling', kinesis.ErrorKind.THROTTLE, ''),
        ('InternalFailure', kinesis.ErrorKind.RETRY, ''),
        ('ServiceUnavailable', kinesis.ErrorKind.RETRY, ''),
        ('ResourceNotFoundException', kinesis.ErrorKind.STOP, 'stream'),
        ('com.amazonaws.kinesis#ResourceNotFoundException', kinesis.ErrorKind.STOP, 'stream'),
        ('AccessDeniedException', kinesis.ErrorKind.STOP, 'access'),
        ('KMSDisabledException', kinesis.ErrorKind.STOP, 'kms'),
        ('IncompleteSignatureException', kinesis.ErrorKind.STOP, 'credentials'),
        ('IncompleteSignature', kinesis.ErrorKind.STOP, 'credentials'),
        ('MissingAuthenticationTokenException', kinesis.ErrorKind.STOP, 'credentials'),
        ('MissingAuthenticationToken', kinesis.ErrorKind.STOP, 'credentials'),
        ('ExpiredTokenException', kinesis.ErrorKind.STOP, 'credentials'),
        ('ExpiredToken', kinesis.ErrorKind.STOP, 'credentials'),
        ('ValidationException', kinesis.ErrorKind.REJECT, ''),
        ('InvalidArgumentException', kinesis.ErrorKind.REJECT, ''),
    ],
)
def test_one_classifier_answers_every_spelling_of_a_code(code, kind, about):
    assert kinesis.classify(code) == (kind, about)


def test_unknown_codes_are_classified_by_status():
    assert kinesis.classify('Whatever', 503).kind is kinesis.ErrorKind.RETRY
    assert kinesis.classify('Whatever', 403) == (kinesis.ErrorKind.STOP, 'access')
    assert kinesis.classify('Whatever', 413).kind is kinesis.ErrorKind.REJECT


@pytest.mark.parametrize(
    'code',
    [
        'IncompleteSignatureException',
        'IncompleteSignature',
        'MissingAuthenticationTokenException',
        'MissingAuthenticationToken',
    ],
)
def test_signature_errors_stop_the_job_after_one_call(code):
    client = ScriptedKinesis(default=raise_(client_error(code, 'Authorization header broken')))

    with pytest.raises(KinesisWriteError, match=code):
        run_fn(make_fn(client, max_in_flight=1), records(2000))

    # Not halved down to single records (2 calls per record before).
    assert len(client.calls) == 1


KEY_ID = 'AKIAEXAMPLEKEYID0001'
TEMPORARY_KEY_ID = 'ASIAEXAMPLETEMPKEY01'


def authorization(key_id: str) -> str:
    return (
        f'AWS4-HMAC-SHA256 Credential={key_id}/20240601/us-east-1/kinesis/aws4_request, '
        'SignedHeaders=content-type;host;x-amz-date, '
        'Signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef'
    )


@pytest.mark.parametrize('key_id', [KEY_ID, TEMPORARY_KEY_ID])
def test_an_echoed_authorization_header_never_reaches_errors_or_dead_letters(key_id, caplog):
    caplog.set_level(logging.DEBUG)
    echo = f"'{authorization(key_id)}' not a valid key=value pair in Authorization header"
    rejected = ScriptedKinesis(fail_keys({'p-00000': 'InvalidArgumentException'}), default=accept)
    rejected.steps[0] = lambda operation, sent: {
        'FailedRecordCount': 1,
        'Records': [{'ErrorCode': 'InvalidArgumentException', 'ErrorMessage': echo}]
        + [{'ShardId': 'shardId-000000000000', 'SequenceNumber': '1'}] * (len(sent) - 1),
    }
    letters = run_fn(
        make_fn(rejected, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET), records(3)
    )
    stopped = ScriptedKinesis(default=raise_(client_error('IncompleteSignatureException', echo)))
    with pytest.raises(KinesisWriteError) as raised:
        run_fn(make_fn(stopped, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET), records(3))

    # A runner logs the whole chain of the error: the cause is a redacted copy.
    chain = ''.join(traceback.format_exception(raised.value))
    shown = [repr(letters), str(raised.value), caplog.text, chain]
    assert 'InvalidArgumentException' in shown[0] and 'IncompleteSignature' in shown[1]
    assert isinstance(raised.value.__cause__, ClientError)
    for text in shown:
        assert key_id not in text and SECRET not in text
        assert '0123456789abcdef' not in text  # the signature neither
    assert 'Credential=***' in shown[1]


def test_redact_masks_explicit_values_and_anything_like_aws_credentials():
    text = (
        f'{KEY_ID} {TEMPORARY_KEY_ID} plain-secret X-Amz-Security-Token: FwoGZXIvYXdzEB '
        f'{authorization("AKIAANOTHERKEY000001")}'
    )
    masked = kinesis.redact(text, ['plain-secret'])
    for value in (
        KEY_ID,
        TEMPORARY_KEY_ID,
        'plain-secret',
        'FwoGZXIvYXdzEB',
        'AKIAANOTHERKEY000001',
        '0123456789abcdef',
    ):
        assert value not in masked
    assert 'us-east-1' not in masked.split('Credential=')[1].split(',')[0]


@pytest.mark.parametrize(
    'name, value',
    [
        ('read_timeout_seconds', 1e30),
        ('connect_timeout_seconds', math.inf),
        ('read_timeout_seconds', math.nan),
        ('retry_deadline_seconds', 1e9),
        ('max_backoff_seconds', 1e6),
        ('unreachable_after_seconds', 0),
        ('unreachable_after_requests', 0),
    ],
)
def test_config_refuses_absurd_times_with_their_name(name, value):
    with pytest.raises(ValueError, match=name):
        config(**{name: value})


def test_config_checks_role_options():
    role = 'arn:aws:iam::123456789012:role/exporter'
    assert config(aws_role_arn=role, aws_external_id='ext-1234').aws_role_arn == role
    assert 'ext-1234' not in repr(config(aws_role_arn=role, aws_external_id='ext-1234'))
    with pytest.raises(ValueError, match='aws_role_arn'):
        config(aws_role_arn='exporter')
    with pytest.raises(ValueError, match='without aws_role_arn'):
        config(aws_external_id='ext-1234')
    with pytest.raises(ValueError, match='aws_role_session_name'):
        config(aws_role_arn=role, aws_role_session_name='has spaces')


# ---------------------------------------------------------------------------------------------
# A dead endpoint: the deadline bounds each attempt; a run of unanswered requests stops the job


class BlackHole:
    """Clients that answer nothing: each call takes as long as its own config lets it wait
    (botocore's attempts, each up to connect + read timeout) on the fake clock, then times
    out. Remembers the config of every client made."""

    def __init__(
        self,
        clock: FakeClock,
        answer_every: int = 0,
        error: Callable[[], Exception] = lambda: ReadTimeoutError(
            endpoint_url='http://127.0.0.1:1/'
        ),
    ) -> None:
        self.clock = clock
        self.error = error
        self.configs: list[KinesisConfig] = []
        self.calls: list[tuple[float, float]] = []  # (started, ended)
        self.answer_every = answer_every
        self._lock = threading.Lock()

    def __call__(self, cfg: KinesisConfig) -> Any:
        self.configs.append(cfg)
        hole = self

        class Client(ScriptedKinesis):
            def _answer(self, operation, sent):
                with hole._lock:
                    number = len(hole.calls) + 1
                    started = hole.clock.monotonic()
                    hole.calls.append((started, started))
                if hole.answer_every and number % hole.answer_every == 0:
                    return accept(operation, sent)
                hole.clock.sleep(
                    cfg.request_attempts * (cfg.connect_timeout_seconds + cfg.read_timeout_seconds)
                )
                with hole._lock:
                    hole.calls[number - 1] = (started, hole.clock.monotonic())
                raise hole.error()

        return Client()


def test_no_attempt_outlives_the_batch_deadline():
    clock = FakeClock()
    hole = BlackHole(clock)
    fn = fn_on_clock(hole, clock, max_in_flight=1, unreachable_after_requests=100)
    start = clock.monotonic()

    letters = run_fn(fn, records(6))

    # 6 records, default budget 120 s: the first call may take 3 x (5 + 30) s; the second gets
    # a client whose timeouts fit what is left, and none starts after that.
    assert len(letters) == 6 and 'retry time budget of 120 s' in letters[0]['error']
    assert clock.monotonic() - start <= 120
    assert len(hole.calls) >= 2
    short = hole.configs[1]
    assert short.request_attempts == 1
    assert short.connect_timeout_seconds + short.read_timeout_seconds <= 120 - 105


@pytest.mark.parametrize(
    'error',
    [
        lambda: ReadTimeoutError(endpoint_url='http://127.0.0.1:1/'),
        lambda: EndpointConnectionError(endpoint_url='http://127.0.0.1:1/'),
    ],
    ids=['timeouts', 'refused'],
)
def test_a_dead_endpoint_stops_the_job_within_its_unreachable_window(error):
    clock = FakeClock()
    hole = BlackHole(clock, error=error)
    fn = fn_on_clock(
        hole,
        clock,
        max_in_flight=4,
        max_batch_records=10,
        connect_timeout_seconds=1,
        read_timeout_seconds=4,
        request_attempts=1,
        unreachable_after_requests=3,
        unreachable_after_seconds=10,
    )
    start = clock.monotonic()

    with pytest.raises(
        KinesisWriteError,
        match=r'has not answered for \d+ s: 3 requests in a '
        r'row .* could not connect or timed out',
    ):
        run_fn(fn, records(2000))

    # Three requests of 5 s each (they share the fake clock) and the 10 s window: the job stops
    # long before 200 batches spend their 120 s budgets.
    assert clock.monotonic() - start < 60
    assert len(hole.calls) <= 8


def test_timeouts_between_answers_are_not_an_outage():
    clock = FakeClock()
    hole = BlackHole(clock, answer_every=2)
    fn = fn_on_clock(
        hole,
        clock,
        max_in_flight=1,
        max_batch_records=10,
        connect_timeout_seconds=1,
        read_timeout_seconds=4,
        request_attempts=1,
        unreachable_after_requests=2,
        unreachable_after_seconds=1,
    )

    assert run_fn(fn, records(100)) == []


def test_outage_watch_needs_both_the_count_and_the_silence():
    clock = FakeClock()
    watch = kinesis._OutageWatch(requests=3, seconds=30, clock=clock.monotonic)
    sent = clock.monotonic()
    clock.sleep(40)
    assert watch.unanswered(sent) is None and watch.unanswered(sent) is None
    assert watch.unanswered(sent) == (3, 40)
    watch.answered()  # one answer: alive again
    assert watch.unanswered(sent) is None  # sent before the answer: counts from the answer
    clock.sleep(10)
    assert watch.unanswered(clock.monotonic()) is None
    assert watch.unanswered(clock.monotonic()) is None  # 3 in a row, but only 10 s of silence
    clock.sleep(25)
    assert watch.unanswered(clock.monotonic()) == (4, 35)


# ---------------------------------------------------------------------------------------------
# Throttling visible: per-shard counts where the answer names the shard


def test_throttled_entries_are_counted_by_the_shard_their_message_names():
    message = (
        'Rate exceeded for shard shardId-000000000001 in stream profiles under account '
        '123456789012.'
    )

    def throttle_one(operation, sent):
        return {
            'FailedRecordCount': 1,
            'Records': [
                {'ErrorCode': 'ProvisionedThroughputExceededException', 'ErrorMessage': message}
            ]
            + [{'ShardId': 'shardId-000000000000', 'SequenceNumber': '1'}] * (len(sent) - 1),
        }

    clock = FakeClock()
    client = ScriptedKinesis(
        throttle_one,
        raise_(client_error('ProvisionedThroughputExceededException', 'Rate exceeded for shard')),
    )
    fn = make_fn(client, clock)
    fn.setup()
    try:
        outcome = kinesis._Outcome()
        fn._send([_make_entry(key, data) for key, data in records(3)], math.inf, outcome)
    finally:
        fn.teardown()

    assert outcome.throttled_by_shard == {'shardId-000000000001': 1, 'unknown': 1}
    assert outcome.sent == 3 and outcome.throttled == 2
    assert outcome.throttling_seconds > 0
    assert [records_ for _, records_, _ in outcome.requests] == [3, 1, 1]


class _ScriptedHttpKinesis:
    """A Kinesis endpoint on 127.0.0.1 that answers PutRecord calls from a script of
    (status, JSON body) pairs, repeating the last; each request is counted."""

    def __init__(self, answers: list[tuple[int, dict]]):
        import http.server

        self.answers = list(answers)
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get('Content-Length') or 0))
                with outer_lock:
                    index = min(outer.requests, len(outer.answers) - 1)
                    outer.requests += 1
                status, body = outer.answers[index]
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header('Content-Type', 'application/x-amz-json-1.1')
                self.send_header('Content-Length', str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        outer_lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', free_port()), Handler)
        self.url = f'http://127.0.0.1:{self.server.server_address[1]}'
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _write_one_record_over_http(
    answers: list[tuple[int, dict]], request_attempts: int, no_dead_letters: bool = False
) -> tuple[int, dict[str, int]]:
    """Writes one record through WriteToKinesis and the real botocore client (with its own
    `request_attempts`) to a `_ScriptedHttpKinesis` giving `answers`; returns the requests
    the endpoint got and the sink's counters. `no_dead_letters` asserts that none came out."""
    server = _ScriptedHttpKinesis(answers)
    try:
        cfg = config(
            endpoint_url=server.url,
            aws_access_key_id='AKIAEXAMPLE',
            aws_secret_access_key=SECRET,
            request_attempts=request_attempts,
            base_backoff_seconds=0.01,
        )
        pipeline = TestPipeline(runner='FnApiRunner')
        letters = pipeline | beam.Create([('alone', b'{"a":1}')]) | WriteToKinesis(cfg)
        if no_dead_letters:
            assert_that(letters, equal_to([]))
        result = pipeline.run()
        result.wait_until_finish()
    finally:
        server.close()
    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query(MetricsFilter().with_namespace('beam_kinesis'))['counters']
    }
    return server.requests, counters


def test_throttles_that_botocore_retries_are_counted_as_throttled():
    """A lone record goes by PutRecord, whose throttling error botocore retries by itself:
    each throttled attempt still counts, on the shard its message names."""
    shard = 'shardId-000000000001'
    throttled = (
        400,
        {
            '__type': 'ProvisionedThroughputExceededException',
            'message': f'Rate exceeded for shard {shard} in stream {STREAM} under account 1.',
        },
    )
    accepted = (200, {'ShardId': shard, 'SequenceNumber': '1'})
    requests, counters = _write_one_record_over_http(
        [throttled, throttled, accepted], request_attempts=3, no_dead_letters=True
    )
    assert requests == 3  # botocore's two retries, one call of the sink
    assert counters['put_records_calls'] == 1
    assert counters['records_sent'] == 1
    assert counters['records_throttled'] == 2
    assert counters[kinesis.THROTTLED_ON_SHARD + shard] == 2


def test_a_throttle_botocore_gives_up_on_is_counted_once_per_attempt():
    """When botocore's attempts are spent, the sink's own retry takes over; every throttled
    attempt of both layers is counted once."""
    throttled = (
        400,
        {'__type': 'ProvisionedThroughputExceededException', 'message': 'Rate exceeded'},
    )
    accepted = (200, {'ShardId': 'shardId-000000000000', 'SequenceNumber': '1'})
    requests, counters = _write_one_record_over_http(
        [throttled, throttled, throttled, accepted], request_attempts=2
    )
    assert requests == 4
    assert counters['put_records_calls'] == 2  # two calls of the sink, two attempts each
    assert counters['records_throttled'] == 3
    assert counters['records_sent'] == 1
