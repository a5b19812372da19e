"""Tests of the embedded local Kinesis (moto served one request at a time)."""

from __future__ import annotations

import socket
import uuid
from collections import Counter

import apache_beam as beam
import boto3
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from botocore.config import Config
from botocore.exceptions import ReadTimeoutError

from beam_kinesis.kinesis import KinesisConfig, KinesisStreamError, WriteToKinesis, check_stream
from beam_kinesis.local_kinesis import EmbeddedKinesis
from tests.kinesis_servers import assert_landed_once, read_back


@pytest.fixture(scope='module')
def embedded():
    with EmbeddedKinesis() as kinesis:
        yield kinesis


def fresh_name() -> str:
    return f'embedded-{uuid.uuid4().hex[:10]}'


def test_listens_on_loopback_and_stops():
    kinesis = EmbeddedKinesis().start()
    host, port = kinesis.endpoint_url.removeprefix('http://').split(':')
    assert host == '127.0.0.1'

    kinesis.stop()

    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=2).close()
    with pytest.raises(RuntimeError, match='not running'):
        _ = kinesis.endpoint_url


def test_created_stream_is_active_and_passes_the_check(embedded):
    name = fresh_name()

    embedded.create_stream(name, shard_count=2)

    summary = check_stream(embedded.config(name))
    assert summary['StreamStatus'] == 'ACTIVE'
    assert summary['OpenShardCount'] == 2


def test_check_reports_unknown_streams_and_wrong_regions(embedded):
    name = fresh_name()
    embedded.create_stream(name)
    other_region = KinesisConfig(
        name,
        region='eu-west-1',
        endpoint_url=embedded.endpoint_url,
        aws_access_key_id='testing',
        aws_secret_access_key='testing',
    )

    with pytest.raises(KinesisStreamError, match="'nope' in region 'us-east-1' was not found"):
        check_stream(embedded.config('nope'))
    with pytest.raises(KinesisStreamError, match=f"'{name}' in region 'eu-west-1' was not found"):
        check_stream(other_region)


def test_serves_one_request_at_a_time(embedded):
    # A client that connected and sent nothing holds the only server thread, so another
    # request waits for it (a threaded server would answer at once); then it is served.
    impatient = boto3.session.Session().client(
        'kinesis',
        endpoint_url=embedded.endpoint_url,
        region_name=embedded.region,
        aws_access_key_id='testing',
        aws_secret_access_key='testing',
        config=Config(read_timeout=1, retries={'total_max_attempts': 1}),
    )
    port = int(embedded.endpoint_url.rsplit(':', 1)[1])
    stall = socket.create_connection(('127.0.0.1', port))
    try:
        with pytest.raises(ReadTimeoutError):
            impatient.list_streams()
    finally:
        stall.close()
    assert 'StreamNames' in impatient.list_streams()
    impatient.close()


def test_every_record_lands_with_eight_requests_in_flight(embedded):
    # moto loses records when it serves concurrent PutRecords to one shard; served one at a
    # time, all 5,000 must be there, each once, on the shard its key hashes to.
    name = fresh_name()
    embedded.create_stream(name, shard_count=1)
    expected = {f'profile-{i:05d}': b'{"n":%d}' % i for i in range(5000)}
    cfg = embedded.config(name, max_in_flight=8, max_batch_records=50)

    pipeline = TestPipeline(runner='FnApiRunner')
    letters = pipeline | beam.Create(sorted(expected.items())) | WriteToKinesis(cfg)
    assert_that(letters, equal_to([]))
    result = pipeline.run()
    result.wait_until_finish()

    landed, shards = read_back(embedded, name)
    assert sum(len(shard) for shard in landed.values()) == 5000
    assert_landed_once(shards, landed, expected)
    calls = Counter({c.key.metric.name: c.committed for c in result.metrics().query()['counters']})
    assert calls['put_records_calls'] == 100
    assert calls['records_sent'] == 5000
