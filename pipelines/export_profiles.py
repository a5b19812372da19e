"""The export job's launcher: parse the command line, wire the library's transforms, run.

    read snapshots (key + digest per profile) -> CoGroupByKey by key bucket -> compare digests
    -> read the changed profiles again -> classify change -> format export JSON
    -> write to Kinesis or files -> dead letters

As Google's `pipeline_with_dependencies` Dataflow sample splits a job: `run_job` parses the
options and `build` wires transforms; the policy around them (region, runner set-up, the
embedded Kinesis, checkpoint, failure sentences, summary) is `beam_kinesis.job` and
`beam_kinesis.runners`, and the options are `beam_kinesis.job_options`. `run_options` runs
the job from parsed options: the backfill calls it for each pair (`backfill.export_pair`).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import shutil
import sys
import tempfile
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beam_kinesis import progress
from beam_kinesis.checkpoint import CheckpointError
from beam_kinesis.config import ConfigError, load_destination_config, parse_as_of
from beam_kinesis.deadletter import WriteDeadLetters
from beam_kinesis.engine import DetectChanges
from beam_kinesis.export import FormatExport
from beam_kinesis.files import OutputClaim, OutputError, WriteJsonLines
from beam_kinesis.job import (
    EXIT_DEAD_LETTERS,
    EXIT_FAILED,
    EXIT_INPUT_MISMATCH,
    EXIT_OK,
    EXIT_START_FAILED,
    LEDGER_MESSAGE,
    JobResult,
    aws_region,
    check_html_report,
    check_output_ledger,
    check_sink_ledger,
    embedded_overrides,
    failure_sentence,
    failure_status,
    file_counts,
    kinesis_config,
    one_sentence,
    open_run_checkpoint,
    print_landed,
    print_summary,
    refuse_empty_current,
    remove_stale_files,
    run_config,
    start_embedded,
    summary_sections,
    write_html_report,
)
from beam_kinesis.job_options import (
    ExportOptions,
    OptionsError,
    beam_help,
    check_ranges,
    help_parser,
    parse_job_options,
)
from beam_kinesis.kinesis import (
    KinesisConfig,
    KinesisStreamError,
    WriteToKinesis,
    check_stream,
    paced_for,
    sink_metrics,
)
from beam_kinesis.ledger import ReconcileInput, after_ledger
from beam_kinesis.retry import ReadFailedWrites, plan_retries, wait_for
from beam_kinesis.runners import dask_options, is_dask, runner_for, runner_name
from beam_kinesis.runners import prepare_runner as _prepare_runner
from beam_kinesis.sink_options import SINK_TUNING_OPTIONS, KinesisSinkOptions, split_credentials
from beam_kinesis.snapshot import ReadSnapshot, SnapshotError
from beam_kinesis.summary import (
    CollectReport,
    collect_counters,
    dead_letter_counts,
    excluded_identity_counts,
    monitoring_figures,
    read_counts,
    read_report,
    retry_failure_counts,
    write_failure_counts,
)

__all__ = [
    'ExportOptions',
    'JobResult',
    'build',
    'run',
    'run_job',
    'run_options',
    'main',
    'prepare_runner',
    'EXIT_OK',
    'EXIT_FAILED',
    'EXIT_START_FAILED',
    'EXIT_DEAD_LETTERS',
    'EXIT_INPUT_MISMATCH',
]

_LOGGER = logging.getLogger(__name__)

PROG = 'beam-kinesis-export'

# Kept under their old names for callers of this module (tests, benchmarks).
_split_credentials = split_credentials
_SINK_OPTIONS = SINK_TUNING_OPTIONS
_failure_sentence = failure_sentence
_LEDGER_MESSAGE = LEDGER_MESSAGE
__all__ += ['aws_region', 'kinesis_config', 'run_config']


def _unknown_options(options: PipelineOptions) -> list[str]:
    """Flags no options class knows (kept for older callers; `parse_job_options` is the
    complete check, with suggestions and ranges)."""
    known = options.get_all_options()
    unknown = set(options.get_all_options(retain_unknown_options=True)) - set(known)
    return sorted(f'--{name.split("=")[0]}' for name in unknown)


def build(
    pipeline: beam.Pipeline,
    options: ExportOptions,
    config,
    as_of: str,
    sink: KinesisConfig | None = None,
    report: str | None = None,
    retries=None,
    checkpoint=None,
) -> dict:
    """Wires the job's transforms into `pipeline` and returns its labelled outputs.

    Export records go to Kinesis when `sink` is given, to files under `--output` when that is
    set, or both; nothing is written before the input ledger balances; records a `checkpoint`
    shows acknowledged are not sent again. Every output ends in one report of counts
    (written to `report` if given), the pipeline's single last step.
    `config` is the run's (`DestinationConfig.for_run`). With `retries` (a `RetryPlan`) and a
    sink, an earlier run's failed writes are sent first: this run's records reach their sink
    only once that step has finished (a side input on its output).
    """
    detect = DetectChanges(
        config,
        key_field=options.key_field,
        on_delete=options.on_delete,
        buckets=options.join_buckets,
        engine=options.engine,
    )
    if detect.engine == 'reference':
        read_options = {'fields': detect.fields, 'normalize': False}
    else:
        read_options = {'projection': detect.projection}
    readers = {
        name: ReadSnapshot(
            getattr(options, name),
            options.input_format,
            label=name,
            max_line_bytes=options.max_line_bytes,
            **read_options,
        )
        for name in ('previous', 'current')
        if getattr(options, name) is not None
    }
    reads = {name: pipeline | f'Read{name.title()}' >> reader for name, reader in readers.items()}
    snapshots = {name: read.records for name, read in reads.items()}
    snapshots.update({f'{name}_stats': read.stats for name, read in reads.items()})
    changes = snapshots | 'DetectChanges' >> detect
    export = changes.changes | 'FormatExport' >> FormatExport(config, as_of)
    read_stats = [read.stats for read in reads.values()] | 'ReadStats' >> beam.Flatten()
    format_stats = (
        export.stats,
        export.dead_letters | 'FormatDeadLetterCounts' >> beam.Map(dead_letter_counts),
    ) | 'FormatStats' >> beam.Flatten()
    verdict = (
        read_stats,
        (changes.stats, format_stats) | 'JoinAndFormatStats' >> beam.Flatten(),
    ) | 'InputLedger' >> ReconcileInput(
        {name: reader.files for name, reader in readers.items()}, options.input_format
    )

    records = after_ledger(export.records, verdict, 'RecordsAfterLedger')
    dead_letters = [
        after_ledger(
            [read.dead_letters for read in reads.values()]
            + [changes.dead_letters, export.dead_letters]
            | 'InputDeadLetters' >> beam.Flatten(),
            verdict,
            'DeadLettersAfterLedger',
        )
    ]
    counts = [
        read_stats | 'ReadCounts' >> beam.Map(read_counts),
        changes.stats,
        export.stats,
        changes.dead_letters | 'ExcludedIdentities' >> beam.Map(excluded_identity_counts),
        verdict | 'LedgerCounts' >> beam.Map(lambda totals: {'input_ledger_balanced': 1}),
    ]
    outputs = {'records': records}
    if options.output:
        outputs['files'] = (
            records
            | 'RecordText' >> beam.Map(lambda item: item[1].decode('utf-8'))
            | 'WriteExports' >> WriteJsonLines(options.output, 'exports', options.output_shards)
        )
        counts.append(
            outputs['files'] | 'ExportFileCounts' >> beam.Map(file_counts, 'export_files')
        )
    if sink is not None:
        # On Dask the sink must send everything from process (see WriteToKinesis).
        group_into = options.view_as(dask_options()).npartitions or 2 if is_dask(options) else None
        to_send = records
        if retries is not None and retries.files:
            retried = after_ledger(
                pipeline | 'ReadFailedWrites' >> ReadFailedWrites(retries),
                verdict,
                'RetriesAfterLedger',
            )
            failed_again = retried | 'RetryToKinesis' >> WriteToKinesis(sink, group_into=group_into)
            to_send = wait_for(records, failed_again, 'AfterRetries')
            dead_letters.append(failed_again)
            counts += [
                retried | 'RetriedCounts' >> beam.Map(lambda _: {'retried_from_earlier_run': 1}),
                failed_again | 'FailedAgainCounts' >> beam.Map(retry_failure_counts),
            ]
        written = to_send | 'WriteToKinesis' >> WriteToKinesis(
            sink, group_into=group_into, checkpoint=checkpoint
        )
        dead_letters.append(written)
        counts.append(written | 'WriteFailureCounts' >> beam.Map(write_failure_counts))
    all_dead = dead_letters | 'AllDeadLetters' >> beam.Flatten()
    outputs['dead_letters'] = all_dead | 'WriteDeadLetters' >> WriteDeadLetters(options.dead_letter)
    counts += [
        all_dead | 'DeadLetterCounts' >> beam.Map(dead_letter_counts),
        outputs['dead_letters']
        | 'DeadLetterFileCounts' >> beam.Map(file_counts, 'dead_letter_files'),
    ]
    outputs['report'] = (
        counts
        | 'AllCounts' >> beam.Flatten()
        | 'Report'
        >> CollectReport(
            report or FileSystems.join(options.dead_letter, 'run-report.json'),
            derive=monitoring_figures,
        )
    )
    return outputs


def prepare_runner(options: PipelineOptions) -> None:
    """`beam_kinesis.runners.prepare_runner` with the job's local paths."""
    _prepare_runner(options.view_as(ExportOptions), _LOCAL_PATH_OPTIONS)


# Options naming local paths that a portable runner's workers read or write.
_LOCAL_PATH_OPTIONS = ('current', 'previous', 'output', 'dead_letter', 'report')

DESCRIPTION = (
    'Diff two profile snapshots and send the changed profiles to Amazon Kinesis '
    '(or to files with --output alone).'
)


def _start_error(message: str, prog: str = PROG) -> int:
    print(f'{prog}: {one_sentence(message)}', file=sys.stderr)
    return EXIT_START_FAILED


def run(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Runs the job; returns the process exit status (see `EXIT_*`)."""
    return run_job(argv, prog).status


def run_job(argv: list[str] | None = None, prog: str = PROG) -> JobResult:
    """Parses `argv` and runs the job, printing its summary; returns how it ended."""
    credentials, argv = split_credentials(list(sys.argv[1:] if argv is None else argv))
    if '--help_beam' in argv:
        print(beam_help(prog))
        return JobResult(EXIT_OK)
    if '-h' in argv or '--help' in argv:
        help_parser(prog, DESCRIPTION).print_help()
        return JobResult(EXIT_OK)
    try:
        options = parse_job_options(argv)
    except OptionsError as err:
        return JobResult(_start_error(str(err), prog))
    return run_options(options, credentials, prog)


def run_options(
    options: PipelineOptions, credentials: dict | None = None, prog: str = PROG
) -> JobResult:
    """Runs the job from parsed options (`ExportOptions`, `KinesisSinkOptions` and Beam's),
    printing its summary; returns how it ended, with its counts.

    Args:
      options: the run's options; their values are checked as a command line's would be.
      credentials: the explicit AWS key pair and external id (`split_credentials`), which
        are never options.
      prog: the name the messages begin with.
    """
    options = options.view_as(ExportOptions)
    credentials = credentials or {}
    embedded = claim = None
    missing = [
        f'--{name}' for name in ('current', 'destination_config') if not getattr(options, name)
    ]
    if missing:
        return JobResult(_start_error(f'{" and ".join(missing)} must be given (see --help).', prog))
    sink_options = options.view_as(KinesisSinkOptions)
    try:
        check_ranges(options)  # as a command line is checked, for callers of the Python API
        prepare_runner(options)
        config = load_destination_config(options.destination_config)
        as_of = (
            parse_as_of(options.as_of)
            if options.as_of is not None
            else (datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'))
        )
        html_report = check_html_report(options.html_report)  # before anything is read
        # Every option is checked before anything is made on disk (the claim makes missing
        # output directories).
        run = run_config(options, config, as_of)
        claim = OutputClaim(
            {'--output': options.output, '--dead_letter': options.dead_letter}, options.report
        ).acquire()
        if sink_options.stream_name or sink_options.endpoint_url:
            sink = kinesis_config(options, config, credentials)
        elif options.output:
            sink = None
        else:
            embedded = start_embedded(options, config)
            sink = kinesis_config(
                options, config, {}, aws_role_arn=None, **embedded_overrides(embedded)
            )
        config = run
        retries = _plan_retries(options, sink)
        if sink is not None:
            sink = paced_for(sink, check_stream(sink))  # before any data is read
        checkpoint = (
            open_run_checkpoint(options, sink, embedded, as_of) if options.checkpoint else None
        )
        if options.previous and not options.allow_empty_current:
            refuse_empty_current(options.current)
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
    started = time.time()
    try:
        with progress.live_progress(options, options.quiet) or contextlib.nullcontext():
            result = pipeline.run()
            result.wait_until_finish()
        counters = read_report(report)
        sink_counters, distributions = sink_metrics(result)
        counters.update(sink_counters)
        # The report's charts also use the sink's per-shard and per-second counters.
        metrics = collect_counters(result) if html_report else {}
        if getattr(result, 'client', None) is not None:  # a Dask client: let go of the cluster
            result.client.close()
        if embedded is not None:
            print_landed(embedded, sink.stream_name)
        if counters:  # a report: the run finished (Dask keeps no report of a failed one)
            check_output_ledger(options, counters)
            if sink is not None:
                check_sink_ledger(counters)
        remove_stale_files(options, counters)
    except Exception as err:  # the runner's error, perhaps wrapped in a worker's traceback
        print(f'{prog}: the job failed: {failure_sentence(err)}', file=sys.stderr)
        return JobResult(failure_status(err))
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        if embedded is not None:
            embedded.stop()
        claim.release()
    ended = print_summary(
        counters,
        distributions,
        as_of=as_of,
        sink=sink,
        embedded=embedded is not None,
        output=options.output,
        dead_letter=options.dead_letter,
        retried=retries is not None,
        checkpoint=checkpoint,
        checkpoint_path=options.checkpoint,
    )
    if html_report:
        where = (
            f'Kinesis stream {sink.stream_name!r}' + (' (embedded)' if embedded else '')
            if sink
            else options.output
        )
        sections = summary_sections(counters, distributions, sink, retries is not None)
        write_html_report(
            html_report,
            {**metrics, **counters},
            sections,
            {
                'as of': as_of,
                'current snapshot': options.current,
                'previous snapshot': options.previous or '(none: a first run)',
                'destination': where,
                'runner': runner_name(options),
                'started': datetime.datetime.fromtimestamp(started, datetime.timezone.utc).strftime(
                    '%Y-%m-%d %H:%M:%S UTC'
                ),
                'took': f'{time.time() - started:,.1f} s',
                'ended': f'{ended.exported:,} profiles exported, {ended.dead_letters:,} dead '
                'letters',
            },
            prog,
        )
    return ended


def _plan_retries(options: ExportOptions, sink: KinesisConfig | None):
    """The `--retry_failed` plan of the run (None without it), announced in one line."""
    if not options.retry_failed:
        return None
    if os.path.abspath(options.retry_failed.rstrip('/')) == os.path.abspath(
        options.dead_letter.rstrip('/')
    ):
        raise ConfigError(
            "--retry_failed names this run's own --dead_letter directory; "
            'give the dead letters of an earlier run.'
        )
    retries = plan_retries(options.retry_failed)
    if sink is None:
        raise ConfigError(
            '--retry_failed sends records to Kinesis, but --output alone '
            'writes files only: give --stream_name or --endpoint_url too.'
        )
    if not retries.files:
        print(f'--retry_failed {retries.pattern}: no dead-letter file there, nothing to retry.')
    else:
        files = len(retries.files)
        print(
            f'--retry_failed {retries.pattern}: {retries.records:,} write dead letters '
            f'in {files:,} file{"" if files == 1 else "s"} to send again before this '
            "run's records"
            + (
                f' ({retries.other_stages:,} of other stages are not retried)'
                if retries.other_stages
                else ''
            )
            + '.'
        )
    return retries


def main() -> None:
    """Console-script entry point (`beam-kinesis-export`)."""
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    sys.exit(run(sys.argv[1:]))


if __name__ == '__main__':
    main()
