"""The policy moved out of `pipelines/` into the library: `beam_kinesis.job`, `.runners`,
`.backfill` and `.formats`, and the backfill's Python API `export_pair`."""

from __future__ import annotations

import json
import os

import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from beam_kinesis import job
from beam_kinesis.backfill import BackfillError, Snapshot, state_lock
from beam_kinesis.config import ConfigError, load_destination_config
from beam_kinesis.formats import format_of_name
from beam_kinesis.job_options import ExportOptions
from beam_kinesis.runners import is_dask, prepare_runner
from pipelines.backfill import export_pair

TOP = os.path.normpath(os.path.join(os.path.dirname(__file__), os.pardir))
DATA = os.path.join(TOP, 'testdata')
AS_OF = '2024-06-01T00:00:00Z'
CONFIG = os.path.join(DATA, 'destination.yaml')
PREVIOUS = Snapshot(os.path.join(DATA, 'previous.jsonl'), '2024-05-31T00:00:00Z')
CURRENT = Snapshot(os.path.join(DATA, 'current.jsonl'), AS_OF)


def _lines(folder) -> list[bytes]:
    return sorted(
        line
        for path in sorted(os.listdir(folder))
        for line in open(os.path.join(folder, path), 'rb').read().splitlines()
    )


def test_export_pair_exports_what_the_command_line_does(tmp_path):
    result = export_pair(
        PREVIOUS,
        CURRENT,
        ['--destination_config', CONFIG],
        dead_letter=str(tmp_path / 'dead'),
        output=str(tmp_path / 'out'),
    )
    assert result.status == job.EXIT_OK
    with open(os.path.join(DATA, 'expected_export.jsonl'), 'rb') as handle:
        expected = sorted(handle.read().splitlines())
    assert _lines(tmp_path / 'out') == expected
    assert result.exported == len(expected)
    # The pair's report goes beside its dead letters unless told otherwise.
    with open(tmp_path / 'dead' / 'run-report.json', encoding='utf-8') as handle:
        report = json.load(handle)
    assert report['current_records_read'] == result.counters['current_records_read'] > 0


def test_export_pair_takes_pipeline_options_and_a_first_run(tmp_path):
    options = PipelineOptions(['--destination_config', CONFIG, '--join_buckets', '8'])
    result = export_pair(
        None, CURRENT, options, dead_letter=str(tmp_path / 'dead'), output=str(tmp_path / 'out')
    )
    assert result.status == job.EXIT_OK
    assert result.exported == len(_lines(tmp_path / 'out')) > 0
    assert result.counters['exported_first_run'] == result.exported
    assert result.counters.get('previous_records_read', 0) == 0


def test_export_pair_refuses_options_out_of_range(tmp_path, capsys):
    options = PipelineOptions(['--destination_config', CONFIG, '--join_buckets', '0'])
    result = export_pair(
        PREVIOUS, CURRENT, options, dead_letter=str(tmp_path / 'dead'), output=str(tmp_path / 'out')
    )
    assert result.status == job.EXIT_START_FAILED
    assert '--join_buckets 0 must be an integer from 1' in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()


def test_failure_sentence_finds_the_jobs_own_error_in_a_traceback():
    buried = RuntimeError(
        'Pipeline failed\nTraceback (most recent call last):\n  File "x"\n'
        'KinesisWriteError: Stream profiles was deleted while writing '
        "[while running 'WriteToKinesis/Send']\nmore"
    )
    assert job.failure_sentence(buried) == 'Stream profiles was deleted while writing'
    assert job.failure_sentence(ValueError('first line\nsecond')) == 'first line'
    assert job.failure_sentence(ValueError('')) == 'ValueError'


def test_failure_status():
    assert job.failure_status(RuntimeError(f'x: {job.LEDGER_MESSAGE}: 3 lost')) == (
        job.EXIT_INPUT_MISMATCH
    )
    assert job.failure_status(RuntimeError('worker died')) == job.EXIT_FAILED


def test_one_sentence_is_one_bounded_line():
    assert job.one_sentence('a\n  b\tc ') == 'a b c'
    long = job.one_sentence('x' * 5000)
    assert len(long) == 1003 and long.endswith('...')


def test_refuse_empty_current(tmp_path):
    empty = tmp_path / 'empty.jsonl'
    empty.write_bytes(b'')
    with pytest.raises(ConfigError, match='holds no record'):
        job.refuse_empty_current(str(empty))
    job.refuse_empty_current(os.path.join(DATA, 'current.jsonl'))  # has records: no error


def test_aws_region_order():
    config = load_destination_config(CONFIG)
    assert (
        job.aws_region(PipelineOptions(['--aws_region', 'eu-west-3', '--region', 'x']), config)
        == 'eu-west-3'
    )
    assert job.aws_region(PipelineOptions(['--region', 'ap-south-1']), config) == 'ap-south-1'
    # Dataflow's --region is where the job runs, not where the stream is.
    dataflow = PipelineOptions(['--region', 'us-central1', '--runner', 'DataflowRunner'])
    assert job.aws_region(dataflow, config) == config.region


def test_run_config_needs_previous_for_previous_as_of():
    config = load_destination_config(CONFIG)
    options = PipelineOptions(['--previous_as_of', '2024-05-31T00:00:00Z']).view_as(ExportOptions)
    with pytest.raises(ConfigError, match='needs --previous'):
        job.run_config(options, config, AS_OF)


def test_prepare_runner_direct_and_portable(tmp_path, monkeypatch):
    direct = PipelineOptions(['--runner', 'DirectRunner'])
    prepare_runner(direct)
    assert direct.view_as(StandardOptions).runner == 'FnApiRunner'
    assert not is_dask(direct)
    monkeypatch.chdir(tmp_path)
    flink = PipelineOptions(
        [
            '--runner',
            'FlinkRunner',
            '--current',
            'snap/*.jsonl',
            '--output',
            's3://bucket/out',
            '--flink_master',
            'h:8081',
        ]
    )
    prepare_runner(flink.view_as(ExportOptions), ('current', 'output'))
    job_options = flink.view_as(ExportOptions)
    assert job_options.current == str(tmp_path / 'snap' / '*.jsonl')
    assert job_options.output == 's3://bucket/out'  # a URL is left as it is
    assert is_dask(PipelineOptions(['--runner', 'DaskRunner']))


@pytest.mark.parametrize(
    'name, fmt',
    [
        ('a.jsonl', 'jsonl'),
        ('a.JSON', 'jsonl'),
        ('a.ndjson.gz', 'jsonl'),
        ('a.avro', 'avro'),
        ('part-0.parquet', 'parquet'),
        ('x.pq', 'parquet'),
        ('a.csv', None),
        ('a.gz', None),
        ('parquet', None),
    ],
)
def test_format_of_name(name, fmt):
    assert format_of_name(name) == fmt


def test_state_lock_refuses_a_second_backfill(tmp_path):
    state = str(tmp_path / 'state.json')
    with state_lock(state):
        with pytest.raises(BackfillError, match='Another backfill is running'):
            with state_lock(state):
                pass
    with state_lock(state):  # released: taken again
        pass
