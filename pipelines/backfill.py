"""Backfill: replay an ordered series of profile snapshots through the export job, pair by pair.

    snapshots (a manifest, or a glob of dated names) -> pairs in time order
    -> for each pair not done yet: export_pair(previous, current) (the export job's
       run_options, no command line built) -> record the pair in the state file
    -> per-pair and total summaries

The series, its pairs, the range selection and the state file are `beam_kinesis.backfill`;
this module is the launcher and `export_pair`, the Python API of one step.

The first snapshot is exported as a first run (every member of a mapped segment), then each
snapshot is diffed against the one before it, as of its own time. Each pair's pipeline has
finished before the next one starts, so the records of one profile reach its shard in
snapshot order. A small JSON state file makes the series resumable: a run after a crash skips
the pairs already done and runs again the one that was in flight.

Usage (every option not listed here goes to each pair's export, as in `beam-kinesis-export`)::

    beam-kinesis-backfill (--manifest FILE | --snapshots GLOB) --destination_config FILE
        [--state_file FILE] [--skip_first_run] [--from DATE_OR_TIME] [--to DATE_OR_TIME]
        [--dry_run] [--output DIR] [--dead_letter DIR] [sink and Beam options]

- The series: `--manifest`, a YAML/JSON list of `{path, as_of}` in time order (relative paths
  from the manifest's folder; `as_of` a UTC time or a date, meaning midnight UTC), or
  `--snapshots`, a glob whose matches (files or directories) carry a date in their names,
  `YYYY-MM-DD` with an optional time (`T06:30:00Z`, `T063000`, `_06-30`), ordered by it.
  Pair 1 is the first snapshot's first run (left out by `--skip_first_run`); pair n diffs
  snapshot n against snapshot n - 1, as of snapshot n's time.
- `--from` / `--to` select pairs by the time of their current snapshot, inclusive: a date
  covers its whole day (UTC), a time is exact. Dates, not pair numbers, so that a range
  means the same thing when snapshots are added to the series.
- `--output DIR` and `--dead_letter DIR` get one subdirectory per pair, `NNN-<as-of>`
  (`003-20240603T000000Z`); each pair's run report is `<dead_letter>/NNN-<as-of>/run-report.json`.
- Each pair diffs as of its current snapshot's time with `--previous_as_of` its previous
  snapshot's time, so a segment whose `mapped_at` falls between the two is newly mapped in
  that pair (SPEC 8). Into Kinesis, each pair first sends again the previous pair's `write`
  dead letters (`--retry_failed <dead_letter>/<previous pair>`, SPEC 9).
- With none of `--stream_name`, `--endpoint_url`, `--output`, the whole series goes to one
  embedded local Kinesis started by the backfill (not one per pair), read back at the end.
- A pair that exits 3 (dead letters) is recorded as completed with dead letters and the
  series goes on: the dead letters are kept per pair, and stopping would leave the later
  snapshots unexported for records that a re-run would dead-letter again. A pair that exits
  1, 2 or 4 stops the series; running the same command again resumes at that pair.
- Exit status: 0 every pair in range done; 1 a pair failed while running; 2 the backfill or
  a pair could not start (bad options, a missing snapshot, the state file of another series,
  a running backfill holding the state file); 3 done, but some pair in range had dead letters
  (in this run or an earlier one); 4 a pair's input ledger did not balance.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Sequence
from textwrap import fill

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beam_kinesis.backfill import (
    STATE_VERSION,
    BackfillError,
    Pair,
    SeriesState,
    Snapshot,
    select_pairs,
    series_pairs,
    snapshots_from_glob,
    snapshots_from_manifest,
    state_lock,
    time_in_name,
)
from beam_kinesis.config import ConfigError, load_destination_config
from beam_kinesis.job import JobResult
from beam_kinesis.job_options import (
    ExportOptions,
    OptionsError,
    beam_help,
    beam_options_epilog,
    parse_job_options,
    sort_groups,
)
from beam_kinesis.sink_options import KinesisSinkOptions, add_credential_help, split_credentials
from beam_kinesis.snapshot import SnapshotError, match_snapshot_files
from beam_kinesis.summary import format_summary
from pipelines import export_profiles
from pipelines.export_profiles import (
    EXIT_DEAD_LETTERS,
    EXIT_FAILED,
    EXIT_INPUT_MISMATCH,
    EXIT_OK,
    EXIT_START_FAILED,
)

__all__ = [
    'BackfillError',
    'Snapshot',
    'Pair',
    'SeriesState',
    'STATE_VERSION',
    'snapshots_from_glob',
    'snapshots_from_manifest',
    'series_pairs',
    'select_pairs',
    'time_in_name',
    'export_pair',
    'run',
    'main',
]

_LOGGER = logging.getLogger(__name__)

PROG = 'beam-kinesis-backfill'
# Export flags the backfill sets itself, per pair.
_PER_PAIR_FLAGS = (
    '--current',
    '--previous',
    '--as_of',
    '--report',
    '--previous_as_of',
    '--retry_failed',
)
# Why a pair stopped the series, by its exit status.
_STOPPED = {
    EXIT_FAILED: 'failed while running',
    EXIT_START_FAILED: 'could not start',
    EXIT_INPUT_MISMATCH: 'stopped because its input ledger did not balance',
}


def export_pair(
    previous: Snapshot | None,
    current: Snapshot,
    options: PipelineOptions | Sequence[str] = (),
    *,
    dead_letter: str,
    output: str | None = None,
    retry_failed: str | None = None,
    report: str | None = None,
    credentials: dict | None = None,
    prog: str = export_profiles.PROG,
) -> JobResult:
    """Exports one pair of a series: `current` against `previous` (None: a first run), as of
    `current`'s time, a segment mapped between the two times being newly mapped (SPEC 8).

    The Python API of a backfill step, which the backfill's loop calls for each pair.

    Args:
      previous: the earlier snapshot, or None for a first run.
      current: the snapshot exported, whose `as_of` is the run's.
      options: the export's other options (the destination config, the sink, Beam's), as
        `PipelineOptions` or as flags; the per-pair ones below replace theirs.
      dead_letter: the pair's dead-letter directory.
      output: the pair's export file directory, or None.
      retry_failed: an earlier pair's dead letters whose failed writes are sent first.
      report: where the pair's run report goes (default `<dead_letter>/run-report.json`).
      credentials: the explicit AWS key pair and external id, or None for the AWS chain.
      prog: the name the export's messages begin with.

    Returns:
      How the export ended (`JobResult`); an unexpected error is `EXIT_FAILED` after one
      line on stderr.
    """
    pair = {
        'current': current.path,
        'as_of': current.as_of,
        'dead_letter': dead_letter,
        'report': report or FileSystems.join(dead_letter, 'run-report.json'),
    }
    if previous is not None:
        pair.update(previous=previous.path, previous_as_of=previous.as_of)
    if output is not None:
        pair['output'] = output
    if retry_failed is not None:
        pair['retry_failed'] = retry_failed
    if isinstance(options, PipelineOptions):
        given = options.get_all_options(drop_default=True, retain_unknown_options=True)
        pair_options = PipelineOptions.from_dictionary({**given, **pair})
    else:
        pair_options = PipelineOptions(list(options), **pair)
    try:
        return export_profiles.run_options(pair_options, credentials, prog)
    except Exception as err:  # run_options() reports what it expects; this is anything else
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        print(f'{PROG}: the export raised {type(err).__name__}: {first_line}', file=sys.stderr)
        return JobResult(EXIT_FAILED)


def _parser(prog: str = PROG, with_job_options: bool = False) -> argparse.ArgumentParser:
    """The backfill's own options; `with_job_options` adds the export's, by group, for
    `--help` (the backfill's --output and --dead_letter replace the export's)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        allow_abbrev=False,
        conflict_handler='resolve',
        usage='%(prog)s (--manifest FILE | --snapshots GLOB) --destination_config FILE [options]',
        description='Export an ordered series of profile snapshots: the first as a first run, '
        'then each against the one before it, one pipeline after another.',
        epilog="Every other option is passed to each pair's export: "
        '--destination_config (required), the sink and Beam options; '
        '--current, --previous, --as_of, --previous_as_of, --retry_failed and --report '
        'are set for each pair. '
        'Exit status: 0 done; 1 a pair failed while running; 2 the backfill or a pair '
        "could not start; 3 done, but some pair has dead letters; 4 a pair's input "
        'ledger did not balance.',
    )
    if with_job_options:
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        parser.description = fill(parser.description, 79)
        parser.epilog = fill(parser.epilog, 79) + '\n\n' + beam_options_epilog(prog)
        parser.add_argument(
            '--help_beam',
            action='store_true',
            help="List Apache Beam's own pipeline options and exit.",
        )
        for cls in (ExportOptions, KinesisSinkOptions):
            cls._add_argparse_args(parser)  # pylint: disable=protected-access
        add_credential_help(parser)
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        '--manifest',
        help='YAML or JSON list of {path, as_of}, in time '
        'order; relative paths are relative to it.',
    )
    source.add_argument(
        '--snapshots',
        help='Glob of the snapshots (files or directories) '
        'whose names carry a date, YYYY-MM-DD with an '
        'optional time; ordered by it.',
    )
    parser.add_argument(
        '--state_file',
        help='JSON file recording the pairs done, so that a '
        'run after a crash resumes (local path).',
    )
    parser.add_argument(
        '--skip_first_run',
        action='store_true',
        help='Do not export the first snapshot as a first run; start with the first diff.',
    )
    parser.add_argument(
        '--from',
        dest='start',
        metavar='DATE_OR_TIME',
        help='Run only the pairs whose current snapshot is at or after this '
        'date (YYYY-MM-DD, from midnight UTC) or time '
        '(YYYY-MM-DDTHH:MM:SSZ).',
    )
    parser.add_argument(
        '--to',
        dest='end',
        metavar='DATE_OR_TIME',
        help='Run only the pairs whose current snapshot is at or before this '
        'date (the whole day) or time.',
    )
    parser.add_argument(
        '--dry_run',
        action='store_true',
        help='List the pairs that would run and those already done; run nothing.',
    )
    parser.add_argument(
        '--output',
        help='Directory for the export files; each pair writes '
        'into its own subdirectory NNN-<as-of>.',
    )
    parser.add_argument(
        '--dead_letter',
        default='dead_letters',
        help='Directory for dead letters; each pair writes into its own '
        'subdirectory NNN-<as-of>, with its run report '
        '(run-report.json).',
    )
    for flag in _PER_PAIR_FLAGS:
        parser.add_argument(flag, dest=f'given_{flag[2:]}', help=argparse.SUPPRESS)
    if with_job_options:
        sort_groups(parser)
    return parser


def _start_error(message: str) -> int:
    print(f'{PROG}: {message}', file=sys.stderr)
    return EXIT_START_FAILED


def run(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Runs the backfill; returns the process exit status (`export_profiles.EXIT_*`)."""
    credentials, argv = split_credentials(list(sys.argv[1:] if argv is None else argv))
    if '--help_beam' in argv:
        print(beam_help(prog))
        return EXIT_OK
    if '-h' in argv or '--help' in argv:
        _parser(prog, with_job_options=True).print_help()
        return EXIT_OK
    parser = _parser(prog)
    args, rest = parser.parse_known_args(argv)
    given = [flag for flag in _PER_PAIR_FLAGS if getattr(args, f'given_{flag[2:]}')]
    if given:
        return _start_error(
            f'{" and ".join(given)} {"is" if len(given) == 1 else "are"} set '
            f'by the backfill for each pair (see --help).'
        )
    if not (args.manifest or args.snapshots):
        return _start_error('--manifest or --snapshots must be given (see --help).')
    try:
        options = parse_job_options(
            rest,
            extra_flags=[
                flag
                for action in parser._actions  # pylint: disable=protected-access
                for flag in action.option_strings
                if flag.startswith('--') and flag not in _PER_PAIR_FLAGS
            ],
        ).view_as(ExportOptions)
    except OptionsError as err:
        return _start_error(str(err))
    if not options.destination_config:
        return _start_error('--destination_config must be given (see --help).')
    with contextlib.ExitStack() as stack:
        try:
            config = load_destination_config(options.destination_config)
            snapshots = (
                snapshots_from_manifest(args.manifest)
                if args.manifest
                else snapshots_from_glob(args.snapshots)
            )
            pairs = series_pairs(snapshots)
            selected = select_pairs(pairs, args.start, args.end, args.skip_first_run)
            if not selected:
                raise BackfillError(
                    'No pair of the series is left to run within the range '
                    'given (--from, --to, --skip_first_run).'
                )
            embedded, destination = _destination(options, args.output, config)
            series = {
                'destination': destination,
                'snapshots': [snapshot._asdict() for snapshot in snapshots],
            }
            if args.state_file and not args.dry_run:
                # Taken before the state is read, so that no other backfill changes it after.
                stack.enter_context(state_lock(args.state_file))
            state = SeriesState.load(args.state_file, series)
            for path in sorted(
                {
                    snapshot.path
                    for pair in selected
                    for snapshot in (pair.previous, pair.current)
                    if snapshot
                }
            ):
                match_snapshot_files(path)  # a missing snapshot stops the series at its start
        except (BackfillError, ConfigError, SnapshotError) as err:
            return _start_error(str(err))
        series_text = f'{len(snapshots)} snapshots ({snapshots[0].as_of} to {snapshots[-1].as_of})'
        if args.dry_run:
            return _dry_run(selected, len(pairs), state, series_text, destination)
        backfill = _Backfill(
            args, rest, credentials, state, len(pairs), retry=not destination.startswith('files:')
        )
        if not embedded:
            return backfill.run(selected, series_text, destination)
        try:
            return _run_embedded(backfill, selected, series_text, destination, options, config)
        except ConfigError as err:  # moto, the embedded Kinesis, is not installed
            return _start_error(str(err))


def _destination(options: ExportOptions, output: str | None, config) -> tuple[bool, str]:
    """Whether the series goes to an embedded Kinesis, and its destination as the state file
    names it: `kinesis:<stream>`, `embedded-kinesis:<stream>` or `files:<output folder>`."""
    sink = options.view_as(KinesisSinkOptions)
    stream = sink.stream_name or config.stream
    if sink.stream_name or sink.endpoint_url:
        return False, f'kinesis:{stream}'
    if output:
        return False, f'files:{_absolute(output)}'
    return True, f'embedded-kinesis:{stream}'


def _absolute(path: str) -> str:
    return path if '://' in path else os.path.abspath(path)


def _run_embedded(
    backfill: _Backfill,
    selected: list[Pair],
    series_text: str,
    destination: str,
    options: ExportOptions,
    config,
) -> int:
    """Runs the series into one embedded local Kinesis, started for the whole series."""
    from beam_kinesis.local_kinesis import (  # moto is only needed here
        DUMMY_ACCESS_KEY_ID,
        DUMMY_SECRET_ACCESS_KEY,
        EmbeddedKinesis,
    )

    region = export_profiles.aws_region(options, config) or 'us-east-1'
    stream = config.stream
    with EmbeddedKinesis(region=region) as kinesis:
        kinesis.create_stream(stream, options.embedded_shards)
        print(
            f'No --stream_name, --endpoint_url or --output: the whole series goes to one '
            f'embedded local Kinesis at {kinesis.endpoint_url} (moto), not to AWS; it is '
            f'gone when the backfill ends.'
        )
        if backfill.state.completed:
            print(
                f'The embedded stream starts empty: the {len(backfill.state.completed)} '
                f'pairs done by earlier runs are not in it.'
            )
        backfill.credentials = {
            'aws_access_key_id': DUMMY_ACCESS_KEY_ID,
            'aws_secret_access_key': DUMMY_SECRET_ACCESS_KEY,
        }
        status = backfill.run(
            selected,
            series_text,
            destination,
            {'endpoint_url': kinesis.endpoint_url, 'stream_name': stream, 'aws_region': region},
        )
        landed = kinesis.read_stream(stream)
    print(
        f'Read back from the embedded stream {stream!r}: '
        f'{sum(len(records) for records in landed.values()):,} records'
    )
    for shard, records in sorted(landed.items()):
        print(f'  {shard}: {len(records):,} records')
    return status


def _dry_run(
    selected: list[Pair], total: int, state: SeriesState, series_text: str, destination: str
) -> int:
    print(
        f'Dry run: {series_text} into {destination}, {len(selected)} of {total} pairs in '
        f'range' + (f', state in {state.path}' if state.path else ', no --state_file') + '.'
    )
    to_run = 0
    for pair in selected:
        done = state.done(pair)
        if done:
            what = (
                f'done (exit {done["exit_status"]}, {_count(done["exported"])} exported, '
                f'{_count(done["dead_letters"])} dead letters, finished '
                f'{done["finished"]}): skipped'
            )
        else:
            to_run += 1
            what = 'would run'
            if state.in_flight and state.in_flight.get('pair') == pair.number:
                what += ' again (it was in flight when the last run stopped)'
            elif state.last_failure and state.last_failure.get('pair') == pair.number:
                what += f' again (it exited {state.last_failure["exit_status"]} last time)'
        print(f'  {pair.describe()}: {what}')
        print(
            f'      {pair.previous.path if pair.previous else "(no previous)"} -> '
            f'{pair.current.path}'
        )
    print(f'Would run {to_run} pairs; {len(selected) - to_run} already done.')
    return EXIT_OK


def _count(value: int | None) -> str:
    return '?' if value is None else f'{value:,}'


class _Backfill:
    """Runs the selected pairs in order, recording each in the state."""

    def __init__(
        self,
        args: argparse.Namespace,
        rest: list[str],
        credentials: dict,
        state: SeriesState,
        total: int,
        retry: bool = False,
    ) -> None:
        self.args = args
        self.rest = rest
        self.credentials = credentials
        self.state = state
        self.total = total
        self.retry = retry  # each pair retries the previous pair's write dead letters

    def export(self, pair: Pair, sink_fields: dict[str, str]) -> JobResult:
        """Runs `pair`'s export into its own subdirectories of --dead_letter and --output."""
        retry_failed = None
        if pair.previous is not None and self.retry:
            # The previous pair's write dead letters go out first (SPEC 9).
            retry_failed = FileSystems.join(
                self.args.dead_letter, Pair(pair.number - 1, None, pair.previous).label
            )
        return export_pair(
            pair.previous,
            pair.current,
            PipelineOptions(self.rest, **sink_fields),
            dead_letter=FileSystems.join(self.args.dead_letter, pair.label),
            output=FileSystems.join(self.args.output, pair.label) if self.args.output else None,
            retry_failed=retry_failed,
            credentials=self.credentials,
        )

    def run(
        self,
        selected: list[Pair],
        series_text: str,
        destination: str,
        sink_fields: dict[str, str] | None = None,
    ) -> int:
        print(
            f'Backfill of {series_text} into {destination}: {len(selected)} of '
            f'{self.total} pairs in range'
            + (
                f', state in {self.state.path}.'
                if self.state.path
                else '; no --state_file, so an interrupted series cannot be resumed.'
            )
        )
        interrupted = (self.state.in_flight or {}).get('pair')
        if interrupted is not None:
            print(
                f'Resuming: pair {interrupted} was in flight when the last run stopped; it '
                f'runs again (its records may reach the stream twice).'
            )
        totals = dict.fromkeys(
            (
                'pairs_in_range',
                'pairs_run',
                'pairs_skipped',
                'exported',
                'dead_letters',
                'range_exported',
                'range_dead_letters',
            ),
            0,
        )
        totals['pairs_in_range'] = len(selected)
        dead_letters_seen = False
        for pair in selected:
            done = self.state.done(pair)
            if done:
                print(
                    f'== {pair.describe()}: already done (exit {done["exit_status"]}, '
                    f'{_count(done["exported"])} exported, {_count(done["dead_letters"])} '
                    f'dead letters), skipped.'
                )
                totals['pairs_skipped'] += 1
                totals['range_exported'] += done['exported'] or 0
                totals['range_dead_letters'] += done['dead_letters'] or 0
                dead_letters_seen |= done['exit_status'] == EXIT_DEAD_LETTERS
                continue
            print(f'== {pair.describe()} of {self.total}, as of {pair.as_of}')
            print(f'   previous: {pair.previous.path if pair.previous else "(none: first run)"}')
            print(f'   current:  {pair.current.path}')
            self.state.start(pair)
            began = time.monotonic()
            result = self.export(pair, sink_fields or {})
            status = result.status
            exported, dead = (
                (result.exported, result.dead_letters)
                if status in (EXIT_OK, EXIT_DEAD_LETTERS)
                else (None, None)
            )
            self.state.finish(pair, status, exported, dead)
            totals['pairs_run'] += 1
            if status not in (EXIT_OK, EXIT_DEAD_LETTERS):
                self._stop(pair, status, totals)
                return status
            for name, value in (('exported', exported), ('dead_letters', dead)):
                totals[name] += value or 0
                totals[f'range_{name}'] += value or 0
            dead_letters_seen |= status == EXIT_DEAD_LETTERS
            print(
                f'== {pair.describe()}: exit {status}, {_count(exported)} exported, '
                f'{_count(dead)} dead letters'
                + (
                    ', recorded as completed with dead letters; the series goes on'
                    if status == EXIT_DEAD_LETTERS
                    else ''
                )
                + f' ({time.monotonic() - began:.1f} s).'
            )
        _print_totals(totals)
        print(
            f'Backfill done: {len(selected)} pairs into {destination}; '
            f'{totals["range_exported"]:,} profiles exported, '
            f'{totals["range_dead_letters"]:,} dead letters.'
        )
        return EXIT_DEAD_LETTERS if dead_letters_seen else EXIT_OK

    def _stop(self, pair: Pair, status: int, totals: dict) -> None:
        _print_totals(totals)
        what = _STOPPED.get(status, 'failed')
        resume = (
            'run the same command again to resume from it'
            if self.state.path
            else f'run again with --from {pair.as_of} to go on from it'
        )
        print(
            f'{PROG}: {pair.describe()} {what} (exit {status}), so the series stops there; '
            f'fix the cause and {resume}.',
            file=sys.stderr,
        )


_TOTALS = {
    'Backfill': [
        ('pairs in range', 'pairs_in_range'),
        ('pairs run', 'pairs_run'),
        ('pairs skipped, already done', 'pairs_skipped'),
        ('profiles exported by this run', 'exported'),
        ('dead letters of this run', 'dead_letters'),
        ('profiles exported, range in all runs', 'range_exported'),
        ('dead letters, range in all runs', 'range_dead_letters'),
    ]
}


def _print_totals(totals: dict) -> None:
    print(format_summary(totals, _TOTALS))


def main() -> None:
    """Console-script entry point (`beam-kinesis-backfill`)."""
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    sys.exit(run(sys.argv[1:]))


if __name__ == '__main__':
    main()
