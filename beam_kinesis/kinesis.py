"""The Kinesis sink: records into a data stream by PutRecords, failures out as dead letters."""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import enum
import hashlib
import logging
import math
import random
import re
import threading
import time
import zlib
from typing import Any, Callable, Dict, Iterable, Iterator, NamedTuple, Tuple

import apache_beam as beam
import boto3
import botocore.session
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue
from botocore.config import Config
from botocore.credentials import (
    AssumeRoleCredentialFetcher,
    CredentialProvider,
    DeferredRefreshableCredentials,
)
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, NoCredentialsError
from botocore.exceptions import ConnectionError as BotoConnectionError

from beam_kinesis import progress
from beam_kinesis.checkpoint import Checkpoint, record_digest
from beam_kinesis.deadletter import write_dead_letter
from beam_kinesis.shards import BYTES_PER_SHARD_SECOND, RECORDS_PER_SHARD_SECOND

__all__ = [
    'DEFAULT_MAX_RECORD_BYTES',
    'ErrorKind',
    'KinesisConfig',
    'KinesisStreamError',
    'KinesisWriteError',
    'MAX_PARTITION_KEY_CHARS',
    'MAX_RECORDS_PER_REQUEST',
    'MAX_RECORD_BYTES_CEILING',
    'MAX_REQUEST_BYTES',
    'METRICS_NAMESPACE',
    'SINK_COUNTERS',
    'SENT_TO_SHARD',
    'SINK_DISTRIBUTIONS',
    'Secret',
    'THROTTLED_ON_SHARD',
    'TIMELINE',
    'WriteToKinesis',
    'check_stream',
    'classify',
    'make_client',
    'paced_for',
    'partition_key_for',
    'redact',
    'sink_metrics',
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
# IAM role ARNs, external ids and role session names (IAM and STS API references).
_ROLE_ARN = re.compile(r'arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}')
_EXTERNAL_ID = re.compile(r'[\w+=,.@:/-]{2,1224}')
_SESSION_NAME = re.compile(r'[\w+=,.@-]{2,64}')

METRICS_NAMESPACE = 'beam_kinesis'
# Counters of the sink, in the `beam_kinesis` namespace, for the job summary.
SINK_COUNTERS = (
    'records_sent',  # records Kinesis acknowledged
    'bytes_sent',  # data + partition key bytes of those records
    'put_records_calls',  # PutRecords and PutRecord calls of the sink (not botocore's retries)
    'records_retried',  # record resends after a failed entry or a failed request
    'records_throttled',  # record attempts that came back with ProvisionedThroughputExceeded
    'records_dead_lettered',  # records given up on: too large, rejected, or out of retry budget
    'throttling_msecs',  # time senders waited on the stream's limits (rate limit, backoff)
    'records_already_acknowledged',  # records a checkpoint showed acknowledged, so not sent again
)
# Counters of records throttled per shard: this prefix and the shard id (or `unknown`).
THROTTLED_ON_SHARD = 'records_throttled_on_'
# Counters of records acknowledged per shard (the ShardId of each result): this prefix and
# the shard id, for the run report's records-per-shard chart.
SENT_TO_SHARD = 'records_sent_to_'
# Counters of what the sink did in each second of wall clock, for the run report's time
# series: this prefix, `sent`, `throttled` or `retried`, `_` and the epoch second. Counters,
# not a side output, so that every runner with metrics sums them over workers.
TIMELINE = 'per_second_'
# Distributions of the sink, per client call: its latency, records and bytes.
SINK_DISTRIBUTIONS = ('request_latency_msecs', 'request_records', 'request_bytes')


# One classifier for every error the sink meets: what to do about it.
class ErrorKind(enum.Enum):
    """What an error asks of the sink."""

    THROTTLE = 'throttle'  # too fast: slow down, then resend
    RETRY = 'retry'  # transient on Kinesis's side: resend after a backoff
    NETWORK = 'network'  # no answer at all (cannot connect, timed out): resend; a run of
    # these with no answer in between is a dead endpoint (_OutageWatch)
    REJECT = 'reject'  # this record (or a record of this request) is bad: dead-letter it
    STOP = 'stop'  # systemic: no resend and no other record can fix it; stop the job


class _Class(NamedTuple):
    kind: ErrorKind
    about: str = ''  # for a STOP: 'stream', 'access', 'kms', 'credentials' or 'client'


# By code, without a trailing `Exception` and any `namespace#` prefix, so that both
# spellings AWS uses (`IncompleteSignature` in a query-protocol error, `...Exception` in a
# JSON 1.1 `__type`) are one entry. Kinesis documents ProvisionedThroughputExceeded and
# InternalFailure as the ErrorCode of a failed PutRecords entry; the others answer whole
# requests.
_ERROR_CLASSES: dict[str, _Class] = {
    **dict.fromkeys(
        (
            'ProvisionedThroughputExceeded',
            'Throttling',
            'ThrottledRequest',
            'KMSThrottling',
            'LimitExceeded',
            'RequestLimitExceeded',
            'TooManyRequests',
            'SlowDown',
            'RequestThrottled',
        ),
        _Class(ErrorKind.THROTTLE),
    ),
    **dict.fromkeys(
        (
            'InternalFailure',
            'InternalServerError',
            'InternalError',
            'ServiceUnavailable',
            'RequestTimeout',
        ),
        _Class(ErrorKind.RETRY),
    ),
    'ResourceNotFound': _Class(ErrorKind.STOP, 'stream'),
    **dict.fromkeys(
        ('AccessDenied', 'UnauthorizedOperation', 'OptInRequired'), _Class(ErrorKind.STOP, 'access')
    ),
    **dict.fromkeys(
        ('KMSAccessDenied', 'KMSNotFound', 'KMSDisabled', 'KMSInvalidState', 'KMSOptInRequired'),
        _Class(ErrorKind.STOP, 'kms'),
    ),
    **dict.fromkeys(
        (
            'UnrecognizedClient',
            'InvalidSignature',
            'SignatureDoesNotMatch',
            'IncompleteSignature',
            'MissingAuthenticationToken',
            'MissingAuthentication',
            'InvalidClientTokenId',
            'InvalidAccessKeyId',
            'ExpiredToken',
            'RequestExpired',
            'AuthFailure',
            'InvalidToken',
        ),
        _Class(ErrorKind.STOP, 'credentials'),
    ),
}


def _normal_code(code: str) -> str:
    code = code.rsplit('#', 1)[-1]
    return code[: -len('Exception')] if code.endswith('Exception') and code != 'Exception' else code


def classify(code: str, status: int = 0) -> _Class:
    """What an AWS error code (and HTTP status, 0 if unknown) asks of the sink.

    A known code decides; otherwise a 5xx status is transient, a 403 systemic (access), and
    anything else a rejection of the request's records.
    """
    known = _ERROR_CLASSES.get(_normal_code(code))
    if known is not None:
        return known
    if status >= 500:
        return _Class(ErrorKind.RETRY)
    if status == 403:
        return _Class(ErrorKind.STOP, 'access')
    return _Class(ErrorKind.REJECT)


# Failures to connect, or of a connection (timeouts included): no answer came.
_NETWORK_ERRORS = (BotoConnectionError, HTTPClientError)


def _classify_exception(err: BaseException) -> tuple[_Class, str]:
    """The class of an exception raised by a client call, and `code: message` for humans."""
    if isinstance(err, ClientError):
        code, message, status = _error_parts(err)
        return classify(code, status), f'{code}: {message}'
    if isinstance(err, _NETWORK_ERRORS):
        return _Class(ErrorKind.NETWORK), f'{type(err).__name__}: {err}'
    if isinstance(err, NoCredentialsError):
        return _Class(ErrorKind.STOP, 'credentials'), f'{type(err).__name__}: {err}'
    return _Class(ErrorKind.STOP, 'client'), f'{type(err).__name__}: {err}'


# A request of at least this many entries in which every entry failed with a non-retryable
# code is taken as a systemic fault; in a smaller one, a few bad records are plausible.
_SYSTEMIC_MIN_ENTRIES = 10
_WRITABLE_STATUSES = ('ACTIVE', 'UPDATING')
# Upper bounds of the time options, in seconds: far above any sensible value, low enough
# that a typo (1e30) is refused at start instead of overflowing a socket timeout.
_MAX_TIMEOUT_SECONDS = 3600.0
_MAX_DEADLINE_SECONDS = 86400.0
# An attempt with less time than this left in its batch's budget is not started.
_MIN_ATTEMPT_SECONDS = 0.25
# botocore's standard retry mode waits up to min(20, 2**k) s before its (k+1)-th retry.
_BOTOCORE_MAX_BACKOFF_SECONDS = 20.0

# Adaptive rate (records per second, shared by the sending threads of one DoFn instance).
_MIN_RECORDS_PER_SECOND = 10.0  # floor, so a throttled sender still makes progress
_RATE_WINDOW_SECONDS = 1.0  # window over which the unthrottled send rate is measured
# A throttle sets the rate to what Kinesis acknowledged per second over the last
# _GOODPUT_WINDOW_SECONDS (its goodput): a throttled stream is taking records at its limit.
# Halving below that left a throttled shard idle for part of every cycle, and the additive
# climb back (50 records/s per clean request) took seconds: a 1-shard send of the 100,000-
# profile pair, 4.9 s at the limit, took 8.8 s (benchmarks/plan_accuracy.py). The window
# spans a few round trips of a loaded endpoint, so that a few answers make the estimate.
_GOODPUT_WINDOW_SECONDS = 3.0
# While senders wait on the rate and requests come back clean, each clean request raises the
# rate by this share of its acknowledged records: multiplicative growth (up to x e per second of
# clean sending at the rate), so that an estimate made low by a quiet window regains the
# limit within a second or so. Growth only while the rate holds senders back, so that it
# cannot run far above what the sink sends and make the next throttle's correction a no-op.
_GROWTH_PER_RECORD = 1.0
# A sender waiting on the rate wakes at least this often to take a raised rate into account:
# after a throttle, senders of a batch's resends queue up behind each other, and a rate that
# regained the limit should shorten their waits, not only the next ones.
_PACE_SLICE_SECONDS = 0.1


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
    role) unless an access key and secret key are both given; with `aws_role_arn`, those
    credentials only assume that role through STS, and the role's temporary credentials,
    refreshed before they expire, write to the stream. Secrets are held as `Secret` and never
    printed. Records have no ExplicitHashKey: the partition key alone decides the shard, so
    records of one profile stay on one shard.

    Attributes:
      stream_name: the Kinesis data stream, which must exist.
      region: AWS region; None takes it from the AWS configuration chain.
      endpoint_url: a non-AWS endpoint such as a local Kinesis, or None.
      aws_access_key_id: explicit access key id, or None for the AWS chain.
      aws_secret_access_key: explicit secret key (a str is wrapped in `Secret`), or None.
      aws_role_arn: an IAM role to assume for writing (cross-account streams), or None.
      aws_external_id: the external id the role's trust policy asks for (a `Secret`), or None.
      aws_role_session_name: the session name of the assumed role.
      max_record_bytes: per-record limit, data + partition key; raise it (up to 10 MiB) only
        for a stream raised with UpdateMaxRecordSize. Larger records become dead letters.
      max_batch_records: records per PutRecords request (1 to 500).
      max_batch_bytes: bytes per PutRecords request, data + partition keys (up to 5 MiB). A
        record larger than this (possible with a raised max_record_bytes) is sent alone.
      max_in_flight: requests in flight at once per DoFn instance.
      max_retries: resends allowed per record after its first attempt.
      retry_deadline_seconds: time allowed for one batch, from its first attempt to the end of
        its last, the attempts' own timeouts included.
      base_backoff_seconds: backoff cap of the first resend; it doubles per resend.
      max_backoff_seconds: the largest backoff cap.
      connect_timeout_seconds: TCP connect timeout of the client.
      read_timeout_seconds: response read timeout of the client.
      retry_mode: botocore retry mode for whole requests, `standard` or `adaptive`.
      request_attempts: botocore attempts per request, first attempt included.
      unreachable_after_requests: requests in a row that got no answer at all (could not
        connect, or timed out) that, together with `unreachable_after_seconds`, make the
        endpoint dead: the job stops instead of spending every batch's retry budget.
      unreachable_after_seconds: how long no request may have had any answer before that.
      stream_shards: the stream's open shards, as the launch's `check_stream` found them
        (DescribeStreamSummary's OpenShardCount), or None. With it the sink starts at what
        those shards take (1,000 records/s and 1 MiB/s each) instead of unlimited, so a small
        stream is not sent a burst it throttles while the first answers are on their way;
        Kinesis's answers then set the pace either way.
    """

    stream_name: str
    region: str | None = None
    endpoint_url: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: Secret | None = None
    aws_role_arn: str | None = None
    aws_external_id: Secret | None = None
    aws_role_session_name: str = 'beam-kinesis'
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
    unreachable_after_requests: int = 3
    unreachable_after_seconds: float = 60.0
    stream_shards: int | None = None

    def __post_init__(self) -> None:
        for name in ('aws_secret_access_key', 'aws_external_id'):
            if isinstance(getattr(self, name), str):
                object.__setattr__(self, name, Secret(getattr(self, name)))
        if not isinstance(self.stream_name, str) or not _STREAM_NAME.fullmatch(self.stream_name):
            raise ValueError(
                f'stream_name {self.stream_name!r} is not a Kinesis stream name '
                '(1 to 128 letters, digits, _ . -)'
            )
        if (self.aws_access_key_id is None) != (self.aws_secret_access_key is None):
            raise ValueError(
                'aws_access_key_id and aws_secret_access_key must be given together, or neither'
            )
        if self.aws_role_arn is not None and not _ROLE_ARN.fullmatch(str(self.aws_role_arn)):
            raise ValueError(
                f'aws_role_arn {self.aws_role_arn!r} is not an IAM role ARN '
                '(arn:aws:iam::123456789012:role/name)'
            )
        if self.aws_external_id is not None:
            if self.aws_role_arn is None:
                raise ValueError('aws_external_id is given without aws_role_arn')
            if not _EXTERNAL_ID.fullmatch(self.aws_external_id.reveal()):
                raise ValueError(
                    'aws_external_id must be 2 to 1224 letters, digits or +=,.@:/- characters'
                )
        if not isinstance(self.aws_role_session_name, str) or not _SESSION_NAME.fullmatch(
            self.aws_role_session_name
        ):
            raise ValueError(
                f'aws_role_session_name {self.aws_role_session_name!r} must be 2 '
                'to 64 letters, digits or +=,.@_- characters'
            )
        if self.retry_mode not in ('standard', 'adaptive'):
            raise ValueError(f"retry_mode {self.retry_mode!r} is not 'standard' or 'adaptive'")
        _check_range('max_record_bytes', self.max_record_bytes, 1, MAX_RECORD_BYTES_CEILING)
        _check_range('max_batch_records', self.max_batch_records, 1, MAX_RECORDS_PER_REQUEST)
        _check_range('max_batch_bytes', self.max_batch_bytes, 1, MAX_REQUEST_BYTES)
        _check_range('max_in_flight', self.max_in_flight, 1, 64)
        _check_range('max_retries', self.max_retries, 0, 100)
        _check_range('request_attempts', self.request_attempts, 1, 20)
        _check_range('unreachable_after_requests', self.unreachable_after_requests, 1, 1000)
        if self.stream_shards is not None:
            _check_range('stream_shards', self.stream_shards, 1, 100_000)
        for name, most in (
            ('retry_deadline_seconds', _MAX_DEADLINE_SECONDS),
            ('unreachable_after_seconds', _MAX_DEADLINE_SECONDS),
            ('base_backoff_seconds', _MAX_TIMEOUT_SECONDS),
            ('max_backoff_seconds', _MAX_TIMEOUT_SECONDS),
            ('connect_timeout_seconds', _MAX_TIMEOUT_SECONDS),
            ('read_timeout_seconds', _MAX_TIMEOUT_SECONDS),
        ):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not 0 < value <= most
            ):
                raise ValueError(
                    f'{name} {value!r} must be a number of seconds above 0 and at most {most:g}'
                )

    @classmethod
    def from_options(
        cls, options: Any, stream_name: str | None = None, **fields: Any
    ) -> KinesisConfig:
        """The sink's configuration from a pipeline's `KinesisSinkOptions` flags.

        So that a user's own pipeline builds `WriteToKinesis` from its command line, as the
        export job does. Credentials are not options (they would show in option dumps):
        pass them as `fields`, or leave them to the AWS credential chain.

        Args:
          options: a `PipelineOptions` that parsed `KinesisSinkOptions`' flags.
          stream_name: the stream when `--stream_name` is not given.
          **fields: other `KinesisConfig` fields, which win over the options.

        Raises:
          ValueError: no stream is named, or a value is out of range.
        """
        from beam_kinesis.sink_options import KinesisSinkOptions, sink_tuning

        sink = options.view_as(KinesisSinkOptions)
        values = dict(
            sink_tuning(options),
            stream_name=sink.stream_name or stream_name,
            region=sink.aws_region,
            endpoint_url=sink.endpoint_url,
            aws_role_arn=sink.aws_role_arn,
            aws_role_session_name=sink.aws_role_session_name,
        )
        values.update(fields)
        if not values['stream_name']:
            raise ValueError('no Kinesis stream: give --stream_name (or stream_name=)')
        return cls(**values)

    @property
    def explicit_values(self) -> tuple[str, ...]:
        """The explicit credentials and ids that must never be shown."""
        return tuple(
            value
            for value in (
                self.aws_access_key_id,
                self.aws_secret_access_key.reveal() if self.aws_secret_access_key else None,
                self.aws_external_id.reveal() if self.aws_external_id else None,
            )
            if value
        )


def _check_range(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f'{name} {value!r} must be an integer from {low} to {high}')


# What an AWS error or a debug log can quote of a request's credentials: access key ids
# (long-term AKIA..., temporary ASIA..., and the other IAM unique-id prefixes), the
# Authorization header's Credential and Signature, a session token.
_CREDENTIAL_PATTERNS = (
    (
        re.compile(r'\b(?:AKIA|ASIA|AIDA|AROA|AIPA|ANPA|ANVA|AGPA|ABIA|ACCA)[A-Z0-9]{12,124}\b'),
        '***',
    ),
    (re.compile(r'(Credential=)[^\s,\'"]+'), r'\1***'),
    (re.compile(r'(Signature=)[0-9a-fA-F]+'), r'\1***'),
    (re.compile(r'(X-Amz-Security-Token[=:]\s*)[^\s,\'"]+', re.IGNORECASE), r'\1***'),
)


def redact(text: str, values: Iterable[str] = ()) -> str:
    """`text` without the given secret values or anything that looks like AWS credentials."""
    for value in values:
        if value:
            text = text.replace(value, '***')
    for pattern, replacement in _CREDENTIAL_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


# An error message quoted in a sentence of the job is cut to this many characters.
_MAX_MESSAGE_CHARS = 500


def _bounded(text: str) -> str:
    """One line of at most _MAX_MESSAGE_CHARS characters."""
    text = ' '.join(text.split())
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[: _MAX_MESSAGE_CHARS - 3] + '...'


def _redact(text: str, config: KinesisConfig) -> str:
    """Removes the explicit credentials, and any an answer echoed, from a message."""
    return redact(text, config.explicit_values)


def _safe_cause(err: BaseException | None, config: KinesisConfig) -> BaseException | None:
    """`err` to chain to the job's own error, or a copy of it without credentials if its
    message quotes any (a runner logs the whole chain)."""
    if err is None or _redact(str(err), config) == str(err):
        return err
    if isinstance(err, ClientError):
        response = dict(err.response)
        response['Error'] = {
            name: _redact(value, config) if isinstance(value, str) else value
            for name, value in (response.get('Error') or {}).items()
        }
        return ClientError(response, err.operation_name)
    return RuntimeError(f'{type(err).__name__}: {_redact(str(err), config)}')


class _MaskCredentials(logging.Filter):
    """Masks credentials in the log records of the loggers it is added to."""

    def __init__(self) -> None:
        super().__init__()
        self._values: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def add(self, *values: str) -> None:
        with self._lock:
            self._values = self._values | {value for value in values if value}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message, self._values)
        if masked != message:
            record.msg, record.args = masked, None
        return True


_MASK_CREDENTIALS = _MaskCredentials()
# botocore's DEBUG dump of every request ("Sending http request: ...") includes the
# Authorization header, which names the access key id; its credential and retry loggers
# may quote an error message.
_BOTOCORE_LOGGERS = (
    'botocore.endpoint',
    'botocore.auth',
    'botocore.credentials',
    'botocore.retries.standard',
    'botocore.parsers',
    'botocore.hooks',
)


def _mask_in_botocore_logs(config: KinesisConfig) -> None:
    """Keeps credentials out of botocore's logs, whatever their level."""
    _MASK_CREDENTIALS.add(*config.explicit_values)
    for name in _BOTOCORE_LOGGERS:
        logger = logging.getLogger(name)
        if _MASK_CREDENTIALS not in logger.filters:
            logger.addFilter(_MASK_CREDENTIALS)


class _AssumedRoleProvider(CredentialProvider):
    """Credentials of an assumed role, refreshed by botocore before they expire."""

    METHOD = 'assume-role'
    CANONICAL_NAME = 'beam-kinesis-assume-role'

    def __init__(self, credentials: DeferredRefreshableCredentials) -> None:
        super().__init__()
        self._credentials = credentials

    def load(self) -> DeferredRefreshableCredentials:
        return self._credentials


# Sessions by the credentials they hold: every client of a worker (the sink's, and those
# it makes with shorter timeouts near a batch's deadline) shares one role session, so the
# role is assumed once per worker and refreshed there, not once per client.
_SESSIONS: dict[tuple, boto3.session.Session] = {}
_SESSIONS_LOCK = threading.Lock()


def _session_for(config: KinesisConfig) -> boto3.session.Session:
    key = (
        config.region,
        config.aws_access_key_id,
        config.aws_secret_access_key,
        config.aws_role_arn,
        config.aws_external_id,
        config.aws_role_session_name,
    )
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            session = _new_session(config)
            if config.aws_role_arn is not None:  # plain sessions are cheap: keep only roles
                _SESSIONS[key] = session
        return session


def _new_session(config: KinesisConfig) -> boto3.session.Session:
    key_id = config.aws_access_key_id
    secret = config.aws_secret_access_key.reveal() if config.aws_secret_access_key else None
    if config.aws_role_arn is None:
        return boto3.session.Session(
            aws_access_key_id=key_id, aws_secret_access_key=secret, region_name=config.region
        )
    source = botocore.session.Session()  # the chain's credentials, or the explicit pair
    if key_id is not None:
        source.set_credentials(key_id, secret)
    if config.region is not None:
        source.set_config_variable('region', config.region)
    source_credentials = source.get_credentials()
    if source_credentials is None:
        raise NoCredentialsError()
    extra_args = {'RoleSessionName': config.aws_role_session_name}
    if config.aws_external_id is not None:
        extra_args['ExternalId'] = config.aws_external_id.reveal()
    # botocore's own assume-role machinery: STS AssumeRole with the source credentials,
    # called when first needed and again shortly before the temporary credentials expire.
    fetcher = AssumeRoleCredentialFetcher(
        client_creator=source.create_client,
        source_credentials=source_credentials,
        role_arn=config.aws_role_arn,
        extra_args=extra_args,
    )
    credentials = DeferredRefreshableCredentials(
        refresh_using=fetcher.fetch_credentials, method=_AssumedRoleProvider.METHOD
    )
    role = botocore.session.Session()
    role.get_component('credential_provider').insert_before(
        'env', _AssumedRoleProvider(credentials)
    )
    return boto3.session.Session(botocore_session=role, region_name=config.region)


def make_client(config: KinesisConfig) -> Any:
    """Builds a boto3 Kinesis client for `config`.

    botocore retries whole requests (throttling, 5xx, connection errors) in the configured mode;
    the connection pool is large enough for `max_in_flight` concurrent requests. With a role,
    the client's credentials are the role's, refreshed as they near expiry. Credentials are
    masked in botocore's own (DEBUG) logs. An `endpoint_url` of `memory://<id>` names an
    `InMemoryKinesis` of this process (`beam_kinesis.testing`), whose client is returned.
    """
    if (config.endpoint_url or '').startswith('memory://'):
        # Imported here: the testing kit is no part of a production run.
        from beam_kinesis.testing import in_memory_client

        return in_memory_client(config)
    _mask_in_botocore_logs(config)
    session = _session_for(config)
    client_config = Config(
        retries={'mode': config.retry_mode, 'total_max_attempts': config.request_attempts},
        connect_timeout=config.connect_timeout_seconds,
        read_timeout=config.read_timeout_seconds,
        max_pool_connections=max(10, config.max_in_flight),
        user_agent_extra='beam-kinesis',
    )
    with _SESSIONS_LOCK:  # a boto3 session is not thread-safe; its clients are
        return session.client('kinesis', endpoint_url=config.endpoint_url, config=client_config)


def _error_parts(err: ClientError) -> tuple[str, str, int]:
    error = err.response.get('Error', {})
    status = err.response.get('ResponseMetadata', {}).get('HTTPStatusCode') or 0
    return str(error.get('Code') or status or 'Unknown'), str(error.get('Message') or ''), status


def check_stream(
    config: KinesisConfig, *, client_factory: Callable[[KinesisConfig], Any] = make_client
) -> dict:
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
    if config.aws_role_arn is not None and client_factory is make_client:
        _assume_role_now(config)
    try:
        client = client_factory(config)
    except BotoCoreError as err:  # no region configured, a malformed endpoint URL, ...
        raise KinesisStreamError(
            _redact(
                f'No Kinesis client could be made for stream {config.stream_name!r}: {err}', config
            )
        ) from _safe_cause(err, config)
    try:
        return _check_stream(client, config)
    finally:
        client.close()


def _assume_role_now(config: KinesisConfig) -> None:
    """Assumes the role at once, so that a role that cannot be assumed is named as such."""
    try:
        credentials = _session_for(config).get_credentials()
        if credentials is None:
            raise NoCredentialsError()
        credentials.get_frozen_credentials()
    except (BotoCoreError, ClientError) as err:
        _, detail = _classify_exception(err)
        raise KinesisStreamError(
            _bounded(
                _redact(
                    f'The role {config.aws_role_arn} could not be assumed through STS ({detail}): '
                    'check the role ARN, its trust policy, the external id and the credentials '
                    'that assume it',
                    config,
                )
            )
        ) from _safe_cause(err, config)


def paced_for(config: KinesisConfig, summary: dict) -> KinesisConfig:
    """`config` with the open shards `check_stream` found (its `summary`), unless it already
    names them or the summary does not say (ListStreams gives no shard count)."""
    shards = summary.get('OpenShardCount')
    if config.stream_shards is not None or shards is None:
        return config
    try:
        return dataclasses.replace(config, stream_shards=shards)
    except ValueError:  # not a shard count KinesisConfig takes: pace as if none were given
        return config


def _check_stream(client: Any, config: KinesisConfig) -> dict:
    name = config.stream_name
    region = client.meta.region_name
    where = f'Kinesis stream {name!r} in region {region!r}'
    try:
        try:
            summary = client.describe_stream_summary(StreamName=name)['StreamDescriptionSummary']
        except ClientError as err:
            if (
                getattr(err, 'operation_name', '') == 'AssumeRole'
                or classify(*_error_parts(err)[::2]).about != 'access'
            ):
                raise
            _LOGGER.info(
                'DescribeStreamSummary is not allowed; looking for %s with ListStreams', name
            )
            summary = _find_in_list(client, name)
            if summary is None:
                raise KinesisStreamError(
                    f'{where} was not found by ListStreams: check the stream name and the region'
                ) from _safe_cause(err, config)
    except KinesisStreamError:
        raise
    except (BotoCoreError, ClientError) as err:
        kind, detail = _classify_exception(err)
        if getattr(err, 'operation_name', '') == 'AssumeRole':
            sentence = (
                f'The role {config.aws_role_arn} could not be assumed through STS '
                f'({detail}): check the role ARN, its trust policy and the external id'
            )
        elif kind.about == 'stream':
            sentence = (
                f'{where} was not found: check the stream name and the region '
                '(streams are regional)'
            )
        elif kind.about == 'credentials' and isinstance(err, NoCredentialsError):
            sentence = (
                'No AWS credentials were found: configure the AWS credential chain, '
                'give an access key and a secret key, or a role to assume'
            )
        elif kind.about == 'credentials':
            sentence = (
                f'The AWS credentials were rejected by Kinesis in region {region!r} '
                f'({detail.split(":")[0]}): check the access key, secret key or session'
            )
        elif kind.about == 'access':
            sentence = (
                f'The AWS credentials may neither describe nor list {where}: allow '
                'kinesis:DescribeStreamSummary or kinesis:ListStreams'
            )
        elif kind.kind is ErrorKind.NETWORK:
            endpoint = config.endpoint_url or client.meta.endpoint_url
            sentence = (
                f'The Kinesis endpoint {endpoint} (region {region!r}) is unreachable: '
                f'{type(err).__name__}'
            )
        else:
            sentence = f'Kinesis could not check {where}: {detail}'
        raise KinesisStreamError(_bounded(_redact(sentence, config))) from _safe_cause(err, config)
    status = summary.get('StreamStatus')
    if status is not None and status not in _WRITABLE_STATUSES:
        raise KinesisStreamError(
            f'{where} is {status}, not ACTIVE or UPDATING, so it cannot be written to'
        )
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
    digest: bytes = b''  # its identity in a checkpoint, computed only with one


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
        if self._entries and (
            len(self._entries) >= self._max_records or self._bytes + entry.size > self._max_bytes
        ):
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
    """A records-per-second budget shared by the sending threads: paced by Kinesis's goodput.

    Unlimited until Kinesis first throttles, or, when the stream's open shards are known, at
    what they take (1,000 records and 1 MiB a second each, `shards.RECORDS_PER_SHARD_SECOND` and
    `shards.BYTES_PER_SHARD_SECOND`, in records at the first request's mean size), a second of
    it at once, as a quiet shard takes it, and never faster. A throttle then sets the rate to
    the records Kinesis acknowledged per second over the last few seconds (its goodput: what a
    throttled stream takes), never above the rate before it and at most once per round trip (a
    throttle reported by a request sent before the last decrease is not counted twice); with
    nothing acknowledged lately (whole requests throttled) it halves the rate instead. Each
    request that comes back clean while senders wait on the rate raises it by a share of its
    records, so it grows multiplicatively until Kinesis throttles again. Senders reserve their
    records and sleep off any debt, so a request of 500 records at 100 records/s waits 5 s.
    """

    def __init__(
        self,
        burst: int,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        shards: int | None = None,
    ) -> None:
        self._burst = float(burst)
        self._shards = shards
        # What the shards take, in records/s at the latest request's mean size: with the
        # shards known, no faster pace can be taken, so the rate never grows above it.
        self._ceiling = math.inf
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._rate = math.inf
        # Cumulative records allowed and reserved: a sender may go once the allowance
        # reaches its reservation; the allowance runs at most `burst` ahead of them.
        self._allowed = self._burst
        self._reserved = 0.0
        self._last = clock()
        self._epoch = 0
        self._held_back = False  # whether a sender waited on the rate since it last grew
        self._recent: collections.deque[tuple[float, int]] = collections.deque()
        self._acknowledged: collections.deque[tuple[float, int]] = collections.deque()

    @property
    def rate(self) -> float:
        """Allowed records per second; `math.inf` until the first throttle (or, with the
        shards known, until the first request)."""
        return self._rate

    def acquire(self, records: int, size: int = 0) -> int:
        """Waits until `records` (of `size` bytes in all) may be sent; returns a ticket for
        `on_throttle`."""
        with self._lock:
            now = self._clock()
            ticket = self._epoch
            if self._shards:
                self._ceiling = self._capacity(records, size)
                if math.isinf(self._rate):  # the first request
                    self._start(now)
                elif self._rate > self._ceiling:
                    self._refill(now)
                    self._rate = self._ceiling
            if math.isinf(self._rate):
                self._recent.append((now, records))
                while self._recent and self._recent[0][0] < now - _RATE_WINDOW_SECONDS:
                    self._recent.popleft()
                return ticket
            self._refill(now)
            self._reserved += records
            target = self._reserved
            wait = (target - self._allowed) / self._rate
            if wait > 0:
                self._held_back = True
        # Waits shorter than a microsecond are rounding left over from the last slice.
        while wait > 1e-6:
            self._sleep(
                min(wait, _PACE_SLICE_SECONDS) if wait > _PACE_SLICE_SECONDS * 1.5 else wait
            )
            with self._lock:
                self._refill(self._clock())
                wait = (target - self._allowed) / self._rate
        return ticket

    def _capacity(self, records: int, size: int) -> float:
        """Records/s the stream's shards take, records or bytes, whichever binds first for
        records of this request's mean size."""
        mean = size / records if records and size else 0
        per_shard = float(RECORDS_PER_SHARD_SECOND)
        if mean:
            per_shard = min(per_shard, BYTES_PER_SHARD_SECOND / mean)
        return max(_MIN_RECORDS_PER_SECOND, self._shards * per_shard)

    def _start(self, now: float) -> None:
        """The first pace: what the stream's shards take (Kinesis's answers correct it)."""
        self._rate = self._ceiling
        # A quiet shard takes a second of its quota at once (as the plan assumes): so many
        # records go at once, then the pace holds.
        self._allowed = max(self._burst, self._rate)
        self._last = now
        _LOGGER.info(
            "Pacing the sink for the stream's %d open shards: %.0f records/s to start",
            self._shards,
            self._rate,
        )

    def _refill(self, now: float) -> None:
        """Credits the time since the last refill at the current rate, up to `burst` ahead
        of the reservations (an allowance already further ahead, the first second's, stays)."""
        self._allowed = max(
            self._allowed,
            min(self._reserved + self._burst, self._allowed + (now - self._last) * self._rate),
        )
        self._last = now

    def acknowledged(self, records: int) -> None:
        """Counts records Kinesis acknowledged now (call before `on_throttle` or
        `on_success` of the same answer)."""
        with self._lock:
            now = self._clock()
            self._acknowledged.append((now, records))
            self._forget_acknowledged(now)

    def _forget_acknowledged(self, now: float) -> None:
        while self._acknowledged and (self._acknowledged[0][0] <= now - _GOODPUT_WINDOW_SECONDS):
            self._acknowledged.popleft()

    def _goodput(self, now: float) -> float:
        """Records acknowledged per second over the window (0 with none): over the span
        from the first answer in it to the last, at least a quarter of the window, so that a
        window that started before the first answer came back does not dilute it. It leans
        high by up to one answer; a throttle corrects a rate above the limit within a round
        trip, while one below it leaves the shards idle until it grows back."""
        self._forget_acknowledged(now)
        if not self._acknowledged:
            return 0.0
        total = sum(records for _, records in self._acknowledged)
        span = self._acknowledged[-1][0] - self._acknowledged[0][0]
        return total / max(span, _GOODPUT_WINDOW_SECONDS / 4)

    def on_throttle(self, ticket: int) -> None:
        """Sets the rate to the goodput (or halves it with none), unless it was already
        lowered since this request was sent; never raises it, never below the floor."""
        with self._lock:
            if ticket != self._epoch:
                return
            self._epoch += 1
            now = self._clock()
            goodput = self._goodput(now)
            if math.isinf(self._rate):
                current = float(sum(records for _, records in self._recent)) or goodput
                self._recent.clear()
                self._allowed = self._reserved
            else:
                current = self._rate
                # Credit the time since the last refill at the old rate, then keep no savings:
                # the next request waits for its records at the new rate.
                self._refill(now)
                self._allowed = min(self._allowed, self._reserved)
            lowered = min(current, goodput) if goodput > 0 else current / 2
            self._rate = max(_MIN_RECORDS_PER_SECOND, lowered)
            self._held_back = False
            self._last = now
            _LOGGER.info('Kinesis throttled the sink: slowing down to %.0f records/s', self._rate)

    def on_success(self, records: int) -> None:
        """Raises a limited rate by a share of the `records` a clean request delivered, if
        the rate held a sender back since it last grew."""
        with self._lock:
            if not math.isinf(self._rate) and self._held_back:
                self._refill(self._clock())
                self._rate = min(self._ceiling, self._rate + _GROWTH_PER_RECORD * records)
                self._held_back = False


class _OutageWatch:
    """Tells a dead endpoint from a slow one, across the sending threads of one instance.

    Every request that got an answer of any kind (success, throttling, an error code) shows
    the endpoint alive. Only requests that got no answer at all (could not connect, the
    connection failed, or a timeout) count against it; the endpoint is dead when the last
    `requests` of them in a row went unanswered and nothing has answered for `seconds` since
    the first of them was sent.
    """

    def __init__(self, requests: int, seconds: float, clock: Callable[[], float]) -> None:
        self._requests = requests
        self._seconds = seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._streak = 0
        self._since: float | None = None
        self._last_answer = -math.inf

    def answered(self) -> None:
        with self._lock:
            self._streak = 0
            self._since = None
            self._last_answer = self._clock()

    def unanswered(self, sent_at: float) -> tuple[int, float] | None:
        """Counts a request sent at `sent_at` that got no answer; returns (requests, seconds
        without an answer) once the endpoint counts as dead, else None."""
        with self._lock:
            self._streak += 1
            start = max(sent_at, self._last_answer)
            self._since = start if self._since is None else min(self._since, start)
            silent = self._clock() - self._since
            if self._streak >= self._requests and silent >= self._seconds:
                return self._streak, silent
            return None


def _attempt_seconds(config: KinesisConfig) -> float:
    """The longest one client call can take: botocore's attempts, each up to its connect and
    read timeouts, and botocore's backoffs between them (standard mode)."""
    backoffs = sum(
        min(_BOTOCORE_MAX_BACKOFF_SECONDS, 2.0**k) for k in range(config.request_attempts - 1)
    )
    return (
        config.request_attempts * (config.connect_timeout_seconds + config.read_timeout_seconds)
        + backoffs
    )


def _budget_tier(seconds: float) -> float:
    """`seconds` rounded down to a power of 2**(1/4), so a few clients cover every budget."""
    seconds = max(seconds, _MIN_ATTEMPT_SECONDS)
    return 2.0 ** (math.floor(math.log2(seconds) * 4) / 4)


_SHARD_IN_MESSAGE = re.compile(r'shardId-\d+')
UNKNOWN_SHARD = 'unknown'


def _shard_named(message: str) -> str:
    """The shard a ProvisionedThroughputExceeded message names ("Rate exceeded for shard
    shardId-000000000001 in stream ..."), else `UNKNOWN_SHARD`. A PutRecords answer gives the
    ShardId of acknowledged entries only; the shard of a throttled one is known only from
    this message (or from ListShards, which the destination's IAM policy does not allow)."""
    found = _SHARD_IN_MESSAGE.search(message or '')
    return found.group(0) if found else UNKNOWN_SHARD


@dataclasses.dataclass
class _Outcome:
    """What one batch came to, counted in the sending thread, reported in the bundle's thread."""

    sent: int = 0
    bytes_sent: int = 0
    calls: int = 0
    retried: int = 0
    throttled: int = 0
    throttling_seconds: float = 0.0
    throttled_by_shard: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    requests: list = dataclasses.field(default_factory=list)  # (msecs, records, bytes)
    sent_by_shard: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    # (kind, epoch second) -> records: `TIMELINE` counters.
    timeline: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    dead_letters: list = dataclasses.field(default_factory=list)

    def request_throttled(self, records: int, message: str) -> None:
        """A whole request of `records` throttled, with Kinesis's `message` (which may name
        the shard)."""
        self.throttled += records
        self.throttled_by_shard[_shard_named(message)] += records
        self.timeline['throttled', int(time.time())] += records


class _PutRecordsFn(beam.DoFn):
    """Puts `(partition_key, data)` records into Kinesis; outputs the dead letters.

    Args:
      config: the sink's configuration.
      client_factory: builds the client in `setup` (and, near a batch's deadline, clients
        with shorter timeouts, from the same config with those replaced).
      checkpoint: records what Kinesis acknowledged, and skips what an earlier attempt of
        the run recorded (None: no checkpoint).
      clock: monotonic seconds, for the retry time budget and the rate limiter.
      sleep: waits for backoff and rate limiting; by default a wait that ends early when the
        instance is aborting after a systemic error.
      rng: uniform floats in [0, 1), for backoff jitter.
    """

    def __init__(
        self,
        config: KinesisConfig,
        client_factory: Callable[[KinesisConfig], Any] = make_client,
        checkpoint: Checkpoint | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
        rng: Callable[[], float] | None = None,
    ) -> None:
        self._config = config
        self._client_factory = client_factory
        self._checkpoint = checkpoint
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._counters = {name: Metrics.counter(METRICS_NAMESPACE, name) for name in SINK_COUNTERS}
        self._distributions = {
            name: Metrics.distribution(METRICS_NAMESPACE, name) for name in SINK_DISTRIBUTIONS
        }
        self._client = None
        self._executor = None

    def setup(self) -> None:
        self._attempt_errors = threading.local()
        self._client = self._watched(self._client_factory(self._config))
        self._short_clients: dict[float, Any] = {}
        self._clients_lock = threading.Lock()
        self._full_attempt = _attempt_seconds(self._config)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self._config.max_in_flight, thread_name_prefix='kinesis-put'
        )
        self._abort = threading.Event()
        self._wait = self._sleep or self._abort.wait
        self._limiter = _AimdRateLimiter(
            self._config.max_batch_records,
            self._clock,
            self._wait,
            shards=self._config.stream_shards,
        )
        self._outage = _OutageWatch(
            self._config.unreachable_after_requests,
            self._config.unreachable_after_seconds,
            self._clock,
        )
        self._random = self._rng or random.Random().random
        self._batcher = _Batcher(self._config.max_batch_records, self._config.max_batch_bytes)
        self._in_flight: set[concurrent.futures.Future] = set()
        self._failure: KinesisWriteError | None = None
        self._acknowledged = self._recorder = None
        if self._checkpoint is not None:
            self._acknowledged = self._checkpoint.load()
            self._recorder = self._checkpoint.recorder()

    def start_bundle(self) -> None:
        if self._abort.is_set():
            # A bundle of this instance failed: let its requests wind down before reuse.
            concurrent.futures.wait(self._in_flight)
            self._abort.clear()
            self._failure = None
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
        if self._acknowledged is not None:
            entry.digest = record_digest(entry.partition_key, entry.data)
            if entry.digest in self._acknowledged:
                self._counters['records_already_acknowledged'].inc()
                return
        if entry.size > self._config.max_record_bytes:
            self._counters['records_dead_lettered'].inc()
            yield self._dead_letter(
                entry,
                f'the record is {entry.size} bytes (data + partition key), over the '
                f'{self._config.max_record_bytes}-byte limit per record, so it was not '
                'sent',
            )
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
        for client in [self._client, *getattr(self, '_short_clients', {}).values()]:
            if client is not None:
                client.close()
        self._client = None
        self._short_clients = {}

    def _submit(self, batch: list[_Entry]) -> Iterator[dict]:
        """Hands a batch to a sending thread, first waiting while max_in_flight are out."""
        while len(self._in_flight) >= self._config.max_in_flight:
            done, _ = concurrent.futures.wait(
                self._in_flight, return_when=concurrent.futures.FIRST_COMPLETED
            )
            yield from self._collect(done)
        self._in_flight.add(self._executor.submit(self._send_batch, batch))

    def _collect(self, done: Iterable[concurrent.futures.Future]) -> Iterator[dict]:
        """Counts finished batches in this thread (Beam metrics are per thread)."""
        for future in done:
            self._in_flight.discard(future)
            try:
                outcome = future.result()
            except BaseException as err:
                self._abort.set()
                first = self._failure
                if first is not None and first is not err:
                    raise first from first.__cause__  # the cause, not a thread that stopped
                raise
            self._counters['records_sent'].inc(outcome.sent)
            self._counters['bytes_sent'].inc(outcome.bytes_sent)
            self._counters['put_records_calls'].inc(outcome.calls)
            self._counters['records_retried'].inc(outcome.retried)
            self._counters['records_throttled'].inc(outcome.throttled)
            self._counters['throttling_msecs'].inc(round(outcome.throttling_seconds * 1000))
            self._counters['records_dead_lettered'].inc(len(outcome.dead_letters))
            for shard, count in outcome.throttled_by_shard.items():
                Metrics.counter(METRICS_NAMESPACE, THROTTLED_ON_SHARD + shard).inc(count)
            for shard, count in outcome.sent_by_shard.items():
                Metrics.counter(METRICS_NAMESPACE, SENT_TO_SHARD + shard).inc(count)
            for (kind, second), count in outcome.timeline.items():
                Metrics.counter(METRICS_NAMESPACE, f'{TIMELINE}{kind}_{second}').inc(count)
            progress.count(records_sent=outcome.sent, records_throttled=outcome.throttled)
            for msecs, records, size in outcome.requests:
                self._distributions['request_latency_msecs'].update(msecs)
                self._distributions['request_records'].update(records)
                self._distributions['request_bytes'].update(size)
            if outcome.dead_letters:
                _LOGGER.warning(
                    '%d records could not be written to Kinesis stream %s and went '
                    'to the dead letters; first error: %s',
                    len(outcome.dead_letters),
                    self._config.stream_name,
                    outcome.dead_letters[0]['error'],
                )
            yield from outcome.dead_letters

    def _dead_letter(self, entry: _Entry, error: str) -> dict:
        return write_dead_letter(_bounded(_redact(error, self._config)), entry.key, entry.data)

    # The rest runs in the sending threads.

    def _send_batch(self, entries: list[_Entry]) -> _Outcome:
        outcome = _Outcome()
        self._send(entries, self._clock() + self._config.retry_deadline_seconds, outcome)
        return outcome

    def _backoff(self, resend: int) -> float:
        """Full jitter: uniform in [0, min(max_backoff, base * 2**(resend - 1)))."""
        cap = min(
            self._config.max_backoff_seconds, self._config.base_backoff_seconds * 2 ** (resend - 1)
        )
        return cap * self._random()

    def _client_for(self, seconds_left: float) -> Any:
        """The sink's client when a whole call fits the time left; else one whose timeouts
        (and a single botocore attempt) do, so no attempt outlives its batch's deadline."""
        if seconds_left >= self._full_attempt:
            return self._client
        budget = _budget_tier(seconds_left)
        with self._clients_lock:
            client = self._short_clients.get(budget)
            if client is None:
                connect = min(self._config.connect_timeout_seconds, budget / 2)
                client = self._watched(
                    self._client_factory(
                        dataclasses.replace(
                            self._config,
                            connect_timeout_seconds=connect,
                            request_attempts=1,
                            read_timeout_seconds=min(
                                self._config.read_timeout_seconds, budget - connect
                            ),
                        )
                    )
                )
                self._short_clients[budget] = client
            return client

    def _give_up(self, pending: list[_Entry], reason: str, outcome: _Outcome) -> None:
        for entry in pending:
            outcome.dead_letters.append(
                self._dead_letter(
                    entry,
                    f'Kinesis did not accept the record {reason} (last error {entry.last_error})',
                )
            )

    def _stop(self, sentence: str, cause: BaseException | None = None) -> KinesisWriteError:
        """The error that stops the job; the first one is kept for the bundle to raise."""
        error = KinesisWriteError(_bounded(_redact(sentence, self._config)))
        error.__cause__ = _safe_cause(cause, self._config)
        with self._clients_lock:
            if self._failure is None:
                self._failure = error
        self._abort.set()
        return error

    def _send(self, pending: list[_Entry], deadline: float, outcome: _Outcome) -> None:
        """Sends `pending` until every record is acknowledged, dead-lettered or the job stops."""
        config = self._config
        attempts = 0
        throttled = False  # whether the last attempt was throttled: its backoff is throttling
        while pending:
            if self._abort.is_set():
                raise KinesisWriteError('writing stopped because another request failed')
            if attempts > config.max_retries:
                self._give_up(pending, f'after {attempts} attempts', outcome)
                return
            budget_note = f'within the retry time budget of {config.retry_deadline_seconds:g} s'
            if attempts:
                delay = self._backoff(attempts)
                if self._clock() + delay > deadline:
                    self._give_up(pending, budget_note, outcome)
                    return
                self._wait(delay)
                if throttled:
                    outcome.throttling_seconds += delay
                outcome.retried += len(pending)
                outcome.timeline['retried', int(time.time())] += len(pending)
            before = self._clock()
            ticket = self._limiter.acquire(len(pending), sum(entry.size for entry in pending))
            sent_at = self._clock()
            outcome.throttling_seconds += sent_at - before
            seconds_left = deadline - sent_at
            if attempts and seconds_left < _MIN_ATTEMPT_SECONDS:
                self._give_up(pending, budget_note, outcome)
                return
            client = self._client_for(seconds_left)
            attempts += 1
            outcome.calls += 1
            throttled = False
            try:
                results = self._put(client, pending, outcome)
            except (ClientError, BotoCoreError) as err:
                outcome.requests.append(
                    (
                        round((self._clock() - sent_at) * 1000),
                        len(pending),
                        sum(entry.size for entry in pending),
                    )
                )
                kind, detail = _classify_exception(err)
                if kind.kind is ErrorKind.NETWORK:
                    dead = self._outage.unanswered(sent_at)
                    if dead is not None:
                        endpoint = config.endpoint_url or getattr(
                            getattr(client, 'meta', None), 'endpoint_url', 'of Kinesis'
                        )
                        raise self._stop(
                            f'The Kinesis endpoint {endpoint} has not answered for '
                            f'{dead[1]:.0f} s: {dead[0]} requests in a row to stream '
                            f'{config.stream_name!r} could not connect or timed out (last: '
                            f"{detail}), so the job stops instead of spending every batch's "
                            'retry budget',
                            err,
                        ) from _safe_cause(err, config)
                else:
                    self._outage.answered()
                if kind.kind is ErrorKind.STOP:
                    raise self._stop(
                        f'Kinesis stream {config.stream_name!r} cannot be written to: {detail}', err
                    ) from _safe_cause(err, config)
                if kind.kind is not ErrorKind.REJECT:
                    if kind.kind is ErrorKind.THROTTLE:
                        throttled = True
                        outcome.request_throttled(len(pending), detail)
                        self._limiter.on_throttle(ticket)
                    for entry in pending:
                        entry.last_error = detail
                    continue
                if len(pending) > 1:
                    # A request-level rejection (a validation error, a request too large) is
                    # caused by some of its records: halve the request to find them.
                    _LOGGER.debug(
                        'PutRecords of %d records rejected with %s; halving it',
                        len(pending),
                        detail.split(':')[0],
                    )
                    half = len(pending) // 2
                    self._send(pending[:half], deadline, outcome)
                    self._send(pending[half:], deadline, outcome)
                    return
                outcome.dead_letters.append(
                    self._dead_letter(pending[0], f'Kinesis rejected the record: {detail}')
                )
                return
            outcome.requests.append(
                (
                    round((self._clock() - sent_at) * 1000),
                    len(pending),
                    sum(entry.size for entry in pending),
                )
            )
            self._outage.answered()
            pending, throttled = self._sort_results(pending, results, ticket, outcome)

    def _watched(self, client: Any) -> Any:
        """`client`, with each HTTP attempt's throttling error noted for `_put` (botocore's
        own retries of a throttled request never reach the sink otherwise). Clients without
        botocore's events (the testing kit's, test doubles) are returned as they are."""
        events = getattr(getattr(client, 'meta', None), 'events', None)
        if events is not None:
            events.register('response-received.kinesis', self._note_attempt)
        return client

    def _note_attempt(self, parsed_response: dict | None = None, **_: Any) -> None:
        """botocore's hook, called in the sending thread after each HTTP attempt."""
        noted = getattr(self._attempt_errors, 'throttles', None)
        error = (parsed_response or {}).get('Error') or {}
        code = error.get('Code')
        if noted is not None and code and classify(str(code)).kind is ErrorKind.THROTTLE:
            noted.append(str(error.get('Message') or ''))

    def _put(self, client: Any, pending: list[_Entry], outcome: _Outcome) -> list[dict]:
        """One PutRecord (for a single record) or PutRecords call; one result per record.

        Attempts that botocore retried after a throttling error are counted in `outcome` as
        throttled records too (the last attempt's error, if any, is counted by the caller), so
        the sink's throttling counts match what Kinesis answered."""
        self._attempt_errors.throttles = []
        failed_throttled = False
        try:
            return self._put_once(client, pending)
        except ClientError as err:
            failed_throttled = _classify_exception(err)[0].kind is ErrorKind.THROTTLE
            raise
        finally:
            noted = self._attempt_errors.throttles
            self._attempt_errors.throttles = None
            retried = noted[:-1] if failed_throttled else noted
            for message in retried:
                outcome.request_throttled(len(pending), message)

    def _put_once(self, client: Any, pending: list[_Entry]) -> list[dict]:
        stream = self._config.stream_name
        if len(pending) == 1:
            entry = pending[0]
            response = client.put_record(
                StreamName=stream, PartitionKey=entry.partition_key, Data=entry.data
            )
            return [response]
        response = client.put_records(
            StreamName=stream,
            Records=[{'PartitionKey': e.partition_key, 'Data': e.data} for e in pending],
        )
        results = response.get('Records') or []
        if len(results) != len(pending):
            raise self._stop(
                f'PutRecords to {stream!r} answered {len(results)} results for '
                f'{len(pending)} records'
            )
        return results

    def _sort_results(
        self, pending: list[_Entry], results: list[dict], ticket: int, outcome: _Outcome
    ) -> tuple[list[_Entry], bool]:
        """Counts acknowledged records, dead-letters rejected ones; returns those to resend
        and whether any was throttled."""
        resend, rejected, acknowledged, throttled = [], [], [], 0
        for entry, result in zip(pending, results, strict=True):
            code = result.get('ErrorCode')
            if not code:
                outcome.sent += 1
                outcome.bytes_sent += entry.size
                outcome.sent_by_shard[result.get('ShardId') or UNKNOWN_SHARD] += 1
                acknowledged.append(entry)
                continue
            message = result.get('ErrorMessage') or ''
            entry.last_error = f'{code}: {message}'
            kind = classify(code).kind
            if kind is ErrorKind.STOP:
                self._record(acknowledged)
                raise self._stop(
                    f'Kinesis stream {self._config.stream_name!r} cannot be '
                    f'written to: {code}: {message}'
                )
            if kind is ErrorKind.THROTTLE:
                throttled += 1
                outcome.throttled_by_shard[_shard_named(message)] += 1
                resend.append(entry)
            elif kind is ErrorKind.REJECT:
                rejected.append(entry)
            else:
                resend.append(entry)
        self._record(acknowledged)
        second = int(time.time())  # wall clock: the report's time series across workers
        if acknowledged:
            outcome.timeline['sent', second] += len(acknowledged)
        if throttled:
            outcome.timeline['throttled', second] += throttled
        if len(rejected) == len(pending) >= _SYSTEMIC_MIN_ENTRIES:
            raise self._stop(
                f'Kinesis rejected all {len(pending)} records of a PutRecords request to '
                f'{self._config.stream_name!r}: {rejected[0].last_error}'
            )
        for entry in rejected:
            outcome.dead_letters.append(
                self._dead_letter(entry, f'Kinesis rejected the record: {entry.last_error}')
            )
        if acknowledged:
            self._limiter.acknowledged(len(acknowledged))
        if throttled:
            outcome.throttled += throttled
            self._limiter.on_throttle(ticket)
        else:
            self._limiter.on_success(len(acknowledged))
        return resend, bool(throttled)

    def _record(self, acknowledged: list[_Entry]) -> None:
        """Writes the acknowledged records to the checkpoint before anything else is sent."""
        if self._recorder is None or not acknowledged:
            return
        try:
            self._recorder.record([entry.digest for entry in acknowledged])
        except Exception as err:  # noqa: BLE001 - any file system's error
            raise self._stop(
                f'The checkpoint {self._checkpoint.directory} could not be '
                f'written: {type(err).__name__}: {err}',
                err,
            ) from _safe_cause(err, self._config)


def sink_metrics(result: Any) -> tuple[dict[str, int], dict[str, tuple[int, int, int, int]]]:
    """The sink's counters (per-shard ones included) and distributions, as
    `(count, sum, min, max)`, of a finished pipeline; both empty on a runner without metrics
    (Beam's DaskRunner)."""
    try:
        query = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    except NotImplementedError:
        return {}, {}
    counters: dict[str, int] = {}
    for counter in query['counters']:
        name = counter.key.metric.name
        if name in SINK_COUNTERS or name.startswith(THROTTLED_ON_SHARD):
            value = counter.committed if counter.committed is not None else counter.attempted
            counters[name] = counters.get(name, 0) + (value or 0)
    distributions: dict[str, tuple[int, int, int, int]] = {}
    for distribution in query['distributions']:
        name = distribution.key.metric.name
        value = distribution.committed or distribution.attempted
        if name not in SINK_DISTRIBUTIONS or value is None or not value.count:
            continue
        count, total, low, high = distributions.get(name, (0, 0, value.min, value.max))
        distributions[name] = (
            count + value.count,
            total + value.sum,
            min(low, value.min),
            max(high, value.max),
        )
    return counters, distributions


def _check_element(element: Any) -> tuple[str, bytes]:
    if not isinstance(element, tuple) or len(element) != 2:
        raise TypeError(
            f'WriteToKinesis takes (partition_key, data) tuples, not {type(element).__name__}'
        )
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


@beam.typehints.with_input_types(Tuple[str, bytes])
@beam.typehints.with_output_types(Dict[str, Any])
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

    With a `checkpoint` (see `beam_kinesis.checkpoint`), every record Kinesis acknowledges is
    recorded there as soon as its answer arrives, and records an earlier attempt of the same
    run recorded are not sent again (counted as `records_already_acknowledged`).

    By default the last requests of a bundle are sent, and their dead letters emitted, in
    `finish_bundle`. A runner that drops what `finish_bundle` emits (Beam's DaskRunner) would
    lose those dead letters: give `group_into=N` there, and records are grouped by a hash of
    their key into N groups, each sent and flushed within one `process` call.
    """

    def __init__(
        self,
        config: KinesisConfig,
        *,
        client_factory: Callable[[KinesisConfig], Any] = make_client,
        group_into: int | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        """Args:
        config: the stream and the sink's limits.
        client_factory: builds the boto3 client on each worker; `make_client` by default.
          Any callable taking the config and returning an object with boto3's Kinesis
          `put_records`, `put_record` and `close` will do (a test double, a wrapped client).
        group_into: None to batch per bundle; N to group records into N groups first.
        checkpoint: an opened checkpoint of this run (`open_checkpoint`), or None.
        """
        super().__init__()
        if not isinstance(config, KinesisConfig):
            raise ValueError(f'config must be a KinesisConfig, not {type(config).__name__}')
        if group_into is not None and (
            isinstance(group_into, bool) or not isinstance(group_into, int) or group_into < 1
        ):
            raise ValueError(f'group_into {group_into!r} must be None or a positive integer')
        if checkpoint is not None and not isinstance(checkpoint, Checkpoint):
            raise ValueError(f'checkpoint must be a Checkpoint, not {type(checkpoint).__name__}')
        self._config = config
        self._client_factory = client_factory
        self._group_into = group_into
        self._checkpoint = checkpoint

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        if self._group_into is not None:
            records = (
                records
                | 'KeyGroups' >> beam.Map(_GroupOf(self._group_into))
                | 'Group' >> beam.GroupByKey()
                | 'AsGroups' >> beam.MapTuple(_Group)
            )
        return records | 'PutRecords' >> beam.ParDo(
            _PutRecordsFn(self._config, self._client_factory, self._checkpoint)
        ).with_output_types(Dict[str, Any])

    def display_data(self) -> dict:
        return {
            'stream_name': self._config.stream_name,
            'region': self._config.region or '',
            'max_in_flight': self._config.max_in_flight,
        }
