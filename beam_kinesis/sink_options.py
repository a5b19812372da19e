"""The sink's pipeline options, so that any pipeline can build `WriteToKinesis` from its flags.

`KinesisSinkOptions` is a Beam `PipelineOptions` class: a user's own pipeline parses it with
its other options and calls `KinesisConfig.from_options(options)`; the export job does the
same. The defaults are `KinesisConfig`'s, so a flag left out means what the dataclass means.

Credentials are deliberately not options: an option is shown in Beam's options dumps, in
the runner's display data and in the "discarding unparseable args" warning. The explicit key
pair and the role's external id are taken out of the command line by `split_credentials`
before Beam sees it, and handed to `KinesisConfig` directly.
"""

from __future__ import annotations

import argparse
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions

from beam_kinesis.kinesis import KinesisConfig

__all__ = [
    'KinesisSinkOptions',
    'SINK_TUNING_OPTIONS',
    'CREDENTIAL_FLAGS',
    'SINK_GROUP',
    'CREDENTIALS_GROUP',
    'add_credential_help',
    'split_credentials',
    'sink_tuning',
]

# The title of the sink's group in `--help`.
SINK_GROUP = 'sink (Kinesis stream and how records are sent)'

# The credentials' group in `--help`.
CREDENTIALS_GROUP = (
    'AWS credentials (taken off the command line before Beam parses it; '
    'never shown in logs or option dumps)'
)

# Sink tuning flags: (KinesisConfig field, type, help); the defaults are KinesisConfig's.
SINK_TUNING_OPTIONS: tuple[tuple[str, type, str], ...] = (
    ('max_in_flight', int, 'PutRecords requests in flight per worker.'),
    ('max_retries', int, 'Resends allowed per record before it is dead-lettered.'),
    ('retry_deadline_seconds', float, 'Time allowed for one batch, first try to last resend.'),
    (
        'max_record_bytes',
        int,
        'Per-record limit, data + partition key; raise it only for a '
        'stream raised with UpdateMaxRecordSize.',
    ),
    ('max_batch_records', int, 'Records per PutRecords request (at most 500).'),
    ('max_batch_bytes', int, 'Bytes per PutRecords request (at most 5 MiB).'),
    ('base_backoff_seconds', float, 'Backoff cap of the first resend; doubles per resend.'),
    ('max_backoff_seconds', float, 'Largest backoff cap.'),
    ('connect_timeout_seconds', float, 'Connect timeout of the Kinesis client.'),
    ('read_timeout_seconds', float, 'Read timeout of the Kinesis client.'),
    ('retry_mode', str, 'botocore retry mode for whole requests: standard or adaptive.'),
    ('request_attempts', int, 'botocore attempts per request, the first included.'),
    (
        'unreachable_after_requests',
        int,
        'Requests in a row without any answer (could not '
        'connect, timed out) that, with '
        '--unreachable_after_seconds, stop the job.',
    ),
    (
        'unreachable_after_seconds',
        float,
        'Seconds without any answer from Kinesis after which such a run of requests stops the job.',
    ),
)

# Flags read before Beam sees the command line, so that no options dump, display data or
# "discarding unparseable args" warning can ever show them.
CREDENTIAL_FLAGS = ('--aws_access_key_id', '--aws_secret_access_key', '--aws_external_id')


class KinesisSinkOptions(PipelineOptions):
    """Where `WriteToKinesis` writes and how: stream, endpoint, region, role, tuning."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        # Not argparse-required: Beam parses every registered options class on every
        # pipeline of the process (and on workers), where these flags are absent.
        group = parser.add_argument_group(SINK_GROUP)
        group.add_argument(
            '--stream_name',
            default=None,
            help="Kinesis stream to write to (default: the config's stream, "
            'on the embedded local Kinesis unless --endpoint_url is '
            'given).',
        )
        group.add_argument(
            '--aws_region',
            default=None,
            help="AWS region of the stream (default: Beam's --region unless "
            "the runner is Dataflow, else the config's region, else the "
            "AWS environment's).",
        )
        group.add_argument(
            '--endpoint_url',
            default=None,
            help="A Kinesis endpoint other than AWS's (LocalStack, kinesalite, ...).",
        )
        group.add_argument(
            '--aws_role_arn',
            default=None,
            help='An IAM role to assume through STS for writing (a stream of '
            'another account); its credentials are refreshed as they '
            'near expiry. The AWS chain (or the key pair) assumes it.',
        )
        group.add_argument(
            '--aws_role_session_name',
            default='beam-kinesis',
            help='Session name of the assumed role (shows in CloudTrail).',
        )
        defaults = KinesisConfig('defaults')
        for name, kind, help_text in SINK_TUNING_OPTIONS:
            group.add_argument(
                f'--{name}', default=getattr(defaults, name), type=kind, help=help_text
            )


def add_credential_help(parser: argparse.ArgumentParser) -> None:
    """Lists the credential flags in a `--help` parser (they never reach Beam's parser)."""
    group = parser.add_argument_group(CREDENTIALS_GROUP)
    group.add_argument(
        '--aws_access_key_id',
        metavar='ID',
        help='Access key id; with --aws_secret_access_key, instead of the AWS '
        'credential chain (environment, shared config, instance role).',
    )
    group.add_argument('--aws_secret_access_key', metavar='SECRET', help='Its secret key.')
    group.add_argument(
        '--aws_external_id',
        metavar='ID',
        help='External id the trust policy of --aws_role_arn asks for.',
    )


def split_credentials(argv: list[str]) -> tuple[dict[str, str | None], list[str]]:
    """Takes the explicit AWS key pair and external id out of `argv`.

    Returns:
      The credentials by `KinesisConfig` field name (None where not given), and the other
      arguments, which may then go to Beam.
    """
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for flag in CREDENTIAL_FLAGS:
        parser.add_argument(flag, default=None)
    known, rest = parser.parse_known_args(argv)
    return {flag[2:]: getattr(known, flag[2:]) for flag in CREDENTIAL_FLAGS}, rest


def sink_tuning(options: PipelineOptions) -> dict[str, Any]:
    """The tuning fields of `KinesisConfig` as `options` give them."""
    sink = options.view_as(KinesisSinkOptions)
    return {name: getattr(sink, name) for name, _, _ in SINK_TUNING_OPTIONS}
