"""`beam-kinesis check` (beam_kinesis.check): one line per check, exit 0 or 2, against moto's
server, kinesalite and bad inputs; no secret in what it prints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_kinesis import check
from tests.kinesis_servers import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY

ROOT = Path(__file__).resolve().parent.parent
TESTDATA = ROOT / 'testdata'
INPUTS = [
    '--current',
    str(TESTDATA / 'current.jsonl'),
    '--previous',
    str(TESTDATA / 'previous.jsonl'),
    '--destination_config',
    str(TESTDATA / 'destination.yaml'),
]
KEYS = [
    '--aws_access_key_id',
    ACCESS_KEY_ID,
    '--aws_secret_access_key',
    SECRET_ACCESS_KEY,
    '--aws_region',
    REGION,
]
# Look like real keys, so that a leak would also be caught by the redaction patterns' absence.
SECRET_KEY_ID = 'AKIAQWERTYUIOPASDFGH'
SECRET_KEY = 'kit/Secret+Value/ThatMustNeverShow0123456'


def _run(argv: list[str], capsys) -> tuple[int, dict[str, tuple[bool, str]], str]:
    status = check.run(argv)
    out = capsys.readouterr()
    lines = {}
    for line in out.out.splitlines():
        name, _, rest = line.partition(' ')
        if name in check.CHECKS:
            verdict, _, text = rest.strip().partition(' ')
            lines[name] = (verdict == 'ok', text.strip())
    return status, lines, out.out + out.err


def test_everything_ok_against_moto_names_the_account_and_the_shards(local_stream, capsys):
    status, lines, _ = _run(
        INPUTS
        + KEYS
        + ['--endpoint_url', local_stream.server.endpoint_url, '--stream_name', local_stream.name],
        capsys,
    )
    assert status == check.EXIT_OK
    assert list(lines) == list(check.CHECKS)
    assert all(ok for ok, _ in lines.values()), lines
    sts = boto3.client(
        'sts',
        endpoint_url=local_stream.server.endpoint_url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )
    assert sts.get_caller_identity()['Account'] in lines['credentials'][1]
    shards = local_stream.server.client().describe_stream_summary(StreamName=local_stream.name)[
        'StreamDescriptionSummary'
    ]['OpenShardCount']
    assert f'ACTIVE, {shards} open shards' in lines['stream'][1]
    assert "key '_id' in the first" in lines['current'][1]


def test_kinesalite_without_sts_takes_the_stream_describe_as_the_credentials_check(
    kinesalite, capsys
):
    name = kinesalite.create_stream(3)
    status, lines, _ = _run(
        INPUTS + KEYS + ['--endpoint_url', kinesalite.endpoint_url, '--stream_name', name], capsys
    )
    assert status == check.EXIT_OK, lines
    assert lines['credentials'][1].startswith(f'accepted by {kinesalite.endpoint_url}')
    assert 'ACTIVE, 3 open shards' in lines['stream'][1]


def test_a_missing_stream_fails_only_the_stream_check_and_shows_no_secret(kinesalite, capsys):
    status, lines, printed = _run(
        INPUTS
        + [
            '--aws_access_key_id',
            SECRET_KEY_ID,
            '--aws_secret_access_key',
            SECRET_KEY,
            '--aws_region',
            REGION,
            '--endpoint_url',
            kinesalite.endpoint_url,
            '--stream_name',
            'no-such-stream',
        ],
        capsys,
    )
    assert status == check.EXIT_FAILED
    assert [name for name, (ok, _) in lines.items() if not ok] == ['stream']
    assert "'no-such-stream'" in lines['stream'][1] and 'was not found' in lines['stream'][1]
    assert SECRET_KEY not in printed and SECRET_KEY_ID not in printed
    assert 'Traceback' not in printed


def test_no_stream_options_means_the_embedded_kinesis_and_nothing_to_check(capsys):
    status, lines, _ = _run(INPUTS, capsys)
    assert status == check.EXIT_OK
    assert lines['stream'][1].startswith('not needed')
    assert lines['credentials'][1].startswith('not needed')


def _parquet_without_key(path: Path) -> Path:
    pq.write_table(pa.table({'id': ['p-1'], 'identityMap': [None]}), path)
    return path


@pytest.mark.parametrize(
    'change, failed, says',
    [
        (['--current', 'no/such/*.jsonl'], ['current'], 'no/such'),
        (
            ['--key_field', 'profileId'],
            ['current', 'previous'],
            "no usable profile key at 'profileId'",
        ),
        (['--previous', '{bad_json}'], ['previous'], 'cannot be read as jsonl'),
        (['--previous', '{parquet}'], ['previous'], "has no field '_id' in its parquet schema"),
        (['--destination_config', 'no/such/config.yaml'], ['config'], 'does not exist'),
        (['--destination_config', '{bad_config}'], ['config'], 'stream'),
        (['--max_retires', '3'], ['options'], 'Unknown option --max_retires'),
        (['--input_format', 'avro'], ['current', 'previous'], 'avro'),
    ],
)
def test_bad_inputs_fail_their_check_with_one_sentence(change, failed, says, tmp_path, capsys):
    bad_json = tmp_path / 'bad.jsonl'
    bad_json.write_text('{"_id": "p-1", oops\n')
    bad_config = tmp_path / 'config.yaml'
    bad_config.write_text('segments: [seg-a]\n')  # no stream
    files = {
        '{bad_json}': str(bad_json),
        '{bad_config}': str(bad_config),
        '{parquet}': str(_parquet_without_key(tmp_path / 'snapshot.parquet')),
    }
    argv = INPUTS + [files.get(arg, arg) for arg in change]
    status, lines, printed = _run(argv, capsys)
    assert status == check.EXIT_FAILED
    assert [name for name, (ok, _) in lines.items() if not ok] == failed, lines
    assert says in lines[failed[0]][1]
    assert 'Traceback' not in printed


def test_no_credentials_at_all_is_one_sentence(kinesalite):
    """As a command, in an environment without any AWS credentials."""
    env = {name: value for name, value in os.environ.items() if not name.startswith('AWS_')}
    env.update(
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_CONFIG_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED='true',
    )
    done = subprocess.run(
        [
            sys.executable,
            '-m',
            'beam_kinesis.check',
            *INPUTS,
            '--aws_region',
            REGION,
            '--endpoint_url',
            kinesalite.endpoint_url,
            '--stream_name',
            'anything',
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    credentials = next(line for line in done.stdout.splitlines() if line.startswith('credentials'))
    assert 'FAILED' in credentials and 'No AWS credentials were found' in credentials
    assert 'Traceback' not in done.stderr


def test_help_lists_the_job_options_it_reads(capsys):
    assert check.run(['--help']) == check.EXIT_OK
    shown = capsys.readouterr().out
    assert '--destination_config' in shown and '--stream_name' in shown
    assert '--aws_secret_access_key' in shown
