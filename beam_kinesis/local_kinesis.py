"""Embedded local Kinesis: moto's server on 127.0.0.1, answering one request at a time."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import boto3
from botocore.config import Config

from beam_kinesis.config import ConfigError
from beam_kinesis.kinesis import KinesisConfig

# Why the embedded default cannot start without moto, and what to do: one sentence.
MOTO_MISSING = (
    'No --stream_name, --endpoint_url or --output was given, so the job would '
    'write to an embedded local Kinesis, which needs moto: pip install '
    '"beam-kinesis[local]", or give a stream (--stream_name) or --output.'
)

__all__ = ['DUMMY_ACCESS_KEY_ID', 'DUMMY_SECRET_ACCESS_KEY', 'EmbeddedKinesis', 'read_stream']

_LOGGER = logging.getLogger(__name__)

# moto accepts any credentials; these make it plain that nothing real is involved.
DUMMY_ACCESS_KEY_ID = 'testing'
DUMMY_SECRET_ACCESS_KEY = 'testing'
_STREAM_WAIT_SECONDS = 30.0  # how long create_stream waits for ACTIVE
_POLL_SECONDS = 0.05  # between two status checks while waiting
# A connection that sends nothing for this long is dropped, so one stuck client cannot hold
# the only server thread for ever.
_CONNECTION_TIMEOUT_SECONDS = 30.0


def read_stream(client: Any, stream_name: str) -> dict[str, list[tuple[str, bytes]]]:
    """Reads every record of a stream, shard by shard, from the oldest one.

    Works against any Kinesis endpoint (moto, kinesalite, kinesis-local, AWS) but is meant
    for local ones: it stops reading a shard at the first empty answer that is not behind the
    tip of the shard.

    Args:
      client: a boto3 Kinesis client.
      stream_name: the stream to read.

    Returns:
      For each shard id, its records in order as `(partition_key, data)`.
    """
    shards = []
    kwargs: dict[str, Any] = {'StreamName': stream_name}
    while True:
        response = client.list_shards(**kwargs)
        shards.extend(response['Shards'])
        if not response.get('NextToken'):
            break
        kwargs = {'NextToken': response['NextToken']}
    records: dict[str, list[tuple[str, bytes]]] = {}
    for shard in shards:
        shard_id = shard['ShardId']
        iterator = client.get_shard_iterator(
            StreamName=stream_name, ShardId=shard_id, ShardIteratorType='TRIM_HORIZON'
        )['ShardIterator']
        got = records.setdefault(shard_id, [])
        while iterator:
            response = client.get_records(ShardIterator=iterator, Limit=10000)
            got.extend((r['PartitionKey'], r['Data']) for r in response['Records'])
            iterator = response.get('NextShardIterator')
            if not response['Records'] and not response.get('MillisBehindLatest'):
                break
    return records


def _quiet_handler(base: type) -> type:
    """moto's request handler without werkzeug's line per request (errors are still logged)."""

    class QuietHandler(base):
        timeout = _CONNECTION_TIMEOUT_SECONDS

        def log_request(self, *args: Any) -> None:
            pass

    return QuietHandler


class EmbeddedKinesis:
    """moto's Kinesis on a free port of 127.0.0.1, for the job's default local mode and tests.

    moto stores PutRecords unsafely: with several requests served at once it loses records
    without an error. This server therefore answers one request at a time (a werkzeug server
    without threads, which also speaks HTTP/1.0 so no client can hold the connection open);
    concurrent senders simply queue in the listen backlog. moto's state lives in the process,
    so two embedded servers in one process see the same streams, and an active `mock_aws`
    intercepts the calls of boto3 clients in this process before they reach the server.

    Use as a context manager::

        with EmbeddedKinesis() as kinesis:
            kinesis.create_stream('profiles', shard_count=2)
            ...  # write with kinesis.config('profiles')
            records = kinesis.read_stream('profiles')
    """

    def __init__(self, region: str = 'us-east-1', port: int = 0) -> None:
        """Args:
        region: the region clients of this server use.
        port: the port to listen on; 0 picks a free one.
        """
        self.region = region
        self._port = port
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint_url(self) -> str:
        """`http://127.0.0.1:<port>` of the running server."""
        if self._server is None:
            raise RuntimeError('the embedded Kinesis is not running: call start() first')
        return f'http://127.0.0.1:{self._server.server_port}'

    def start(self) -> EmbeddedKinesis:
        """Starts serving in a background thread; returns self."""
        if self._server is not None:
            return self
        # moto is imported here: it is large, only the local mode needs it, and it is an
        # extra (beam-kinesis[local]) that a production install leaves out.
        try:
            from moto.moto_server.werkzeug_app import (
                DomainDispatcherApplication,
                MotoRequestHandler,
                create_backend_app,
            )
            from werkzeug.serving import make_server
        except ImportError as err:
            raise ConfigError(MOTO_MISSING) from err

        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(
            '127.0.0.1',
            self._port,
            app,
            threaded=False,
            processes=1,
            request_handler=_quiet_handler(MotoRequestHandler),
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name='embedded-kinesis', daemon=True
        )
        self._thread.start()
        _LOGGER.info('Embedded Kinesis (moto) listening on %s', self.endpoint_url)
        return self

    def stop(self) -> None:
        """Stops serving and frees the port. The streams stay in moto's memory."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server, self._thread = None, None

    def __enter__(self) -> EmbeddedKinesis:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def client(self) -> Any:
        """A boto3 Kinesis client of this server, with dummy credentials."""
        return boto3.session.Session().client(
            'kinesis',
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=DUMMY_ACCESS_KEY_ID,
            aws_secret_access_key=DUMMY_SECRET_ACCESS_KEY,
            config=Config(retries={'mode': 'standard'}),
        )

    def config(self, stream_name: str, **options: Any) -> KinesisConfig:
        """A sink configuration writing to `stream_name` on this server."""
        return KinesisConfig(
            stream_name,
            region=self.region,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=DUMMY_ACCESS_KEY_ID,
            aws_secret_access_key=DUMMY_SECRET_ACCESS_KEY,
            **options,
        )

    def create_stream(self, name: str, shard_count: int = 1, replace: bool = False) -> None:
        """Creates a provisioned stream and waits until it is ACTIVE.

        moto keeps streams for the life of the process, so an earlier server in the same
        process may have left one of that name; `replace` deletes it first.
        """
        client = self.client()
        try:
            if replace and name in client.list_streams().get('StreamNames', []):
                client.delete_stream(StreamName=name, EnforceConsumerDeletion=True)
            client.create_stream(StreamName=name, ShardCount=shard_count)
            deadline = time.monotonic() + _STREAM_WAIT_SECONDS
            while True:
                summary = client.describe_stream_summary(StreamName=name)
                status = summary['StreamDescriptionSummary']['StreamStatus']
                if status == 'ACTIVE':
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f'stream {name!r} is still {status} after {_STREAM_WAIT_SECONDS:g} s'
                    )
                time.sleep(_POLL_SECONDS)
        finally:
            client.close()

    def read_stream(self, name: str) -> dict[str, list[tuple[str, bytes]]]:
        """Every record of the stream by shard id, as `(partition_key, data)`."""
        client = self.client()
        try:
            return read_stream(client, name)
        finally:
            client.close()
