"""Backfill policy as a library: the series of snapshots, its pairs, which of them to run,
and the state file that makes a series resumable.

`pipelines/backfill.py` is the launcher that runs the pairs (each through
`pipelines.backfill.export_pair`); everything it decides before and between them is here,
tested as plain functions.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import glob
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from typing import Any, NamedTuple

import yaml
from apache_beam.io.filesystems import FileSystems

from beam_kinesis.config import ConfigError, parse_as_of
from beam_kinesis.job import EXIT_DEAD_LETTERS, EXIT_OK

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
    'state_lock',
]

_LOGGER = logging.getLogger(__name__)

STATE_VERSION = 1
_TIME_FORMAT = '%Y-%m-%dT%H:%M:%SZ'

# A date in a file or directory name, optionally with a time: 2024-06-01, 2024-06-01T06:30:00Z,
# 2024-06-01T063000, 2024-06-01_06-30. Digits right before or after it make it no date.
_NAME_TIME = re.compile(
    r'(?<!\d)(\d{4})-(\d{2})-(\d{2})'
    r'(?:[T_ ](\d{2})[:-]?(\d{2})(?:[:-]?(\d{2}))?Z?)?(?!\d)'
)
_DATE_ONLY = re.compile(r'\d{4}-\d{2}-\d{2}')


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
        raise BackfillError(
            f'{name!r} carries {found[0].group(0)!r}, which is not a real date and time.'
        ) from err
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
            raise BackfillError(
                f'--snapshots {pattern!r} cannot be listed: {str(err).splitlines()[0]}'
            ) from err
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
                raise BackfillError(
                    f'{path!r}, matched by --snapshots {pattern!r}, has no '
                    f"date (YYYY-MM-DD) in its name or its directory's name."
                )
            path = FileSystems.join(folder, file_filter)
        times[path if _is_url(path) else os.path.abspath(path)] = stamp
    by_time: dict[str, str] = {}
    for path, stamp in sorted(times.items(), key=lambda item: (item[1], item[0])):
        if stamp in by_time:
            raise BackfillError(
                f'{by_time[stamp]!r} and {path!r} both carry the time {stamp}; '
                f'a series needs one snapshot per time.'
            )
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
        raise BackfillError(
            f'{where}: as_of {value!r} is not a date (YYYY-MM-DD) or a UTC '
            f'time (YYYY-MM-DDTHH:MM:SSZ).'
        ) from err


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
        raise BackfillError(
            f'--manifest {path!r} must be a non-empty list of {{path, as_of}} entries.'
        )
    base = os.path.dirname(os.path.abspath(path))
    snapshots: list[Snapshot] = []
    for number, entry in enumerate(entries, 1):
        where = f'entry {number} of --manifest {path!r}'
        if not isinstance(entry, dict) or set(entry) != {'path', 'as_of'}:
            raise BackfillError(
                f'{where} must have exactly the keys path and as_of, not {entry!r}.'
            )
        location = entry['path']
        if not isinstance(location, str) or not location.strip():
            raise BackfillError(f'{where} has no path.')
        if not _is_url(location):
            location = os.path.normpath(os.path.join(base, os.path.expanduser(location)))
        snapshots.append(Snapshot(location, _manifest_time(entry['as_of'], where)))
    for number, (before, after) in enumerate(zip(snapshots, snapshots[1:], strict=False), 2):
        if after.as_of <= before.as_of:
            raise BackfillError(
                f'--manifest {path!r} is not in time order: entry {number} '
                f'({after.as_of}) does not come after entry {number - 1} '
                f'({before.as_of}).'
            )
    return snapshots


def series_pairs(snapshots: list[Snapshot]) -> list[Pair]:
    """Pair 1 is the first snapshot's first run; pair n diffs snapshot n against n - 1."""
    return [
        Pair(number, snapshots[number - 2] if number > 1 else None, snapshot)
        for number, snapshot in enumerate(snapshots, 1)
    ]


def _bound(text: str | None, flag: str, *, end: bool) -> str | None:
    if text is None:
        return None
    if _DATE_ONLY.fullmatch(text):
        _parse_date(text, flag)
        return f'{text}T23:59:59Z' if end else f'{text}T00:00:00Z'
    try:
        return parse_as_of(text)
    except ConfigError as err:
        raise BackfillError(
            f'{flag} {text!r} is not a date (YYYY-MM-DD) or a UTC time (YYYY-MM-DDTHH:MM:SSZ).'
        ) from err


def select_pairs(
    pairs: list[Pair],
    start: str | None = None,
    end: str | None = None,
    skip_first_run: bool = False,
) -> list[Pair]:
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
    return [
        pair
        for pair in pairs
        if not (skip_first_run and pair.previous is None)
        and (low is None or pair.as_of >= low)
        and (high is None or pair.as_of <= high)
    ]


def _pair_entry(pair: Pair, **fields: Any) -> dict:
    return {
        'pair': pair.number,
        'previous': pair.previous.path if pair.previous else None,
        'current': pair.current.path,
        'as_of': pair.as_of,
        **fields,
    }


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
        if (
            not isinstance(data, dict)
            or data.get('version') != STATE_VERSION
            or not (
                isinstance(data.get('series'), dict) and isinstance(data.get('completed'), list)
            )
        ):
            raise BackfillError(
                f'--state_file {path!r} is not a version {STATE_VERSION} backfill state file.'
            )
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

    def finish(
        self, pair: Pair, status: int, exported: int | None, dead_letters: int | None
    ) -> None:
        started = (self.in_flight or {}).get('started')
        entry = _pair_entry(
            pair,
            exit_status=status,
            exported=exported,
            dead_letters=dead_letters,
            started=started,
            finished=_utc_now(),
        )
        if status in (EXIT_OK, EXIT_DEAD_LETTERS):
            self.completed[pair.number] = entry
            if (self.last_failure or {}).get('pair') == pair.number:
                self.last_failure = None
        else:
            self.last_failure = entry
        self.in_flight = None
        self.save()

    def to_json(self) -> dict:
        return {
            'version': STATE_VERSION,
            'series': self.series,
            'completed': [self.completed[number] for number in sorted(self.completed)],
            'in_flight': self.in_flight,
            'last_failure': self.last_failure,
            'updated': _utc_now(),
        }

    def save(self) -> None:
        """Replaces the state file atomically (no-op without a path)."""
        if self.path is None:
            return
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            dir=folder, suffix='.tmp', prefix=f'.{os.path.basename(self.path)}.'
        )
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
        return (
            f'{start}: it writes to {theirs.get("destination")!r}, this one to '
            f'{ours["destination"]!r}; {advice}.'
        )
    their_list, our_list = theirs.get('snapshots') or [], ours['snapshots']
    for number, (their, our) in enumerate(zip(their_list, our_list, strict=False), 1):
        if their != our:
            their_text = (
                f'{their.get("path")!r} as of {their.get("as_of")}'
                if isinstance(their, dict)
                else repr(their)
            )
            return (
                f"{start}: its snapshot {number} is {their_text}, this one's is "
                f'{our["path"]!r} as of {our["as_of"]}; {advice}.'
            )
    return f'{start}: it has {len(their_list)} snapshots, this one {len(our_list)}; {advice}.'


@contextlib.contextmanager
def state_lock(state_file: str) -> Iterator[None]:
    """Holds `<state_file>.lock` so that two backfills cannot run one series at once; the
    lock goes with the process, so a crash leaves nothing to clean up."""
    path = f'{state_file}.lock'
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'a', encoding='utf-8') as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            raise BackfillError(
                f'Another backfill is running the series of --state_file '
                f'{state_file!r} (it holds {path!r}).'
            ) from err
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
