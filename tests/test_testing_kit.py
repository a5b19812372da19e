"""The testing kit: WriteToKinesis into an in-memory Kinesis in a TestPipeline, scripted
failures, per-shard read back, and the embedded local Kinesis fixture."""

from __future__ import annotations

import hashlib

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_kinesis.kinesis import (
    KinesisConfig,
    KinesisStreamError,
    KinesisWriteError,
    WriteToKinesis,
    check_stream,
)
from beam_kinesis.testing import InMemoryKinesis
from tests.kinesis_servers import shard_of as shard_by_ranges


def _records(count: int) -> list[tuple[str, bytes]]:
    return [(f'p-{i:03d}', f'{{"profile":{i}}}'.encode()) for i in range(count)]


def _keys(letters):
    return letters | 'Keys' >> beam.Map(lambda letter: letter['key'])


def _write(
    kinesis_config: KinesisConfig, records: list[tuple[str, bytes]], expected_failed_keys: list[str]
) -> None:
    """Runs records into the sink and asserts which keys came out as dead letters."""
    with TestPipeline(runner='FnApiRunner') as pipeline:
        letters = pipeline | beam.Create(records) | WriteToKinesis(kinesis_config)
        assert_that(_keys(letters), equal_to(expected_failed_keys))


def _landed_once(kinesis: InMemoryKinesis, expected: list[tuple[str, bytes]]) -> None:
    landed = kinesis.records()
    assert sorted(landed) == sorted(expected)
    assert len(landed) == len(set(landed))


def test_scripted_throttles_are_retried_and_land():
    records = _records(30)
    with InMemoryKinesis(shards=3) as kinesis:
        config = kinesis.config('profiles')
        kinesis.fail('p-007', 'throttled', times=2)
        _write(config, records, [])
        _landed_once(kinesis, records)
        # One batch of 30; p-007 throttled in it and in its first resend, landed on the third.
        assert kinesis.attempts('p-007') == 3
        assert kinesis.attempts('p-000') == 1


def test_internal_failures_are_retried_and_land():
    records = _records(12)
    with InMemoryKinesis() as kinesis:
        config = kinesis.config('profiles')
        kinesis.fail(lambda key, data: key in ('p-001', 'p-002'), 'internal', times=2)
        _write(config, records, [])
        _landed_once(kinesis, records)
        assert kinesis.attempts('p-001') + kinesis.attempts('p-002') == 4


def test_a_record_failing_every_attempt_is_dead_lettered_after_its_retries():
    records = _records(5)
    with InMemoryKinesis() as kinesis:
        config = kinesis.config('profiles', max_retries=2)
        kinesis.fail('p-004', 'throttled')
        with TestPipeline(runner='FnApiRunner') as pipeline:
            letters = pipeline | beam.Create(records) | WriteToKinesis(config)
            assert_that(
                letters
                | beam.Map(
                    lambda d: (d['stage'], d['key'], 'ProvisionedThroughputExceeded' in d['error'])
                ),
                equal_to([('write', 'p-004', True)]),
            )
        _landed_once(kinesis, records[:4])
        assert kinesis.attempts('p-004') == 3  # the first attempt and max_retries resends


def test_rejected_records_are_dead_lettered_and_the_rest_land_once():
    records = _records(40)
    with InMemoryKinesis(shards=2) as kinesis:
        config = kinesis.config('profiles')
        kinesis.fail('p-013', 'rejected')
        kinesis.fail('p-031', 'rejected')
        with TestPipeline(runner='FnApiRunner') as pipeline:
            letters = pipeline | beam.Create(records) | WriteToKinesis(config)
            assert_that(
                letters | beam.Map(lambda d: (d['key'], 'ValidationException' in d['error'])),
                equal_to([('p-013', True), ('p-031', True)]),
            )
        _landed_once(kinesis, [r for r in records if r[0] not in ('p-013', 'p-031')])


def test_a_denied_request_stops_the_pipeline():
    with InMemoryKinesis() as kinesis:
        config = kinesis.config('profiles')
        kinesis.fail('p-002', 'denied')
        with pytest.raises(Exception, match='AccessDenied') as caught:
            with TestPipeline(runner='FnApiRunner') as pipeline:
                _ = pipeline | beam.Create(_records(5)) | WriteToKinesis(config)
        assert 'KinesisWriteError' in repr(caught.value) or isinstance(
            caught.value, KinesisWriteError
        )


def test_records_read_back_per_shard_where_md5_of_the_key_routes_them():
    records = _records(200)
    with InMemoryKinesis(shards=4) as kinesis:
        config = kinesis.config('profiles')
        _write(config, records, [])
        by_shard = kinesis.records_by_shard()
        shards = kinesis.client().list_shards(StreamName='profiles')['Shards']
    assert sorted(by_shard) == [f'shardId-{i:012d}' for i in range(4)]
    assert all(by_shard.values()), '200 keys leave no shard of four empty'
    for shard, landed in by_shard.items():
        for key, _ in landed:
            assert shard_by_ranges(shards, key) == shard
    # The ranges split 2**128 evenly, so a key's shard is its MD5 over a quarter of the space.
    for key, _ in records[:20]:
        md5 = int.from_bytes(hashlib.md5(key.encode()).digest(), 'big')
        assert kinesis.shard_of(key) == f'shardId-{min(md5 // (2**128 // 4), 3):012d}'
    assert sum(len(landed) for landed in by_shard.values()) == len(records)


def test_records_land_on_the_shards_moto_puts_them_on(local_stream):
    """The same keys, written to the embedded local Kinesis (a real Kinesis API, two shards)
    and to an in-memory one of two shards, land on the same shard ids."""
    records = _records(60)
    _write(local_stream.config, records, [])
    on_moto = {shard: sorted(landed) for shard, landed in local_stream.read().items()}
    with InMemoryKinesis(shards=2) as kinesis:
        _write(kinesis.config('profiles'), records, [])
        in_memory = {shard: sorted(landed) for shard, landed in kinesis.records_by_shard().items()}
    assert on_moto == in_memory
    assert sum(len(landed) for landed in on_moto.values()) == len(records)


def test_the_fixture_store_takes_a_pipeline(in_memory_kinesis):
    config = in_memory_kinesis.config('events')
    _write(config, [('only', b'{}')], [])
    assert in_memory_kinesis.records_by_shard() == {'shardId-000000000000': [('only', b'{}')]}
    assert in_memory_kinesis.calls == 1  # a lone record is one PutRecord


def test_check_stream_describes_an_in_memory_stream():
    with InMemoryKinesis(shards=3) as kinesis:
        summary = check_stream(kinesis.config('profiles'))
        assert (summary['StreamStatus'], summary['OpenShardCount']) == ('ACTIVE', 3)
        missing = KinesisConfig('nowhere', region='us-east-1', endpoint_url=kinesis.endpoint_url)
        with pytest.raises(KinesisStreamError, match="'nowhere' .* was not found"):
            check_stream(missing)


def test_a_closed_store_is_named_in_one_sentence():
    kinesis = InMemoryKinesis()
    with kinesis:
        config = kinesis.config('profiles')
    with pytest.raises(KinesisStreamError, match='only on the in-process DirectRunner'):
        check_stream(config)


def test_requests_kinesis_would_refuse_are_refused_whole():
    with InMemoryKinesis() as kinesis:
        kinesis.create_stream('s')
        client = kinesis.client()
        too_big = b'x' * (1024 * 1024)  # with its key, over 1 MiB
        with pytest.raises(Exception, match='ValidationException'):
            client.put_records(
                StreamName='s',
                Records=[
                    {'PartitionKey': 'a', 'Data': b'{}'},
                    {'PartitionKey': 'b', 'Data': too_big},
                ],
            )
        assert kinesis.records() == []


@pytest.mark.parametrize(
    'args, message',
    [
        (('p-1', 'slow'), 'kind'),
        (('p-1', 'throttled', 0), 'times'),
        ((3, 'throttled'), 'partition key or a callable'),
    ],
)
def test_fail_refuses_what_it_cannot_script(args, message):
    with InMemoryKinesis() as kinesis:
        with pytest.raises(ValueError, match=message):
            kinesis.fail(*args)
