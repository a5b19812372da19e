"""A fault-injecting HTTP proxy in front of a local Kinesis server, for the fault tests.

The proxy listens on 127.0.0.1 and forwards every request to a real Kinesis server
(kinesalite in the tests), except where its `FaultSchedule` says otherwise. It speaks what
botocore sends to Kinesis: JSON 1.1 (`Content-Type: application/x-amz-json-1.1`,
`X-Amz-Target: Kinesis_20131202.<Operation>`, record data in base64). botocore 1.44 has no
CBOR protocol for Kinesis (its service model says `json`), so a body in any other content
type is forwarded untouched and counted as `not_json`, which the tests assert is zero.

Faults it injects, each decided by a seeded RNG:

- per entry of a `PutRecords` (ProvisionedThroughputExceededException or InternalFailure):
  only the other entries are forwarded upstream, and the answer merges upstream's results
  back in request order, with `FailedRecordCount` counting both kinds of failure; on a lone
  `PutRecord` the same fault answers the whole request, as Kinesis does;
- a whole `PutRecords`/`PutRecord` answered with HTTP 500, 503, or 400 throttling
  (`ProvisionedThroughputExceededException` or `ThrottlingException`), nothing forwarded;
- a response held back longer than the client's read timeout, after upstream stored the
  records;
- the connection dropped after upstream stored the records, with no answer (the case that
  makes duplicates);
- a credential error (`UnrecognizedClientException`, `ExpiredTokenException`,
  `IncompleteSignatureException` echoing the request's Authorization header as AWS does,
  `MissingAuthenticationTokenException`) for every request from the n-th on;
- a black hole: from the n-th `PutRecords`/`PutRecord` on, nothing is forwarded and nothing
  answered; the connection is held open until the client gives up (a dead endpoint mid-run);
- Kinesis's per-shard write limits (1,000 records/s and 1 MiB/s per shard by default, the
  shard chosen by the MD5 of the partition key against the shards' hash-key ranges, read
  from upstream's ListShards): an entry over its shard's quota fails with
  `ProvisionedThroughputExceededException` naming the shard, as Kinesis's message does
  (`beam_kinesis.shards`);
- `ResourceNotFoundException` for every `PutRecords`/`PutRecord` after n of them (the
  stream deleted mid-run), or the stream really deleted upstream after n of them.

Every decision is drawn from a `random.Random` seeded with the schedule's seed and what it is
about. A whole-request fault is decided by the request's number (the n-th PutRecords or
PutRecord of the schedule), so a run meets the same number of them whatever its batches
hold. An entry fault is decided by the record (partition key and data) and how many times
that record was sent before, so the same records fail, on the same attempts, whatever the
order in which concurrent requests arrive or how the sink batched them.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import hashlib
import http.client
import http.server
import json
import random
import re
import select
import socket
import threading
import time
import urllib.parse
from typing import Any, Callable, Iterator

import pytest

from beam_kinesis.shards import BYTES_PER_SHARD_SECOND, RECORDS_PER_SHARD_SECOND, ShardLimits

__all__ = ['FaultProxy', 'FaultSchedule', 'fault_proxy', 'THROTTLED', 'INTERNAL_FAILURE']

JSON_CONTENT_TYPE = 'application/x-amz-json-1.1'
TARGET_PREFIX = 'Kinesis_20131202.'
PUT_OPERATIONS = frozenset({'PutRecords', 'PutRecord'})
THROTTLED = 'ProvisionedThroughputExceededException'
INTERNAL_FAILURE = 'InternalFailure'
ACCOUNT = '000000000000'

# Whole-request faults: (HTTP status, __type); the message is filled in per request.
REQUEST_FAULTS = {
    'http500': (500, 'InternalFailure'),
    'http503': (503, 'ServiceUnavailable'),
    'throttled': (400, THROTTLED),
    'throttling': (400, 'ThrottlingException'),
}
# Messages of credential errors; `{authorization}` is the request's Authorization header,
# which AWS quotes back in an IncompleteSignatureException.
CREDENTIAL_ERRORS = {
    'UnrecognizedClientException': 'The security token included in the request is invalid.',
    'ExpiredTokenException': 'The security token included in the request is expired',
    'IncompleteSignatureException': (
        "'{authorization}' not a valid key=value pair (missing equal-sign) in Authorization "
        "header: '{authorization}'."
    ),
    'MissingAuthenticationTokenException': 'Missing Authentication Token',
}
# Headers that belong to one hop, or that the proxy recomputes.
_HOP_HEADERS = frozenset(
    {
        'host',
        'content-length',
        'connection',
        'keep-alive',
        'transfer-encoding',
        'expect',
        'proxy-connection',
        'te',
        'upgrade',
    }
)
_UPSTREAM_TIMEOUT_SECONDS = 30.0
_CREDENTIAL = re.compile(r'Credential=([^/,\s]+)/')


@dataclasses.dataclass(frozen=True)
class FaultSchedule:
    """What the proxy does to the requests it sees. The default forwards everything.

    Attributes:
      seed: seeds every decision.
      entry_fault_rate: share of the record attempts of PutRecords/PutRecord that fail.
      entry_fault_codes: the ErrorCode of a failed entry, drawn among these.
      entry_fault_keys: only records whose partition key passes this predicate can fail
        (None: every record).
      request_fault_rate: share of PutRecords/PutRecord requests answered with a fault.
      request_faults: which one, drawn among these keys of `REQUEST_FAULTS`.
      delay_rate: share of PutRecords/PutRecord requests whose answer is held back.
      delay_seconds: how long, after upstream stored the records.
      drop_rate: share of PutRecords/PutRecord requests whose connection is closed without
        an answer after upstream stored the records.
      credential_error: a key of `CREDENTIAL_ERRORS` to answer every request with, from
        request number `credential_error_after + 1` on (None: never).
      credential_error_after: requests (of any operation) let through before that.
      stream_gone_after: PutRecords/PutRecord requests let through before every further
        one is answered ResourceNotFoundException (None: never).
      delete_stream_after: PutRecords/PutRecord requests let through before the stream is
        really deleted upstream (None: never).
      blackhole_after: PutRecords/PutRecord requests let through before every further one
        is swallowed: not forwarded, never answered (None: never).
      shard_records_per_second: records per second each shard takes (None: unlimited
        unless `shard_bytes_per_second` is given, then Kinesis's 1,000).
      shard_bytes_per_second: data + partition key bytes per second each shard takes
        (None: unlimited unless `shard_records_per_second` is given, then 1 MiB).
    """

    seed: int = 0
    entry_fault_rate: float = 0.0
    entry_fault_codes: tuple[str, ...] = (THROTTLED,)
    entry_fault_keys: Callable[[str], bool] | None = None
    request_fault_rate: float = 0.0
    request_faults: tuple[str, ...] = ('http500',)
    delay_rate: float = 0.0
    delay_seconds: float = 0.0
    drop_rate: float = 0.0
    credential_error: str | None = None
    credential_error_after: int = 0
    stream_gone_after: int | None = None
    delete_stream_after: int | None = None
    blackhole_after: int | None = None
    shard_records_per_second: float | None = None
    shard_bytes_per_second: float | None = None

    @property
    def shard_limited(self) -> bool:
        return self.shard_records_per_second is not None or self.shard_bytes_per_second is not None

    def __post_init__(self) -> None:
        for fault in self.request_faults:
            if fault not in REQUEST_FAULTS:
                raise ValueError(f'request fault {fault!r} is not one of {sorted(REQUEST_FAULTS)}')
        if self.credential_error is not None and self.credential_error not in CREDENTIAL_ERRORS:
            raise ValueError(
                f'credential_error {self.credential_error!r} is not one of '
                f'{sorted(CREDENTIAL_ERRORS)}'
            )
        for code in self.entry_fault_codes:
            if code not in (THROTTLED, INTERNAL_FAILURE):
                raise ValueError(f'entry fault code {code!r} is not a PutRecords ErrorCode')


class _Decider:
    """Seeded draws keyed by what they are about and how often that was seen before."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._seen: collections.Counter[tuple] = collections.Counter()
        self._lock = threading.Lock()

    def draw(self, *about: Any) -> random.Random:
        with self._lock:
            occurrence = self._seen[about]
            self._seen[about] += 1
        return random.Random(repr((self._seed, occurrence) + about))

    def chance(self, rate: float, *about: Any) -> bool:
        return rate > 0 and self.draw(*about).random() < rate


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FaultProxy:
    """An HTTP proxy on a free port of 127.0.0.1 in front of `upstream_url`.

    Attributes:
      endpoint_url: where clients send their requests.
      stats: what the proxy saw and did (a Counter; see `summary`).
    """

    def __init__(
        self,
        upstream_url: str,
        region: str = 'us-east-1',
        upstream_client: Callable[[], Any] | None = None,
    ) -> None:
        """Args:
        upstream_url: the real Kinesis server, `http://127.0.0.1:<port>`.
        region: the region named in error messages.
        upstream_client: makes a boto3 client of the upstream server, for deleting the
          stream (needed only with `delete_stream_after`).
        """
        parsed = urllib.parse.urlsplit(upstream_url)
        if parsed.scheme != 'http' or parsed.hostname != '127.0.0.1':
            raise ValueError(f'upstream {upstream_url!r} must be http://127.0.0.1:<port>')
        self._upstream = (parsed.hostname, parsed.port)
        self._region = region
        self._upstream_client = upstream_client
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.stats: collections.Counter[str] = collections.Counter()
        self.schedule = FaultSchedule()
        self._server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def endpoint_url(self) -> str:
        return f'http://127.0.0.1:{self._server.server_port}'

    @property
    def schedule(self) -> FaultSchedule:
        return self._schedule

    @schedule.setter
    def schedule(self, schedule: FaultSchedule) -> None:
        """A new schedule; counts and decisions start afresh."""
        with self._lock:
            self._schedule = schedule
            self._decider = _Decider(schedule.seed)
            self._requests = 0
            self._puts = 0
            self._deleted = False
            self._limits: dict[str, ShardLimits] = {}
            # [when the request came, when its client gave up] of each swallowed request.
            self.swallowed: list[list] = []
            # Access key ids of the requests' signatures (which credentials wrote).
            self.key_ids: collections.Counter[str] = collections.Counter()
            self.stats.clear()

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name='fault-proxy', daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def summary(self) -> dict[str, int]:
        """The counts, sorted by name, for a test report."""
        with self._lock:
            return dict(sorted(self.stats.items()))

    def count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.stats[name] += amount

    # Request handling, in the server's threads.

    def handle(self, operation: str, headers: dict[str, str], body: bytes) -> tuple[str, Any]:
        """Decides what to do with one request.

        Returns one of `('answer', (status, body))`, `('forward', body)`,
        `('forward_then_delay', seconds)`, `('forward_then_drop', None)`,
        `('forward_merged', (body, failures))`, `('hold', swallowed)` (never answer; the
        entry of `swallowed` to stamp when the client gives up).
        """
        schedule = self.schedule
        signed_by = _CREDENTIAL.search(headers.get('authorization', ''))
        with self._lock:
            self.key_ids[signed_by.group(1) if signed_by else ''] += 1
            self._requests += 1
            self.stats['requests'] += 1
            self.stats[f'requests {operation}'] += 1
            request_number = self._requests
            put_number = 0
            if operation in PUT_OPERATIONS:
                self._puts += 1
                put_number = self._puts
        if (
            schedule.credential_error is not None
            and request_number > schedule.credential_error_after
        ):
            self.count('answered credential error')
            return 'answer', _error(
                400,
                schedule.credential_error,
                CREDENTIAL_ERRORS[schedule.credential_error].format(
                    authorization=headers.get('authorization', '')
                ),
            )
        if operation not in PUT_OPERATIONS:
            return 'forward', body
        if schedule.blackhole_after is not None and put_number > schedule.blackhole_after:
            self.count('requests swallowed')
            entry = [time.monotonic(), None]
            with self._lock:
                self.swallowed.append(entry)
            return 'hold', entry
        content_type = headers.get('content-type', '').split(';')[0].strip()
        if content_type != JSON_CONTENT_TYPE:
            self.count('not_json')
            return 'forward', body
        request = json.loads(body)
        stream = request.get('StreamName') or request.get('StreamARN') or '?'
        if schedule.stream_gone_after is not None and put_number > schedule.stream_gone_after:
            self.count('answered stream not found')
            return 'answer', _error(
                400,
                'ResourceNotFoundException',
                f'Stream {stream} under account {ACCOUNT} not found.',
            )
        if schedule.delete_stream_after is not None and put_number > schedule.delete_stream_after:
            self._delete_upstream(stream)
        decider = self._decider
        draw = decider.draw('request', put_number)
        if schedule.request_fault_rate > 0 and draw.random() < schedule.request_fault_rate:
            fault = draw.choice(schedule.request_faults)
            status, code = REQUEST_FAULTS[fault]
            self.count(f'requests answered {fault}')
            return 'answer', _error(status, code, _message(code, stream, self._region))
        if decider.chance(schedule.delay_rate, 'delay', put_number):
            self.count('responses delayed')
            return 'forward_then_delay', schedule.delay_seconds
        if decider.chance(schedule.drop_rate, 'drop', put_number):
            self.count('connections dropped after store')
            return 'forward_then_drop', None
        entries = request.get('Records') if operation == 'PutRecords' else [request]
        self.count('entries seen', len(entries))
        failures = {}
        for index, entry in enumerate(entries):
            key = entry.get('PartitionKey', '')
            if schedule.entry_fault_keys is not None and not schedule.entry_fault_keys(key):
                continue
            draw = decider.draw('entry', key, _digest(entry.get('Data', '').encode('ascii')))
            if schedule.entry_fault_rate > 0 and draw.random() < schedule.entry_fault_rate:
                failures[index] = draw.choice(schedule.entry_fault_codes)
        if schedule.shard_limited:
            limits = self._limits_of(stream, schedule)
            candidates = [index for index in range(len(entries)) if index not in failures]
            decided = limits.admit(
                (entries[index].get('PartitionKey', ''), _entry_size(entries[index]))
                for index in candidates
            )
            for index, (shard_id, admitted) in zip(candidates, decided, strict=True):
                if not admitted:
                    failures[index] = (THROTTLED, shard_id)
                    self.count(f'entries over the shard limit {shard_id}')
        for code in failures.values():
            self.count(f'entries failed {code[0] if isinstance(code, tuple) else code}')
        self.count('entries forwarded', len(entries) - len(failures))
        if not failures:
            return 'forward', body
        if operation == 'PutRecord':
            code, shard_id = _code_and_shard(failures[0])
            status = 400 if code == THROTTLED else 500
            return 'answer', _error(status, code, _message(code, stream, self._region, shard_id))
        kept = [entry for index, entry in enumerate(entries) if index not in failures]
        if not kept:
            return 'answer', (200, _merge(len(entries), failures, [], stream, self._region))
        subset = dict(request, Records=kept)
        return 'forward_merged', (
            json.dumps(subset).encode('utf-8'),
            (len(entries), failures, stream),
        )

    def merged(self, upstream_body: bytes, plan: tuple) -> bytes:
        total, failures, stream = plan
        upstream = json.loads(upstream_body)
        return _merge(
            total, failures, upstream.get('Records') or [], stream, self._region, upstream
        )

    def _limits_of(self, stream: str, schedule: FaultSchedule) -> ShardLimits:
        """The stream's shard limits, its shards read from upstream once per schedule."""
        with self._lock:
            limits = self._limits.get(stream)
        if limits is not None:
            return limits
        if self._upstream_client is None:
            raise RuntimeError('shard limits need an upstream_client')
        client = self._upstream_client()
        try:
            shards = client.list_shards(StreamName=stream)['Shards']
        finally:
            client.close()
        limits = ShardLimits(
            shards,
            records_per_second=schedule.shard_records_per_second or RECORDS_PER_SHARD_SECOND,
            bytes_per_second=schedule.shard_bytes_per_second or BYTES_PER_SHARD_SECOND,
        )
        with self._lock:
            return self._limits.setdefault(stream, limits)

    def _delete_upstream(self, stream: str) -> None:
        with self._lock:
            if self._deleted:
                return
            self._deleted = True
        if self._upstream_client is None:
            raise RuntimeError('delete_stream_after needs an upstream_client')
        client = self._upstream_client()
        try:
            client.delete_stream(StreamName=stream, EnforceConsumerDeletion=True)
        finally:
            client.close()
        self.count('streams deleted upstream')

    def forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Sends a request upstream; returns its status, headers and body."""
        connection = http.client.HTTPConnection(*self._upstream, timeout=_UPSTREAM_TIMEOUT_SECONDS)
        try:
            sent = {
                name: value for name, value in headers.items() if name.lower() not in _HOP_HEADERS
            }
            sent['Content-Length'] = str(len(body))
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            data = response.read()
            kept = [
                (name, value)
                for name, value in response.getheaders()
                if name.lower() not in _HOP_HEADERS
            ]
            self.count('forwarded')
            return response.status, kept, data
        finally:
            connection.close()

    def wait(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()


def _entry_size(entry: dict) -> int:
    """Data (base64 in the request) plus partition key bytes, as Kinesis counts them."""
    data = entry.get('Data', '')
    padding = data[-2:].count('=')
    return len(data) * 3 // 4 - padding + len(entry.get('PartitionKey', '').encode('utf-8'))


def _code_and_shard(failure: str | tuple[str, str]) -> tuple[str, str | None]:
    return failure if isinstance(failure, tuple) else (failure, None)


def _message(code: str, stream: str, region: str, shard_id: str | None = None) -> str:
    if code == THROTTLED:
        shard = f'shard {shard_id}' if shard_id else 'shard'
        return f'Rate exceeded for {shard} in stream {stream} under account {ACCOUNT} ({region}).'
    if code == 'ThrottlingException':
        return 'Rate exceeded'
    if code == 'ServiceUnavailable':
        return 'Service Unavailable'
    return 'Internal service failure.'


def _error(status: int, code: str, message: str) -> tuple[int, bytes]:
    return status, json.dumps({'__type': code, 'message': message}).encode('utf-8')


def _merge(
    total: int,
    failures: dict[int, str],
    upstream_records: list[dict],
    stream: str,
    region: str,
    upstream: dict | None = None,
) -> bytes:
    """A PutRecords answer: injected failures and upstream's results, in request order."""
    records, results = [], iter(upstream_records)
    for index in range(total):
        if index in failures:
            code, shard_id = _code_and_shard(failures[index])
            records.append(
                {'ErrorCode': code, 'ErrorMessage': _message(code, stream, region, shard_id)}
            )
        else:
            records.append(next(results))
    if next(results, None) is not None:
        raise AssertionError('upstream answered more results than entries forwarded')
    upstream_failed = (upstream or {}).get('FailedRecordCount', 0)
    answer = {'FailedRecordCount': len(failures) + upstream_failed, 'Records': records}
    if upstream and 'EncryptionType' in upstream:
        answer['EncryptionType'] = upstream['EncryptionType']
    return json.dumps(answer).encode('utf-8')


def _handler_for(proxy: FaultProxy) -> type:

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = 'HTTP/1.1'  # keep-alive, as botocore's connection pool expects

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
            length = int(self.headers.get('Content-Length') or 0)
            body = self.rfile.read(length)
            headers = {name: value for name, value in self.headers.items()}
            target = self.headers.get('X-Amz-Target', '')
            operation = target[len(TARGET_PREFIX) :] if target.startswith(TARGET_PREFIX) else ''
            try:
                action, detail = proxy.handle(
                    operation, {k.lower(): v for k, v in headers.items()}, body
                )
                if action == 'answer':
                    status, data = detail
                    self._reply(status, [('Content-Type', JSON_CONTENT_TYPE)], data)
                    return
                if action == 'hold':
                    self._hold()
                    detail[1] = time.monotonic()
                    return
                if action == 'forward_merged':
                    forwarded, plan = detail
                    status, kept, data = proxy.forward('POST', self.path, headers, forwarded)
                    if status == 200:
                        data = proxy.merged(data, plan)
                    self._reply(status, kept, data)
                    return
                status, kept, data = proxy.forward('POST', self.path, headers, body)
                if action == 'forward_then_drop':
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if action == 'forward_then_delay':
                    proxy.wait(detail)
                self._reply(status, kept, data)
            except (BrokenPipeError, ConnectionResetError):
                proxy.count('client gone before the answer')
                self.close_connection = True
            except Exception as err:  # noqa: BLE001 - a proxy bug must show, not hang
                proxy.count('proxy errors')
                self._reply(
                    599,
                    [('Content-Type', 'text/plain')],
                    f'fault proxy error: {type(err).__name__}: {err}'.encode(),
                )
                raise

        def _hold(self) -> None:
            """Answers nothing until the client closes the connection or the proxy stops."""
            self.close_connection = True
            while not proxy.stopping:
                readable, _, _ = select.select([self.connection], [], [], 0.2)
                if readable:
                    try:
                        if not self.connection.recv(1, socket.MSG_PEEK):
                            break  # the client gave up
                    except OSError:
                        break
                    proxy.wait(0.2)  # the client sent more (it should not): keep holding

        def _reply(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header('Content-Length', str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()

    return Handler


@pytest.fixture
def fault_proxy(kinesalite) -> Iterator[FaultProxy]:
    """A fault proxy in front of the session's kinesalite, forwarding everything until a test
    sets its `schedule`."""
    proxy = FaultProxy(kinesalite.endpoint_url, upstream_client=kinesalite.client).start()
    yield proxy
    proxy.stop()


def decode_records(body: bytes) -> list[tuple[str, bytes]]:
    """(partition key, data) of each record of a PutRecords JSON body, for tests of the proxy."""
    request = json.loads(body)
    return [
        (entry['PartitionKey'], base64.b64decode(entry['Data']))
        for entry in request.get('Records') or [request]
    ]
