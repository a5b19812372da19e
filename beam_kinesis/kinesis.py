"""The Kinesis sink: records into a data stream by PutRecords, failures out as dead letters."""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import logging
import math
import random
import re
import threading
import time
import zlib
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import apache_beam as beam
import boto3
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, NoCredentialsError
from botocore.exceptions import ConnectionError as BotoConnectionError

from beam_kinesis.deadletter import write_dead_letter

__all__ = [
    'DEFAULT_MAX_RECORD_BYTES',
    'KinesisConfig',
    'KinesisStreamError',
    'KinesisWriteError',
    'MAX_PARTITION_KEY_CHARS',
    'MAX_RECORDS_PER_REQUEST',
    'MAX_RECORD_BYTES_CEILING',
    'MAX_REQUEST_BYTES',
    'METRICS_NAMESPACE',
    'SINK_COUNTERS',
    'Secret',
    'WriteToKinesis',
    'check_stream',
    'make_client',
    'partition_key_for',
]

_LOGGER = logging.getLogger(__name__)

_MIB = 1024 * 1024

# Records per PutRecords request (Kinesis API reference, PutRecords).
MAX_RECORDS_PER_REQUEST = 500
# Bytes per PutRecords request, data blobs plus partition keys (Kinesis API reference, PutRecords).
MAX_REQUEST_BYTES = 5 * _MIB
# Bytes per record, data blob plus partition key, of a stream with default settings
# (Kinesis API reference, PutRecord and PutRecords).
DEFAULT_MAX_RECORD_BYTES = 1 * _MIB
# Bytes per record of a stream raised with UpdateMaxRecordSize: 10240 KiB at most
# (Kinesis API reference, UpdateMaxRecordSize).
MAX_RECORD_BYTES_CEILING = 10 * _MIB
# Length of a partition key, in characters as the service counts them: UTF-16 code units
# (Kinesis API reference, PutRecord: PartitionKey length 1 to 256).
MAX_PARTITION_KEY_CHARS = 256
# Stream names: 1 to 128 of these characters (Kinesis API reference, CreateStream).
_STREAM_NAME = re.compile(r'[a-zA-Z0-9_.-]{1,128}')

METRICS_NAMESPACE = 'beam_kinesis'
# Counters of the sink, in the `beam_kinesis` namespace, for the job summary.
SINK_COUNTERS = (
    'records_sent',            # records Kinesis acknowledged
    'bytes_sent',              # data + partition key bytes of those records
    'put_records_calls',       # PutRecords and PutRecord calls of the sink (not botocore's retries)
    'records_retried',         # record resends after a failed entry or a failed request
    'records_throttled',       # record attempts that came back with ProvisionedThroughputExceeded
    'records_dead_lettered',   # records given up on: too large, rejected, or out of retry budget
)

# Error codes. Kinesis documents ProvisionedThroughputExceededException and InternalFailure as
# the ErrorCode of a failed PutRecords entry; the others come back for whole requests.
_THROTTLING_CODES = frozenset({
    'ProvisionedThroughputExceededException', 'ThrottlingException', 'Throttling',
    'KMSThrottlingException', 'LimitExceededException', 'RequestLimitExceeded',
    'TooManyRequestsException', 'SlowDown',
})
_TRANSIENT_CODES = frozenset({
    'InternalFailure', 'InternalFailureException', 'InternalServerError', 'ServiceUnavailable',
    'ServiceUnavailableException', 'RequestTimeout', 'RequestTimeoutException',
})
# Errors that no retry and no other record can fix: the job must stop and say why.
_SYSTEMIC_CODES = frozenset({
    'ResourceNotFoundException', 'AccessDeniedException', 'AccessDenied',
    'KMSAccessDeniedException', 'KMSNotFoundException', 'KMSDisabledException',
    'KMSInvalidStateException', 'KMSOptInRequired',
    'UnrecognizedClientException', 'InvalidSignatureException', 'SignatureDoesNotMatch',
    'IncompleteSignature', 'MissingAuthenticationToken', 'InvalidClientTokenId',
    'ExpiredToken', 'ExpiredTokenException',
})
_CREDENTIAL_CODES = frozenset({
    'UnrecognizedClientException', 'InvalidSignatureException', 'SignatureDoesNotMatch',
    'IncompleteSignature', 'MissingAuthenticationToken', 'InvalidClientTokenId',
    'ExpiredToken', 'ExpiredTokenException',
})
# A request of at least this many entries in which every entry failed with a non-retryable
# code is taken as a systemic fault; in a smaller one, a few bad records are plausible.
_SYSTEMIC_MIN_ENTRIES = 10
_WRITABLE_STATUSES = ('ACTIVE', 'UPDATING')
# Failures to connect, or of a connection (timeouts included): worth retrying.
_NETWORK_ERRORS = (BotoConnectionError, HTTPClientError)

# Adaptive rate (records per second, shared by the sending threads of one DoFn instance).
_MIN_RECORDS_PER_SECOND = 10.0   # floor, so a throttled sender still makes progress
_RATE_STEP = 50.0                # added after each request that saw no throttling
_RATE_WINDOW_SECONDS = 1.0       # window over which the unthrottled send rate is measured


class Secret:
    """A secret string that shows as `***` in repr, str, logs and error messages."""

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise ValueError('a secret must be a non-empty string')
        self._value = value

    def reveal(self) -> str:
        """Returns the secret itself, for the AWS client and nothing else."""
        return self._value

    def __repr__(self) -> str:
        return '***'

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> tuple:
        return (Secret, (self._value,))


class KinesisStreamError(RuntimeError):
    """The stream cannot be written to: unknown, not active, unreachable or not allowed."""


class KinesisWriteError(RuntimeError):
    """A systemic failure while writing: retrying or dead-lettering records would not help."""


@dataclasses.dataclass(frozen=True)
class KinesisConfig:
    """Where and how the sink writes.

    Credentials come from the standard AWS chain (environment, shared config, instance or task
    role) unless an access key and secret key are both given. The secret is held as a `Secret`
    and never printed. Records have no ExplicitHashKey: the partition key alone decides the
    shard, so records of one profile stay on one shard.

    Attributes:
      stream_name: the Kinesis data stream, which must exist.
      region: AWS region; None takes it from the AWS configuration chain.
      endpoint_url: a non-AWS endpoint such as a local Kinesis, or None.
      aws_access_key_id: explicit access key id, or None for the AWS chain.
      aws_secret_access_key: explicit secret key (a str is wrapped in `Secret`), or None.
      max_record_bytes: per-record limit, data + partition key; raise it (up to 10 MiB) only
        for a stream raised with UpdateMaxRecordSize. Larger records become dead letters.
      max_batch_records: records per PutRecords request (1 to 500).
      max_batch_bytes: bytes per PutRecords request, data + partition keys (up to 5 MiB). A
        record larger than this (possible with a raised max_record_bytes) is sent alone.
      max_in_flight: requests in flight at once per DoFn instance.
      max_retries: resends allowed per record after its first attempt.
      retry_deadline_seconds: time allowed for one batch, from its first attempt to its last.
      base_backoff_seconds: backoff cap of the first resend; it doubles per resend.
      max_backoff_seconds: the largest backoff cap.
      connect_timeout_seconds: TCP connect timeout of the client.
      read_timeout_seconds: response read timeout of the client.
      retry_mode: botocore retry mode for whole requests, `standard` or `adaptive`.
      request_attempts: botocore attempts per request, first attempt included.
    """

    stream_name: str
    region: str | None = None
    endpoint_url: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: Secret | None = None
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    max_batch_records: int = MAX_RECORDS_PER_REQUEST
    max_batch_bytes: int = MAX_REQUEST_BYTES
    max_in_flight: int = 8
    max_retries: int = 8
    retry_deadline_seconds: float = 120.0
    base_backoff_seconds: float = 0.1
    max_backoff_seconds: float = 10.0
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 30.0
    retry_mode: str = 'standard'
    request_attempts: int = 3

    def __post_init__(self) -> None:
        if isinstance(self.aws_secret_access_key, str):
            object.__setattr__(self, 'aws_secret_access_key', Secret(self.aws_secret_access_key))
        if not isinstance(self.stream_name, str) or not _STREAM_NAME.fullmatch(self.stream_name):
            raise ValueError(
                f'stream_name {self.stream_name!r} is not a Kinesis stream name '
                '(1 to 128 letters, digits, _ . -)')
        if (self.aws_access_key_id is None) != (self.aws_secret_access_key is None):
            raise ValueError(
                'aws_access_key_id and aws_secret_access_key must be given together, or neither')
        if self.retry_mode not in ('standard', 'adaptive'):
            raise ValueError(f"retry_mode {self.retry_mode!r} is not 'standard' or 'adaptive'")
        _check_range('max_record_bytes', self.max_record_bytes, 1, MAX_RECORD_BYTES_CEILING)
        _check_range('max_batch_records', self.max_batch_records, 1, MAX_RECORDS_PER_REQUEST)
        _check_range('max_batch_bytes', self.max_batch_bytes, 1, MAX_REQUEST_BYTES)
        _check_range('max_in_flight', self.max_in_flight, 1, 64)
        _check_range('max_retries', self.max_retries, 0, 100)
        _check_range('request_attempts', self.request_attempts, 1, 20)
        for name in ('retry_deadline_seconds', 'base_backoff_seconds', 'max_backoff_seconds',
                     'connect_timeout_seconds', 'read_timeout_seconds'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f'{name} {value!r} must be a positive number of seconds')


def _check_range(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f'{name} {value!r} must be an integer from {low} to {high}')


def _redact(text: str, config: KinesisConfig) -> str:
    """Removes the secret from a message, should an error ever echo it."""
    if config.aws_secret_access_key is not None:
        text = text.replace(config.aws_secret_access_key.reveal(), '***')
    return text


class _MaskCredentials(logging.Filter):
    """Masks explicit credentials in the log records of the loggers it is added to."""

    def __init__(self) -> None:
        super().__init__()
        self._values: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def add(self, *values: str) -> None:
        with self._lock:
            self._values = self._values | {value for value in values if value}

    def filter(self, record: logging.LogRecord) -> bool:
        values = self._values
        if values:
            message = record.getMessage()
            masked = message
            for value in values:
                masked = masked.replace(value, '***')
            if masked != message:
                record.msg, record.args = masked, None
        return True


_MASK_CREDENTIALS = _MaskCredentials()
# botocore's DEBUG dump of every request ("Sending http request: ...") includes the
# Authorization header, which names the access key id.
_BOTOCORE_LOGGERS = ('botocore.endpoint', 'botocore.auth')


def _mask_in_botocore_logs(config: KinesisConfig) -> None:
    """Keeps an explicit key pair out of botocore's logs, whatever their level."""
    if config.aws_access_key_id is None:
        return
    _MASK_CREDENTIALS.add(config.aws_access_key_id, config.aws_secret_access_key.reveal())
    for name in _BOTOCORE_LOGGERS:
        logger = logging.getLogger(name)
        if _MASK_CREDENTIALS not in logger.filters:
            logger.addFilter(_MASK_CREDENTIALS)


def make_client(config: KinesisConfig) -> Any:
    """Builds a boto3 Kinesis client for `config`.

    botocore retries whole requests (throttling, 5xx, connection errors) in the configured mode;
    the connection pool is large enough for `max_in_flight` concurrent requests. An explicit
    key pair is masked in botocore's own (DEBUG) logs.
    """
    _mask_in_botocore_logs(config)
    session = boto3.session.Session(
        aws_access_key_id=config.aws_access_key_id,
        aws_secret_access_key=(config.aws_secret_access_key.reveal()
                               if config.aws_secret_access_key is not None else None),
        region_name=config.region)
    client_config = Config(
        retries={'mode': config.retry_mode, 'total_max_attempts': config.request_attempts},
        connect_timeout=config.connect_timeout_seconds,
        read_timeout=config.read_timeout_seconds,
        max_pool_connections=max(10, config.max_in_flight),
        user_agent_extra='beam-kinesis')
    return session.client('kinesis', endpoint_url=config.endpoint_url, config=client_config)


def _error_parts(err: ClientError) -> tuple[str, str, int]:
    error = err.response.get('Error', {})
    status = err.response.get('ResponseMetadata', {}).get('HTTPStatusCode') or 0
    return str(error.get('Code') or status or 'Unknown'), str(error.get('Message') or ''), status


def check_stream(config: KinesisConfig, *,
                 client_factory: Callable[[KinesisConfig], Any] = make_client) -> dict:
    """Checks that the stream exists, is writable and is reachable with the credentials.

    Calls DescribeStreamSummary; if the policy denies it, ListStreams (what the minimal IAM
    policy of the destination allows).

    Args:
      config: the sink's configuration.
      client_factory: builds the client, `make_client` unless testing.

    Returns:
      The StreamDescriptionSummary, or `{'StreamName': ..., 'StreamStatus': ...}` from
      ListStreams (status None when the server does not report it).

    Raises:
      KinesisStreamError: with one sentence saying what is wrong.
    """
    try:
        client = client_factory(config)
    except BotoCoreError as err:  # no region configured, a malformed endpoint URL, ...
        raise KinesisStreamError(_redact(
            f'No Kinesis client could be made for stream {config.stream_name!r}: {err}',
            config)) from err
    try:
        return _check_stream(client, config)
    finally:
        client.close()


def _check_stream(client: Any, config: KinesisConfig) -> dict:
    name = config.stream_name
    region = client.meta.region_name
    where = f'Kinesis stream {name!r} in region {region!r}'
    try:
        try:
            summary = client.describe_stream_summary(StreamName=name)['StreamDescriptionSummary']
        except ClientError as err:
            if _error_parts(err)[0] not in ('AccessDeniedException', 'AccessDenied'):
                raise
            _LOGGER.info('DescribeStreamSummary is not allowed; looking for %s with ListStreams',
                         name)
            summary = _find_in_list(client, name)
            if summary is None:
                raise KinesisStreamError(
                    f'{where} was not found by ListStreams: check the stream name and the '
                    'region') from err
    except KinesisStreamError:
        raise
    except ClientError as err:
        code, message, _ = _error_parts(err)
        if code == 'ResourceNotFoundException':
            sentence = (f'{where} was not found: check the stream name and the region '
                        '(streams are regional)')
        elif code in _CREDENTIAL_CODES:
            sentence = (f'The AWS credentials were rejected by Kinesis in region {region!r} '
                        f'({code}): check the access key, secret key or session')
        elif code in ('AccessDeniedException', 'AccessDenied'):
            sentence = (f'The AWS credentials may neither describe nor list {where}: allow '
                        'kinesis:DescribeStreamSummary or kinesis:ListStreams')
        else:
            sentence = f'Kinesis could not check {where}: {code}: {message}'
        raise KinesisStreamError(_redact(sentence, config)) from err
    except NoCredentialsError as err:
        raise KinesisStreamError(
            'No AWS credentials were found: configure the AWS credential chain or give an '
            'access key and a secret key') from err
    except _NETWORK_ERRORS as err:
        endpoint = config.endpoint_url or client.meta.endpoint_url
        raise KinesisStreamError(_redact(
            f'The Kinesis endpoint {endpoint} (region {region!r}) is unreachable: '
            f'{type(err).__name__}', config)) from err
    except BotoCoreError as err:
        raise KinesisStreamError(_redact(
            f'Kinesis could not check {where}: {type(err).__name__}: {err}', config)) from err
    status = summary.get('StreamStatus')
    if status is not None and status not in _WRITABLE_STATUSES:
        raise KinesisStreamError(f'{where} is {status}, not ACTIVE or UPDATING, so it cannot be '
                                 'written to')
    _LOGGER.info('%s is %s', where, status or 'listed')
    return summary


def _find_in_list(client: Any, name: str) -> dict | None:
    """Pages through ListStreams looking for `name`."""
    start = None
    while True:
        kwargs = {'Limit': 1000}
        if start is not None:
            kwargs['ExclusiveStartStreamName'] = start
        response = client.list_streams(**kwargs)
        for summary in response.get('StreamSummaries') or []:
            if summary.get('StreamName') == name:
                return {'StreamName': name, 'StreamStatus': summary.get('StreamStatus')}
        names = response.get('StreamNames') or []
        if name in names:
            return {'StreamName': name, 'StreamStatus': None}
        if not response.get('HasMoreStreams') or not names or names[-1] == start:
            return None
        start = names[-1]


def _utf16_length(text: str) -> int:
    return len(text.encode('utf-16-le', 'surrogatepass')) // 2


def partition_key_for(profile_key: str) -> str:
    """Returns the Kinesis partition key of a profile.

    The profile key itself when it fits Kinesis's 256-character limit (characters counted as
    UTF-16 code units, as the service does); otherwise `sha256:` followed by the 64 hex digits
    of the SHA-256 of its UTF-8 bytes (71 characters), which is stable across runs and
    machines, so a profile always lands on the same shard.

    Raises:
      ValueError: for an empty key, which Kinesis does not accept.
      TypeError: for a key that is not a str.
    """
    if not isinstance(profile_key, str):
        raise TypeError(f'a profile key must be a str, not {type(profile_key).__name__}')
    if not profile_key:
        raise ValueError('a partition key cannot be empty')
    if _utf16_length(profile_key) <= MAX_PARTITION_KEY_CHARS:
        return profile_key
    digest = hashlib.sha256(profile_key.encode('utf-8', 'surrogatepass')).hexdigest()
    return f'sha256:{digest}'


@dataclasses.dataclass(slots=True)
class _Entry:
    """One record on its way: where it came from, what is sent, and its last error."""

    key: str
    partition_key: str
    data: bytes
    size: int
    last_error: str = ''


def _make_entry(key: str, data: bytes) -> _Entry:
    partition_key = partition_key_for(key)
    size = len(data) + len(partition_key.encode('utf-8', 'surrogatepass'))
    return _Entry(key, partition_key, data, size)


class _Batcher:
    """Groups records into requests under both limits: a record count and a byte size."""

    def __init__(self, max_records: int, max_bytes: int) -> None:
        self._max_records = max_records
        self._max_bytes = max_bytes
        self._entries: list[_Entry] = []
        self._bytes = 0

    def add(self, entry: _Entry) -> list[list[_Entry]]:
        """Adds a record; returns the batches that are complete (none, one or two)."""
        full = []
        if self._entries and (len(self._entries) >= self._max_records
                              or self._bytes + entry.size > self._max_bytes):
            full.append(self.drain())
        self._entries.append(entry)
        self._bytes += entry.size
        if len(self._entries) >= self._max_records or self._bytes >= self._max_bytes:
            full.append(self.drain())
        return full

    def drain(self) -> list[_Entry]:
        """Returns the records buffered so far (maybe none) and starts afresh."""
        entries, self._entries, self._bytes = self._entries, [], 0
        return entries


class _AimdRateLimiter:
    """A records-per-second budget shared by the sending threads: AIMD on throttling.

    Unlimited until Kinesis first throttles. Then the rate becomes half the rate measured
    over the last second, halves again on each further throttle (at most once per round
    trip: a throttle reported by a request sent before the last decrease is not counted
    twice), and grows by a fixed step after each request that saw no throttling. Senders
    reserve their records and sleep off any debt, so a request of 500 records at 100
    records/s waits 5 s.
    """

    def __init__(self, burst: int, clock: Callable[[], float],
                 sleep: Callable[[float], None]) -> None:
        self._burst = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._rate = math.inf
        self._tokens = self._burst
        self._last = clock()
        self._epoch = 0
        self._recent: collections.deque[tuple[float, int]] = collections.deque()

    @property
    def rate(self) -> float:
        """Allowed records per second; `math.inf` until the first throttle."""
        return self._rate

    def acquire(self, records: int) -> int:
        """Waits until `records` may be sent; returns a ticket for `on_throttle`."""
        with self._lock:
            now = self._clock()
            ticket = self._epoch
            if math.isinf(self._rate):
                self._recent.append((now, records))
                while self._recent and self._recent[0][0] < now - _RATE_WINDOW_SECONDS:
                    self._recent.popleft()
                return ticket
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
            self._last = now
            self._tokens -= records
            wait = -self._tokens / self._rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return ticket

    def on_throttle(self, ticket: int) -> None:
        """Halves the rate, unless it was already halved since this request was sent."""
        with self._lock:
            if ticket != self._epoch:
                return
            self._epoch += 1
            now = self._clock()
            if math.isinf(self._rate):
                current = float(sum(records for _, records in self._recent))
                self._recent.clear()
                self._tokens = 0.0
            else:
                current = self._rate
                # Credit the time since the last reservation at the old rate, then keep no
                # savings: the next request waits for its records at the new rate.
                self._tokens = min(0.0, self._tokens + (now - self._last) * self._rate)
            self._rate = max(_MIN_RECORDS_PER_SECOND, current / 2)
            self._last = now
            _LOGGER.info('Kinesis throttled the sink: slowing down to %.0f records/s', self._rate)

    def on_success(self) -> None:
        """Raises a limited rate by one step."""
        with self._lock:
            if not math.isinf(self._rate):
                self._rate += _RATE_STEP


@dataclasses.dataclass
class _Outcome:
    """What one batch came to, counted in the sending thread, reported in the bundle's thread."""

    sent: int = 0
    bytes_sent: int = 0
    calls: int = 0
    retried: int = 0
    throttled: int = 0
    dead_letters: list = dataclasses.field(default_factory=list)


class _PutRecordsFn(beam.DoFn):
    """Puts `(partition_key, data)` records into Kinesis; outputs the dead letters.

    Args:
      config: the sink's configuration.
      client_factory: builds the client in `setup`.
      clock: monotonic seconds, for the retry time budget and the rate limiter.
      sleep: waits for backoff and rate limiting; by default a wait that ends early when the
        instance is aborting after a systemic error.
      rng: uniform floats in [0, 1), for backoff jitter.
    """

    def __init__(self, config: KinesisConfig,
                 client_factory: Callable[[KinesisConfig], Any] = make_client,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] | None = None,
                 rng: Callable[[], float] | None = None) -> None:
        self._config = config
        self._client_factory = client_factory
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._counters = {name: Metrics.counter(METRICS_NAMESPACE, name)
                          for name in SINK_COUNTERS}
        self._client = None
        self._executor = None

    def setup(self) -> None:
        self._client = self._client_factory(self._config)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self._config.max_in_flight, thread_name_prefix='kinesis-put')
        self._abort = threading.Event()
        self._wait = self._sleep or self._abort.wait
        self._limiter = _AimdRateLimiter(self._config.max_batch_records, self._clock,
                                         self._wait)
        self._random = self._rng or random.Random().random
        self._batcher = _Batcher(self._config.max_batch_records, self._config.max_batch_bytes)
        self._in_flight: set[concurrent.futures.Future] = set()

    def start_bundle(self) -> None:
        if self._abort.is_set():
            # A bundle of this instance failed: let its requests wind down before reuse.
            concurrent.futures.wait(self._in_flight)
            self._abort.clear()
        self._batcher = _Batcher(self._config.max_batch_records, self._config.max_batch_bytes)
        self._in_flight = set()

    def process(self, element) -> Iterator[dict]:
        if isinstance(element, _Group):  # group_into: the whole group goes out here
            for record in element.records:
                yield from self._add(record)
            yield from self._flush()
            return
        yield from self._add(element)

    def _add(self, element: tuple[str, bytes]) -> Iterator[dict]:
        key, data = _check_element(element)
        try:
            entry = _make_entry(key, data)
        except ValueError as err:
            self._counters['records_dead_lettered'].inc()
            yield write_dead_letter(f'the record cannot be sent: {err}', key, data)
            return
        if entry.size > self._config.max_record_bytes:
            self._counters['records_dead_lettered'].inc()
            yield self._dead_letter(
                entry, f'the record is {entry.size} bytes (data + partition key), over the '
                       f'{self._config.max_record_bytes}-byte limit per record, so it was not '
                       'sent')
            return
        for batch in self._batcher.add(entry):
            yield from self._submit(batch)

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for letter in list(self._flush()):
            yield GlobalWindows.windowed_value(letter)

    def _flush(self) -> Iterator[dict]:
        """Sends what is buffered and waits for every request in flight."""
        remaining = self._batcher.drain()
        letters = list(self._submit(remaining)) if remaining else []
        while self._in_flight:
            done, _ = concurrent.futures.wait(self._in_flight)
            letters.extend(self._collect(done))
        yield from letters

    def teardown(self) -> None:
        if self._executor is not None:
            self._abort.set()
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def _submit(self, batch: list[_Entry]) -> Iterator[dict]:
        """Hands a batch to a sending thread, first waiting while max_in_flight are out."""
        while len(self._in_flight) >= self._config.max_in_flight:
            done, _ = concurrent.futures.wait(
                self._in_flight, return_when=concurrent.futures.FIRST_COMPLETED)
            yield from self._collect(done)
        self._in_flight.add(self._executor.submit(self._send_batch, batch))

    def _collect(self, done: Iterable[concurrent.futures.Future]) -> Iterator[dict]:
        """Counts finished batches in this thread (Beam metrics are per thread)."""
        for future in done:
            self._in_flight.discard(future)
            try:
                outcome = future.result()
            except BaseException:
                self._abort.set()
                raise
            self._counters['records_sent'].inc(outcome.sent)
            self._counters['bytes_sent'].inc(outcome.bytes_sent)
            self._counters['put_records_calls'].inc(outcome.calls)
            self._counters['records_retried'].inc(outcome.retried)
            self._counters['records_throttled'].inc(outcome.throttled)
            self._counters['records_dead_lettered'].inc(len(outcome.dead_letters))
            if outcome.dead_letters:
                _LOGGER.warning('%d records could not be written to Kinesis stream %s and went '
                                'to the dead letters; first error: %s', len(outcome.dead_letters),
                                self._config.stream_name, outcome.dead_letters[0]['error'])
            yield from outcome.dead_letters

    def _dead_letter(self, entry: _Entry, error: str) -> dict:
        return write_dead_letter(_redact(error, self._config), entry.key, entry.data)

    # The rest runs in the sending threads.

    def _send_batch(self, entries: list[_Entry]) -> _Outcome:
        outcome = _Outcome()
        self._send(entries, self._clock() + self._config.retry_deadline_seconds, outcome)
        return outcome

    def _backoff(self, resend: int) -> float:
        """Full jitter: uniform in [0, min(max_backoff, base * 2**(resend - 1)))."""
        cap = min(self._config.max_backoff_seconds,
                  self._config.base_backoff_seconds * 2 ** (resend - 1))
        return cap * self._random()

    def _give_up(self, pending: list[_Entry], reason: str, outcome: _Outcome) -> None:
        for entry in pending:
            outcome.dead_letters.append(self._dead_letter(
                entry, f'Kinesis did not accept the record {reason} (last error '
                       f'{entry.last_error})'))

    def _send(self, pending: list[_Entry], deadline: float, outcome: _Outcome) -> None:
        """Sends `pending` until every record is acknowledged, dead-lettered or the job stops."""
        config = self._config
        attempts = 0
        while pending:
            if self._abort.is_set():
                raise KinesisWriteError('writing stopped because another request failed')
            if attempts > config.max_retries:
                self._give_up(pending, f'after {attempts} attempts', outcome)
                return
            if attempts:
                delay = self._backoff(attempts)
                if self._clock() + delay > deadline:
                    self._give_up(pending, f'within the retry time budget of '
                                           f'{config.retry_deadline_seconds:g} s', outcome)
                    return
                self._wait(delay)
                outcome.retried += len(pending)
            ticket = self._limiter.acquire(len(pending))
            attempts += 1
            outcome.calls += 1
            try:
                results = self._put(pending)
            except ClientError as err:
                code, message, status = _error_parts(err)
                if code in _SYSTEMIC_CODES:
                    raise KinesisWriteError(_redact(
                        f'Kinesis stream {config.stream_name!r} cannot be written to: '
                        f'{code}: {message}', config)) from err
                if code in _THROTTLING_CODES or code in _TRANSIENT_CODES or status >= 500:
                    if code in _THROTTLING_CODES:
                        outcome.throttled += len(pending)
                        self._limiter.on_throttle(ticket)
                    for entry in pending:
                        entry.last_error = f'{code}: {message}'
                    continue
                if len(pending) > 1:
                    # A request-level rejection (a validation error, a request too large) is
                    # caused by some of its records: halve the request to find them.
                    _LOGGER.debug('PutRecords of %d records rejected with %s; halving it',
                                  len(pending), code)
                    half = len(pending) // 2
                    self._send(pending[:half], deadline, outcome)
                    self._send(pending[half:], deadline, outcome)
                    return
                outcome.dead_letters.append(self._dead_letter(
                    pending[0], f'Kinesis rejected the record: {code}: {message}'))
                return
            except _NETWORK_ERRORS as err:
                for entry in pending:
                    entry.last_error = f'{type(err).__name__}: {err}'
                continue
            except BotoCoreError as err:
                raise KinesisWriteError(_redact(
                    f'Kinesis stream {config.stream_name!r} cannot be written to: '
                    f'{type(err).__name__}: {err}', config)) from err
            pending = self._sort_results(pending, results, ticket, outcome)

    def _put(self, pending: list[_Entry]) -> list[dict]:
        """One PutRecord (for a single record) or PutRecords call; one result per record."""
        stream = self._config.stream_name
        if len(pending) == 1:
            entry = pending[0]
            response = self._client.put_record(
                StreamName=stream, PartitionKey=entry.partition_key, Data=entry.data)
            return [response]
        response = self._client.put_records(
            StreamName=stream,
            Records=[{'PartitionKey': e.partition_key, 'Data': e.data} for e in pending])
        results = response.get('Records') or []
        if len(results) != len(pending):
            raise KinesisWriteError(
                f'PutRecords to {stream!r} answered {len(results)} results for '
                f'{len(pending)} records')
        return results

    def _sort_results(self, pending: list[_Entry], results: list[dict], ticket: int,
                      outcome: _Outcome) -> list[_Entry]:
        """Counts acknowledged records, dead-letters rejected ones, returns those to resend."""
        resend, rejected, throttled = [], [], 0
        for entry, result in zip(pending, results, strict=True):
            code = result.get('ErrorCode')
            if not code:
                outcome.sent += 1
                outcome.bytes_sent += entry.size
                continue
            message = result.get('ErrorMessage') or ''
            entry.last_error = f'{code}: {message}'
            if code in _SYSTEMIC_CODES:
                raise KinesisWriteError(_redact(
                    f'Kinesis stream {self._config.stream_name!r} cannot be written to: '
                    f'{code}: {message}', self._config))
            if code in _THROTTLING_CODES:
                throttled += 1
                resend.append(entry)
            elif code in _TRANSIENT_CODES:
                resend.append(entry)
            else:
                rejected.append(entry)
        if len(rejected) == len(pending) >= _SYSTEMIC_MIN_ENTRIES:
            raise KinesisWriteError(
                f'Kinesis rejected all {len(pending)} records of a PutRecords request to '
                f'{self._config.stream_name!r}: {rejected[0].last_error}')
        for entry in rejected:
            outcome.dead_letters.append(self._dead_letter(
                entry, f'Kinesis rejected the record: {entry.last_error}'))
        if throttled:
            outcome.throttled += throttled
            self._limiter.on_throttle(ticket)
        else:
            self._limiter.on_success()
        return resend


def _check_element(element: Any) -> tuple[str, bytes]:
    if not isinstance(element, tuple) or len(element) != 2:
        raise TypeError(f'WriteToKinesis takes (partition_key, data) tuples, not '
                        f'{type(element).__name__}')
    key, data = element
    if not isinstance(key, str):
        raise TypeError(f'a partition key must be a str, not {type(key).__name__}')
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise TypeError(f'record data must be bytes, not {type(data).__name__}')
    return key, data


class _Group(NamedTuple):
    """Records grouped by `group_into`, sent and flushed within one `process` call."""
    key: int
    records: Iterable[tuple[str, bytes]]


class _GroupOf:
    def __init__(self, groups: int):
        self._groups = groups

    def __call__(self, record: tuple[str, bytes]) -> tuple[int, tuple[str, bytes]]:
        key = record[0].encode('utf-8', 'surrogatepass') if isinstance(record[0], str) else b''
        return zlib.crc32(key) % self._groups, record


class WriteToKinesis(beam.PTransform):
    """Writes `(partition_key, data)` records to a Kinesis data stream.

    Keys longer than Kinesis allows are hashed with `partition_key_for`. Records are batched
    into PutRecords requests (or PutRecord for a lone record) under both request limits,
    several requests in flight per worker; only the failed entries of a response are resent,
    with jittered exponential backoff under a count and time budget, and throttling slows the
    sender. Records are at least once (a failed bundle is resent by the runner) and in no
    particular order (requests run concurrently and resends overtake). The stream is not
    checked here: call `check_stream` before the pipeline runs.

    Returns:
      A PCollection of dead-letter dicts (stage `write`) for the records Kinesis did not
      acknowledge: over the size limit, rejected, or still failing when the budget ran out.

    Raises (at run time):
      KinesisWriteError: on a systemic failure (stream gone, access or KMS key denied, every
        record of a request rejected).

    By default the last requests of a bundle are sent, and their dead letters emitted, in
    `finish_bundle`. A runner that drops what `finish_bundle` emits (Beam's DaskRunner) would
    lose those dead letters: give `group_into=N` there, and records are grouped by a hash of
    their key into N groups, each sent and flushed within one `process` call.
    """

    def __init__(self, config: KinesisConfig, *,
                 client_factory: Callable[[KinesisConfig], Any] = make_client,
                 group_into: int | None = None) -> None:
        """Args:
          config: the stream and the sink's limits.
          client_factory: builds the boto3 client on each worker; `make_client` by default.
            Any callable taking the config and returning an object with boto3's Kinesis
            `put_records`, `put_record` and `close` will do (a test double, a wrapped client).
          group_into: None to batch per bundle; N to group records into N groups first.
        """
        super().__init__()
        if not isinstance(config, KinesisConfig):
            raise ValueError(f'config must be a KinesisConfig, not {type(config).__name__}')
        if group_into is not None and (isinstance(group_into, bool)
                                       or not isinstance(group_into, int) or group_into < 1):
            raise ValueError(f'group_into {group_into!r} must be None or a positive integer')
        self._config = config
        self._client_factory = client_factory
        self._group_into = group_into

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        if self._group_into is not None:
            records = (records
                       | 'KeyGroups' >> beam.Map(_GroupOf(self._group_into))
                       | 'Group' >> beam.GroupByKey()
                       | 'AsGroups' >> beam.MapTuple(_Group))
        return records | 'PutRecords' >> beam.ParDo(
            _PutRecordsFn(self._config, self._client_factory))

    def display_data(self) -> dict:
        return {'stream_name': self._config.stream_name,
                'region': self._config.region or '',
                'max_in_flight': self._config.max_in_flight}
