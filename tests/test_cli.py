"""The `beam-kinesis` command: subcommands, grouped help, and options refused at start.

Subprocess runs (`python -m beam_kinesis ...`) check what a user sees: exit status 2 and one
sentence on stderr, never a traceback. The rest call `cli.run` or the option functions in
the process, which is quicker and shows the same text.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_kinesis import cli
from beam_kinesis.config import ConfigError
from beam_kinesis.job_options import (
    ExportOptions,
    OptionsError,
    did_you_mean,
    parse_job_options,
    unknown_arguments,
)
from beam_kinesis.kinesis import KinesisConfig
from beam_kinesis.sink_options import KinesisSinkOptions, split_credentials
from tests.testdata import TESTDATA_PAIR

TOP = os.path.normpath(os.path.join(os.path.dirname(__file__), os.pardir))
DATA = os.path.join(TOP, 'testdata')
BASE = [
    '--current',
    os.path.join(DATA, 'current.jsonl'),
    '--destination_config',
    os.path.join(DATA, 'destination.yaml'),
]
SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'


def _cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, '-m', 'beam_kinesis', *args],
        cwd=TOP,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _sentences(err: str) -> list[str]:
    """stderr without Beam's import-time warning about apitools (not the job's)."""
    return [line for line in err.splitlines() if line and 'apitools' not in line]


def test_help_lists_every_subcommand():
    done = _cli('--help')
    assert done.returncode == 0, done.stderr
    for name in ('export', 'backfill', 'plan', 'check', 'policy', 'convert'):
        assert f'\n  {name} ' in done.stdout, name


def test_no_subcommand_prints_the_usage_and_exits_2():
    done = _cli()
    assert done.returncode == 2 and done.stdout.startswith('usage: beam-kinesis COMMAND')


def test_export_help_groups_the_job_options_and_points_at_beams():
    done = _cli('export', '--help')
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert text.startswith('usage: beam-kinesis export')
    groups = [
        text.index(title) for title in ('\ninput (', '\ndestination (', '\nsink (', '\nrunner (')
    ]
    assert groups == sorted(groups)
    for flag in (
        '--current',
        '--destination_config',
        '--stream_name',
        '--max_retries',
        '--join_buckets',
        '--aws_secret_access_key',
    ):
        assert flag in text, flag
    # Where Beam's own options are described (they are not listed here).
    assert 'apache_beam.options.pipeline_options' in text and '--help_beam' in text
    assert '--direct_running_mode' not in text  # Beam's options are not listed one by one


def test_help_beam_lists_beams_own_options():
    text = cli_output(['export', '--help_beam'])
    assert '--runner' in text and '--direct_num_workers' in text and '--flink_master' in text


def cli_output(argv, capsys=None):
    done = _cli(*argv)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize(
    'args, sentence',
    [
        (['--join_buckets', '0'], '--join_buckets 0 must be an integer from 1 to'),
        (['--output_shards', '0'], '--output_shards 0 must be an integer from 1 to'),
        (['--embedded_shards', '0'], '--embedded_shards 0 must be an integer from 1 to'),
        (['--max_retries', '-1'], 'Sink option: max_retries -1 must be an integer from 0 to 100.'),
        (['--key_field', 'a..b'], "--key_field 'a..b' is not a dotted path"),
        (['--max_retires', '3'], 'Unknown option --max_retires (did you mean --max_retries?)'),
        (['--stream-name', 'x'], 'Unknown option --stream-name (did you mean --stream_name?)'),
        (['--out', 'somewhere'], 'Unknown option --out (did you mean --output?)'),
        (['--join_buckets', 'many'], "--join_buckets: invalid int value: 'many'"),
        (['stray'], "Unexpected argument 'stray'"),
    ],
)
def test_bad_options_stop_export_with_one_sentence(tmp_path, args, sentence):
    done = _cli('export', *BASE, '--output', str(tmp_path / 'out'), *args)
    lines = _sentences(done.stderr)
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith('beam-kinesis export: '), lines
    assert sentence in lines[0]
    assert 'Traceback' not in done.stderr
    assert not (tmp_path / 'out').exists()  # refused before anything was made


def test_an_unknown_subcommand_suggests_the_closest(capsys):
    assert cli.run(['exprot']) == 2
    err = capsys.readouterr().err
    assert "'exprot' is not a command of beam-kinesis (did you mean export?)" in err


def test_a_subcommand_whose_module_is_absent_says_so(monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, 'plan', cli.Command('beam_kinesis.not_installed', 'x'))
    assert cli.run(['plan', '--current', 'x']) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        'beam-kinesis: the plan command is not part of this installation (the '
        'module beam_kinesis.not_installed is missing).'
    )


def test_a_subcommand_gets_its_arguments_and_its_name(monkeypatch):
    seen = {}

    def fake_run(argv, prog='x'):
        seen.update(argv=argv, prog=prog)
        return 5

    module = type(sys)('fake_subcommand')
    module.run = fake_run
    monkeypatch.setitem(sys.modules, 'fake_subcommand', module)
    monkeypatch.setitem(cli.COMMANDS, 'check', cli.Command('fake_subcommand', 'x'))
    assert cli.run(['check', '--destination_config', 'd.yaml']) == 5
    assert seen == {'argv': ['--destination_config', 'd.yaml'], 'prog': 'beam-kinesis check'}


def test_credentials_never_reach_stderr_even_when_misspelt(capsys):
    status = cli.run(
        [
            'export',
            *BASE,
            '--aws_access_key_id',
            'AKIAIOSFODNN7EXAMPLE',
            '--aws_secret_access_key',
            SECRET,
            '--max_retires',
            '3',
        ]
    )
    misspelt = cli.run(['export', *BASE, f'--aws_secret_acess_key={SECRET}'])
    captured = capsys.readouterr()
    assert status == misspelt == 2
    assert SECRET not in captured.err + captured.out
    assert 'AKIAIOSFODNN7EXAMPLE' not in captured.err + captured.out
    assert (
        'Unknown option --aws_secret_acess_key (did you mean --aws_secret_access_key?)'
        in captured.err
    )


def test_beams_own_options_pass_through_and_the_job_runs(tmp_path, capsys):
    out = tmp_path / 'out'
    status = cli.run(
        [
            'export',
            *BASE,
            '--as_of',
            '2024-06-01T00:00:00Z',
            '--output',
            str(out),
            '--dead_letter',
            str(tmp_path / 'dead'),
            '--runner',
            'DirectRunner',
            '--direct_num_workers',
            '1',
            '--flink_master',
            'localhost:8081',
            '--direct_running_mode',
            'in_memory',
        ]
    )
    captured = capsys.readouterr()
    assert status == 0, captured.err
    lines = [line for path in out.iterdir() for line in path.read_text().splitlines()]
    assert lines and all(json.loads(line)['segmentMembership'] is not None for line in lines)
    assert 'Exported' in captured.out


def test_backfill_refuses_a_misspelt_option(tmp_path, capsys):
    status = cli.run(
        [
            'backfill',
            '--snapshots',
            str(tmp_path / '*.jsonl'),
            '--destination_config',
            os.path.join(DATA, 'destination.yaml'),
            '--max_retires',
            '3',
        ]
    )
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert err == (
        'beam-kinesis-backfill: Unknown option --max_retires (did you mean '
        '--max_retries?); see --help.'
    )


def test_backfill_suggests_its_own_flags(tmp_path, capsys):
    assert (
        cli.run(
            [
                'backfill',
                '--snapshots',
                str(tmp_path / '*.jsonl'),
                '--destination_config',
                os.path.join(DATA, 'destination.yaml'),
                '--state_fil',
                'x',
            ]
        )
        == 2
    )
    assert 'did you mean --state_file?' in capsys.readouterr().err


def test_backfill_help_shows_its_flags_and_the_exports(capsys):
    assert cli.run(['backfill', '--help']) == 0
    text = capsys.readouterr().out
    assert text.startswith('usage: beam-kinesis backfill (--manifest FILE | --snapshots GLOB)')
    assert '--state_file' in text and '--stream_name' in text and '--join_buckets' in text
    # Set by the backfill for each pair, so not offered.
    assert '--current CURRENT' not in text and '--previous_as_of PREVIOUS' not in text


def test_convert_through_the_cli(tmp_path, capsys):
    target = tmp_path / 'current.pq'
    assert cli.run(['convert', os.path.join(DATA, 'current.jsonl'), str(target)]) == 0
    assert target.stat().st_size > 0
    assert f'to {target}' in capsys.readouterr().out


# Unit tests of the option functions.


@pytest.mark.parametrize(
    'flag, own, expected',
    [
        ('--max_retires', ['--max_retries', '--max_in_flight'], '--max_retries'),
        ('--stream-name', ['--stream_name'], '--stream_name'),
        ('--out', ['--output', '--output_shards', '--dead_letter'], '--output'),
        ('--zzzzzz', ['--output', '--current'], None),
    ],
)
def test_did_you_mean(flag, own, expected):
    assert did_you_mean(flag, own) == expected


def test_did_you_mean_prefers_the_jobs_flags_over_beams():
    # Beam's list has a flag closer to --ouput than --output? The job's own wins all the same.
    assert did_you_mean('--ouput', ['--output'], ['--ouputs_beam', '--output']) == '--output'
    assert did_you_mean('--runer', ['--output'], ['--runner']) == '--runner'


def test_unknown_arguments_never_keep_values():
    flags, stray = unknown_arguments(
        ['--max_retires', '3', f'--secret_key={SECRET}', '--flag', 'word', 'another', '-1']
    )
    assert flags == ['--max_retires', '--secret_key', '--flag']
    assert stray == ['another', '-1'] or stray == ['another']
    assert all(SECRET not in flag for flag in flags)


def test_parse_job_options_accepts_beam_options_and_checks_ranges():
    options = parse_job_options(
        [
            *BASE,
            '--runner',
            'FlinkRunner',
            '--flink_master',
            'h:1',
            '--join_buckets',
            '7',
            '--max_retries',
            '0',
        ]
    )
    assert options.view_as(ExportOptions).join_buckets == 7
    assert options.view_as(KinesisSinkOptions).max_retries == 0
    with pytest.raises(OptionsError, match=r'--join_buckets 0 must be an integer from 1'):
        parse_job_options([*BASE, '--join_buckets', '0'])
    with pytest.raises(OptionsError, match=r'--max_line_bytes -5 must be positive'):
        parse_job_options([*BASE, '--max_line_bytes', '-5'])
    # One sentence a job's start handler already catches.
    assert issubclass(OptionsError, ConfigError)


def test_split_credentials_takes_them_off_the_command_line():
    credentials, rest = split_credentials(
        ['--current', 'c', '--aws_access_key_id', 'AKID', f'--aws_secret_access_key={SECRET}']
    )
    assert rest == ['--current', 'c']
    assert credentials == {
        'aws_access_key_id': 'AKID',
        'aws_secret_access_key': SECRET,
        'aws_external_id': None,
    }


def test_kinesis_config_from_options():
    options = PipelineOptions(
        [
            '--stream_name',
            'profiles',
            '--aws_region',
            'eu-west-1',
            '--endpoint_url',
            'http://127.0.0.1:4567',
            '--max_retries',
            '3',
            '--max_batch_records',
            '100',
            '--retry_mode',
            'adaptive',
        ]
    )
    config = KinesisConfig.from_options(
        options, aws_access_key_id='AKID', aws_secret_access_key=SECRET
    )
    assert (config.stream_name, config.region, config.endpoint_url) == (
        'profiles',
        'eu-west-1',
        'http://127.0.0.1:4567',
    )
    assert (config.max_retries, config.max_batch_records, config.retry_mode) == (3, 100, 'adaptive')
    assert config.max_in_flight == KinesisConfig('x').max_in_flight  # defaults are the sink's
    assert SECRET not in repr(config)


def test_kinesis_config_from_options_needs_a_stream_and_checks_ranges():
    with pytest.raises(ValueError, match='no Kinesis stream'):
        KinesisConfig.from_options(PipelineOptions([]))
    assert KinesisConfig.from_options(PipelineOptions([]), 'from-config').stream_name == (
        'from-config'
    )
    assert (
        KinesisConfig.from_options(
            PipelineOptions(['--stream_name', 'flag']), 'from-config'
        ).stream_name
        == 'flag'
    )
    with pytest.raises(ValueError, match='max_retries -1'):
        KinesisConfig.from_options(PipelineOptions(['--stream_name', 's', '--max_retries', '-1']))


def test_the_embedded_default_without_moto_says_to_install_the_extra(monkeypatch, tmp_path, capsys):
    # As if moto were not installed: its modules cannot be imported.
    for name in ('moto', 'moto.moto_server', 'moto.moto_server.werkzeug_app'):
        monkeypatch.setitem(sys.modules, name, None)
    status = cli.run(['export', *BASE, '--dead_letter', str(tmp_path / 'dead')])
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert err == (
        'beam-kinesis export: No --stream_name, --endpoint_url or --output was '
        'given, so the job would write to an embedded local Kinesis, which needs '
        'moto: pip install "beam-kinesis[local]", or give a stream (--stream_name) '
        'or --output.'
    )


def test_dask_options_pass_through_though_beam_registers_them_late():
    pytest.importorskip('distributed')  # the dask extra
    options = parse_job_options(
        [*BASE, '--runner', 'DaskRunner', '--dask_client_address', 'tcp://127.0.0.1:8786']
    )
    assert 'tcp://127.0.0.1:8786' in options.get_all_options().values()
    with pytest.raises(OptionsError, match='did you mean --dask_client_address'):
        parse_job_options([*BASE, '--dask_client_adress', 'tcp://127.0.0.1:8786'])


def test_an_export_options_view_still_reads_the_sinks_options():
    # Code written when the sink's flags were ExportOptions' keeps working.
    options = PipelineOptions(['--stream_name', 's', '--max_retries', '4']).view_as(ExportOptions)
    assert (options.stream_name, options.max_retries, options.endpoint_url) == ('s', 4, None)
    with pytest.raises(AttributeError):
        options.no_such_option  # noqa: B018


def test_plan_runs_through_the_command_and_refuses_a_misspelt_option():
    done = _cli('plan', *TESTDATA_PAIR, '--shards', '2', '--within', '1s')
    assert done.returncode == 0, done.stderr
    assert 'Send time at the shard limits' in done.stdout
    assert 'Within 1s: met' in done.stdout
    done = _cli('plan', *TESTDATA_PAIR, '--withn', '1s')
    assert done.returncode == 2
    assert _sentences(done.stderr) == [
        'beam-kinesis plan: Unknown option --withn (did you mean --within?); see --help.'
    ]
    done = _cli('plan', '--help')
    assert done.returncode == 0 and '\nsink (' in done.stdout and '--within' in done.stdout
