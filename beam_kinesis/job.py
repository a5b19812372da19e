"""The export job's policy, as a library: what the launcher (`pipelines/export_profiles.py`)
and the other subcommands decide around the pipeline, kept here where it is tested and
reused instead of in `pipelines/`.

- where the records go: the sink's configuration and region (`kinesis_config`,
  `aws_region`), the embedded local Kinesis's lifecycle (`start_embedded`,
  `embedded_overrides`, `print_landed`);
- what the run may do: the config as of the run (`run_config`), an empty current snapshot
  (`refuse_empty_current`), the checkpoint of a resumable run (`open_run_checkpoint`);
- how it ended: exit statuses (`EXIT_*`), `JobResult`, the one sentence of a failure buried
  in a runner's traceback (`failure_sentence`), the summary (`SUMMARY`, `print_summary`) and
  the files of an earlier run removed once this one has finished (`remove_stale_files`).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import sys

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
)

from beam_kinesis import counts
from beam_kinesis.checkpoint import open_checkpoint, run_identity
from beam_kinesis.config import ConfigError, parse_as_of
from beam_kinesis.engine import REASONS
from beam_kinesis.files import remove_stale
from beam_kinesis.job_options import ExportOptions
from beam_kinesis.kinesis import (
    SINK_COUNTERS,
    SINK_DISTRIBUTIONS,
    THROTTLED_ON_SHARD,
    KinesisConfig,
    KinesisWriteError,
)
from beam_kinesis.ledger import InputLedgerError
from beam_kinesis.sink_options import SINK_TUNING_OPTIONS, KinesisSinkOptions
from beam_kinesis.snapshot import match_snapshot_files
from beam_kinesis.summary import MONITORING_ROWS, format_summary

__all__ = [
    'EXIT_OK',
    'EXIT_FAILED',
    'EXIT_START_FAILED',
    'EXIT_DEAD_LETTERS',
    'EXIT_INPUT_MISMATCH',
    'JobResult',
    'LEDGER_MESSAGE',
    'NOT_IN_CHECKPOINT',
    'SUMMARY',
    'aws_region',
    'check_html_report',
    'embedded_overrides',
    'failure_sentence',
    'failure_status',
    'file_counts',
    'kinesis_config',
    'one_sentence',
    'open_run_checkpoint',
    'print_landed',
    'print_summary',
    'refuse_empty_current',
    'remove_stale_files',
    'run_config',
    'start_embedded',
    'summary_sections',
    'write_html_report',
]

_LOGGER = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1  # the pipeline failed while running: the sentence printed says why
EXIT_START_FAILED = 2  # nothing was read or written: the one sentence printed says why
EXIT_DEAD_LETTERS = 3  # the job finished, but some records are in the dead-letter output
EXIT_INPUT_MISMATCH = 4  # the input ledger did not balance: nothing was written


def kinesis_config(options: ExportOptions, config, credentials: dict, **overrides) -> KinesisConfig:
    """The sink's configuration from the job options, the destination config and the keys."""
    fields = dict(credentials, region=aws_region(options, config))
    fields.update(overrides)
    # An explicit stream (an override) wins over --stream_name; the config's is the fallback.
    stream = fields.pop('stream_name', None)
    try:
        sink = KinesisConfig.from_options(options, stream or config.stream, **fields)
        return dataclasses.replace(sink, stream_name=stream) if stream else sink
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


def file_counts(path: str, name: str) -> dict:
    """A file the run wrote, counted and named in the report (`counts.written`): the files of
    its output directories that are not named there are an earlier run's."""
    return {name: 1, counts.written(path): 1}


class OutputLedgerError(RuntimeError):
    """The files a finished run wrote do not hold what it made."""


def check_output_ledger(options: ExportOptions, counters: dict) -> None:
    """Reads back the files a finished run wrote: its export files must hold one line per
    export record it made, and its dead-letter files one line per dead letter.

    The input ledger guards what reaches the formatting; this guards what reaches the files,
    where a runner could still lose a shard (or the note of one) without an error.

    Raises:
      OutputLedgerError: the counts differ; the message names both.
    """
    from beam_kinesis.ledger import count_file_records

    written = counts.written_paths(counters)
    expected = [
        ('export', options.output, 'exports-', counts.total(counters, counts.EXPORTED)),
        (
            'dead-letter',
            options.dead_letter,
            'dead_letters-',
            counts.total(counters, counts.DEAD_LETTERS),
        ),
    ]
    problems = []
    for what, directory, prefix, made in expected:
        if directory is None:
            continue
        paths = [
            path
            for path in written
            if path.startswith(directory.rstrip('/')) and os.path.basename(path).startswith(prefix)
        ]
        lines, missing = 0, 0
        for path in paths:
            try:
                lines += count_file_records(path, 'jsonl')
            except Exception:  # pylint: disable=broad-except  # gone, or cannot be read
                missing += 1
        if lines != made or missing:
            problems.append(
                f'{made:,} {what} records were made but the {len(paths):,} '
                f'{what} files this run wrote hold {lines:,} lines'
                + (f' ({missing:,} of them missing or unreadable)' if missing else '')
            )
    if problems:
        raise OutputLedgerError(
            f'The output does not balance: {"; ".join(problems)} (the runner lost some; '
            'seen with --direct_running_mode multi_processing). No file of an earlier run '
            'was removed; run the job again.'
        )


def check_sink_ledger(counters: dict) -> None:
    """After a run that sent to Kinesis: every record it made (and every earlier run's
    record it retried) was acknowledged, dead-lettered, or shown acknowledged by a
    checkpoint, by the sink's own counts. Runners without metrics (Dask) are not checked.

    Raises:
      OutputLedgerError: the counts differ; the message names both.
    """
    if 'records_sent' not in counters:
        return  # the runner keeps no metrics
    expected = counts.total(counters, counts.EXPORTED)
    expected += counters.get(counts.RETRIED_FROM_EARLIER_RUN, 0)
    handled = sum(
        counters.get(name, 0)
        for name in ('records_sent', 'records_dead_lettered', 'records_already_acknowledged')
    )
    if handled != expected:
        raise OutputLedgerError(
            f'The output does not balance: {expected:,} records were to be sent to Kinesis but '
            f'the sink accounted for {handled:,} (acknowledged, dead-lettered, or acknowledged '
            'by an earlier attempt); the runner lost some (seen with --direct_running_mode '
            'multi_processing). Run the job again; records already sent are sent again unless '
            '--checkpoint is given.'
        )


def remove_stale_files(options: ExportOptions, counters: dict) -> None:
    written = counts.written_paths(counters)
    for path in written:
        del counters[counts.written(path)]
    if not counters.get('input_ledger_balanced'):
        return  # no report of this run: what it wrote is not known, so nothing is removed
    targets = [(options.dead_letter, 'dead_letters')]
    if options.output:
        targets.append((options.output, 'exports'))
    for directory, prefix in targets:
        for path in remove_stale(directory, prefix, written):
            _LOGGER.info('Removed %s, a file of an earlier run.', path)


SUMMARY = {
    'Read': [
        ('previous snapshot files', 'previous_files'),
        ('previous snapshot records', 'previous_records_read'),
        ('current snapshot files', 'current_files'),
        ('current snapshot records', 'current_records_read'),
        ('profiles compared', 'profiles_compared'),
        ('input ledger balanced', 'input_ledger_balanced'),
    ],
    'Exported': [(f'by {reason.replace("_", " ")}', f'exported_{reason}') for reason in REASONS]
    + [
        ('withheld (dead-lettered)', 'exports_withheld'),
        ('skipped, invalid in a snapshot', 'profiles_invalid'),
    ],
    'Kinesis': [(name.replace('_', ' '), name) for name in SINK_COUNTERS]
    + [(name.replace('_', ' '), name) for name in SINK_DISTRIBUTIONS],
    'Retried from an earlier run': [
        ('write dead letters retried', 'retried_from_earlier_run'),
        ('landed', 'retried_landed'),
        ('failed again (dead letters)', 'retries_failed_again'),
    ],
    'Monitoring (this run)': MONITORING_ROWS,
    'Dead letters': [
        (f'{stage}', f'dead_letters_{stage}')
        for stage in ('read', 'validate', 'join', 'format', 'write')
    ],
}


def refuse_empty_current(pattern: str) -> None:
    """An empty current snapshot beside a previous one would export every member as
    deleted: more likely a failed snapshot than the end of every profile."""
    files = match_snapshot_files(pattern)
    sizes = FileSystems.match(files)
    if all(metadata.size_in_bytes == 0 for result in sizes for metadata in result.metadata_list):
        raise ConfigError(
            f'The current snapshot {pattern!r} holds no record, so every member '
            'of the previous snapshot would be exported as deleted; pass '
            '--allow_empty_current if that is meant.'
        )


# Options that cannot change which records a run sends or where: a checkpoint stays valid
# across them (the sink's tuning, where files and reports go, the inputs' patterns, which
# the checkpoint identifies by the files they match).
NOT_IN_CHECKPOINT = frozenset(
    {
        'current',
        'previous',
        'destination_config',
        'output',
        'output_shards',
        'dead_letter',
        'report',
        'html_report',
        'quiet',
        'checkpoint',
        'embedded_shards',
        'stream_name',
        'aws_region',
        'endpoint_url',
        'aws_role_arn',
        'aws_role_session_name',
        'join_buckets',
    }
    | {name for name, _, _ in SINK_TUNING_OPTIONS}
)


def open_run_checkpoint(options: ExportOptions, sink: KinesisConfig | None, embedded, as_of: str):
    """Opens `--checkpoint` for this run, or refuses it with one sentence."""
    if sink is None or embedded is not None:
        raise ConfigError(
            '--checkpoint records what a Kinesis stream acknowledged, so it needs '
            '--stream_name or --endpoint_url.'
        )
    if not options.as_of:
        raise ConfigError(
            '--checkpoint needs an explicit --as_of, so that running the command '
            'again makes the same records.'
        )
    files = {
        name: match_snapshot_files(getattr(options, name))
        for name in ('previous', 'current')
        if getattr(options, name)
    }
    parser = argparse.ArgumentParser(add_help=False)
    ExportOptions._add_argparse_args(parser)
    shaping = {
        name: getattr(options, name)
        for name in vars(parser.parse_args([]))
        if name not in NOT_IN_CHECKPOINT
    }
    identity = run_identity(
        files,
        options.destination_config,
        dict(shaping, as_of=as_of),
        {'stream': sink.stream_name, 'endpoint_url': sink.endpoint_url, 'region': sink.region},
    )
    return open_checkpoint(options.checkpoint, identity)


# How the job's own failures begin; a runner may bury them in a worker's traceback.
LEDGER_MESSAGE = 'The input ledger does not balance'
_OWN_ERRORS = re.compile(
    r'(?:InputLedgerError|KinesisWriteError|KinesisStreamError): (.+?)'
    r'(?: \[while running [^\]]*\])?(?:\\n|\n|$)'
)


def failure_sentence(err: Exception) -> str:
    """One line saying why the pipeline failed: the job's own error if it is in there."""
    text = str(err)
    if isinstance(err, (InputLedgerError, KinesisWriteError, OutputLedgerError)):
        return text.strip().splitlines()[0]
    found = _OWN_ERRORS.search(text)
    if found:
        return found.group(1).strip()
    return (text.strip().splitlines() or [type(err).__name__])[0]


# The longest start-up sentence printed: values quoted in it are cut well before.
_MAX_SENTENCE_CHARS = 1000


def one_sentence(message: str) -> str:
    """A start-up error as printed: one line, cut to a bounded length (a value quoted in it
    may be long or hostile)."""
    message = ' '.join(message.split())
    if len(message) > _MAX_SENTENCE_CHARS:
        message = message[:_MAX_SENTENCE_CHARS] + '...'
    return message


@dataclasses.dataclass(frozen=True)
class JobResult:
    """How a run ended: its exit status (`EXIT_*`), and the summary's counts."""

    status: int
    exported: int = 0
    dead_letters: int = 0
    counters: dict = dataclasses.field(default_factory=dict)


def run_config(options: ExportOptions, config, as_of: str):
    """The destination config as this run sees it: the segments mapped by `as_of`, and
    those newly mapped since `--previous_as_of` (SPEC 8)."""
    previous_as_of = options.previous_as_of
    if previous_as_of is not None:
        parse_as_of(previous_as_of, '--previous_as_of')
        if not options.previous:
            raise ConfigError(
                '--previous_as_of is the time of the previous snapshot, so it needs --previous.'
            )
    elif options.previous and config.mapping_times:
        raise ConfigError(
            'A mapped segment of the destination config has a mapped_at, so a '
            'run with --previous needs --previous_as_of (the previous '
            "snapshot's time) to know which segments are newly mapped."
        )
    return config.for_run(as_of, previous_as_of)


def start_embedded(options: ExportOptions, config):
    """Starts the embedded local Kinesis (moto) with the run's stream, replaced if there."""
    from beam_kinesis.local_kinesis import EmbeddedKinesis  # moto is only needed here

    embedded = EmbeddedKinesis(region=aws_region(options, config) or 'us-east-1').start()
    embedded.create_stream(
        options.view_as(KinesisSinkOptions).stream_name or config.stream,
        options.embedded_shards,
        replace=True,
    )
    print(
        f'No --stream_name, --endpoint_url or --output: writing to an embedded local '
        f'Kinesis at {embedded.endpoint_url} (moto), not to AWS.'
    )
    return embedded


def embedded_overrides(embedded) -> dict:
    """The `KinesisConfig` fields that point the sink at the embedded Kinesis."""
    settings = embedded.config('embedded')
    return {
        'region': settings.region,
        'endpoint_url': settings.endpoint_url,
        'aws_access_key_id': settings.aws_access_key_id,
        'aws_secret_access_key': settings.aws_secret_access_key,
    }


def print_landed(embedded, stream: str, shown: int = 3) -> None:
    """Reads the embedded stream back and shows what landed on each shard."""
    landed = embedded.read_stream(stream)
    print(
        f'Read back from the embedded stream {stream!r}: '
        f'{sum(len(records) for records in landed.values()):,} records'
    )
    for shard, records in sorted(landed.items()):
        print(f'  {shard}: {len(records):,} records')
        for key, data in records[:shown]:
            print(f'    {key}  {data.decode("utf-8")}')
        if len(records) > shown:
            print(f'    ... and {len(records) - shown:,} more')


def failure_status(err: BaseException) -> int:
    """The exit status of a run whose pipeline raised `err`."""
    if isinstance(err, InputLedgerError) or LEDGER_MESSAGE in str(err):
        return EXIT_INPUT_MISMATCH
    return EXIT_FAILED


def check_html_report(path: str | None) -> str | None:
    """`--html_report` made absolute, once it is known that it can be written and that
    matplotlib is there to draw it (None without the option)."""
    if not path:
        return None
    from beam_kinesis.report import ReportPathError, check_report_path

    try:
        import matplotlib  # noqa: F401 - only to know it is installed
    except ImportError as err:
        raise ConfigError(
            '--html_report draws its charts with matplotlib, which is not '
            'installed: pip install "beam-kinesis[report]".'
        ) from err
    try:
        return check_report_path(path)
    except ReportPathError as err:
        raise ConfigError(str(err)) from err


def write_html_report(
    path: str, counters: dict, sections: dict, facts: dict, prog: str = 'beam-kinesis-export'
) -> None:
    """Writes the HTML run report; a failure to write it is said, not a failed run (the
    records were sent)."""
    from beam_kinesis.report import write_html_report as write

    try:
        write(path, counters, sections=sections, facts=facts)
    except OSError as err:
        print(
            f'{prog}: the HTML report could not be written to {path}: {err.strerror or err}.',
            file=sys.stderr,
        )
        return
    print(f'Run report (HTML): {path}')


def summary_sections(
    counters: dict, distributions: dict, sink: KinesisConfig | None, retried: bool
) -> dict:
    """The summary's sections for this run (the Kinesis one only with a sink, its
    per-shard throttling rows added); the sink's distributions are written into `counters`
    as the text the summary shows."""
    sections = {
        title: rows
        for title, rows in SUMMARY.items()
        if (title != 'Kinesis' or sink is not None)
        and (title != 'Retried from an earlier run' or retried)
    }
    if sink is not None:
        sections['Kinesis'] = sections['Kinesis'] + [
            (name.replace('_', ' '), name)
            for name in sorted(counters)
            if name.startswith(THROTTLED_ON_SHARD)
        ]
        for name, (count, total, low, high) in distributions.items():
            counters[name] = (
                f'{count:,} requests: mean {total / count:,.0f}, min {low:,}, max {high:,}'
            )
    return sections


def print_summary(
    counters: dict,
    distributions: dict,
    *,
    as_of: str,
    sink: KinesisConfig | None,
    embedded: bool,
    output: str | None,
    dead_letter: str,
    retried: bool,
    checkpoint=None,
    checkpoint_path: str | None = None,
) -> JobResult:
    """Prints the run's summary and its last line; returns how it ended, with its counts."""
    exported = counts.total(counters, counts.EXPORTED)
    dead = counts.total(counters, counts.DEAD_LETTERS)
    print(format_summary(counters, summary_sections(counters, distributions, sink, retried)))
    where = (
        f'Kinesis stream {sink.stream_name!r}' + (' (embedded)' if embedded else '')
        if sink
        else output
    )
    retried_text = (
        f'; {counters.get("retried_landed", 0):,} of '
        f'{counters.get("retried_from_earlier_run", 0):,} retried records of an '
        'earlier run landed'
        if retried
        else ''
    )
    print(
        f'Exported {exported:,} profiles as of {as_of} to {where}{retried_text}; {dead:,} '
        'dead letters' + (f' in {dead_letter}' if dead else '') + '.'
    )
    if checkpoint is not None:
        skipped = counters.get('records_already_acknowledged', 0)
        print(
            f'Checkpoint {checkpoint_path}: '
            + (
                f'resumed; {skipped:,} records acknowledged by an earlier attempt of this run '
                'were not sent again.'
                if checkpoint.acknowledged_before
                else 'a first attempt; every acknowledged record was recorded there.'
            )
        )
    return JobResult(EXIT_DEAD_LETTERS if dead else EXIT_OK, exported, dead, counters)
