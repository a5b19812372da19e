"""Local Kinesis servers for the integration tests: kinesalite and kinesis-local, via node.

Both are npm packages pinned in `tests/servers/package.json`; install them with
`npm install --prefix tests/servers --no-audit --no-fund`. Each server runs as a child process
on a free port of 127.0.0.1 for the whole test session, and is killed at its end. Tests are
skipped only when `node` itself is missing; missing packages fail the tests.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import boto3
import pytest
from botocore.config import Config

from beam_kinesis.kinesis import KinesisConfig
from beam_kinesis.local_kinesis import read_stream

SERVERS_DIR = Path(__file__).resolve().parent / 'servers'
NODE_MODULES = SERVERS_DIR / 'node_modules'
INSTALL_COMMAND = 'npm install --prefix tests/servers --no-audit --no-fund'
REGION = 'us-east-1'
ACCESS_KEY_ID = 'testing'
SECRET_ACCESS_KEY = 'testing'
_START_SECONDS = 30.0
_STREAM_SECONDS = 30.0


def free_port() -> int:
    """A port of 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def client_for(endpoint_url: str, region: str = REGION) -> Any:
    """A boto3 Kinesis client of a local server, dummy credentials."""
    return boto3.session.Session().client(
        'kinesis',
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        config=Config(retries={'mode': 'standard'}, connect_timeout=2, read_timeout=30),
    )


def target_args(
    endpoint_url: str,
    stream_name: str,
    secret: str = SECRET_ACCESS_KEY,
    access_key_id: str = ACCESS_KEY_ID,
) -> list[str]:
    """The job's flags that send to `stream_name` at `endpoint_url` (a local server or a proxy
    in front of one), spelt once so that every test names its target the same way."""
    return [
        '--stream_name',
        stream_name,
        '--endpoint_url',
        endpoint_url,
        '--aws_region',
        REGION,
        '--aws_access_key_id',
        access_key_id,
        '--aws_secret_access_key',
        secret,
    ]


class LocalServer:
    """A running local Kinesis server process."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], port: int) -> None:
        self.name = name
        self.port = port
        self.endpoint_url = f'http://127.0.0.1:{port}'
        self._log = tempfile.TemporaryFile()
        self._process = subprocess.Popen(
            args,
            cwd=SERVERS_DIR,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def log_tail(self) -> str:
        self._log.seek(0)
        return self._log.read()[-2000:].decode('utf-8', errors='replace')

    def wait_ready(self) -> bool:
        """Waits until ListStreams answers; False if the process died first."""
        deadline = time.monotonic() + _START_SECONDS
        client = client_for(self.endpoint_url)
        try:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    return False
                try:
                    client.list_streams()
                    return True
                except Exception:  # noqa: BLE001 - not listening yet
                    time.sleep(0.1)
        finally:
            client.close()
        pytest.fail(f'{self.name} did not answer within {_START_SECONDS:g} s:\n{self.log_tail()}')

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
        self._log.close()

    def client(self, region: str = REGION) -> Any:
        return client_for(self.endpoint_url, region)

    def config(self, stream_name: str, **options: Any) -> KinesisConfig:
        """A sink configuration for this server."""
        return KinesisConfig(
            stream_name,
            region=REGION,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            **options,
        )

    def target_args(self, stream_name: str, secret: str = SECRET_ACCESS_KEY) -> list[str]:
        """The job's flags that send to `stream_name` on this server; a test passes its own
        secret where it checks that the secret never shows."""
        return target_args(self.endpoint_url, stream_name, secret)

    def create_stream(self, shard_count: int, region: str = REGION) -> str:
        """Creates a stream with a fresh name, waits until it is ACTIVE, returns its name."""
        name = f'test-{uuid.uuid4().hex[:12]}'
        client = self.client(region)
        try:
            client.create_stream(StreamName=name, ShardCount=shard_count)
            deadline = time.monotonic() + _STREAM_SECONDS
            while (
                client.describe_stream_summary(StreamName=name)['StreamDescriptionSummary'][
                    'StreamStatus'
                ]
                != 'ACTIVE'
            ):
                if time.monotonic() > deadline:
                    pytest.fail(f'{self.name}: stream {name} not ACTIVE in {_STREAM_SECONDS:g} s')
                time.sleep(0.05)
        finally:
            client.close()
        return name


def _node_or_skip(package: str) -> str:
    node = shutil.which('node')
    if node is None:
        pytest.skip(f'node is not installed, so the {package} tests cannot run')
    if not (NODE_MODULES / package / 'package.json').is_file():
        pytest.fail(
            f'{package} is not installed under tests/servers: run `{INSTALL_COMMAND}` '
            'from the repository root'
        )
    return node


def _start(name: str, make_args: Any) -> LocalServer:
    """Starts a server, retrying on another port if the chosen one was taken meanwhile."""
    for _ in range(3):
        port = free_port()
        args, env = make_args(port)
        server = LocalServer(name, args, env, port)
        if server.wait_ready():
            return server
        tail = server.log_tail()
        server.stop()
    pytest.fail(f'{name} would not start:\n{tail}')


def start_kinesalite() -> LocalServer:
    node = _node_or_skip('kinesalite')
    # The library call, unlike kinesalite's CLI, binds 127.0.0.1 only.
    script = (
        "require('kinesalite')({createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0, "
        "shardLimit: 10000}).listen(Number(process.argv[1]), '127.0.0.1')"
    )

    def make_args(port: int) -> tuple[list[str], dict[str, str]]:
        env = dict(os.environ, NODE_PATH=str(NODE_MODULES))
        return [node, '-e', script, str(port)], env

    return _start('kinesalite', make_args)


def start_kinesis_local() -> LocalServer:
    node = _node_or_skip('kinesis-local')
    package = NODE_MODULES / 'kinesis-local'

    def make_args(port: int) -> tuple[list[str], dict[str, str]]:
        # It needs a TLS port and the certificate even when only plain HTTP is used; it binds
        # every interface (it has no host setting).
        tls_port = free_port()
        while tls_port == port:
            tls_port = free_port()
        env = dict(
            os.environ,
            KINESIS_MOCK_CERT_PATH=str(package / 'server.json'),
            KINESIS_MOCK_PLAIN_PORT=str(port),
            KINESIS_MOCK_TLS_PORT=str(tls_port),
            CREATE_STREAM_DURATION='0ms',
            DELETE_STREAM_DURATION='0ms',
            UPDATE_SHARD_COUNT_DURATION='0ms',
            SHARD_LIMIT='100',
            LOG_LEVEL='WARN',
            SHOULD_PERSIST_DATA='false',
            AWS_REGION=REGION,
        )
        return [node, str(package / 'main.js')], env

    return _start('kinesis-local', make_args)


@pytest.fixture(scope='session')
def kinesalite() -> Iterator[LocalServer]:
    """A kinesalite server for the session."""
    server = start_kinesalite()
    yield server
    server.stop()


@pytest.fixture(scope='session')
def kinesis_local() -> Iterator[LocalServer]:
    """A kinesis-local (kinesis-mock) server for the session."""
    server = start_kinesis_local()
    yield server
    server.stop()


def shard_of(shards: list[dict], partition_key: str) -> str:
    """The shard whose hash-key range holds the MD5 of the partition key, as Kinesis routes."""
    hash_key = int.from_bytes(hashlib.md5(partition_key.encode('utf-8')).digest(), 'big')
    for shard in shards:
        key_range = shard['HashKeyRange']
        if int(key_range['StartingHashKey']) <= hash_key <= int(key_range['EndingHashKey']):
            return shard['ShardId']
    raise AssertionError(f'no shard holds hash key {hash_key}')


def read_back(server: Any, stream_name: str) -> tuple[dict[str, list[tuple[str, bytes]]], list]:
    """Every record of a stream, per shard, and its shards, read with a client of `server`
    (a LocalServer or an EmbeddedKinesis) that is closed afterwards."""
    client = server.client()
    try:
        return read_stream(client, stream_name), client.list_shards(StreamName=stream_name)[
            'Shards'
        ]
    finally:
        client.close()


def assert_landed_once(
    shards: list, records: dict[str, list[tuple[str, bytes]]], expected: dict[str, bytes]
) -> None:
    """Every expected record is in the stream exactly once, on the shard its key maps to."""
    seen: dict[str, int] = {}
    for shard_id, shard_records in records.items():
        for key, data in shard_records:
            assert expected.get(key) == data, f'unexpected record {key!r} on {shard_id}'
            assert shard_of(shards, key) == shard_id, f'{key!r} landed on the wrong shard'
            seen[key] = seen.get(key, 0) + 1
    duplicates = {key: n for key, n in seen.items() if n > 1}
    assert not duplicates, f'{len(duplicates)} records landed more than once'
    missing = expected.keys() - seen.keys()
    assert not missing, f'{len(missing)} records are missing, e.g. {sorted(missing)[:3]}'
