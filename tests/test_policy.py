"""`beam-kinesis policy` (beam_kinesis.policy): the minimal IAM policy of the export's stream,
its actions exactly the sink's calls, its account from the options or STS."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from beam_kinesis import policy
from tests.kinesis_servers import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY

ROOT = Path(__file__).resolve().parent.parent
CONFIG = str(ROOT / 'testdata' / 'destination.yaml')


def _policy(argv: list[str], capsys) -> tuple[int, dict | None, str]:
    status = policy.run(argv)
    out = capsys.readouterr()
    return status, json.loads(out.out) if out.out.strip() else None, out.err


def _statement_for(document: dict, action: str) -> dict:
    return next(s for s in document['Statement'] if action in s['Action'])


def test_the_policy_names_the_stream_arn_with_the_region_and_account_given(capsys):
    status, document, _ = _policy(
        [
            '--destination_config',
            CONFIG,
            '--aws_region',
            'eu-west-1',
            '--account_id',
            '111122223333',
        ],
        capsys,
    )
    assert status == policy.EXIT_OK
    assert document['Version'] == '2012-10-17'
    write = _statement_for(document, 'kinesis:PutRecords')
    assert write['Effect'] == 'Allow'
    assert write['Resource'] == ['arn:aws:kinesis:eu-west-1:111122223333:stream/profile-exports']


def test_the_region_comes_from_the_config_and_the_partition_from_the_region(capsys):
    _, document, _ = _policy(
        ['--destination_config', CONFIG, '--account_id', '111122223333'], capsys
    )
    assert _statement_for(document, 'kinesis:PutRecord')['Resource'] == [
        'arn:aws:kinesis:us-east-1:111122223333:stream/profile-exports'
    ]
    _, document, _ = _policy(
        [
            '--stream_name',
            'cn-stream',
            '--aws_region',
            'cn-north-1',
            '--account_id',
            '111122223333',
        ],
        capsys,
    )
    assert _statement_for(document, 'kinesis:PutRecord')['Resource'] == [
        'arn:aws-cn:kinesis:cn-north-1:111122223333:stream/cn-stream'
    ]


def _sink_api_calls() -> set[str]:
    """The Kinesis API operations beam_kinesis/kinesis.py calls on a boto3 client."""
    tree = ast.parse((ROOT / 'beam_kinesis' / 'kinesis.py').read_text())
    methods = {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == 'client'
    }
    mapping = (
        boto3.session.Session()
        .client('kinesis', region_name=REGION, aws_access_key_id='x', aws_secret_access_key='y')
        .meta.method_to_api_mapping
    )
    return {mapping[method] for method in methods if method in mapping}


def test_the_actions_are_exactly_the_kinesis_calls_the_sink_makes(capsys):
    _, document, _ = _policy(
        ['--destination_config', CONFIG, '--account_id', '111122223333'], capsys
    )
    granted = {action for statement in document['Statement'] for action in statement['Action']}
    calls = _sink_api_calls()
    assert {'PutRecords', 'PutRecord'} <= calls  # the walk found the sink's writes
    assert granted == {f'kinesis:{call}' for call in calls}
    # ListStreams acts on no stream; everything else only on the one stream.
    assert _statement_for(document, 'kinesis:ListStreams')['Resource'] == ['*']
    assert _statement_for(document, 'kinesis:ListStreams')['Action'] == ['kinesis:ListStreams']


def test_the_account_is_the_callers_identity_at_the_endpoint(local_kinesis, capsys):
    endpoint = local_kinesis.endpoint_url
    status, document, err = _policy(
        [
            '--destination_config',
            CONFIG,
            '--endpoint_url',
            endpoint,
            '--aws_access_key_id',
            ACCESS_KEY_ID,
            '--aws_secret_access_key',
            SECRET_ACCESS_KEY,
        ],
        capsys,
    )
    assert status == policy.EXIT_OK, err
    account = boto3.client(
        'sts',
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    ).get_caller_identity()['Account']
    assert _statement_for(document, 'kinesis:PutRecords')['Resource'] == [
        f'arn:aws:kinesis:us-east-1:{account}:stream/profile-exports'
    ]


def test_the_account_of_a_role_to_assume_is_the_streams(capsys):
    _, document, _ = _policy(
        [
            '--destination_config',
            CONFIG,
            '--aws_role_arn',
            'arn:aws:iam::444455556666:role/profile-exporter',
        ],
        capsys,
    )
    assert _statement_for(document, 'kinesis:PutRecords')['Resource'] == [
        'arn:aws:kinesis:us-east-1:444455556666:stream/profile-exports'
    ]


def _without_aws() -> dict:
    env = {name: value for name, value in os.environ.items() if not name.startswith('AWS_')}
    env.update(
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_CONFIG_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED='true',
    )
    return env


@pytest.mark.parametrize(
    'argv, says',
    [
        (['--destination_config', CONFIG], 'give --account_id'),
        (['--stream_name', 'profiles', '--account_id', '111122223333'], 'region'),
        (['--destination_config', CONFIG, '--account_id', '12345'], '12 digits'),
        (['--account_id', '111122223333', '--aws_region', 'us-east-1'], 'No stream'),
    ],
)
def test_what_is_missing_is_one_sentence_and_exit_2(argv, says):
    """As a command, in an environment without AWS credentials or region."""
    done = subprocess.run(
        [sys.executable, '-m', 'beam_kinesis.policy', *argv],
        cwd=ROOT,
        env=_without_aws(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stdout == ''
    message = [line for line in done.stderr.splitlines() if line.startswith('beam-kinesis')]
    assert len(message) == 1 and says in message[0], done.stderr
    assert 'Traceback' not in done.stderr


def test_help_lists_its_own_option_beside_the_job_options(capsys):
    assert policy.run(['--help']) == policy.EXIT_OK
    shown = capsys.readouterr().out
    assert '--account_id' in shown and '--destination_config' in shown


def test_the_readme_shows_the_policy_the_command_prints(capsys):
    readme = (ROOT / 'README.md').read_text(encoding='utf-8')
    after = readme.split('The minimal IAM policy', 1)[1]
    shown = json.loads(after.split('```json\n', 1)[1].split('```', 1)[0])
    resource = _statement_for(shown, 'kinesis:PutRecords')['Resource'][0]
    _, region, account, stream = re.fullmatch(
        r'arn:aws:kinesis:([^:]+):(\d{12}):stream/(.+)', resource
    ).group(0, 1, 2, 3)
    _, printed, _ = _policy(
        ['--stream_name', stream, '--aws_region', region, '--account_id', account], capsys
    )
    assert shown == printed
