"""The export job: diff two profile snapshots and send the changed profiles to Kinesis.

    read snapshots (key + digest per profile) -> CoGroupByKey by key bucket -> compare digests
    -> read the changed profiles again -> classify change -> format export JSON
    -> write to Kinesis or files -> dead letters
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import logging
import os
import re
import shutil
import sys
import tempfile

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
)

from beam_kinesis.changes import ON_DELETE_POLICIES, REASONS, DetectChanges
from beam_kinesis.checkpoint import CheckpointError, open_checkpoint, run_identity
from beam_kinesis.config import ConfigError, load_destination_config, parse_as_of
from beam_kinesis.deadletter import WriteDeadLetters
from beam_kinesis.export import FormatExport
from beam_kinesis.files import WriteJsonLines
from beam_kinesis.kinesis import (
    SINK_COUNTERS,
    SINK_DISTRIBUTIONS,
    THROTTLED_ON_SHARD,
    KinesisConfig,
    KinesisStreamError,
    KinesisWriteError,
    WriteToKinesis,
    check_stream,
    sink_metrics,
)
from beam_kinesis.ledger import InputLedgerError, ReconcileInput, after_ledger
from beam_kinesis.profile import DEFAULT_BUCKETS
from beam_kinesis.snapshot import FORMATS, ReadSnapshot, SnapshotError, match_snapshot_files
from beam_kinesis.summary import (
    CollectReport,
    dead_letter_counts,
    format_summary,
    read_counts,
    read_report,
)

__all__ = ['ExportOptions', 'JobResult', 'build', 'run', 'run_job', 'main', 'EXIT_OK',
           'EXIT_FAILED', 'EXIT_START_FAILED', 'EXIT_DEAD_LETTERS', 'EXIT_INPUT_MISMATCH']

_LOGGER = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1          # the pipeline failed while running: the sentence printed says why
EXIT_START_FAILED = 2    # nothing was read or written: the one sentence printed says why
EXIT_DEAD_LETTERS = 3    # the job finished, but some records are in the dead-letter output
EXIT_INPUT_MISMATCH = 4  # the input ledger did not balance: nothing was written


class ExportOptions(PipelineOptions):
    """The export job's own options; every standard Beam option is accepted beside them."""

    @classmethod
    def _add_argparse_args(cls, parser):
        # Not argparse-required: Beam parses every registered options class on every
        # pipeline of the process (and on workers), where these flags are absent.
        parser.add_argument('--current', default=None,
                            help='Path, directory or glob of the current snapshot (required).')
        parser.add_argument('--previous', default=None,
                            help='Path, directory or glob of the previous snapshot; without '
                                 'it the run is a first run (every mapped member exported).')
        parser.add_argument('--destination_config', default=None,
                            help='The destination config file, YAML or JSON (required).')
        parser.add_argument('--output', default=None,
                            help='Directory to write the export records to as JSON Lines '
                                 '(exports-SSSSS-of-NNNNN.jsonl), one record per line.')
        parser.add_argument('--output_shards', default=1, type=int,
                            help='Files the export records are spread over (by a hash of '
                                 'the record); each is written whole, its lines sorted.')
        parser.add_argument('--dead_letter', default='dead_letters',
                            help='Directory for dead-letter JSON Lines files.')
        parser.add_argument('--as_of', default=None,
                            help='Time stamped on synthesised exits, YYYY-MM-DDTHH:MM:SSZ '
                                 '(default: the job start, UTC).')
        parser.add_argument('--key_field', default='_id',
                            help='Dotted path of the profile key.')
        parser.add_argument('--on_delete', default='exit', choices=ON_DELETE_POLICIES,
                            help='Profiles deleted since the previous snapshot: export their '
                                 'memberships as exited once (exit) or not at all (ignore).')
        parser.add_argument('--allow_empty_current', action='store_true',
                            help='Run even when every file of the current snapshot is empty '
                                 '(every member of the previous one is then exported as '
                                 'deleted).')
        parser.add_argument('--input_format', default=None, choices=sorted(FORMATS),
                            help='Format of every snapshot file (default: by extension).')
        parser.add_argument('--join_buckets', default=DEFAULT_BUCKETS, type=int,
                            help='Buckets of profile keys the snapshots are joined in; raise '
                                 'it for very large snapshots on many workers.')
        parser.add_argument('--report', default=None,
                            help='Where the run report (the counts of the summary, JSON) is '
                                 'written; on a remote runner, a path on shared storage '
                                 '(default: a local temporary file).')
        # The sink. Credentials are not options: see _split_credentials.
        parser.add_argument('--stream_name', default=None,
                            help='Kinesis stream to write to (default: the config\'s stream, '
                                 'on the embedded local Kinesis unless --endpoint_url is '
                                 'given).')
        parser.add_argument('--aws_region', default=None,
                            help='AWS region of the stream (default: Beam\'s --region unless '
                                 'the runner is Dataflow, else the config\'s region, else the '
                                 'AWS environment\'s).')
        parser.add_argument('--endpoint_url', default=None,
                            help='A Kinesis endpoint other than AWS\'s (LocalStack, '
                                 'kinesalite, ...).')
        parser.add_argument('--embedded_shards', default=2, type=int,
                            help='Shards of the stream the embedded local Kinesis creates.')
        parser.add_argument('--aws_role_arn', default=None,
                            help='An IAM role to assume through STS for writing (a stream of '
                                 'another account); its credentials are refreshed as they '
                                 'near expiry. The AWS chain (or the key pair) assumes it.')
        parser.add_argument('--aws_role_session_name', default='beam-kinesis',
                            help='Session name of the assumed role (shows in CloudTrail).')
        parser.add_argument('--checkpoint', default=None,
                            help='Directory (local, gs://, s3://) where the run records what '
                                 'Kinesis acknowledged; the same command run again sends only '
                                 'the rest. Needs --as_of.')
        defaults = KinesisConfig('defaults')
        for name, kind, help_text in _SINK_OPTIONS:
            parser.add_argument(f'--{name}', default=getattr(defaults, name), type=kind,
                                help=help_text)


# Sink options: (KinesisConfig field, type, help); defaults are KinesisConfig's.
_SINK_OPTIONS = (
    ('max_in_flight', int, 'PutRecords requests in flight per worker.'),
    ('max_retries', int, 'Resends allowed per record before it is dead-lettered.'),
    ('retry_deadline_seconds', float, 'Time allowed for one batch, first try to last resend.'),
    ('max_record_bytes', int, 'Per-record limit, data + partition key; raise it only for a '
                              'stream raised with UpdateMaxRecordSize.'),
    ('max_batch_records', int, 'Records per PutRecords request (at most 500).'),
    ('max_batch_bytes', int, 'Bytes per PutRecords request (at most 5 MiB).'),
    ('base_backoff_seconds', float, 'Backoff cap of the first resend; doubles per resend.'),
    ('max_backoff_seconds', float, 'Largest backoff cap.'),
    ('connect_timeout_seconds', float, 'Connect timeout of the Kinesis client.'),
    ('read_timeout_seconds', float, 'Read timeout of the Kinesis client.'),
    ('retry_mode', str, 'botocore retry mode for whole requests: standard or adaptive.'),
    ('request_attempts', int, 'botocore attempts per request, the first included.'),
    ('unreachable_after_requests', int, 'Requests in a row without any answer (could not '
                                        'connect, timed out) that, with '
                                        '--unreachable_after_seconds, stop the job.'),
    ('unreachable_after_seconds', float, 'Seconds without any answer from Kinesis after '
                                         'which such a run of requests stops the job.'),
)

# Flags that are read before Beam sees the command line, so that no options dump, display
# data or "discarding unparseable args" warning can ever show them.
_CREDENTIAL_FLAGS = ('--aws_access_key_id', '--aws_secret_access_key', '--aws_external_id')


def _split_credentials(argv: list[str]) -> tuple[dict, list[str]]:
    """Takes the explicit AWS key pair out of `argv`; returns it and the other arguments."""
    parser = argparse.ArgumentParser(add_help=False)
    for flag in _CREDENTIAL_FLAGS:
        parser.add_argument(flag, default=None)
    known, rest = parser.parse_known_args(argv)
    return {name.lstrip('-'): getattr(known, name.lstrip('-'))
            for name in _CREDENTIAL_FLAGS}, rest


def kinesis_config(options: ExportOptions, config, credentials: dict, **overrides
                   ) -> KinesisConfig:
    """The sink's configuration from the job options, the destination config and the keys."""
    fields = {name: getattr(options, name) for name, _, _ in _SINK_OPTIONS}
    fields.update(stream_name=options.stream_name or config.stream,
                  region=aws_region(options, config), endpoint_url=options.endpoint_url,
                  aws_role_arn=options.aws_role_arn,
                  aws_role_session_name=options.aws_role_session_name, **credentials)
    fields.update(overrides)
    try:
        return KinesisConfig(**fields)
    except ValueError as err:
        raise ConfigError(f'Sink option: {err}.') from err


def aws_region(options: PipelineOptions, config) -> str | None:
    """The stream's region: --aws_region, else Beam's own --region where that is not the
    Dataflow job's region, else the destination config's (None: the AWS chain decides)."""
    own = options.view_as(ExportOptions).aws_region
    if own:
        return own
    beam_region = options.view_as(GoogleCloudOptions).region
    runner = options.view_as(StandardOptions).runner or ''
    if beam_region and 'dataflow' not in runner.lower():
        return beam_region
    return config.region


def build(pipeline: beam.Pipeline, options: ExportOptions, config, as_of: str,
          sink: KinesisConfig | None = None, report: str | None = None,
          checkpoint=None) -> dict:
    """Wires the job's transforms into `pipeline` and returns its labelled outputs.

    Export records go to Kinesis when `sink` is given, to files under `--output` when that is
    set, or both; nothing is written before the input ledger balances; records a `checkpoint`
    shows acknowledged are not sent again. Every output ends in one report of counts
    (written to `report` if given), the pipeline's single last step.
    """
    detect = DetectChanges(config, key_field=options.key_field, on_delete=options.on_delete,
                           buckets=options.join_buckets)
    readers = {name: ReadSnapshot(getattr(options, name), options.input_format, label=name,
                                  projection=detect.projection)
               for name in ('previous', 'current') if getattr(options, name) is not None}
    reads = {name: pipeline | f'Read{name.title()}' >> reader
             for name, reader in readers.items()}
    snapshots = {name: read.records for name, read in reads.items()}
    snapshots.update({f'{name}_stats': read.stats for name, read in reads.items()})
    changes = snapshots | 'DetectChanges' >> detect
    export = changes.changes | 'FormatExport' >> FormatExport(config.segments, as_of)
    read_stats = [read.stats for read in reads.values()] | 'ReadStats' >> beam.Flatten()
    verdict = (read_stats, changes.stats) | 'InputLedger' >> ReconcileInput(
        {name: reader.files for name, reader in readers.items()}, options.input_format)

    records = after_ledger(export.records, verdict, 'RecordsAfterLedger')
    dead_letters = [after_ledger(
        [read.dead_letters for read in reads.values()] + [changes.dead_letters,
                                                          export.dead_letters]
        | 'InputDeadLetters' >> beam.Flatten(), verdict, 'DeadLettersAfterLedger')]
    counts = [read_stats | 'ReadCounts' >> beam.Map(read_counts), changes.stats,
              verdict | 'LedgerCounts' >> beam.Map(lambda totals: {'input_ledger_balanced': 1})]
    outputs = {'records': records}
    if options.output:
        outputs['files'] = (records
                            | 'RecordText' >> beam.Map(lambda item: item[1].decode('utf-8'))
                            | 'WriteExports' >> WriteJsonLines(options.output, 'exports',
                                                               options.output_shards))
        counts.append(outputs['files'] | 'ExportFileCounts' >> beam.Map(
            lambda _: {'export_files': 1}))
    if sink is not None:
        # On Dask the sink must send everything from process (see WriteToKinesis).
        group_into = (options.view_as(_dask_options()).npartitions or 2
                      if is_dask(options) else None)
        dead_letters.append(records | 'WriteToKinesis' >> WriteToKinesis(
            sink, group_into=group_into, checkpoint=checkpoint))
    all_dead = dead_letters | 'AllDeadLetters' >> beam.Flatten()
    outputs['dead_letters'] = all_dead | 'WriteDeadLetters' >> WriteDeadLetters(
        options.dead_letter)
    counts += [all_dead | 'DeadLetterCounts' >> beam.Map(dead_letter_counts),
               outputs['dead_letters'] | 'DeadLetterFileCounts' >> beam.Map(
                   lambda _: {'dead_letter_files': 1})]
    outputs['report'] = counts | 'AllCounts' >> beam.Flatten() | 'Report' >> CollectReport(
        report or FileSystems.join(options.dead_letter, 'run-report.json'))
    return outputs


_SUMMARY = {
    'Read': [('previous snapshot files', 'previous_files'),
             ('previous snapshot records', 'previous_records_read'),
             ('current snapshot files', 'current_files'),
             ('current snapshot records', 'current_records_read'),
             ('profiles compared', 'profiles_compared'),
             ('input ledger balanced', 'input_ledger_balanced')],
    'Exported': [(f'by {reason.replace("_", " ")}', f'exported_{reason}')
                 for reason in REASONS]
                + [('withheld (dead-lettered)', 'exports_withheld'),
                   ('skipped, invalid in a snapshot', 'profiles_invalid')],
    'Kinesis': [(name.replace('_', ' '), name) for name in SINK_COUNTERS]
               + [(name.replace('_', ' '), name) for name in SINK_DISTRIBUTIONS],
    'Dead letters': [(f'{stage}', f'dead_letters_{stage}')
                     for stage in ('read', 'validate', 'join', 'format', 'write')],
}


_DASK_RUNNER = 'apache_beam.runners.dask.dask_runner.DaskRunner'


def _dask_options():
    from apache_beam.runners.dask.dask_runner import DaskOptions
    return DaskOptions


def is_dask(options: PipelineOptions) -> bool:
    """Whether the job runs on Beam's DaskRunner."""
    return (options.view_as(StandardOptions).runner or '').rsplit('.', 1)[-1] == 'DaskRunner'


# The DirectRunner first tries to download the Prism runner from the internet; the job runs
# its Python engine directly instead, the same on every machine, with or without a network.
_LOCAL_RUNNERS = ('', 'DirectRunner', 'SwitchingDirectRunner')


def prepare_runner(options: PipelineOptions) -> None:
    """Runs the DirectRunner on Beam's Python engine (FnApiRunner) without the attempt to
    download Prism; lets `--runner DaskRunner` name Beam's DaskRunner (Beam knows it only by
    class path) and gives it one partition per core unless `--dask_npartitions` says
    otherwise (without `--dask_client_address` Dask starts a local cluster)."""
    standard = options.view_as(StandardOptions)
    if (standard.runner or '') in _LOCAL_RUNNERS:
        standard.runner = 'FnApiRunner'
    if not is_dask(options):
        return
    try:
        _dask_options()
    except ImportError as err:
        raise ConfigError('The DaskRunner needs dask and distributed: pip install '
                          '"beam-kinesis[dask]".') from err
    options.view_as(StandardOptions).runner = _DASK_RUNNER
    dask = options.view_as(_dask_options())
    if not dask.npartitions:
        dask.npartitions = os.cpu_count() or 2


def _refuse_empty_current(pattern: str) -> None:
    """An empty current snapshot beside a previous one would export every member as
    deleted: more likely a failed snapshot than the end of every profile."""
    files = match_snapshot_files(pattern)
    sizes = FileSystems.match(files)
    if all(metadata.size_in_bytes == 0 for result in sizes for metadata in result.metadata_list):
        raise ConfigError(f'The current snapshot {pattern!r} holds no record, so every member '
                          'of the previous snapshot would be exported as deleted; pass '
                          '--allow_empty_current if that is meant.')


# Options that cannot change which records a run sends or where: a checkpoint stays valid
# across them (the sink's tuning, where files and reports go, the inputs' patterns, which
# the checkpoint identifies by the files they match).
_NOT_IN_CHECKPOINT = frozenset({
    'current', 'previous', 'destination_config', 'output', 'output_shards', 'dead_letter',
    'report', 'checkpoint', 'embedded_shards', 'stream_name', 'aws_region', 'endpoint_url',
    'aws_role_arn', 'aws_role_session_name', 'join_buckets'} | {name for name, _, _ in
                                                                _SINK_OPTIONS})


def _open_checkpoint(options: ExportOptions, sink: KinesisConfig | None, embedded, as_of: str):
    """Opens `--checkpoint` for this run, or refuses it with one sentence."""
    if sink is None or embedded is not None:
        raise ConfigError('--checkpoint records what a Kinesis stream acknowledged, so it needs '
                          '--stream_name or --endpoint_url.')
    if not options.as_of:
        raise ConfigError('--checkpoint needs an explicit --as_of, so that running the command '
                          'again makes the same records.')
    files = {name: match_snapshot_files(getattr(options, name))
             for name in ('previous', 'current') if getattr(options, name)}
    parser = argparse.ArgumentParser(add_help=False)
    ExportOptions._add_argparse_args(parser)
    shaping = {name: getattr(options, name) for name in vars(parser.parse_args([]))
               if name not in _NOT_IN_CHECKPOINT}
    identity = run_identity(files, options.destination_config, dict(shaping, as_of=as_of), {
        'stream': sink.stream_name, 'endpoint_url': sink.endpoint_url, 'region': sink.region})
    return open_checkpoint(options.checkpoint, identity)


def _unknown_options(options: PipelineOptions) -> list[str]:
    """Flags no options class knows (Beam would only warn and ignore them)."""
    known = options.get_all_options()
    unknown = set(options.get_all_options(retain_unknown_options=True)) - set(known)
    return sorted(f'--{name.split("=")[0]}' for name in unknown)


# How the job's own failures begin; a runner may bury them in a worker's traceback.
_LEDGER_MESSAGE = 'The input ledger does not balance'
_OWN_ERRORS = re.compile(r'(?:InputLedgerError|KinesisWriteError|KinesisStreamError): (.+?)'
                         r'(?: \[while running [^\]]*\])?(?:\\n|\n|$)')


def _failure_sentence(err: Exception) -> str:
    """One line saying why the pipeline failed: the job's own error if it is in there."""
    text = str(err)
    if isinstance(err, (InputLedgerError, KinesisWriteError)):
        return text.strip().splitlines()[0]
    found = _OWN_ERRORS.search(text)
    if found:
        return found.group(1).strip()
    return (text.strip().splitlines() or [type(err).__name__])[0]


def _start_error(message: str) -> int:
    print(f'beam-kinesis-export: {message}', file=sys.stderr)
    return EXIT_START_FAILED


@dataclasses.dataclass(frozen=True)
class JobResult:
    """How a run ended: its exit status (`EXIT_*`), and the summary's counts."""
    status: int
    exported: int = 0
    dead_letters: int = 0
    counters: dict = dataclasses.field(default_factory=dict)


def run(argv: list[str] | None = None) -> int:
    """Runs the job; returns the process exit status (see `EXIT_*`)."""
    return run_job(argv).status


def run_job(argv: list[str] | None = None) -> JobResult:
    """Runs the job, printing its summary; returns how it ended, with its counts."""
    credentials, argv = _split_credentials(list(sys.argv[1:] if argv is None else argv))
    options = PipelineOptions(argv).view_as(ExportOptions)
    embedded = None
    missing = [f'--{name}' for name in ('current', 'destination_config')
               if not getattr(options, name)]
    if missing:
        return JobResult(_start_error(f'{" and ".join(missing)} must be given (see --help).'))
    try:
        prepare_runner(options)
        unknown = _unknown_options(options)
        if unknown:
            raise ConfigError(f'Unknown option {", ".join(unknown)} (see --help).')
        config = load_destination_config(options.destination_config)
        as_of = parse_as_of(options.as_of) if options.as_of else (
            datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'))
        if options.stream_name or options.endpoint_url:
            sink = kinesis_config(options, config, credentials)
        elif options.output:
            sink = None
        else:
            embedded = _start_embedded(options, config)
            sink = kinesis_config(options, config, {}, aws_role_arn=None,
                                  **_embedded_overrides(embedded))
        if sink is not None:
            check_stream(sink)  # before any data is read
        checkpoint = (_open_checkpoint(options, sink, embedded, as_of) if options.checkpoint
                      else None)
        if options.previous and not options.allow_empty_current:
            _refuse_empty_current(options.current)
        pipeline = beam.Pipeline(options=options)
        scratch = None if options.report else tempfile.mkdtemp(prefix='beam-kinesis-')
        report = options.report or os.path.join(scratch, 'run-report.json')
        build(pipeline, options, config, as_of, sink, report, checkpoint)
    except (ConfigError, SnapshotError, KinesisStreamError, CheckpointError) as err:
        if embedded is not None:
            embedded.stop()
        return JobResult(_start_error(str(err)))
    try:
        result = pipeline.run()
        result.wait_until_finish()
        counters = read_report(report)
        sink_counters, distributions = sink_metrics(result)
        counters.update(sink_counters)
        if getattr(result, 'client', None) is not None:  # a Dask client: let go of the cluster
            result.client.close()
        if embedded is not None:
            _print_landed(embedded, sink.stream_name)
    except Exception as err:  # the runner's error, perhaps wrapped in a worker's traceback
        print(f'beam-kinesis-export: the job failed: {_failure_sentence(err)}', file=sys.stderr)
        if isinstance(err, InputLedgerError) or _LEDGER_MESSAGE in str(err):
            return JobResult(EXIT_INPUT_MISMATCH)
        return JobResult(EXIT_FAILED)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        if embedded is not None:
            embedded.stop()
    exported = sum(counters.get(f'exported_{reason}', 0) for reason in REASONS)
    dead = sum(value for name, value in counters.items() if name.startswith('dead_letters_'))
    sections = {title: rows for title, rows in _SUMMARY.items()
                if title != 'Kinesis' or sink is not None}
    if sink is not None:
        sections['Kinesis'] = sections['Kinesis'] + [
            (name.replace('_', ' '), name) for name in sorted(counters)
            if name.startswith(THROTTLED_ON_SHARD)]
        for name, (count, total, low, high) in distributions.items():
            counters[name] = (f'{count:,} requests: mean {total / count:,.0f}, '
                              f'min {low:,}, max {high:,}')
    print(format_summary(counters, sections))
    where = (f'Kinesis stream {sink.stream_name!r}' + (' (embedded)' if embedded else '')
             if sink else options.output)
    print(f'Exported {exported:,} profiles as of {as_of} to {where}; {dead:,} dead letters'
          + (f' in {options.dead_letter}' if dead else '') + '.')
    if checkpoint is not None:
        skipped = counters.get('records_already_acknowledged', 0)
        print(f'Checkpoint {options.checkpoint}: '
              + (f'resumed; {skipped:,} records acknowledged by an earlier attempt of this run '
                 'were not sent again.' if checkpoint.acknowledged_before else
                 'a first attempt; every acknowledged record was recorded there.'))
    return JobResult(EXIT_DEAD_LETTERS if dead else EXIT_OK, exported, dead, counters)


def _start_embedded(options: ExportOptions, config):
    from beam_kinesis.local_kinesis import EmbeddedKinesis  # moto is only needed here
    embedded = EmbeddedKinesis(region=aws_region(options, config) or 'us-east-1').start()
    embedded.create_stream(options.stream_name or config.stream, options.embedded_shards,
                           replace=True)
    print(f'No --stream_name, --endpoint_url or --output: writing to an embedded local '
          f'Kinesis at {embedded.endpoint_url} (moto), not to AWS.')
    return embedded


def _embedded_overrides(embedded) -> dict:
    settings = embedded.config('embedded')
    return {'region': settings.region, 'endpoint_url': settings.endpoint_url,
            'aws_access_key_id': settings.aws_access_key_id,
            'aws_secret_access_key': settings.aws_secret_access_key}


def _print_landed(embedded, stream: str, shown: int = 3) -> None:
    """Reads the embedded stream back and shows what landed on each shard."""
    landed = embedded.read_stream(stream)
    print(f'Read back from the embedded stream {stream!r}: '
          f'{sum(len(records) for records in landed.values()):,} records')
    for shard, records in sorted(landed.items()):
        print(f'  {shard}: {len(records):,} records')
        for key, data in records[:shown]:
            print(f'    {key}  {data.decode("utf-8")}')
        if len(records) > shown:
            print(f'    ... and {len(records) - shown:,} more')


def main() -> None:
    """Console-script entry point (`beam-kinesis-export`)."""
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    sys.exit(run(sys.argv[1:]))


if __name__ == '__main__':
    main()
