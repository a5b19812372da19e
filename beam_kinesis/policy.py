"""`beam-kinesis policy`: the minimal IAM policy that lets the export write to its stream.

The destination's documentation asks for `kinesis:ListStreams`, `kinesis:PutRecord` and
`kinesis:PutRecords`; the sink also calls `DescribeStreamSummary` when it may (the start-up
check, which falls back to ListStreams without it). Those four are every Kinesis call the sink
makes, and nothing more is granted. The write and describe actions are scoped to the one
stream's ARN; ListStreams acts on no stream (IAM's authorization reference lists no resource
type for it), so it can only be granted on `*`, in a statement of its own.

The ARN needs the stream's region and account: `--aws_region` (or where the export job
would take it from) and `--account_id`, else the account of `--aws_role_arn`, else the
caller's identity (STS GetCallerIdentity with the job's credentials, at `--endpoint_url`
when given). Without them it says so in one sentence (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from types import SimpleNamespace

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from beam_kinesis.config import ConfigError, load_destination_config
from beam_kinesis.kinesis import KinesisConfig, redact

__all__ = [
    'ACCOUNT_ACTIONS',
    'EXIT_FAILED',
    'EXIT_OK',
    'STREAM_ACTIONS',
    'minimal_policy',
    'run',
    'stream_arn',
]

EXIT_OK = 0
EXIT_FAILED = 2
# The sink's calls on its stream: PutRecords and PutRecord write (one record alone goes by
# PutRecord), DescribeStreamSummary is the start-up check (beam_kinesis.kinesis).
STREAM_ACTIONS = ('kinesis:DescribeStreamSummary', 'kinesis:PutRecord', 'kinesis:PutRecords')
# The start-up check's fallback where DescribeStreamSummary is denied, and the seed's first
# action; it lists the account's streams, so it is granted on no particular one.
ACCOUNT_ACTIONS = ('kinesis:ListStreams',)
_ACCOUNT_ID = re.compile(r'\d{12}')
_ROLE_ACCOUNT = re.compile(r'arn:aws[a-z-]*:iam::(\d{12}):role/')
# ARN partitions by region prefix, for when botocore cannot say (a region it does not know).
_PARTITIONS = (
    ('cn-', 'aws-cn'),
    ('us-gov-', 'aws-us-gov'),
    ('us-iso-', 'aws-iso'),
    ('us-isob-', 'aws-iso-b'),
)


def stream_arn(stream_name: str, region: str, account_id: str) -> str:
    """The ARN of a Kinesis data stream, in the partition of its region."""
    partition = None
    try:
        partition = boto3.session.Session().get_partition_for_region(region)
    except Exception:  # noqa: BLE001 - a region botocore does not know: go by its prefix
        pass
    if not partition:
        partition = next((name for prefix, name in _PARTITIONS if region.startswith(prefix)), 'aws')
    return f'arn:{partition}:kinesis:{region}:{account_id}:stream/{stream_name}'


def minimal_policy(stream_name: str, region: str, account_id: str) -> dict:
    """The IAM policy document granting exactly the sink's calls on one stream."""
    KinesisConfig(stream_name)  # the stream name's own check
    if not _ACCOUNT_ID.fullmatch(str(account_id)):
        raise ValueError(f'account id {account_id!r} is not 12 digits')
    return {
        'Version': '2012-10-17',
        'Statement': [
            {
                'Sid': 'WriteProfileExports',
                'Effect': 'Allow',
                'Action': list(STREAM_ACTIONS),
                'Resource': [stream_arn(stream_name, region, account_id)],
            },
            {
                'Sid': 'FindTheStream',
                'Effect': 'Allow',
                'Action': list(ACCOUNT_ACTIONS),
                'Resource': ['*'],
            },
        ],
    }


class _Refused(Exception):
    """The one sentence saying why no policy can be printed."""


def run(argv: list[str] | None = None) -> int:
    """Prints the minimal IAM policy for the export's stream; the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if '-h' in argv or '--help' in argv:
        from beam_kinesis.check import job_options_help

        print(
            job_options_help(
                'beam-kinesis policy',
                __doc__,
                lambda parser: parser.add_argument(
                    '--account_id',
                    help="The stream's AWS account (default: the role's, else the "
                    "caller's identity by STS).",
                ),
            )
        )
        return EXIT_OK
    try:
        policy = _policy(argv)
    except (_Refused, ConfigError, ValueError) as err:
        print(f'beam-kinesis policy: {" ".join(str(err).split())}', file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(policy, indent=4))
    return EXIT_OK


def _policy(argv: list[str]) -> dict:
    # The export job's options, read as it reads them (the key pair off the command line
    # first), plus this command's own --account_id.

    from beam_kinesis.job import aws_region, kinesis_config
    from beam_kinesis.job_options import ExportOptions, parse_job_options
    from beam_kinesis.sink_options import KinesisSinkOptions, split_credentials

    credentials, rest = split_credentials(argv)
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument('--account_id', default=None)
    known, rest = own.parse_known_args(rest)
    secrets = tuple(value for value in credentials.values() if value)
    # The job's own check: unknown options (with a suggestion) and values out of range.
    options = parse_job_options(rest, extra_flags=['--account_id']).view_as(ExportOptions)
    sink_options = options.view_as(KinesisSinkOptions)
    if known.account_id is not None and not _ACCOUNT_ID.fullmatch(known.account_id):
        raise _Refused(f'--account_id {known.account_id!r} is not an AWS account id (12 digits).')
    config = (
        load_destination_config(options.destination_config)
        if options.destination_config
        else SimpleNamespace(stream=None, region=None)
    )
    stream = sink_options.stream_name or config.stream
    if not stream:
        raise _Refused(
            'No stream to write a policy for: give --destination_config (its '
            'stream) or --stream_name.'
        )
    region = aws_region(options, config) or boto3.session.Session().region_name
    if not region:
        raise _Refused(
            f'The region of stream {stream!r} is not known: give --aws_region, a '
            'region in the destination config, or one in the AWS configuration '
            '(AWS_REGION, a profile).'
        )
    account = known.account_id or _role_account(sink_options.aws_role_arn)
    if account is None:
        sink = kinesis_config(options, config, credentials, stream_name=stream, region=region)
        account = _caller_account(sink, secrets)
    return minimal_policy(stream, region, account)


def _role_account(role_arn: str | None) -> str | None:
    """The account of the role that writes (a stream of another account is that one's)."""
    found = _ROLE_ACCOUNT.match(role_arn or '')
    return found.group(1) if found else None


def _caller_account(sink: KinesisConfig, secrets: tuple[str, ...]) -> str:
    from botocore.exceptions import NoCredentialsError

    from beam_kinesis.check import caller_identity

    try:
        account = caller_identity(sink).get('Account')
    except NoCredentialsError as err:
        raise _Refused(
            f'The account of stream {sink.stream_name!r} is not known: give '
            '--account_id, or AWS credentials (none were found) so that STS can '
            'name the caller.'
        ) from err
    except (ClientError, BotoCoreError) as err:
        detail = redact(f'{type(err).__name__}: {err}', secrets)[:300]
        raise _Refused(
            f'The account of stream {sink.stream_name!r} is not known: give '
            f'--account_id (STS could not name the caller: {detail}).'
        ) from err
    if not account or not _ACCOUNT_ID.fullmatch(str(account)):
        raise _Refused(
            f'The account of stream {sink.stream_name!r} is not known: give '
            f'--account_id (STS answered the account {account!r}).'
        )
    return str(account)


if __name__ == '__main__':
    sys.exit(run())
