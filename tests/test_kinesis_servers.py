"""WriteToKinesis against independent local Kinesis servers: kinesalite and kinesis-local.

The servers are started by the fixtures of `tests/kinesis_servers.py` (node child processes on
127.0.0.1). Every test reads the stream back with GetRecords and checks that each record
landed exactly once, on the shard whose hash-key range holds the MD5 of its partition key.
"""

from __future__ import annotations

import uuid

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline

from beam_kinesis.kinesis import (
    KinesisStreamError,
    WriteToKinesis,
    check_stream,
    partition_key_for,
)
from tests.kinesis_servers import assert_landed_once, read_back

_MIB = 1024 * 1024
# Dead letters of each pipeline run, by run; the runner is in-process, so the collecting step
# (pickled by reference, as a module-level class) appends here.
_LETTERS: dict[str, list] = {}


class _Collect:
    def __init__(self) -> None:
        self.name = uuid.uuid4().hex
        _LETTERS[self.name] = []

    def __call__(self, letter: dict) -> None:
        _LETTERS[self.name].append(letter)


def write(config, elements):
    """Runs WriteToKinesis over `elements`; returns (dead letters, sink counters)."""
    collect = _Collect()
    pipeline = TestPipeline(runner='FnApiRunner')
    dead = pipeline | beam.Create(elements) | WriteToKinesis(config)
    dead | beam.Map(collect)
    result = pipeline.run()
    result.wait_until_finish()
    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query(MetricsFilter().with_namespace('beam_kinesis'))['counters']
    }
    return _LETTERS.pop(collect.name), counters


def test_kinesalite_receives_thousands_of_records_once_each_on_their_shards(kinesalite):
    stream = kinesalite.create_stream(shard_count=4)
    elements = [(f'profile-{i:05d}', b'{"n":%d,"pad":"%s"}' % (i, b'x' * 200)) for i in range(3000)]
    # The longest key Kinesis takes as is (256 characters of 3 UTF-8 bytes), and one it hashes.
    elements.append(('\u4e2d' * 256, b'{"wide":true}'))
    elements.append(('k' * 300, b'{"long":true}'))
    expected = {partition_key_for(key): data for key, data in elements}

    letters, counters = write(
        kinesalite.config(stream, max_in_flight=4, max_batch_records=100), elements
    )

    assert letters == []
    assert counters['records_sent'] == len(elements)
    assert counters['put_records_calls'] == 31
    landed, shards = read_back(kinesalite, stream)
    assert sum(len(records) for records in landed.values()) == len(elements)
    assert all(landed.values()), 'every shard should have received records'
    assert_landed_once(shards, landed, expected)


def test_kinesalite_unknown_stream_fails_the_check(kinesalite):
    with pytest.raises(KinesisStreamError, match="'no-such-stream' in region 'us-east-1' was not"):
        check_stream(kinesalite.config('no-such-stream'))


def test_kinesis_local_receives_hundreds_of_records_once_each(kinesis_local):
    stream = kinesis_local.create_stream(shard_count=2)
    elements = [(f'profile-{i:04d}', b'{"n":%d}' % i) for i in range(300)]

    letters, counters = write(
        kinesis_local.config(stream, max_in_flight=3, max_batch_records=50), elements
    )

    assert letters == []
    assert counters['records_sent'] == 300
    landed, shards = read_back(kinesis_local, stream)
    assert_landed_once(shards, landed, dict(elements))


def test_kinesis_local_stream_raised_with_update_max_record_size_takes_big_records(kinesis_local):
    stream = kinesis_local.create_stream(shard_count=1)
    admin = kinesis_local.client()
    arn = admin.describe_stream_summary(StreamName=stream)['StreamDescriptionSummary']['StreamARN']
    admin.update_max_record_size(StreamARN=arn, MaxRecordSizeInKiB=2048)
    admin.close()
    big = ('big-profile', b'b' * (3 * _MIB // 2))
    elements = [big, ('small-1', b'{}'), ('small-2', b'{}')]

    letters, counters = write(kinesis_local.config(stream, max_record_bytes=2 * _MIB), elements)

    assert letters == []
    assert counters['records_sent'] == 3
    landed, shards = read_back(kinesis_local, stream)
    assert_landed_once(shards, landed, dict(elements))


def test_kinesis_local_rejecting_one_oversize_entry_makes_one_dead_letter(kinesis_local):
    # The client-side limit (2 MiB) is above the stream's (1 MiB): the server rejects the big
    # entry of the PutRecords request on its own, and only that record is dead-lettered.
    stream = kinesis_local.create_stream(shard_count=1)
    small = [(f'small-{i}', b'{"i":%d}' % i) for i in range(5)]
    big = ('too-big', b'z' * (_MIB + 100 * 1024))

    letters, counters = write(
        kinesis_local.config(stream, max_record_bytes=2 * _MIB), small + [big]
    )

    assert [letter['source'] for letter in letters] == ['profile too-big']
    assert 'InvalidArgumentException' in letters[0]['error']
    assert 'max record size' in letters[0]['error']
    assert counters['put_records_calls'] == 1  # one PutRecords, answered entry by entry
    assert counters['records_sent'] == 5
    assert counters['records_dead_lettered'] == 1
    landed, shards = read_back(kinesis_local, stream)
    assert_landed_once(shards, landed, dict(small))


def test_kinesis_local_check_finds_wrong_region(kinesis_local):
    stream = kinesis_local.create_stream(shard_count=1)

    assert check_stream(kinesis_local.config(stream))['StreamStatus'] == 'ACTIVE'
    wrong = kinesis_local.config(stream)
    wrong = type(wrong)(**{**wrong.__dict__, 'region': 'eu-west-1'})
    with pytest.raises(KinesisStreamError, match=f"'{stream}' in region 'eu-west-1' was not"):
        check_stream(wrong)
