"""The testing kit: an in-memory Kinesis that `WriteToKinesis` writes to in a TestPipeline.

A user's unit test of a pipeline that ends in `WriteToKinesis` needs somewhere for the
records to land that it can read back, and a way to make Kinesis misbehave (throttle a
record, fail internally, reject a request) to see that the pipeline copes. `InMemoryKinesis`
is that place::

    with InMemoryKinesis(shards=4) as kinesis:
        config = kinesis.config('profiles')      # creates the stream, 4 shards
        kinesis.fail('p-2', 'throttled', times=2)  # p-2's first two attempts are throttled
        with TestPipeline() as p:
            failed = p | beam.Create(records) | WriteToKinesis(config)
            assert_that(failed, equal_to([]))
        assert kinesis.records_by_shard()[kinesis.shard_of('p-2')] == [('p-2', b'...')]

How it reaches the sink: the config's `endpoint_url` is `memory://<id>`, and
`beam_kinesis.kinesis.make_client` answers that scheme with a client of the `InMemoryKinesis`
registered under `<id>` in this process. The sink's DoFns are pickled, so nothing else could
carry the store to them; the registry works because Beam's DirectRunner (TestPipeline's
default) runs them in this same process. It is for the in-memory DirectRunner and
TestPipeline only: a runner that starts worker processes (Flink, Spark, Dask, Dataflow, the
DirectRunner in multi-process mode) finds no store there, and the sink stops with one
sentence saying so.

The client answers as Kinesis does where the sink can tell: records go to the shard whose
hash-key range (the 128-bit range split evenly, as CreateStream does) holds the MD5 of the
partition key; PutRecords takes at most 500 records and 5 MiB, a record at most 1 MiB
(data plus partition key) and a partition key of 1 to 256 characters, else the whole request
fails with ValidationException; an unknown stream is ResourceNotFoundException.

For a real Kinesis API on 127.0.0.1 (moto's server, the job's embedded local Kinesis), use
the pytest fixtures of `beam_kinesis.testing.pytest_plugin`.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from types import SimpleNamespace
from typing import Any, Callable

from botocore.exceptions import ClientError

from beam_kinesis.kinesis import (
    DEFAULT_MAX_RECORD_BYTES,
    MAX_PARTITION_KEY_CHARS,
    MAX_RECORDS_PER_REQUEST,
    MAX_REQUEST_BYTES,
    KinesisConfig,
    KinesisStreamError,
)

__all__ = ['FAILURE_KINDS', 'IN_MEMORY_SCHEME', 'InMemoryKinesis', 'in_memory_client']

# The endpoint scheme of an in-memory Kinesis: `memory://<registry id>`.
IN_MEMORY_SCHEME = 'memory://'
# What `InMemoryKinesis.fail` can script, and how the sink sees each:
#   throttled: the entry fails with ProvisionedThroughputExceededException (PutRecord: the
#              request does), which the sink resends after slowing down;
#   internal:  the entry fails with InternalFailure (PutRecord: a 500), which it resends;
#   rejected:  the whole request fails with ValidationException, a non-retryable rejection:
#              the sink halves the request until the record is alone, then dead-letters it;
#   denied:    the whole request fails with AccessDeniedException: the job stops
#              (KinesisWriteError), as it does when a real stream's policy changes mid-run.
FAILURE_KINDS = ('throttled', 'internal', 'rejected', 'denied')
# A made-up account id for ARNs and error messages: nothing real is involved.
_ACCOUNT_ID = '123456789012'
_HASH_KEYS = 2**128

# Open in-memory Kinesis stores of this process, by id.
_REGISTRY: dict[str, InMemoryKinesis] = {}
_REGISTRY_LOCK = threading.Lock()

# What `fail` matches: a partition key, or a predicate on `(partition_key, data)`.
Match = str | Callable[[str, bytes], bool]


def _hash_key(partition_key: str) -> int:
    """The 128-bit hash key Kinesis derives from a partition key: the MD5 of its UTF-8."""
    return int.from_bytes(
        hashlib.md5(partition_key.encode('utf-8', 'surrogatepass')).digest(), 'big'
    )


def _client_error(code: str, message: str, status: int, operation: str) -> ClientError:
    return ClientError(
        {
            'Error': {'Code': code, 'Message': message},
            'ResponseMetadata': {'HTTPStatusCode': status},
        },
        operation,
    )


class _Rule:
    """One scripted failure: which records, what happens, and how many attempts are left."""

    def __init__(self, match: Match, kind: str, times: int | None) -> None:
        self.match = match
        self.kind = kind
        self.left = times

    def applies(self, partition_key: str, data: bytes) -> bool:
        if self.left == 0:
            return False
        if callable(self.match):
            return bool(self.match(partition_key, data))
        return partition_key == self.match


class _Stream:
    def __init__(self, name: str, shards: int) -> None:
        self.name = name
        step = _HASH_KEYS // shards
        # Even ranges, the last one up to 2**128 - 1 (what CreateStream makes).
        self.starts = [index * step for index in range(shards)]
        self.shard_ids = [f'shardId-{index:012d}' for index in range(shards)]
        self.records: dict[str, list[tuple[str, bytes]]] = {shard: [] for shard in self.shard_ids}
        self.arrivals: list[tuple[str, bytes]] = []

    def shard_of(self, partition_key: str) -> str:
        hash_key = _hash_key(partition_key)
        index = len(self.starts) - 1
        while self.starts[index] > hash_key:
            index -= 1
        return self.shard_ids[index]

    def hash_key_range(self, index: int) -> dict:
        end = self.starts[index + 1] - 1 if index + 1 < len(self.starts) else _HASH_KEYS - 1
        return {'StartingHashKey': str(self.starts[index]), 'EndingHashKey': str(end)}


class InMemoryKinesis:
    """Kinesis data streams held in this process's memory, for TestPipeline on the DirectRunner.

    Open it (`with InMemoryKinesis() as kinesis:` or `open()`), make a sink config with
    `config(stream)`, run the pipeline inside the block, then read back what landed with
    `records()` or `records_by_shard()`. Script failures with `fail()`. See the module
    docstring for what it answers like Kinesis and where it cannot be used.
    """

    def __init__(self, shards: int = 1, *, region: str = 'us-east-1') -> None:
        """Args:
        shards: shards of the streams `config` creates.
        region: the region of the configs and clients.
        """
        if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= 10000:
            raise ValueError(f'shards {shards!r} must be an integer from 1 to 10000')
        self.shards = shards
        self.region = region
        self.id = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._streams: dict[str, _Stream] = {}
        self._rules: list[_Rule] = []
        self._calls = 0
        self._attempts: dict[str, int] = {}
        self._sequence = 0

    @property
    def endpoint_url(self) -> str:
        """`memory://<id>`: what a `KinesisConfig` names to write here."""
        return IN_MEMORY_SCHEME + self.id

    def open(self) -> InMemoryKinesis:
        """Makes this store reachable from the sink's workers in this process; returns self."""
        with _REGISTRY_LOCK:
            _REGISTRY[self.id] = self
        return self

    def close(self) -> None:
        """Unregisters the store; what landed can still be read back."""
        with _REGISTRY_LOCK:
            _REGISTRY.pop(self.id, None)

    def __enter__(self) -> InMemoryKinesis:
        return self.open()

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def create_stream(self, name: str, shards: int | None = None) -> None:
        """Creates an ACTIVE stream of `shards` shards (default: this store's `shards`)."""
        KinesisConfig(name)  # the name's own check, with the sink's sentence
        count = self.shards if shards is None else shards
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 10000:
            raise ValueError(f'shards {count!r} must be an integer from 1 to 10000')
        with self._lock:
            if name in self._streams:
                raise ValueError(f'stream {name!r} exists already')
            self._streams[name] = _Stream(name, count)

    def config(self, stream_name: str, **options: Any) -> KinesisConfig:
        """A sink config writing to `stream_name` here, which is created if it is missing.

        `options` are `KinesisConfig` fields; the backoff defaults to 10 ms (not 100 ms) so
        that scripted failures do not slow a test down.
        """
        with self._lock:
            exists = stream_name in self._streams
        if not exists:
            self.create_stream(stream_name)
        options.setdefault('base_backoff_seconds', 0.01)
        options.setdefault('max_backoff_seconds', 0.1)
        return KinesisConfig(
            stream_name, region=self.region, endpoint_url=self.endpoint_url, **options
        )

    def client(self) -> Any:
        """A client of this store with the boto3 Kinesis calls the sink and `check_stream`
        make (`put_records`, `put_record`, `describe_stream_summary`, `list_streams`,
        `list_shards`, `close`)."""
        return _InMemoryClient(self)

    def fail(self, match: Match, kind: str, times: int | None = None) -> None:
        """Scripts a failure of the records that `match`.

        Args:
          match: a partition key (the profile key, for keys of up to 256 characters), or a
            callable taking `(partition_key, data)` and returning whether the record fails.
          kind: one of `FAILURE_KINDS` (see there for what the sink sees).
          times: attempts of each request holding a matching record that fail, counted
            across records; None fails every attempt.
        """
        if kind not in FAILURE_KINDS:
            raise ValueError(f'kind {kind!r} is not one of {FAILURE_KINDS}')
        if times is not None and (
            isinstance(times, bool) or not isinstance(times, int) or times < 1
        ):
            raise ValueError(f'times {times!r} must be None or a positive integer')
        if not callable(match) and not isinstance(match, str):
            raise ValueError(
                f'match must be a partition key or a callable, not {type(match).__name__}'
            )
        with self._lock:
            self._rules.append(_Rule(match, kind, times))

    def shard_of(self, partition_key: str, stream_name: str | None = None) -> str:
        """The shard a record of this partition key lands on."""
        return self._stream(stream_name).shard_of(partition_key)

    def records(self, stream_name: str | None = None) -> list[tuple[str, bytes]]:
        """`(partition_key, data)` of every record the stream took, in the order it took
        them (the only stream when no name is given)."""
        with self._lock:
            return list(self._stream(stream_name).arrivals)

    def records_by_shard(
        self, stream_name: str | None = None
    ) -> dict[str, list[tuple[str, bytes]]]:
        """Every shard id of the stream, with the records it took in order (maybe none)."""
        with self._lock:
            stream = self._stream(stream_name)
            return {shard: list(records) for shard, records in stream.records.items()}

    @property
    def calls(self) -> int:
        """PutRecords and PutRecord requests answered, failed ones included."""
        return self._calls

    def attempts(self, partition_key: str) -> int:
        """How many times a record of this partition key was sent (in any request)."""
        with self._lock:
            return self._attempts.get(partition_key, 0)

    def _stream(self, name: str | None) -> _Stream:
        if name is None:
            if len(self._streams) != 1:
                raise ValueError(
                    f'name the stream: this store has {len(self._streams)} '
                    f'({sorted(self._streams)})'
                )
            return next(iter(self._streams.values()))
        try:
            return self._streams[name]
        except KeyError:
            raise ValueError(
                f'no stream {name!r} here (streams: {sorted(self._streams)})'
            ) from None

    # What the client calls, under the lock.

    def _put(
        self, operation: str, stream_name: str, entries: list[tuple[str, bytes]]
    ) -> list[dict]:
        with self._lock:
            self._calls += 1
            stream = self._streams.get(stream_name)
            if stream is None:
                raise _client_error(
                    'ResourceNotFoundException',
                    f'Stream {stream_name} under account {_ACCOUNT_ID} not found.',
                    400,
                    operation,
                )
            _validate(operation, entries)
            for key, _ in entries:
                self._attempts[key] = self._attempts.get(key, 0) + 1
            failures = [self._failure(key, data) for key, data in entries]
            for request_kind, code, status in (
                ('denied', 'AccessDeniedException', 400),
                ('rejected', 'ValidationException', 400),
            ):
                if request_kind in failures:
                    index = failures.index(request_kind)
                    raise _client_error(
                        code,
                        f'the in-memory Kinesis is scripted to refuse requests holding '
                        f'record {index} (partition key {entries[index][0]!r}) of '
                        f'stream {stream_name}',
                        status,
                        operation,
                    )
            results = []
            for (key, data), failure in zip(entries, failures):
                shard = stream.shard_of(key)
                if failure == 'throttled':
                    results.append(
                        {
                            'ErrorCode': 'ProvisionedThroughputExceededException',
                            'ErrorMessage': f'Rate exceeded for shard {shard} in '
                            f'stream {stream_name} under account '
                            f'{_ACCOUNT_ID}.',
                        }
                    )
                elif failure == 'internal':
                    results.append(
                        {
                            'ErrorCode': 'InternalFailure',
                            'ErrorMessage': 'Internal service failure.',
                        }
                    )
                else:
                    self._sequence += 1
                    stream.records[shard].append((key, data))
                    stream.arrivals.append((key, data))
                    results.append({'ShardId': shard, 'SequenceNumber': f'{self._sequence:056d}'})
            return results

    def _failure(self, partition_key: str, data: bytes) -> str | None:
        """The scripted failure of this attempt of a record (the first rule that applies
        takes one of its times), or None."""
        for rule in self._rules:
            if rule.applies(partition_key, data):
                if rule.left is not None:
                    rule.left -= 1
                return rule.kind
        return None


def _validate(operation: str, entries: list[tuple[str, bytes]]) -> None:
    """Refuses a request Kinesis would refuse whole, with its ValidationException."""
    problems = []
    if not 1 <= len(entries) <= MAX_RECORDS_PER_REQUEST:
        problems.append(f'{len(entries)} records, not 1 to {MAX_RECORDS_PER_REQUEST}')
    total = 0
    for index, (key, data) in enumerate(entries):
        key_size = len(key.encode('utf-8', 'surrogatepass'))
        total += key_size + len(data)
        if not 1 <= len(key.encode('utf-16-le', 'surrogatepass')) // 2 <= MAX_PARTITION_KEY_CHARS:
            problems.append(
                f'record {index}: a partition key of 1 to '
                f'{MAX_PARTITION_KEY_CHARS} characters is needed'
            )
        if key_size + len(data) > DEFAULT_MAX_RECORD_BYTES:
            problems.append(
                f'record {index}: {key_size + len(data)} bytes, over {DEFAULT_MAX_RECORD_BYTES}'
            )
    if total > MAX_REQUEST_BYTES:
        problems.append(f'{total} bytes in all, over {MAX_REQUEST_BYTES}')
    if problems:
        raise _client_error('ValidationException', '; '.join(problems[:3]), 400, operation)


class _InMemoryClient:
    """The boto3 Kinesis client calls the sink makes, answered by an `InMemoryKinesis`."""

    def __init__(self, store: InMemoryKinesis) -> None:
        self._store = store
        self.meta = SimpleNamespace(region_name=store.region, endpoint_url=store.endpoint_url)

    def put_records(self, *, StreamName: str, Records: list[dict], **_: Any) -> dict:
        entries = [(record['PartitionKey'], bytes(record['Data'])) for record in Records]
        results = self._store._put('PutRecords', StreamName, entries)
        failed = sum(1 for result in results if 'ErrorCode' in result)
        return {'FailedRecordCount': failed, 'Records': results}

    def put_record(self, *, StreamName: str, PartitionKey: str, Data: bytes, **_: Any) -> dict:
        result = self._store._put('PutRecord', StreamName, [(PartitionKey, bytes(Data))])[0]
        if 'ErrorCode' in result:  # PutRecord answers a failed record with an error
            status = 500 if result['ErrorCode'] == 'InternalFailure' else 400
            raise _client_error(result['ErrorCode'], result['ErrorMessage'], status, 'PutRecord')
        return result

    def describe_stream_summary(self, *, StreamName: str) -> dict:
        stream = self._find(StreamName, 'DescribeStreamSummary')
        return {
            'StreamDescriptionSummary': {
                'StreamName': stream.name,
                'StreamARN': self._arn(stream.name),
                'StreamStatus': 'ACTIVE',
                'StreamModeDetails': {'StreamMode': 'PROVISIONED'},
                'OpenShardCount': len(stream.shard_ids),
                'RetentionPeriodHours': 24,
                'EncryptionType': 'NONE',
                'EnhancedMonitoring': [],
                'ConsumerCount': 0,
            }
        }

    def list_streams(self, **_: Any) -> dict:
        with self._store._lock:
            names = sorted(self._store._streams)
        return {
            'StreamNames': names,
            'HasMoreStreams': False,
            'StreamSummaries': [
                {'StreamName': name, 'StreamARN': self._arn(name), 'StreamStatus': 'ACTIVE'}
                for name in names
            ],
        }

    def list_shards(self, *, StreamName: str, **_: Any) -> dict:
        stream = self._find(StreamName, 'ListShards')
        return {
            'Shards': [
                {
                    'ShardId': shard,
                    'HashKeyRange': stream.hash_key_range(index),
                    'SequenceNumberRange': {'StartingSequenceNumber': '0'},
                }
                for index, shard in enumerate(stream.shard_ids)
            ]
        }

    def close(self) -> None:
        pass

    def _find(self, name: str, operation: str) -> _Stream:
        with self._store._lock:
            stream = self._store._streams.get(name)
        if stream is None:
            raise _client_error(
                'ResourceNotFoundException',
                f'Stream {name} under account {_ACCOUNT_ID} not found.',
                400,
                operation,
            )
        return stream

    def _arn(self, name: str) -> str:
        return f'arn:aws:kinesis:{self._store.region}:{_ACCOUNT_ID}:stream/{name}'


def in_memory_client(config: KinesisConfig) -> Any:
    """The client of the `InMemoryKinesis` a `memory://<id>` config names, in this process.

    Raises:
      KinesisStreamError: when no open store has that id here (the pipeline ran after the
        store was closed, or on a runner whose workers are other processes).
    """
    store_id = (config.endpoint_url or '')[len(IN_MEMORY_SCHEME) :]
    with _REGISTRY_LOCK:
        store = _REGISTRY.get(store_id)
    if store is None:
        raise KinesisStreamError(
            f'No in-memory Kinesis {config.endpoint_url} is open in this process: it works '
            'only on the in-process DirectRunner (TestPipeline), while its InMemoryKinesis is '
            'open (inside its with block)'
        )
    return store.client()
