"""`beam-kinesis check`: what would stop an export, found before it runs, one line a check.

Takes the export job's own options and checks, in order: the options themselves, the
destination config, the current and previous snapshots (files exist, formats readable, the
key field in the schema and in the first records), the AWS credentials and the stream. Each
check prints `ok` with what it saw, or the one sentence saying what is wrong; the exit
status is 0 when every check passed and 2 otherwise. Nothing is sent and nothing is written.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import sys
from types import SimpleNamespace
from typing import Any, Callable

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from botocore.exceptions import ConnectionError as BotoConnectionError

from beam_kinesis.config import ConfigError, load_destination_config, parse_as_of
from beam_kinesis.engine.view import ProfileProjection
from beam_kinesis.kinesis import KinesisConfig, KinesisStreamError, check_stream, classify, redact
from beam_kinesis.snapshot import (
    SnapshotError,
    Unreadable,
    detect_format,
    match_snapshot_files,
    read_records,
)

__all__ = ['CHECKS', 'CheckResult', 'EXIT_FAILED', 'EXIT_OK', 'caller_identity', 'check', 'run']

EXIT_OK = 0
EXIT_FAILED = 2
CHECKS = ('options', 'config', 'current', 'previous', 'credentials', 'stream')
# How much of a snapshot is read to find the key: the first records of the first files.
# Enough to catch a wrong --key_field or format; reading more would make check a run.
SAMPLED_FILES = 10
SAMPLED_RECORDS = 5
# Sentences from a boto3 error are cut to this many characters.
_MAX_DETAIL_CHARS = 300


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """One check: its name, whether it passed, and what it saw or the sentence why not."""

    name: str
    ok: bool
    text: str

    def line(self) -> str:
        return f'{self.name:<12} {"ok" if self.ok else "FAILED":<7}{self.text}'


class _Failed(Exception):
    """A check's one sentence."""


def run(argv: list[str] | None = None) -> int:
    """Runs every check on the export job's options, prints a line each; the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if '-h' in argv or '--help' in argv:
        print(job_options_help('beam-kinesis check', __doc__))
        return EXIT_OK
    results = check(argv)
    for result in results:
        print(result.line())
    failed = [result.name for result in results if not result.ok]
    if failed:
        print(f'{len(failed)} of {len(results)} checks failed ({", ".join(failed)}).')
        return EXIT_FAILED
    print(f'All {len(results)} checks passed.')
    return EXIT_OK


def job_options_help(prog: str, doc: str, extra: Callable[[Any], None] | None = None) -> str:
    """Help text of a command that takes the export job's options (`extra` adds its own):
    the job's grouped `--help` (`beam_kinesis.job_options.help_parser`)."""
    from beam_kinesis.job_options import help_parser

    parser = help_parser(
        prog,
        doc.strip().split('\n\n')[0].replace('\n', ' '),
        usage="%(prog)s [the export job's options]",
    )
    if extra is not None:
        extra(parser)
    return parser.format_help()


def check(argv: list[str]) -> list[CheckResult]:
    """The checks of `CHECKS` on the export job's command line, in order."""
    # The export job's options, read as the job reads them (the explicit key pair is taken
    # off the command line first, so that no options object ever holds it).
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_kinesis.job_options import ExportOptions, parse_job_options
    from beam_kinesis.sink_options import split_credentials

    credentials, rest = split_credentials(argv)
    secrets = tuple(value for value in credentials.values() if value)
    results: list[CheckResult] = []

    def record(name: str, step: Callable[[], str]) -> bool:
        try:
            results.append(CheckResult(name, True, step()))
        except (_Failed, ConfigError, SnapshotError, KinesisStreamError, ValueError) as err:
            text = ' '.join(redact(str(err), secrets).split())
            results.append(CheckResult(name, False, text))
        return results[-1].ok

    parsed: list[PipelineOptions] = []
    record('options', lambda: _check_options(rest, parsed, parse_job_options))
    # Without options the job would take, the other checks read what Beam makes of them.
    options = (parsed[0] if parsed else PipelineOptions(rest)).view_as(ExportOptions)
    config_holder: list[Any] = []
    record('config', lambda: _check_config(options, config_holder))
    config = config_holder[0] if config_holder else None
    record('current', lambda: _check_snapshot(options, 'current'))
    record('previous', lambda: _check_snapshot(options, 'previous'))

    sink, why_not = _sink_config(options, config, credentials)
    stream_outcome: list[Any] = []
    if sink is not None:
        try:
            stream_outcome.append(check_stream(sink))
        except KinesisStreamError as err:
            stream_outcome.append(err)
    record('credentials', lambda: _check_credentials(sink, why_not, stream_outcome))
    record('stream', lambda: _check_stream(sink, why_not, stream_outcome))
    return results


def _check_options(rest: list[str], parsed: list, parse: Callable[[list[str]], Any]) -> str:
    """The job's own check of its command line (unknown options with a suggestion, ranges),
    then the options it needs."""
    options = parse(rest)
    parsed.append(options)
    missing = [
        f'--{name}'
        for name in ('current', 'destination_config')
        if not getattr(options.view_as(_export_options()), name)
    ]
    if missing:
        raise _Failed(f'{" and ".join(missing)} must be given.')
    return 'the export job takes them'


def _export_options() -> type:
    from beam_kinesis.job_options import ExportOptions

    return ExportOptions


def _check_config(options: Any, holder: list) -> str:
    from beam_kinesis.job import run_config

    if not options.destination_config:
        raise _Failed('No --destination_config to check.')
    config = load_destination_config(options.destination_config)
    holder.append(config)
    as_of = (
        parse_as_of(options.as_of)
        if options.as_of is not None
        else (datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'))
    )
    run_config(options, config, as_of)  # the run's view: --previous_as_of where it is needed
    segments = len(config.segments)
    return (
        f'{options.destination_config}: stream {config.stream!r}, {segments} mapped '
        f'segment{"" if segments == 1 else "s"}, {len(config.attributes)} mapped '
        f'attribute{"" if len(config.attributes) == 1 else "s"}'
    )


def _check_snapshot(options: Any, name: str) -> str:
    pattern = getattr(options, name)
    if not pattern:
        if name == 'current':
            raise _Failed('No --current snapshot to check.')
        return 'none given: a first run, every member of a mapped segment is exported'
    files = match_snapshot_files(pattern)
    formats = sorted({detect_format(path, options.input_format) for path in files})
    key_path = tuple(options.key_field.split('.'))
    if not all(key_path):
        raise _Failed(f'--key_field {options.key_field!r} is not a dotted path.')
    projection = ProfileProjection(key_path, ())
    records = 0
    for path in files[:SAMPLED_FILES]:
        fmt = detect_format(path, options.input_format)
        fields = _schema_fields(path, fmt)
        if fields is not None and key_path[0] not in fields:
            raise _Failed(
                f'{path} has no field {key_path[0]!r} in its {fmt} schema, so no '
                f'profile key ({options.key_field}) can be read from it (its '
                f'fields: {", ".join(sorted(fields)[:10])}).'
            )
        for position, item in itertools.islice(
            read_records(
                path, fmt, [key_path[0]], normalize=False, max_line_bytes=options.max_line_bytes
            ),
            SAMPLED_RECORDS,
        ):
            if isinstance(item, Unreadable):
                raise _Failed(
                    f'{path}: record {position} cannot be read as {fmt}: '
                    f'{item.entry["error"][:_MAX_DETAIL_CHARS]}.'
                )
            if projection.key_of(item) is None:
                raise _Failed(
                    f'{path}: record {position} has no usable profile key at '
                    f'{options.key_field!r} (missing, empty, or not a string); '
                    'check --key_field.'
                )
            records += 1
    if name == 'current' and options.previous and not options.allow_empty_current:
        from beam_kinesis.job import refuse_empty_current

        refuse_empty_current(pattern)
    sampled = min(len(files), SAMPLED_FILES)
    return (
        f'{pattern}: {len(files):,} file{"" if len(files) == 1 else "s"} '
        f'({", ".join(formats)}); key {options.key_field!r} in the first {records} '
        f'record{"" if records == 1 else "s"} of {sampled} file{"" if sampled == 1 else "s"}'
    )


def _schema_fields(path: str, fmt: str) -> set[str] | None:
    """The top-level fields a Parquet or Avro file's schema declares; None for JSON Lines."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    if fmt == 'jsonl':
        return None
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            if fmt == 'parquet':
                import pyarrow.parquet as pq

                return set(pq.ParquetFile(handle).schema_arrow.names)
            import fastavro

            schema = fastavro.reader(handle).writer_schema
            return {field['name'] for field in schema.get('fields', [])}
    except Exception as err:  # noqa: BLE001 - whatever the format's reader says
        raise _Failed(
            f'{path} cannot be read as {fmt}: {type(err).__name__}: {str(err)[:_MAX_DETAIL_CHARS]}.'
        ) from err


def _sink_config(options: Any, config: Any, credentials: dict) -> tuple[KinesisConfig | None, str]:
    """The sink's config as the job would make it, or None and why there is none."""
    from beam_kinesis.job import kinesis_config
    from beam_kinesis.sink_options import KinesisSinkOptions

    sink_options = options.view_as(KinesisSinkOptions)
    if not (sink_options.stream_name or sink_options.endpoint_url):
        where = (
            'files only (--output)' if options.output else ('the embedded local Kinesis it starts')
        )
        return None, (
            f'not needed: without --stream_name or --endpoint_url the job writes to {where}'
        )
    if config is None and not sink_options.stream_name:
        return None, (
            'not checked: the destination config did not load and no --stream_name names the stream'
        )
    try:
        return kinesis_config(
            options, config or SimpleNamespace(stream=None, region=None), credentials
        ), ''
    except ConfigError as err:
        return None, f'not checked: {err}'


def caller_identity(sink: KinesisConfig) -> dict:
    """STS GetCallerIdentity with the sink's credentials (its role's, with a role), at its
    endpoint when it has one (a local server such as moto's answers STS there too).

    Raises:
      ClientError, BotoCoreError: as boto3 does.
    """
    from beam_kinesis.kinesis import _session_for  # the sink's own credentials, role included

    session = _session_for(sink)
    if session.get_credentials() is None:
        raise NoCredentialsError()
    client = session.client(
        'sts',
        endpoint_url=sink.endpoint_url,
        region_name=sink.region or session.region_name or 'us-east-1',
    )
    try:
        return client.get_caller_identity()
    finally:
        client.close()


def _check_credentials(sink: KinesisConfig | None, why_not: str, stream: list) -> str:
    if sink is None:
        if why_not.startswith('not needed'):
            return why_not
        raise _Failed(why_not)
    outcome = stream[0]
    if isinstance(outcome, KinesisStreamError) and _about_credentials(str(outcome)):
        raise _Failed(str(outcome))
    try:
        identity = caller_identity(sink)
    except NoCredentialsError as err:
        raise _Failed(
            'No AWS credentials were found: configure the AWS credential chain, give '
            '--aws_access_key_id and --aws_secret_access_key, or a role to assume.'
        ) from err
    except ClientError as err:
        error = err.response.get('Error', {})
        code = str(error.get('Code') or 'Unknown')
        status = err.response.get('ResponseMetadata', {}).get('HTTPStatusCode') or 0
        if classify(code, status).about == 'credentials':
            raise _Failed(
                f'The AWS credentials were rejected by STS ({code}): check the '
                'access key, secret key or session.'
            ) from err
        return _answered_without_sts(sink, outcome, code)
    except (BotoConnectionError, BotoCoreError) as err:
        if sink.endpoint_url is None:
            raise _Failed(
                f'STS could not be asked who the credentials belong to: {type(err).__name__}.'
            ) from err
        return _answered_without_sts(sink, outcome, type(err).__name__)
    who = identity.get('Arn') or 'unknown'
    return f'account {identity.get("Account")} ({who})'


def _answered_without_sts(sink: KinesisConfig, outcome: Any, reason: str) -> str:
    """A local endpoint without STS: the credentials are fine if Kinesis answered them."""
    if isinstance(outcome, KinesisStreamError) and 'unreachable' in str(outcome):
        raise _Failed(
            f'Not checked: STS answered {reason} and the Kinesis endpoint '
            f'{sink.endpoint_url} is unreachable.'
        )
    return (
        f'accepted by {sink.endpoint_url}: it answered Kinesis (it has no STS to name '
        f'the caller: {reason})'
    )


def _about_credentials(sentence: str) -> bool:
    """Whether a `check_stream` sentence is about the credentials, not the stream."""
    return sentence.startswith(
        ('The AWS credentials were rejected', 'No AWS credentials', 'The role ')
    )


def _check_stream(sink: KinesisConfig | None, why_not: str, stream: list) -> str:
    if sink is None:
        if why_not.startswith('not needed'):
            return why_not
        raise _Failed(why_not)
    outcome = stream[0]
    if isinstance(outcome, KinesisStreamError):
        if _about_credentials(str(outcome)):
            raise _Failed('Not checked: the credentials were refused (see credentials).')
        raise outcome
    shards = outcome.get('OpenShardCount')
    where = f'{sink.stream_name!r}' + (f' at {sink.endpoint_url}' if sink.endpoint_url else '')
    region = f' in {sink.region}' if sink.region else ''
    status = outcome.get('StreamStatus') or 'listed'
    count = (
        f', {shards} open shard{"" if shards == 1 else "s"}'
        if shards is not None
        else ' (ListStreams only: the shard count is not known)'
    )
    return f'{where}{region} is {status}{count}'


if __name__ == '__main__':
    sys.exit(run())
