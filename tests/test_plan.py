"""`beam-kinesis plan` (beam_kinesis.plan) and the shard model it rests on (beam_kinesis.shards):
durations, shard maps, the PlanSend combiner, the shard count for --within, and the command
on testdata, on a kinesalite stream's own shard map, and with bad options."""

from __future__ import annotations

import hashlib
import random
import re
import subprocess
import sys
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import BeamAssertException, assert_that

from beam_kinesis.plan import (
    HISTOGRAM_BITS,
    PlanSend,
    SendPlan,
    parse_duration,
    shards_within,
)
from beam_kinesis.shards import (
    BURST_SECONDS,
    BYTES_PER_SHARD_SECOND,
    HASH_KEY_SPACE,
    RECORDS_PER_SHARD_SECOND,
    ShardMap,
    even_shards,
    shard_seconds,
)
from tests.kinesis_servers import free_port, read_back, shard_of, target_args

REPO = Path(__file__).resolve().parents[1]
TESTDATA = REPO / 'testdata'
AS_OF = '2024-06-01T00:00:00Z'
# Kinesalite takes any key pair; this one is distinctive enough to look for in the output.
SECRET = 'planSecretKey/DoNotPrint+123'


# Durations.


@pytest.mark.parametrize(
    'text, seconds',
    [
        ('90s', 90),
        ('10m', 600),
        ('2h', 7200),
        ('1h30m', 5400),
        ('1.5h', 5400),
        ('1d', 86400),
        (' 45S ', 45),
    ],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize('text', ['', '10', 'ten minutes', '10x', '0s', '-5m', '5m later'])
def test_bad_durations_are_one_sentence(text):
    with pytest.raises(ValueError, match=r'^--within .*(not a duration|longer than zero)'):
        parse_duration(text)


# The shard model.


def test_a_shard_takes_the_slower_of_its_two_limits_less_its_burst():
    assert shard_seconds(0, 0) == 0
    assert shard_seconds(RECORDS_PER_SHARD_SECOND // 2, 100) == 0  # within the burst
    records = 10 * RECORDS_PER_SHARD_SECOND
    assert shard_seconds(records, 10) == pytest.approx(10 - BURST_SECONDS)
    size = 30 * BYTES_PER_SHARD_SECOND
    assert shard_seconds(records, size) == pytest.approx(30 - BURST_SECONDS)


@pytest.mark.parametrize('count', [1, 2, 3, 7, 100])
def test_an_even_split_covers_the_hash_key_space_and_routes_as_kinesis(count):
    shards = even_shards(count)
    ranges = [
        (int(s['HashKeyRange']['StartingHashKey']), int(s['HashKeyRange']['EndingHashKey']))
        for s in shards
    ]
    assert ranges[0][0] == 0 and ranges[-1][1] == HASH_KEY_SPACE - 1
    assert all(end + 1 == start for (_, end), (start, _) in zip(ranges, ranges[1:]))
    shard_map = ShardMap(shards)
    keys = [f'key-{n}' for n in range(300)] + ['ü-ключ', 'x' * 256]
    assert [shard_map.shard_of(key) for key in keys] == [shard_of(shards, key) for key in keys]


def test_closed_shards_take_no_records_and_a_map_needs_an_open_one():
    shards = even_shards(2)
    closed = dict(
        shards[0], SequenceNumberRange={'StartingSequenceNumber': '1', 'EndingSequenceNumber': '2'}
    )
    assert ShardMap([closed, shards[1]]).shard_ids == [shards[1]['ShardId']]
    with pytest.raises(ValueError, match='at least one open shard'):
        ShardMap([closed])
    with pytest.raises(ValueError):
        even_shards(0)


# PlanSend in a pipeline.


def _partition_key(key: str) -> str:
    """The sink's partition key, written out here: the key, or sha256 of a long one."""
    if len(key.encode('utf-16-le')) // 2 <= 256:
        return key
    return 'sha256:' + hashlib.sha256(key.encode('utf-8')).hexdigest()


def _records(count: int, seed: int = 7) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    records = [
        (f'p-{n:05d}', b'{"a":"%s"}' % (b'x' * rng.randrange(10, 1500))) for n in range(count)
    ]
    records.append(('k' * 300, b'{"long":"key"}'))  # hashed to a 71-character partition key
    return records


def _expected(records, shards: list[dict], limit: int) -> dict:
    totals: dict[str, list[int]] = {}
    sent = over = size_sent = 0
    for key, data in records:
        partition_key = _partition_key(key)
        size = len(data) + len(partition_key.encode('utf-8'))
        if size > limit:
            over += 1
            continue
        sent += 1
        size_sent += size
        shard = totals.setdefault(shard_of(shards, partition_key), [0, 0])
        shard[0] += 1
        shard[1] += size
    largest = max(records, key=lambda r: len(r[1]) + len(_partition_key(r[0])))
    return {
        'records': sent,
        'bytes': size_sent,
        'over_limit': over,
        'shards': totals,
        'largest_key': largest[0],
    }


def test_plan_send_totals_per_shard_in_a_pipeline():
    records = _records(400)
    shards = even_shards(3)
    limit = 1200
    expected = _expected(records, shards, limit)
    assert 0 < expected['over_limit'] < len(records)

    def check(plans):
        if len(plans) != 1:
            raise BeamAssertException(f'{len(plans)} plans, not one')
        plan = plans[0]
        found = {
            'records': plan.records,
            'bytes': plan.bytes,
            'over_limit': plan.over_limit,
            'shards': plan.shards,
            'largest_key': plan.largest_key,
        }
        if found != expected:
            raise BeamAssertException(f'{found} != {expected}')
        if int(plan.histogram_records.sum()) != plan.records:
            raise BeamAssertException('the histogram does not hold every record')

    with TestPipeline() as pipeline:
        plans = (
            pipeline
            | beam.Create(records, reshuffle=False)
            | beam.Reshuffle()  # several bundles, so accumulators are merged
            | PlanSend(ShardMap(shards), max_record_bytes=limit)
        )
        assert_that(plans, check)


def test_plan_send_of_nothing_is_an_empty_plan():
    def check(plans):
        if [(plan.records, plan.bytes, plan.shards) for plan in plans] != [(0, 0, {})]:
            raise BeamAssertException(f'{plans}')

    with TestPipeline() as pipeline:
        assert_that(
            pipeline
            | beam.Create([], reshuffle=False).with_output_types(tuple[str, bytes])
            | PlanSend(ShardMap.even(2)),
            check,
        )


def test_plan_send_is_typed_for_keyed_records():
    from apache_beam.typehints.decorators import TypeCheckError

    with pytest.raises(TypeCheckError):
        with TestPipeline() as pipeline:
            _ = pipeline | beam.Create([1, 2]) | PlanSend(ShardMap.even(2))


def test_plan_send_refuses_what_is_not_a_shard_map():
    with pytest.raises(ValueError, match='ShardMap'):
        PlanSend(even_shards(2))
    with pytest.raises(ValueError, match='max_record_bytes'):
        PlanSend(ShardMap.even(2), max_record_bytes=0)


# What-if shard counts from the histogram.


def _plan_of(records) -> SendPlan:
    plan = SendPlan()
    shard_map = ShardMap.even(1)
    for key, data in records:
        partition_key = _partition_key(key)
        plan.add(
            key,
            partition_key,
            shard_map.shard_of(partition_key),
            len(data) + len(partition_key.encode('utf-8')),
            1 << 20,
        )
    return plan


@pytest.mark.parametrize('count', [1, 2, 3, 7, 64, 500])
def test_even_loads_match_routing_each_record(count):
    records = _records(3000, seed=count)
    plan = _plan_of(records)
    exact = _expected(records, even_shards(count), 1 << 20)['shards']
    shard_ids = [shard['ShardId'] for shard in even_shards(count)]
    loads, sizes = plan.even_loads(count)
    assert round(loads.sum()) == plan.records and round(sizes.sum()) == plan.bytes
    # A range edge inside a bucket shares it in proportion: at most a bucket's records off
    # at each of its two edges (none when the edges fall on bucket edges: powers of two).
    slack = 0 if count & (count - 1) == 0 else 2 * int(plan.histogram_records.max())
    for shard_id, load in zip(shard_ids, loads.tolist()):
        assert abs(load - exact.get(shard_id, [0, 0])[0]) <= slack
    assert len(plan.histogram_records) == 1 << HISTOGRAM_BITS


def test_shards_within_is_the_fewest_that_meet_the_time():
    # 60,000 records spread like profile keys: about 60 s on one shard.
    plan = _plan_of([(f'profile-{n}', b'z' * 100) for n in range(60_000)])
    for seconds in (120, 30, 9.5, 2):
        needed = shards_within(plan, seconds)
        assert plan.even_seconds(needed) <= seconds
        assert needed == 1 or plan.even_seconds(needed - 1) > seconds
    assert shards_within(plan, 1, most=5) is None


def test_a_plan_survives_its_trip_from_the_pipeline():
    plan = _plan_of(_records(200))
    back = SendPlan.from_json(plan.to_json())
    assert (back.records, back.bytes, back.shards, back.largest_key) == (
        plan.records,
        plan.bytes,
        plan.shards,
        plan.largest_key,
    )
    assert (back.histogram_records == plan.histogram_records).all()
    assert (back.histogram_bytes == plan.histogram_bytes).all()


# The command.


def _plan(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, '-m', 'beam_kinesis.plan', *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _inputs(*extra: str) -> list[str]:
    return [
        '--current',
        str(TESTDATA / 'current.jsonl'),
        '--previous',
        str(TESTDATA / 'previous.jsonl'),
        '--destination_config',
        str(TESTDATA / 'destination.yaml'),
        '--as_of',
        AS_OF,
        *extra,
    ]


def _figure(text: str, label: str) -> int:
    found = re.search(rf'^  {re.escape(label)}\s+([\d,]+)', text, re.MULTILINE)
    assert found, f'no {label!r} in:\n{text}'
    return int(found.group(1).replace(',', ''))


def _per_shard(text: str) -> dict[str, int]:
    return {
        shard: int(count.replace(',', ''))
        for shard, count in re.findall(r'^  (shardId-\d+)\s+([\d,]+) records', text, re.MULTILINE)
    }


EXPECTED_EXPORTS = len((TESTDATA / 'expected_export.jsonl').read_text().splitlines())


def test_plan_on_testdata_prints_what_the_run_would_send_and_writes_nothing(tmp_path):
    result = _plan(
        *_inputs(
            '--shards',
            '4',
            '--within',
            '10m',
            '--output',
            str(tmp_path / 'out'),
            '--dead_letter',
            str(tmp_path / 'dead'),
        )
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    exported = sum(
        _figure(out, f'by {reason}')
        for reason in (
            'segment change',
            'newly mapped',
            'identity change',
            'attribute change',
            'deletion',
            'first run',
        )
    )
    assert exported == EXPECTED_EXPORTS == _figure(out, 'records to send')
    assert _figure(out, 'over the 1,048,576-byte record limit') == 0
    shards = _per_shard(out)
    assert len(shards) == 4 and sum(shards.values()) == EXPECTED_EXPORTS
    assert 'assumed: a new stream of 4 shards' in out
    assert re.search(
        r'^Within 10m: met by this stream; an evenly split stream needs 1 shard ', out, re.MULTILINE
    )
    assert '--output not used by a plan' in out
    assert not (tmp_path / 'out').exists() and not (tmp_path / 'dead').exists()
    assert 'Traceback' not in result.stderr


def test_records_over_the_size_limit_are_counted_not_planned():
    result = _plan(*_inputs('--max_record_bytes', '1'))
    assert result.returncode == 0, result.stderr
    assert _figure(result.stdout, 'over the 1-byte record limit') == EXPECTED_EXPORTS
    assert _figure(result.stdout, 'records to send') == 0
    assert 'a new stream of 1 shard' in result.stdout  # no --shards, no stream: one shard


def test_plan_reads_the_streams_shard_map_and_the_send_lands_as_planned(kinesalite, tmp_path):
    stream = kinesalite.create_stream(3)
    target = [
        *kinesalite.target_args(stream, SECRET),
    ]
    planned = _plan(*_inputs(*target, '--shards', '5'))
    assert planned.returncode == 0, planned.stderr
    assert f"the shard map of stream '{stream}' (ListShards); --shards 5 not used" in (
        planned.stdout
    )
    sent = subprocess.run(
        [
            sys.executable,
            '-m',
            'pipelines.export_profiles',
            *_inputs(*target, '--dead_letter', str(tmp_path / 'dead')),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert sent.returncode == 0, sent.stderr
    landed, shards = read_back(kinesalite, stream)
    assert _per_shard(planned.stdout) == {
        shard['ShardId']: len(landed.get(shard['ShardId'], [])) for shard in shards
    }
    assert SECRET not in planned.stdout + planned.stderr


def test_an_unreadable_stream_falls_back_to_an_even_map_without_showing_secrets():
    result = _plan(
        *_inputs(
            *target_args(f'http://127.0.0.1:{free_port()}', 'nowhere', SECRET),
            '--shards',
            '2',
        )
    )
    assert result.returncode == 0, result.stderr
    assert "the shard map of 'nowhere' could not be read" in result.stdout
    assert 'a new stream of 2 shards' in result.stdout and len(_per_shard(result.stdout)) == 2
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.parametrize(
    'args, says',
    [
        (['--shards', '0'], '--shards 0 must be from 1'),
        (['--within', '10x'], "--within '10x' is not a duration"),
        (['--within', '0s'], 'must be longer than zero'),
        (['--max_retires', '3'], 'Unknown option --max_retires'),
        (['--max_batch_records', '501'], 'max_batch_records'),
    ],
)
def test_bad_options_stop_with_one_sentence(args, says):
    result = _plan(*_inputs(*args))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith('beam-kinesis plan')]
    assert len(lines) == 1 and says in lines[0], result.stderr
    assert 'Traceback' not in result.stderr and result.stdout == ''


def test_missing_inputs_stop_with_one_sentence():
    result = _plan('--destination_config', str(TESTDATA / 'destination.yaml'))
    assert result.returncode == 2 and '--current must be given' in result.stderr
