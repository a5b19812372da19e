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

from beam_kinesis.checkpoint import CheckpointError, open_checkpoint, run_identity
from beam_kinesis.config import ConfigError, load_destination_config, parse_as_of
from beam_kinesis.deadletter import WriteDeadLetters
from beam_kinesis.engine import REASONS, DetectChanges
from beam_kinesis.export import FormatExport
from beam_kinesis.files import OutputClaim, OutputError, WriteJsonLines, remove_stale
from beam_kinesis.job_options import (
    ExportOptions,
    OptionsError,
    beam_help,
    help_parser,
    parse_job_options,
)
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
from beam_kinesis.retry import ReadFailedWrites, plan_retries, wait_for
from beam_kinesis.sink_options import SINK_TUNING_OPTIONS, KinesisSinkOptions, split_credentials
from beam_kinesis.snapshot import (
    ReadSnapshot,
    SnapshotError,
    match_snapshot_files,
)
from beam_kinesis.summary import (
    MONITORING_ROWS,
    CollectReport,
    dead_letter_counts,
    excluded_identity_counts,
    format_summary,
    monitoring_figures,
    read_counts,
    read_report,
    retry_failure_counts,
    write_failure_counts,
)
from pipelines.portable import (
    PORTABLE_RUNNERS,
    absolute_local_paths,
    prepare_portable,
    runner_for,
    runner_name,
)

__all__ = ['ExportOptions', 'JobResult', 'build', 'run', 'run_job', 'main', 'EXIT_OK',
           'EXIT_FAILED', 'EXIT_START_FAILED', 'EXIT_DEAD_LETTERS', 'EXIT_INPUT_MISMATCH']

_LOGGER = logging.getLogger(__name__)

PROG = 'beam-kinesis-export'
EXIT_OK = 0
EXIT_FAILED = 1          # the pipeline failed while running: the sentence printed says why
EXIT_START_FAILED = 2    # nothing was read or written: the one sentence printed says why
EXIT_DEAD_LETTERS = 3    # the job finished, but some records are in the dead-letter output
EXIT_INPUT_MISMATCH = 4  # the input ledger did not balance: nothing was written


# Kept under their old names for callers of this module.
_split_credentials = split_credentials
_SINK_OPTIONS = SINK_TUNING_OPTIONS


def kinesis_config(options: ExportOptions, config, credentials: dict, **overrides
                   ) -> KinesisConfig:
    """The sink's configuration from the job options, the destination config and the keys."""
    fields = dict(credentials, region=aws_region(options, config))
    fields.update(overrides)
    try:
        return KinesisConfig.from_options(options, config.stream, **fields)
    except ValueError as err:
        raise ConfigError(f'Sink option: {err}.') from err


def aws_region(options: PipelineOptions, config) -> str | None:
    """The stream's region: --aws_region, else Beam's own --region where that is not the
    Dataflow job's region, else the destination config's (None: the AWS chain decides)."""
    own = options.view_as(KinesisSinkOptions).aws_region
    if own:
        return own
    beam_region = options.view_as(GoogleCloudOptions).region
    runner = options.view_as(StandardOptions).runner or ''
    if beam_region and 'dataflow' not in runner.lower():
        return beam_region
    return config.region


def build(pipeline: beam.Pipeline, options: ExportOptions, config, as_of: str,
          sink: KinesisConfig | None = None, report: str | None = None,
          retries=None, checkpoint=None) -> dict:
    """Wires the job's transforms into `pipeline` and returns its labelled outputs.

    Export records go to Kinesis when `sink` is given, to files under `--output` when that is
    set, or both; nothing is written before the input ledger balances; records a `checkpoint`
    shows acknowledged are not sent again. Every output ends in one report of counts
    (written to `report` if given), the pipeline's single last step.
    `config` is the run's (`DestinationConfig.for_run`). With `retries` (a `RetryPlan`) and a
    sink, an earlier run's failed writes are sent first: this run's records reach their sink
    only once that step has finished (a side input on its output).
    """
    detect = DetectChanges(config, key_field=options.key_field, on_delete=options.on_delete,
                           buckets=options.join_buckets, engine=options.engine)
    if detect.engine == 'reference':
        read_options = {'fields': detect.fields, 'normalize': False}
    else:
        read_options = {'projection': detect.projection}
    readers = {name: ReadSnapshot(getattr(options, name), options.input_format, label=name,
                                  max_line_bytes=options.max_line_bytes, **read_options)
               for name in ('previous', 'current') if getattr(options, name) is not None}
    reads = {name: pipeline | f'Read{name.title()}' >> reader
             for name, reader in readers.items()}
    snapshots = {name: read.records for name, read in reads.items()}
    snapshots.update({f'{name}_stats': read.stats for name, read in reads.items()})
    changes = snapshots | 'DetectChanges' >> detect
    export = changes.changes | 'FormatExport' >> FormatExport(config, as_of)
    read_stats = [read.stats for read in reads.values()] | 'ReadStats' >> beam.Flatten()
    format_stats = (export.stats, export.dead_letters | 'FormatDeadLetterCounts' >> beam.Map(
        dead_letter_counts)) | 'FormatStats' >> beam.Flatten()
    verdict = (read_stats, (changes.stats, format_stats) | 'JoinAndFormatStats' >> beam.Flatten()
               ) | 'InputLedger' >> ReconcileInput(
        {name: reader.files for name, reader in readers.items()}, options.input_format)

    records = after_ledger(export.records, verdict, 'RecordsAfterLedger')
    dead_letters = [after_ledger(
        [read.dead_letters for read in reads.values()] + [changes.dead_letters,
                                                          export.dead_letters]
        | 'InputDeadLetters' >> beam.Flatten(), verdict, 'DeadLettersAfterLedger')]
    counts = [read_stats | 'ReadCounts' >> beam.Map(read_counts), changes.stats, export.stats,
              changes.dead_letters | 'ExcludedIdentities' >> beam.Map(excluded_identity_counts),
              verdict | 'LedgerCounts' >> beam.Map(lambda totals: {'input_ledger_balanced': 1})]
    outputs = {'records': records}
    if options.output:
        outputs['files'] = (records
                            | 'RecordText' >> beam.Map(lambda item: item[1].decode('utf-8'))
                            | 'WriteExports' >> WriteJsonLines(options.output, 'exports',
                                                               options.output_shards))
        counts.append(outputs['files'] | 'ExportFileCounts' >> beam.Map(
            _file_counts, 'export_files'))
    if sink is not None:
        # On Dask the sink must send everything from process (see WriteToKinesis).
        group_into = (options.view_as(_dask_options()).npartitions or 2
                      if is_dask(options) else None)
        to_send = records
        if retries is not None and retries.files:
            retried = after_ledger(pipeline | 'ReadFailedWrites' >> ReadFailedWrites(retries),
                                   verdict, 'RetriesAfterLedger')
            failed_again = retried | 'RetryToKinesis' >> WriteToKinesis(sink,
                                                                        group_into=group_into)
            to_send = wait_for(records, failed_again, 'AfterRetries')
            dead_letters.append(failed_again)
            counts += [retried | 'RetriedCounts' >> beam.Map(
                           lambda _: {'retried_from_earlier_run': 1}),
                       failed_again | 'FailedAgainCounts' >> beam.Map(retry_failure_counts)]
        written = to_send | 'WriteToKinesis' >> WriteToKinesis(
            sink, group_into=group_into, checkpoint=checkpoint)
        dead_letters.append(written)
        counts.append(written | 'WriteFailureCounts' >> beam.Map(write_failure_counts))
    all_dead = dead_letters | 'AllDeadLetters' >> beam.Flatten()
    outputs['dead_letters'] = all_dead | 'WriteDeadLetters' >> WriteDeadLetters(
        options.dead_letter)
    counts += [all_dead | 'DeadLetterCounts' >> beam.Map(dead_letter_counts),
               outputs['dead_letters'] | 'DeadLetterFileCounts' >> beam.Map(
                   _file_counts, 'dead_letter_files')]
    outputs['report'] = counts | 'AllCounts' >> beam.Flatten() | 'Report' >> CollectReport(
        report or FileSystems.join(options.dead_letter, 'run-report.json'),
        derive=monitoring_figures)
    return outputs


# Report entries naming the files a run wrote: the files of its output directories that are
# not among them are an earlier run's, removed once the run has finished.
_WRITTEN = 'written:'


def _file_counts(path: str, name: str) -> dict:
    return {name: 1, f'{_WRITTEN}{path}': 1}


def _remove_stale_files(options: ExportOptions, counters: dict) -> None:
    written = {name[len(_WRITTEN):] for name in list(counters) if name.startswith(_WRITTEN)}
    for name in [name for name in counters if name.startswith(_WRITTEN)]:
        del counters[name]
    if not counters.get('input_ledger_balanced'):
        return  # no report of this run: what it wrote is not known, so nothing is removed
    targets = [(options.dead_letter, 'dead_letters')]
    if options.output:
        targets.append((options.output, 'exports'))
    for directory, prefix in targets:
        for path in remove_stale(directory, prefix, written):
            _LOGGER.info('Removed %s, a file of an earlier run.', path)


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
    'Retried from an earlier run': [('write dead letters retried', 'retried_from_earlier_run'),
                                    ('landed', 'retried_landed'),
                                    ('failed again (dead letters)', 'retries_failed_again')],
    'Monitoring (this run)': MONITORING_ROWS,
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
    otherwise (without `--dask_client_address` Dask starts a local cluster); points
    `--runner FlinkRunner` / `SparkRunner` at a fetched job server jar (pipelines.portable)."""
    standard = options.view_as(StandardOptions)
    if (standard.runner or '') in _LOCAL_RUNNERS:
        standard.runner = 'FnApiRunner'
    prepare_portable(options)  # Flink and Spark: the fetched job server jar if Beam's is absent
    if runner_name(options) in PORTABLE_RUNNERS:
        # Their SDK workers may run elsewhere than the launcher's working directory.
        absolute_local_paths(options, ('current', 'previous', 'output', 'dead_letter',
                                       'report'))
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


# The longest start-up sentence printed: values quoted in it are cut well before.
_MAX_SENTENCE_CHARS = 1000


def _start_error(message: str, prog: str = PROG) -> int:
    message = ' '.join(message.split())
    if len(message) > _MAX_SENTENCE_CHARS:
        message = message[:_MAX_SENTENCE_CHARS] + '...'
    print(f'{prog}: {message}', file=sys.stderr)
    return EXIT_START_FAILED


@dataclasses.dataclass(frozen=True)
class JobResult:
    """How a run ended: its exit status (`EXIT_*`), and the summary's counts."""
    status: int
    exported: int = 0
    dead_letters: int = 0
    counters: dict = dataclasses.field(default_factory=dict)


def run(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Runs the job; returns the process exit status (see `EXIT_*`)."""
    return run_job(argv, prog).status


DESCRIPTION = ('Diff two profile snapshots and send the changed profiles to Amazon Kinesis '
               '(or to files with --output alone).')


def wants_help(argv: list[str], prog: str, description: str = DESCRIPTION,
               classes=None, suppress=()) -> bool:
    """Prints the grouped `--help` (or Beam's options for `--help_beam`) when asked."""
    if '--help_beam' in argv:
        print(beam_help(prog))
        return True
    if '-h' in argv or '--help' in argv:
        parser = (help_parser(prog, description, suppress=suppress) if classes is None
                  else help_parser(prog, description, classes, suppress))
        parser.print_help()
        return True
    return False


def run_job(argv: list[str] | None = None, prog: str = PROG) -> JobResult:
    """Runs the job, printing its summary; returns how it ended, with its counts."""
    credentials, argv = split_credentials(list(sys.argv[1:] if argv is None else argv))
    if wants_help(argv, prog):
        return JobResult(EXIT_OK)
    embedded = claim = None
    try:
        options = parse_job_options(argv).view_as(ExportOptions)
    except OptionsError as err:
        return JobResult(_start_error(str(err), prog))
    missing = [f'--{name}' for name in ('current', 'destination_config')
               if not getattr(options, name)]
    if missing:
        return JobResult(_start_error(f'{" and ".join(missing)} must be given (see --help).',
                                      prog))
    sink_options = options.view_as(KinesisSinkOptions)
    try:
        prepare_runner(options)
        config = load_destination_config(options.destination_config)
        as_of = parse_as_of(options.as_of) if options.as_of is not None else (
            datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'))
        # Every option is checked before anything is made on disk (the claim makes missing
        # output directories).
        run = run_config(options, config, as_of)
        claim = OutputClaim({'--output': options.output, '--dead_letter': options.dead_letter},
                            options.report).acquire()
        if sink_options.stream_name or sink_options.endpoint_url:
            sink = kinesis_config(options, config, credentials)
        elif options.output:
            sink = None
        else:
            embedded = _start_embedded(options, config)
            sink = kinesis_config(options, config, {}, aws_role_arn=None,
                                  **_embedded_overrides(embedded))
        config = run
        if options.retry_failed and (os.path.abspath(options.retry_failed.rstrip('/'))
                                     == os.path.abspath(options.dead_letter.rstrip('/'))):
            raise ConfigError('--retry_failed names this run\'s own --dead_letter directory; '
                              'give the dead letters of an earlier run.')
        retries = plan_retries(options.retry_failed) if options.retry_failed else None
        if retries is not None and sink is None:
            raise ConfigError('--retry_failed sends records to Kinesis, but --output alone '
                              'writes files only: give --stream_name or --endpoint_url too.')
        if retries is not None and not retries.files:
            print(f'--retry_failed {retries.pattern}: no dead-letter file there, nothing to '
                  'retry.')
        elif retries is not None:
            files = len(retries.files)
            print(f'--retry_failed {retries.pattern}: {retries.records:,} write dead letters '
                  f'in {files:,} file{"" if files == 1 else "s"} to send again before this '
                  'run\'s records'
                  + (f' ({retries.other_stages:,} of other stages are not retried)'
                     if retries.other_stages else '') + '.')
        if sink is not None:
            check_stream(sink)  # before any data is read
        checkpoint = (_open_checkpoint(options, sink, embedded, as_of) if options.checkpoint
                      else None)
        if options.previous and not options.allow_empty_current:
            _refuse_empty_current(options.current)
        pipeline = beam.Pipeline(runner=runner_for(options), options=options)
        scratch = None if options.report else tempfile.mkdtemp(prefix='beam-kinesis-')
        report = options.report or os.path.join(scratch, 'run-report.json')
        build(pipeline, options, config, as_of, sink, report, retries, checkpoint)
    except (ConfigError, SnapshotError, KinesisStreamError, OutputError, CheckpointError) as err:
        if embedded is not None:
            embedded.stop()
        if claim is not None:
            claim.release()
        return JobResult(_start_error(str(err), prog))
    except BaseException:
        if claim is not None:
            claim.release()  # a lock left behind would refuse the next run
        raise
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
        _remove_stale_files(options, counters)
    except Exception as err:  # the runner's error, perhaps wrapped in a worker's traceback
        print(f'{prog}: the job failed: {_failure_sentence(err)}', file=sys.stderr)
        if isinstance(err, InputLedgerError) or _LEDGER_MESSAGE in str(err):
            return JobResult(EXIT_INPUT_MISMATCH)
        return JobResult(EXIT_FAILED)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        if embedded is not None:
            embedded.stop()
        claim.release()
    exported = sum(counters.get(f'exported_{reason}', 0) for reason in REASONS)
    dead = sum(value for name, value in counters.items() if name.startswith('dead_letters_'))
    sections = {title: rows for title, rows in _SUMMARY.items()
                if (title != 'Kinesis' or sink is not None)
                and (title != 'Retried from an earlier run' or retries is not None)}
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
    retried = (f'; {counters.get("retried_landed", 0):,} of '
               f'{counters.get("retried_from_earlier_run", 0):,} retried records of an earlier '
               'run landed' if retries is not None else '')
    print(f'Exported {exported:,} profiles as of {as_of} to {where}{retried}; {dead:,} dead '
          'letters' + (f' in {options.dead_letter}' if dead else '') + '.')
    if checkpoint is not None:
        skipped = counters.get('records_already_acknowledged', 0)
        print(f'Checkpoint {options.checkpoint}: '
              + (f'resumed; {skipped:,} records acknowledged by an earlier attempt of this run '
                 'were not sent again.' if checkpoint.acknowledged_before else
                 'a first attempt; every acknowledged record was recorded there.'))
    return JobResult(EXIT_DEAD_LETTERS if dead else EXIT_OK, exported, dead, counters)


def run_config(options: ExportOptions, config, as_of: str):
    """The destination config as this run sees it: the segments mapped by `as_of`, and
    those newly mapped since `--previous_as_of` (SPEC 8)."""
    previous_as_of = options.previous_as_of
    if previous_as_of is not None:
        parse_as_of(previous_as_of, '--previous_as_of')
        if not options.previous:
            raise ConfigError('--previous_as_of is the time of the previous snapshot, so it '
                              'needs --previous.')
    elif options.previous and config.mapping_times:
        raise ConfigError('A mapped segment of the destination config has a mapped_at, so a '
                          'run with --previous needs --previous_as_of (the previous '
                          'snapshot\'s time) to know which segments are newly mapped.')
    return config.for_run(as_of, previous_as_of)


def _start_embedded(options: ExportOptions, config):
    from beam_kinesis.local_kinesis import EmbeddedKinesis  # moto is only needed here
    embedded = EmbeddedKinesis(region=aws_region(options, config) or 'us-east-1').start()
    embedded.create_stream(options.view_as(KinesisSinkOptions).stream_name or config.stream,
                           options.embedded_shards,
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
