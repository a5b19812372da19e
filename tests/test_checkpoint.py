"""Tests of the checkpoint: what Kinesis acknowledged, recorded so that a rerun sends the rest.

Plain pytest for the checkpoint's files; the sink with a checkpoint through TestPipeline and
`assert_that`, its client the scripted double of the sink tests.
"""

from __future__ import annotations

import json
import os

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_kinesis.checkpoint import (
    Acknowledged,
    Checkpoint,
    CheckpointError,
    open_checkpoint,
    record_digest,
    run_identity,
)
from beam_kinesis.kinesis import KinesisWriteError, WriteToKinesis, _PutRecordsFn
from tests.test_kinesis_sink import (
    ClientFactory,
    ScriptedKinesis,
    config,
    fail_keys,
    records,
    run_fn,
)

IDENTITY = {'options': {'as_of': '2024-06-01T00:00:00Z'}, 'inputs': {'current': [['a', 1, 2]]}}


def ack_files(directory) -> list[str]:
    return sorted(os.listdir(os.path.join(directory, 'acknowledged')))


def test_digest_depends_on_key_and_data_and_is_stable():
    assert record_digest('p-1', b'{}') == record_digest('p-1', b'{}')
    assert len(record_digest('p-1', b'{}')) == 16
    assert record_digest('p-1', b'{}') != record_digest('p-2', b'{}')
    assert record_digest('p-1', b'{}') != record_digest('p-1', b'{ }')
    # The key is length-prefixed: moving bytes between key and data changes the digest.
    assert record_digest('ab', b'c') != record_digest('a', b'bc')


def test_acknowledged_set_finds_exactly_its_digests_even_with_trailing_zero_bytes():
    digests = [record_digest(f'p-{i}', b'x') for i in range(1000)]
    zeros = b'\x01' * 14 + b'\x00\x00'
    found = Acknowledged(digests[:500] + [zeros, digests[0]])
    assert len(found) == 501
    assert all(digest in found for digest in digests[:500])
    assert not any(digest in found for digest in digests[500:])
    assert zeros in found and zeros[:-1] + b'\x01' not in found
    assert b'\x01' * 14 + b'\x00\x01' not in found
    assert record_digest('x', b'') not in Acknowledged()


def test_first_open_writes_a_manifest_and_a_rerun_finds_what_was_recorded(tmp_path):
    directory = str(tmp_path / 'checkpoint')
    checkpoint = open_checkpoint(directory, IDENTITY)
    assert checkpoint.acknowledged_before == 0
    manifest = json.loads((tmp_path / 'checkpoint' / 'manifest.json').read_text())
    assert manifest['identity'] == IDENTITY and manifest['fingerprint'] == checkpoint.fingerprint

    recorder = checkpoint.recorder()
    recorder.record([record_digest('p-1', b'a'), record_digest('p-2', b'b')])
    recorder.record([])  # nothing acknowledged: no file
    checkpoint.recorder().record([record_digest('p-3', b'c')])
    assert len(ack_files(directory)) == 2

    again = open_checkpoint(directory, json.loads(json.dumps(IDENTITY)))
    assert again == Checkpoint(directory, checkpoint.fingerprint, acknowledged_before=3)
    loaded = again.load()
    assert record_digest('p-1', b'a') in loaded and record_digest('p-3', b'c') in loaded
    assert record_digest('p-4', b'd') not in loaded


def test_a_torn_file_is_ignored_so_its_records_are_sent_again(tmp_path, caplog):
    directory = str(tmp_path / 'checkpoint')
    checkpoint = open_checkpoint(directory, IDENTITY)
    checkpoint.recorder().record([record_digest('p-1', b'a'), record_digest('p-2', b'b')])
    checkpoint.recorder().record([record_digest('p-3', b'c')])
    torn = os.path.join(directory, 'acknowledged', ack_files(directory)[0])
    with open(torn, 'rb') as handle:
        content = handle.read()
    with open(torn, 'wb') as handle:  # a kill in the middle of the write
        handle.write(content[: len(content) - 7])

    loaded = checkpoint.load()

    assert len(loaded) in (1, 2)  # whichever file was torn loses its records, not the other
    assert 'incomplete' in caplog.text


def test_a_checkpoint_of_another_run_is_refused_naming_the_difference(tmp_path):
    directory = str(tmp_path / 'checkpoint')
    open_checkpoint(directory, IDENTITY)
    other = {'options': {'as_of': '2024-06-02T00:00:00Z'}, 'inputs': IDENTITY['inputs']}

    with pytest.raises(
        CheckpointError,
        match=r'belongs to another run \(options.as_of was '
        r'"2024-06-01T00:00:00Z", is now '
        r'"2024-06-02T00:00:00Z"\)',
    ) as raised:
        open_checkpoint(directory, other)
    assert len(str(raised.value).splitlines()) == 1


def test_acknowledgements_without_a_manifest_are_refused(tmp_path):
    directory = str(tmp_path / 'checkpoint')
    open_checkpoint(directory, IDENTITY).recorder().record([record_digest('p', b'x')])
    os.remove(os.path.join(directory, 'manifest.json'))

    with pytest.raises(CheckpointError, match='no manifest.json'):
        open_checkpoint(directory, IDENTITY)


def test_an_unwritable_checkpoint_is_refused_at_start(tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('not a directory')

    with pytest.raises(CheckpointError, match='cannot be'):
        open_checkpoint(str(blocker / 'checkpoint'), IDENTITY)


def test_run_identity_describes_files_config_and_options(tmp_path):
    data = tmp_path / 'current.jsonl'
    data.write_text('{"_id": "p"}\n')
    cfg = tmp_path / 'destination.yaml'
    cfg.write_text('stream: s\n')
    identity = run_identity({'current': [str(data)]}, str(cfg), {'as_of': 'T'}, {'stream': 's'})
    assert identity['inputs']['current'][0][:2] == [str(data), data.stat().st_size]
    cfg.write_text('stream: t\n')
    assert (
        run_identity({'current': [str(data)]}, str(cfg), {'as_of': 'T'}, {'stream': 's'})
        != identity
    )


# ---------------------------------------------------------------------------------------------
# The sink with a checkpoint


def test_the_sink_records_acknowledged_records_and_skips_them_next_time(tmp_path):
    checkpoint = open_checkpoint(str(tmp_path / 'checkpoint'), IDENTITY)
    elements = records(30)
    # p-00007 is rejected: a dead letter, not acknowledged, so the rerun sends it again.
    first = ScriptedKinesis(fail_keys({'p-00007': 'InvalidArgumentException'}))
    letters = run_fn(
        _PutRecordsFn(config(max_batch_records=10), lambda _: first, checkpoint=checkpoint),
        elements,
    )
    assert [letter['source'] for letter in letters] == ['profile p-00007']

    again = open_checkpoint(str(tmp_path / 'checkpoint'), IDENTITY)
    assert again.acknowledged_before == 29
    second = ScriptedKinesis()
    assert run_fn(_PutRecordsFn(config(), lambda _: second, checkpoint=again), elements) == []
    assert second.sent() == [elements[7]]


def test_a_partly_acknowledged_answer_records_only_what_was_acknowledged(tmp_path):
    checkpoint = open_checkpoint(str(tmp_path / 'checkpoint'), IDENTITY)
    client = ScriptedKinesis(fail_keys({'p-00001': 'ProvisionedThroughputExceededException'}))
    fn = _PutRecordsFn(config(), lambda _: client, checkpoint=checkpoint)
    fn.setup()
    recorded = []
    original = fn._recorder.record
    fn._recorder.record = lambda digests: (recorded.append(list(digests)), original(digests))
    try:
        fn.start_bundle()
        for element in records(3):
            list(fn.process(element))
        list(fn.finish_bundle())
    finally:
        fn.teardown()

    # First answer: p-00000 and p-00002 acknowledged, recorded before p-00001 is resent.
    assert recorded == [
        [record_digest('p-00000', b'x' * 10), record_digest('p-00002', b'x' * 10)],
        [record_digest('p-00001', b'x' * 10)],
    ]


def test_a_checkpoint_that_cannot_be_written_stops_the_job(tmp_path):
    checkpoint = open_checkpoint(str(tmp_path / 'checkpoint'), IDENTITY)
    # A file where the acknowledgements go: no write can succeed, whoever runs the test.
    (tmp_path / 'checkpoint' / 'acknowledged').write_text('in the way')
    fn = _PutRecordsFn(config(), lambda _: ScriptedKinesis(), checkpoint=checkpoint)

    with pytest.raises(KinesisWriteError, match='checkpoint .* could not be written'):
        run_fn(fn, records(3))


def test_write_to_kinesis_with_a_checkpoint_in_a_pipeline(tmp_path):
    directory = str(tmp_path / 'checkpoint')
    elements = records(12)
    open_checkpoint(directory, IDENTITY).recorder().record(
        [record_digest(key, data) for key, data in elements[:5]]
    )
    checkpoint = open_checkpoint(directory, IDENTITY)
    client = ScriptedKinesis()

    pipeline = TestPipeline(runner='FnApiRunner')
    letters = (
        pipeline
        | beam.Create(elements)
        | WriteToKinesis(config(), client_factory=ClientFactory(client), checkpoint=checkpoint)
    )
    assert_that(letters, equal_to([]))
    result = pipeline.run()
    result.wait_until_finish()

    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query(MetricsFilter().with_namespace('beam_kinesis'))['counters']
    }
    assert counters['records_already_acknowledged'] == 5
    assert counters['records_sent'] == 7
    assert sorted(client.sent()) == sorted(elements[5:])
    assert len(open_checkpoint(directory, IDENTITY).load()) == 12


def test_write_to_kinesis_refuses_a_checkpoint_that_is_not_one():
    with pytest.raises(ValueError, match='checkpoint must be a Checkpoint'):
        WriteToKinesis(config(), checkpoint='/tmp/somewhere')
