"""The export job writing to Kinesis: embedded by default, kinesalite and kinesis-local by URL."""

import glob
import logging
import os

import pytest

from pipelines import export_profiles
from tests.generated import generate_pair
from tests.kinesis_servers import assert_landed_once, free_port, read_back, target_args
from tests.testdata import TESTDATA_PAIR

TOP = os.path.normpath(os.path.join(os.path.dirname(__file__), os.pardir))
AS_OF = '2024-06-01T00:00:00Z'


def data(*parts):
    return os.path.join(TOP, 'testdata', *parts)


def golden():
    with open(data('expected_export.jsonl'), 'rb') as handle:
        return sorted(handle.read().splitlines())


def job_argv(tmp_path, server, stream, *extra, current=None, previous=None):
    return [
        '--current',
        current or data('current.jsonl'),
        '--previous',
        previous or data('previous.jsonl'),
        '--destination_config',
        data('destination.yaml'),
        '--as_of',
        AS_OF,
        '--dead_letter',
        str(tmp_path / 'dead'),
        *target_args(server.endpoint_url, stream, 'not-a-real-secret'),
        *extra,
    ]


def check_stream_holds(server, stream, expected_records):
    """Every expected record landed once, on its key's shard; nothing else landed."""
    records, shards = read_back(server, stream)
    by_key = {key: value for shard in records.values() for key, value in shard}
    assert sorted(by_key.values()) == sorted(expected_records)
    assert_landed_once(shards, records, by_key)
    return records


def test_job_exports_testdata_into_kinesalite(kinesalite, tmp_path, capsys, caplog):
    stream = kinesalite.create_stream(4)
    with caplog.at_level(logging.INFO, logger='beam_kinesis.kinesis'):
        status = export_profiles.run(job_argv(tmp_path, kinesalite, stream))
    assert status == export_profiles.EXIT_OK
    # The launch's check read the stream's shards; the sink starts at what they take.
    assert "Pacing the sink for the stream's 4 open shards: 4000 records/s" in caplog.text
    records = check_stream_holds(kinesalite, stream, golden())
    assert sum(len(shard) for shard in records.values()) == 19
    out = capsys.readouterr().out
    assert any(line.split() == ['records', 'sent', '19'] for line in out.splitlines())
    assert any(line.split() == ['put', 'records', 'calls', '1'] for line in out.splitlines())


def test_job_exports_a_generated_pair_into_kinesalite_completely(kinesalite, tmp_path):
    generated = generate_pair(tmp_path / 'generated', 4000, 3)
    stream = kinesalite.create_stream(3)
    argv = job_argv(
        tmp_path,
        kinesalite,
        stream,
        '--output',
        str(tmp_path / 'files'),
        '--max_in_flight',
        '4',
        '--max_batch_records',
        '100',
        current=str(generated / 'current' / '*.jsonl'),
        previous=str(generated / 'previous' / '*.jsonl'),
    )
    argv[argv.index('--destination_config') + 1] = str(generated / 'destination.yaml')
    assert export_profiles.run(argv) == export_profiles.EXIT_OK
    exported = [
        line
        for path in glob.glob(str(tmp_path / 'files' / 'exports*'))
        for line in open(path, 'rb').read().splitlines()
    ]
    assert len(exported) > 100
    check_stream_holds(kinesalite, stream, exported)


def test_job_exports_testdata_into_kinesis_local(kinesis_local, tmp_path):
    stream = kinesis_local.create_stream(2)
    assert export_profiles.run(job_argv(tmp_path, kinesis_local, stream)) == 0
    check_stream_holds(kinesis_local, stream, golden())


@pytest.mark.parametrize('run', ['first', 'again in the same process'])
def test_job_without_destination_flags_uses_the_embedded_kinesis(tmp_path, capsys, run):
    # moto keeps streams per process: the second run replaces the first run's stream.
    result = export_profiles.run_job(
        [
            *TESTDATA_PAIR,
            '--dead_letter',
            str(tmp_path / 'dead'),
        ]
    )
    out = capsys.readouterr().out
    assert (result.status, result.exported, result.dead_letters) == (0, 19, 0)
    assert 'writing to an embedded local Kinesis at http://127.0.0.1:' in out
    assert "Read back from the embedded stream 'profile-exports': 19 records" in out
    shard_counts = [
        int(line.split()[1]) for line in out.splitlines() if line.startswith('  shardId-')
    ]
    assert len(shard_counts) == 2 and sum(shard_counts) == 19


def test_unknown_stream_stops_the_job_before_reading(kinesalite, tmp_path, capsys):
    status = export_profiles.run(job_argv(tmp_path, kinesalite, 'no-such-stream'))
    err = capsys.readouterr().err.strip()
    assert status == export_profiles.EXIT_START_FAILED
    assert "'no-such-stream'" in err and 'was not found' in err and len(err.splitlines()) == 1
    assert not (tmp_path / 'dead').exists()


def test_unreachable_endpoint_stops_the_job(tmp_path, capsys):
    class Closed:
        endpoint_url = f'http://127.0.0.1:{free_port()}'

    argv = job_argv(
        tmp_path, Closed, 'stream', '--connect_timeout_seconds', '1', '--request_attempts', '1'
    )
    assert export_profiles.run(argv) == export_profiles.EXIT_START_FAILED
    assert 'unreachable' in capsys.readouterr().err


def test_the_secret_never_shows(kinesalite, tmp_path, capsys, caplog):
    secret = 'sEcReT-9f2b7c1e-do-not-print'
    stream = kinesalite.create_stream(1)
    argv = job_argv(tmp_path, kinesalite, stream, '--output', str(tmp_path / 'files'))
    argv[argv.index('--aws_secret_access_key') + 1] = secret
    with caplog.at_level(logging.DEBUG):
        assert export_profiles.run(argv) == 0
        credentials, rest = export_profiles._split_credentials(argv)
    captured = capsys.readouterr()
    assert credentials['aws_secret_access_key'] == secret and secret not in ' '.join(rest)
    options = export_profiles.PipelineOptions(rest)
    sink = export_profiles.kinesis_config(
        options.view_as(export_profiles.ExportOptions),
        export_profiles.load_destination_config(data('destination.yaml')),
        credentials,
    )
    shown = [
        captured.out,
        captured.err,
        caplog.text,
        repr(sink),
        str(sink),
        repr(options.display_data()),
        repr(options.get_all_options()),
    ]
    shown += [
        open(path, encoding='utf-8', errors='replace').read()
        for path in glob.glob(str(tmp_path / '**' / '*'), recursive=True)
        if os.path.isfile(path)
    ]
    assert not [text for text in shown if secret in text]


@pytest.mark.parametrize(
    'flag, value',
    [
        ('--read_timeout_seconds', '1e30'),
        ('--connect_timeout_seconds', 'inf'),
        ('--retry_deadline_seconds', 'nan'),
        ('--unreachable_after_requests', '0'),
    ],
)
def test_absurd_sink_options_stop_the_job_at_start_naming_the_option(tmp_path, capsys, flag, value):
    # Before, a 1e30 timeout passed and was reported as an unreachable endpoint.
    endpoint = f'http://127.0.0.1:{free_port()}'
    status = export_profiles.run(
        [
            '--current',
            data('current.jsonl'),
            '--destination_config',
            data('destination.yaml'),
            '--stream_name',
            's',
            '--endpoint_url',
            endpoint,
            flag,
            value,
        ]
    )
    err = capsys.readouterr().err.strip()
    assert status == export_profiles.EXIT_START_FAILED
    assert err.startswith('beam-kinesis-export: Sink option: ' + flag.lstrip('-')), err
    assert 'is unreachable' not in err and len(err.splitlines()) == 1


def test_a_misspelled_option_is_an_error(tmp_path, capsys):
    status = export_profiles.run(
        [
            '--current',
            data('current.jsonl'),
            '--destination_config',
            data('destination.yaml'),
            '--output',
            str(tmp_path / 'out'),
            '--checkpoint_dir',
            str(tmp_path / 'checkpoint'),
        ]
    )
    assert status == export_profiles.EXIT_START_FAILED
    assert (
        'beam-kinesis-export: Unknown option --checkpoint_dir (did you mean --checkpoint?); '
        'see --help.'
    ) in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()


def test_checkpoint_needs_an_as_of_and_a_stream(kinesalite, tmp_path, capsys):
    stream = kinesalite.create_stream(1)
    checkpoint = str(tmp_path / 'checkpoint')
    without_as_of = [
        arg
        for arg in job_argv(tmp_path, kinesalite, stream, '--checkpoint', checkpoint)
        if arg != AS_OF and arg != '--as_of'
    ]
    files_only = [
        '--current',
        data('current.jsonl'),
        '--as_of',
        AS_OF,
        '--destination_config',
        data('destination.yaml'),
        '--output',
        str(tmp_path / 'out'),
        '--checkpoint',
        checkpoint,
    ]

    assert export_profiles.run(without_as_of) == export_profiles.EXIT_START_FAILED
    assert '--checkpoint needs an explicit --as_of' in capsys.readouterr().err
    assert export_profiles.run(files_only) == export_profiles.EXIT_START_FAILED
    assert '--checkpoint records what a Kinesis stream acknowledged' in capsys.readouterr().err
    assert not (tmp_path / 'checkpoint').exists() and not (tmp_path / 'out').exists()


def test_a_run_with_a_checkpoint_then_again_sends_nothing_twice(kinesalite, tmp_path, capsys):
    stream = kinesalite.create_stream(2)
    argv = job_argv(tmp_path, kinesalite, stream, '--checkpoint', str(tmp_path / 'checkpoint'))

    assert export_profiles.run(argv) == export_profiles.EXIT_OK
    first = capsys.readouterr().out
    assert export_profiles.run(argv) == export_profiles.EXIT_OK
    second = capsys.readouterr().out

    check_stream_holds(kinesalite, stream, golden())  # each record exactly once
    assert 'a first attempt; every acknowledged record was recorded there' in first
    assert 'resumed; 19 records acknowledged by an earlier attempt of this run' in second
    assert any(line.split() == ['records', 'sent', '0'] for line in second.splitlines())
