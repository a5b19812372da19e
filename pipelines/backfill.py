"""Backfill: replay an ordered series of profile snapshots through the export job, pair by pair.

    snapshots (a manifest, or a glob of dated names) -> pairs in time order
    -> for each pair not done yet: export_profiles.run(previous, current, as_of)
    -> record the pair in the state file -> per-pair and total summaries

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
import datetime
import fcntl
import glob
import json
import logging
import os
import re
import sys
import tempfile
import time
from textwrap import fill
from typing import Any, NamedTuple

import yaml
from apache_beam.io.filesystems import FileSystems

from beam_kinesis.config import ConfigError, load_destination_config, parse_as_of
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

__all__ = ['BackfillError', 'Snapshot', 'Pair', 'SeriesState', 'STATE_VERSION',
           'snapshots_from_glob', 'snapshots_from_manifest', 'series_pairs', 'select_pairs',
           'time_in_name', 'run', 'main']

_LOGGER = logging.getLogger(__name__)

PROG = 'beam-kinesis-backfill'
STATE_VERSION = 1
_TIME_FORMAT = '%Y-%m-%dT%H:%M:%SZ'

# A date in a file or directory name, optionally with a time: 2024-06-01, 2024-06-01T06:30:00Z,
# 2024-06-01T063000, 2024-06-01_06-30. Digits right before or after it make it no date.
_NAME_TIME = re.compile(r'(?<!\d)(\d{4})-(\d{2})-(\d{2})'
                        r'(?:[T_ ](\d{2})[:-]?(\d{2})(?:[:-]?(\d{2}))?Z?)?(?!\d)')
_DATE_ONLY = re.compile(r'\d{4}-\d{2}-\d{2}')
# Export flags the backfill sets itself, per pair.
_PER_PAIR_FLAGS = ('--current', '--previous', '--as_of', '--report', '--previous_as_of',
                   '--retry_failed')
# Why a pair stopped the series, by its exit status.
_STOPPED = {EXIT_FAILED: 'failed while running',
            EXIT_START_FAILED: 'could not start',
            EXIT_INPUT_MISMATCH: 'stopped because its input ledger did not balance'}


class BackfillError(ValueError):
    """The series cannot be run as asked; the message is one sentence saying why."""


class Snapshot(NamedTuple):
    """One snapshot of the series: a path, directory or glob, and the time it was taken."""
    path: str
    as_of: str


class Pair(NamedTuple):
    """One export of the series: `current` diffed against `previous` (None: a first run)."""
    number: int
    previous: Snapshot | None
    current: Snapshot

    @property
    def as_of(self) -> str:
        return self.current.as_of

    @property
    def label(self) -> str:
        """The pair's subdirectory name under --output and --dead_letter."""
        return f'{self.number:03d}-{self.as_of.replace("-", "").replace(":", "")}'

    def describe(self) -> str:
        start = self.previous.as_of if self.previous else 'first run'
        return f'pair {self.number} ({start} -> {self.current.as_of})'


def _is_url(path: str) -> bool:
    return '://' in path


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime(_TIME_FORMAT)


def time_in_name(name: str) -> str | None:
    """The time a file or directory name carries, `YYYY-MM-DDTHH:MM:SSZ`, or None.

    A name with a date only stands for midnight UTC of that day.

    Raises:
      BackfillError: the name carries two dates, or a date that does not exist.
    """
    found = list(_NAME_TIME.finditer(name))
    if not found:
        return None
    if len(found) > 1:
        raise BackfillError(f'{name!r} carries more than one date, so its time is ambiguous.')
    parts = [int(part) if part else 0 for part in found[0].groups()]
    try:
        moment = datetime.datetime(*parts)
    except ValueError as err:
        raise BackfillError(f'{name!r} carries {found[0].group(0)!r}, which is not a real '
                            f'date and time.') from err
    return moment.strftime(_TIME_FORMAT)


def snapshots_from_glob(pattern: str) -> list[Snapshot]:
    """The snapshots a glob names, in time order, each timed by the date in its name.

    A match whose own name carries a date is a snapshot (a file, or a directory of files). A
    file whose name has no date but whose directory's name has one belongs to the snapshot
    of that directory, made of the files the pattern's last part matches there.

    Raises:
      BackfillError: nothing matches, a match has no date, or two snapshots share a time.
    """
    if _is_url(pattern):
        try:
            matched = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
        except Exception as err:  # Beam's BeamIOError nests details; the first line suffices
            raise BackfillError(f'--snapshots {pattern!r} cannot be listed: '
                                f'{str(err).splitlines()[0]}') from err
    else:
        pattern = os.path.expanduser(pattern).rstrip(os.sep) or os.sep
        matched = glob.glob(pattern)
    if not matched:
        raise BackfillError(f'--snapshots {pattern!r} matches nothing.')
    file_filter = FileSystems.split(pattern)[1]
    times: dict[str, str] = {}
    for path in sorted(matched):
        folder, name = FileSystems.split(path)
        stamp = time_in_name(name)
        if stamp is None:
            stamp = time_in_name(FileSystems.split(folder)[1])
            if stamp is None:
                raise BackfillError(f'{path!r}, matched by --snapshots {pattern!r}, has no '
                                    f'date (YYYY-MM-DD) in its name or its directory\'s name.')
            path = FileSystems.join(folder, file_filter)
        times[path if _is_url(path) else os.path.abspath(path)] = stamp
    by_time: dict[str, str] = {}
    for path, stamp in sorted(times.items(), key=lambda item: (item[1], item[0])):
        if stamp in by_time:
            raise BackfillError(f'{by_time[stamp]!r} and {path!r} both carry the time {stamp}; '
                                f'a series needs one snapshot per time.')
        by_time[stamp] = path
    return [Snapshot(path, stamp) for stamp, path in by_time.items()]


def _manifest_time(value: Any, where: str) -> str:
    # YAML reads unquoted dates and times as date/datetime objects.
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return value.strftime(_TIME_FORMAT)
    if isinstance(value, datetime.date):
        return f'{value.isoformat()}T00:00:00Z'
    if isinstance(value, str) and _DATE_ONLY.fullmatch(value):
        return _manifest_time(_parse_date(value, where), where)
    try:
        return parse_as_of(value)
    except ConfigError as err:
        raise BackfillError(f'{where}: as_of {value!r} is not a date (YYYY-MM-DD) or a UTC '
                            f'time (YYYY-MM-DDTHH:MM:SSZ).') from err


def _parse_date(text: str, where: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(text)
    except ValueError as err:
        raise BackfillError(f'{where}: {text!r} is not a real date.') from err


def snapshots_from_manifest(path: str) -> list[Snapshot]:
    """The snapshots a manifest lists: a YAML or JSON list of `{path, as_of}`, in time order.

    Relative paths are relative to the manifest's directory; `as_of` is a UTC time
    `YYYY-MM-DDTHH:MM:SSZ` or a date (midnight UTC).

    Raises:
      BackfillError: the manifest cannot be read, is malformed or is not in time order.
    """
    try:
        with open(path, encoding='utf-8') as handle:
            entries = yaml.safe_load(handle)
    except OSError as err:
        raise BackfillError(f'--manifest {path!r} cannot be read: {err.strerror}.') from err
    except yaml.YAMLError as err:
        raise BackfillError(f'--manifest {path!r} is not YAML or JSON.') from err
    if not isinstance(entries, list) or not entries:
        raise BackfillError(f'--manifest {path!r} must be a non-empty list of '
                            f'{{path, as_of}} entries.')
    base = os.path.dirname(os.path.abspath(path))
    snapshots: list[Snapshot] = []
    for number, entry in enumerate(entries, 1):
        where = f'entry {number} of --manifest {path!r}'
        if not isinstance(entry, dict) or set(entry) != {'path', 'as_of'}:
            raise BackfillError(f'{where} must have exactly the keys path and as_of, '
                                f'not {entry!r}.')
        location = entry['path']
        if not isinstance(location, str) or not location.strip():
            raise BackfillError(f'{where} has no path.')
        if not _is_url(location):
            location = os.path.normpath(os.path.join(base, os.path.expanduser(location)))
        snapshots.append(Snapshot(location, _manifest_time(entry['as_of'], where)))
    for number, (before, after) in enumerate(zip(snapshots, snapshots[1:], strict=False), 2):
        if after.as_of <= before.as_of:
            raise BackfillError(f'--manifest {path!r} is not in time order: entry {number} '
                                f'({after.as_of}) does not come after entry {number - 1} '
                                f'({before.as_of}).')
    return snapshots


def series_pairs(snapshots: list[Snapshot]) -> list[Pair]:
    """Pair 1 is the first snapshot's first run; pair n diffs snapshot n against n - 1."""
    return [Pair(number, snapshots[number - 2] if number > 1 else None, snapshot)
            for number, snapshot in enumerate(snapshots, 1)]


def _bound(text: str | None, flag: str, *, end: bool) -> str | None:
    if text is None:
        return None
    if _DATE_ONLY.fullmatch(text):
        _parse_date(text, flag)
        return f'{text}T23:59:59Z' if end else f'{text}T00:00:00Z'
    try:
        return parse_as_of(text)
    except ConfigError as err:
        raise BackfillError(f'{flag} {text!r} is not a date (YYYY-MM-DD) or a UTC time '
                            f'(YYYY-MM-DDTHH:MM:SSZ).') from err


def select_pairs(pairs: list[Pair], start: str | None = None, end: str | None = None,
                 skip_first_run: bool = False) -> list[Pair]:
    """The pairs whose current snapshot's time lies within [start, end].

    Args:
      pairs: the series' pairs.
      start: `--from`: a date (from its midnight) or a UTC time; None: from the start.
      end: `--to`: a date (through its last second) or a UTC time; None: to the end.
      skip_first_run: leave out pair 1, the first snapshot's first run.

    Raises:
      BackfillError: a bound is malformed, or `--from` is after `--to`.
    """
    low, high = _bound(start, '--from', end=False), _bound(end, '--to', end=True)
    if low and high and low > high:
        raise BackfillError(f'--from {start} is after --to {end}.')
    return [pair for pair in pairs
            if not (skip_first_run and pair.previous is None)
            and (low is None or pair.as_of >= low) and (high is None or pair.as_of <= high)]


def _pair_entry(pair: Pair, **fields: Any) -> dict:
    return {'pair': pair.number, 'previous': pair.previous.path if pair.previous else None,
            'current': pair.current.path, 'as_of': pair.as_of, **fields}


class SeriesState:
    """The state file of a series: its identity, the pairs done, the pair in flight.

    The file is JSON, rewritten whole (a temporary file, then `os.replace`) after each
    change, so a crash leaves either the old or the new state, never half of one::

        {"version": 1,
         "series": {"destination": "kinesis:profile-exports",
                    "snapshots": [{"path": "/data/2024-06-01",
                                   "as_of": "2024-06-01T00:00:00Z"}, ...]},
         "completed": [{"pair": 1, "previous": null, "current": "/data/2024-06-01",
                        "as_of": "2024-06-01T00:00:00Z", "exit_status": 0, "exported": 3,
                        "dead_letters": 0, "started": "...", "finished": "..."}, ...],
         "in_flight": {"pair": 3, ..., "started": "..."} or null,
         "last_failure": {"pair": 3, ..., "exit_status": 1, "finished": "..."} or null,
         "updated": "..."}

    Without a path the state is kept in memory only.
    """

    def __init__(self, path: str | None, series: dict) -> None:
        self.path = path
        self.series = series
        self.completed: dict[int, dict] = {}
        self.in_flight: dict | None = None
        self.last_failure: dict | None = None

    @classmethod
    def load(cls, path: str | None, series: dict) -> SeriesState:
        """The state of `series` from `path`; a fresh one if the file does not exist.

        Raises:
          BackfillError: the file is not a backfill state, or is the state of another series.
        """
        state = cls(path, series)
        if path is None or not os.path.exists(path):
            return state
        try:
            with open(path, encoding='utf-8') as handle:
                data = json.load(handle)
        except (OSError, ValueError) as err:
            raise BackfillError(f'--state_file {path!r} cannot be read as JSON: {err}.') from err
        if not isinstance(data, dict) or data.get('version') != STATE_VERSION or not (
                isinstance(data.get('series'), dict)
                and isinstance(data.get('completed'), list)):
            raise BackfillError(f'--state_file {path!r} is not a version {STATE_VERSION} '
                                f'backfill state file.')
        if data['series'] != series:
            raise BackfillError(_other_series(path, data['series'], series))
        state.completed = {entry['pair']: entry for entry in data['completed']}
        state.in_flight = data.get('in_flight')
        state.last_failure = data.get('last_failure')
        return state

    def done(self, pair: Pair) -> dict | None:
        """The completed entry of `pair`, or None if it has not completed."""
        entry = self.completed.get(pair.number)
        if entry is not None and entry == {**entry, **_pair_entry(pair)}:
            return entry
        return None

    def start(self, pair: Pair) -> None:
        self.in_flight = _pair_entry(pair, started=_utc_now())
        self.save()

    def finish(self, pair: Pair, status: int, exported: int | None,
               dead_letters: int | None) -> None:
        started = (self.in_flight or {}).get('started')
        entry = _pair_entry(pair, exit_status=status, exported=exported,
                            dead_letters=dead_letters, started=started, finished=_utc_now())
        if status in (EXIT_OK, EXIT_DEAD_LETTERS):
            self.completed[pair.number] = entry
            if (self.last_failure or {}).get('pair') == pair.number:
                self.last_failure = None
        else:
            self.last_failure = entry
        self.in_flight = None
        self.save()

    def to_json(self) -> dict:
        return {'version': STATE_VERSION, 'series': self.series,
                'completed': [self.completed[number] for number in sorted(self.completed)],
                'in_flight': self.in_flight, 'last_failure': self.last_failure,
                'updated': _utc_now()}

    def save(self) -> None:
        """Replaces the state file atomically (no-op without a path)."""
        if self.path is None:
            return
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=folder, suffix='.tmp',
                                             prefix=f'.{os.path.basename(self.path)}.')
        try:
            with os.fdopen(handle, 'w', encoding='utf-8') as out:
                json.dump(self.to_json(), out, indent=2)
                out.write('\n')
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
            _LOGGER.info('Backfill state saved to %s', self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise


def _other_series(path: str, theirs: dict, ours: dict) -> str:
    """One sentence saying how the series of a state file differs from this one."""
    start = f'--state_file {path!r} belongs to another series'
    advice = 'give this series its own --state_file'
    if theirs.get('destination') != ours['destination']:
        return (f'{start}: it writes to {theirs.get("destination")!r}, this one to '
                f'{ours["destination"]!r}; {advice}.')
    their_list, our_list = theirs.get('snapshots') or [], ours['snapshots']
    for number, (their, our) in enumerate(zip(their_list, our_list, strict=False), 1):
        if their != our:
            their_text = (f'{their.get("path")!r} as of {their.get("as_of")}'
                          if isinstance(their, dict) else repr(their))
            return (f'{start}: its snapshot {number} is {their_text}, this one\'s is '
                    f'{our["path"]!r} as of {our["as_of"]}; {advice}.')
    return (f'{start}: it has {len(their_list)} snapshots, this one {len(our_list)}; '
            f'{advice}.')


def _export(argv: list[str]) -> tuple[int, int | None, int | None]:
    """Runs the export job on one pair; returns its exit status, exports and dead letters."""
    try:
        result = export_profiles.run_job(argv)
    except Exception as err:  # run_job() reports what it expects; this is anything else
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        print(f'{PROG}: the export raised {type(err).__name__}: {first_line}', file=sys.stderr)
        return EXIT_FAILED, None, None
    if result.status in (export_profiles.EXIT_OK, export_profiles.EXIT_DEAD_LETTERS):
        return result.status, result.exported, result.dead_letters
    return result.status, None, None


def _parser(prog: str = PROG, with_job_options: bool = False) -> argparse.ArgumentParser:
    """The backfill's own options; `with_job_options` adds the export's, by group, for
    `--help` (the backfill's --output and --dead_letter replace the export's)."""
    parser = argparse.ArgumentParser(
        prog=prog, allow_abbrev=False, conflict_handler='resolve',
        usage='%(prog)s (--manifest FILE | --snapshots GLOB) --destination_config FILE '
              '[options]',
        description='Export an ordered series of profile snapshots: the first as a first run, '
                    'then each against the one before it, one pipeline after another.',
        epilog='Every other option is passed to each pair\'s export: '
               '--destination_config (required), the sink and Beam options; '
               '--current, --previous, --as_of, --previous_as_of, --retry_failed and --report '
               'are set for each pair. '
               'Exit status: 0 done; 1 a pair failed while running; 2 the backfill or a pair '
               'could not start; 3 done, but some pair has dead letters; 4 a pair\'s input '
               'ledger did not balance.')
    if with_job_options:
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        parser.description = fill(parser.description, 79)
        parser.epilog = fill(parser.epilog, 79) + '\n\n' + beam_options_epilog(prog)
        parser.add_argument('--help_beam', action='store_true',
                            help='List Apache Beam\'s own pipeline options and exit.')
        for cls in (ExportOptions, KinesisSinkOptions):
            cls._add_argparse_args(parser)  # pylint: disable=protected-access
        add_credential_help(parser)
    source = parser.add_mutually_exclusive_group()
    source.add_argument('--manifest', help='YAML or JSON list of {path, as_of}, in time '
                                           'order; relative paths are relative to it.')
    source.add_argument('--snapshots', help='Glob of the snapshots (files or directories) '
                                            'whose names carry a date, YYYY-MM-DD with an '
                                            'optional time; ordered by it.')
    parser.add_argument('--state_file', help='JSON file recording the pairs done, so that a '
                                             'run after a crash resumes (local path).')
    parser.add_argument('--skip_first_run', action='store_true',
                        help='Do not export the first snapshot as a first run; start with '
                             'the first diff.')
    parser.add_argument('--from', dest='start', metavar='DATE_OR_TIME',
                        help='Run only the pairs whose current snapshot is at or after this '
                             'date (YYYY-MM-DD, from midnight UTC) or time '
                             '(YYYY-MM-DDTHH:MM:SSZ).')
    parser.add_argument('--to', dest='end', metavar='DATE_OR_TIME',
                        help='Run only the pairs whose current snapshot is at or before this '
                             'date (the whole day) or time.')
    parser.add_argument('--dry_run', action='store_true',
                        help='List the pairs that would run and those already done; run '
                             'nothing.')
    parser.add_argument('--output', help='Directory for the export files; each pair writes '
                                         'into its own subdirectory NNN-<as-of>.')
    parser.add_argument('--dead_letter', default='dead_letters',
                        help='Directory for dead letters; each pair writes into its own '
                             'subdirectory NNN-<as-of>, with its run report '
                             '(run-report.json).')
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
        return _start_error(f'{" and ".join(given)} {"is" if len(given) == 1 else "are"} set '
                            f'by the backfill for each pair (see --help).')
    if not (args.manifest or args.snapshots):
        return _start_error('--manifest or --snapshots must be given (see --help).')
    try:
        options = parse_job_options(rest, extra_flags=[
            flag for action in parser._actions  # pylint: disable=protected-access
            for flag in action.option_strings if flag.startswith('--')
            and flag not in _PER_PAIR_FLAGS]).view_as(ExportOptions)
    except OptionsError as err:
        return _start_error(str(err))
    if not options.destination_config:
        return _start_error('--destination_config must be given (see --help).')
    with contextlib.ExitStack() as stack:
        try:
            config = load_destination_config(options.destination_config)
            snapshots = (snapshots_from_manifest(args.manifest) if args.manifest
                         else snapshots_from_glob(args.snapshots))
            pairs = series_pairs(snapshots)
            selected = select_pairs(pairs, args.start, args.end, args.skip_first_run)
            if not selected:
                raise BackfillError('No pair of the series is left to run within the range '
                                    'given (--from, --to, --skip_first_run).')
            embedded, destination = _destination(options, args.output, config)
            series = {'destination': destination,
                      'snapshots': [snapshot._asdict() for snapshot in snapshots]}
            if args.state_file and not args.dry_run:
                # Taken before the state is read, so that no other backfill changes it after.
                stack.enter_context(_lock(args.state_file))
            state = SeriesState.load(args.state_file, series)
            for path in sorted({snapshot.path for pair in selected
                                for snapshot in (pair.previous, pair.current) if snapshot}):
                match_snapshot_files(path)  # a missing snapshot stops the series at its start
        except (BackfillError, ConfigError, SnapshotError) as err:
            return _start_error(str(err))
        series_text = (f'{len(snapshots)} snapshots ({snapshots[0].as_of} to '
                       f'{snapshots[-1].as_of})')
        if args.dry_run:
            return _dry_run(selected, len(pairs), state, series_text, destination)
        backfill = _Backfill(args, rest, credentials, state, len(pairs),
                             retry=not destination.startswith('files:'))
        if not embedded:
            return backfill.run(selected, series_text, destination, [])
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


@contextlib.contextmanager
def _lock(state_file: str):
    """Holds `<state_file>.lock` so that two backfills cannot run one series at once; the
    lock goes with the process, so a crash leaves nothing to clean up."""
    path = f'{state_file}.lock'
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'a', encoding='utf-8') as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            raise BackfillError(f'Another backfill is running the series of --state_file '
                                f'{state_file!r} (it holds {path!r}).') from err
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _absolute(path: str) -> str:
    return path if _is_url(path) else os.path.abspath(path)


def _run_embedded(backfill: _Backfill, selected: list[Pair], series_text: str,
                  destination: str, options: ExportOptions, config) -> int:
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
        print(f'No --stream_name, --endpoint_url or --output: the whole series goes to one '
              f'embedded local Kinesis at {kinesis.endpoint_url} (moto), not to AWS; it is '
              f'gone when the backfill ends.')
        if backfill.state.completed:
            print(f'The embedded stream starts empty: the {len(backfill.state.completed)} '
                  f'pairs done by earlier runs are not in it.')
        backfill.credentials = {'aws_access_key_id': DUMMY_ACCESS_KEY_ID,
                                'aws_secret_access_key': DUMMY_SECRET_ACCESS_KEY}
        status = backfill.run(selected, series_text, destination,
                              ['--endpoint_url', kinesis.endpoint_url, '--stream_name', stream,
                               '--aws_region', region])
        landed = kinesis.read_stream(stream)
    print(f'Read back from the embedded stream {stream!r}: '
          f'{sum(len(records) for records in landed.values()):,} records')
    for shard, records in sorted(landed.items()):
        print(f'  {shard}: {len(records):,} records')
    return status


def _dry_run(selected: list[Pair], total: int, state: SeriesState, series_text: str,
             destination: str) -> int:
    print(f'Dry run: {series_text} into {destination}, {len(selected)} of {total} pairs in '
          f'range' + (f', state in {state.path}' if state.path else ', no --state_file') + '.')
    to_run = 0
    for pair in selected:
        done = state.done(pair)
        if done:
            what = (f'done (exit {done["exit_status"]}, {_count(done["exported"])} exported, '
                    f'{_count(done["dead_letters"])} dead letters, finished '
                    f'{done["finished"]}): skipped')
        else:
            to_run += 1
            what = 'would run'
            if state.in_flight and state.in_flight.get('pair') == pair.number:
                what += ' again (it was in flight when the last run stopped)'
            elif state.last_failure and state.last_failure.get('pair') == pair.number:
                what += f' again (it exited {state.last_failure["exit_status"]} last time)'
        print(f'  {pair.describe()}: {what}')
        print(f'      {pair.previous.path if pair.previous else "(no previous)"} -> '
              f'{pair.current.path}')
    print(f'Would run {to_run} pairs; {len(selected) - to_run} already done.')
    return EXIT_OK


def _count(value: int | None) -> str:
    return '?' if value is None else f'{value:,}'


class _Backfill:
    """Runs the selected pairs in order, recording each in the state."""

    def __init__(self, args: argparse.Namespace, rest: list[str], credentials: dict,
                 state: SeriesState, total: int, retry: bool = False) -> None:
        self.args = args
        self.rest = rest
        self.credentials = credentials
        self.state = state
        self.total = total
        self.retry = retry  # each pair retries the previous pair's write dead letters

    def pair_argv(self, pair: Pair, destination_args: list[str]) -> list[str]:
        argv = [*self.rest, *destination_args, '--current', pair.current.path,
                '--as_of', pair.as_of,
                '--dead_letter', FileSystems.join(self.args.dead_letter, pair.label),
                '--report', FileSystems.join(self.args.dead_letter, pair.label,
                                             'run-report.json')]
        if pair.previous is not None:
            # The previous pair's write dead letters go out first (SPEC 9); a segment mapped
            # between the two snapshots is newly mapped in this pair (SPEC 8).
            argv += ['--previous', pair.previous.path, '--previous_as_of', pair.previous.as_of]
            if self.retry:
                argv += ['--retry_failed', FileSystems.join(
                    self.args.dead_letter, Pair(pair.number - 1, None, pair.previous).label)]
        if self.args.output:
            argv += ['--output', FileSystems.join(self.args.output, pair.label)]
        for name, value in self.credentials.items():
            if value is not None:
                argv += [f'--{name}', value]
        return argv

    def run(self, selected: list[Pair], series_text: str, destination: str,
            destination_args: list[str]) -> int:
        print(f'Backfill of {series_text} into {destination}: {len(selected)} of '
              f'{self.total} pairs in range'
              + (f', state in {self.state.path}.' if self.state.path else
                 '; no --state_file, so an interrupted series cannot be resumed.'))
        interrupted = (self.state.in_flight or {}).get('pair')
        if interrupted is not None:
            print(f'Resuming: pair {interrupted} was in flight when the last run stopped; it '
                  f'runs again (its records may reach the stream twice).')
        totals = dict.fromkeys(('pairs_in_range', 'pairs_run', 'pairs_skipped', 'exported',
                                'dead_letters', 'range_exported', 'range_dead_letters'), 0)
        totals['pairs_in_range'] = len(selected)
        dead_letters_seen = False
        for pair in selected:
            done = self.state.done(pair)
            if done:
                print(f'== {pair.describe()}: already done (exit {done["exit_status"]}, '
                      f'{_count(done["exported"])} exported, {_count(done["dead_letters"])} '
                      f'dead letters), skipped.')
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
            status, exported, dead = _export(self.pair_argv(pair, destination_args))
            self.state.finish(pair, status, exported, dead)
            totals['pairs_run'] += 1
            if status not in (EXIT_OK, EXIT_DEAD_LETTERS):
                self._stop(pair, status, totals)
                return status
            for name, value in (('exported', exported), ('dead_letters', dead)):
                totals[name] += value or 0
                totals[f'range_{name}'] += value or 0
            dead_letters_seen |= status == EXIT_DEAD_LETTERS
            print(f'== {pair.describe()}: exit {status}, {_count(exported)} exported, '
                  f'{_count(dead)} dead letters'
                  + (', recorded as completed with dead letters; the series goes on'
                     if status == EXIT_DEAD_LETTERS else '')
                  + f' ({time.monotonic() - began:.1f} s).')
        _print_totals(totals)
        print(f'Backfill done: {len(selected)} pairs into {destination}; '
              f'{totals["range_exported"]:,} profiles exported, '
              f'{totals["range_dead_letters"]:,} dead letters.')
        return EXIT_DEAD_LETTERS if dead_letters_seen else EXIT_OK

    def _stop(self, pair: Pair, status: int, totals: dict) -> None:
        _print_totals(totals)
        what = _STOPPED.get(status, 'failed')
        resume = ('run the same command again to resume from it' if self.state.path else
                  f'run again with --from {pair.as_of} to go on from it')
        print(f'{PROG}: {pair.describe()} {what} (exit {status}), so the series stops there; '
              f'fix the cause and {resume}.', file=sys.stderr)


_TOTALS = {'Backfill': [
    ('pairs in range', 'pairs_in_range'),
    ('pairs run', 'pairs_run'),
    ('pairs skipped, already done', 'pairs_skipped'),
    ('profiles exported by this run', 'exported'),
    ('dead letters of this run', 'dead_letters'),
    ('profiles exported, range in all runs', 'range_exported'),
    ('dead letters, range in all runs', 'range_dead_letters'),
]}


def _print_totals(totals: dict) -> None:
    print(format_summary(totals, _TOTALS))


def main() -> None:
    """Console-script entry point (`beam-kinesis-backfill`)."""
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    sys.exit(run(sys.argv[1:]))


if __name__ == '__main__':
    main()
