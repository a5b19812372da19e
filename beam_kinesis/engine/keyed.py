"""Key by profile id: snapshot files (or records) to bucket batches of keyed rows."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_kinesis import progress
from beam_kinesis.counts import FileStats
from beam_kinesis.deadletter import DEAD_LETTER, STAGE_VALIDATE, dead_letter
from beam_kinesis.engine.columnar import CheckedRows
from beam_kinesis.engine.rows import BucketRows
from beam_kinesis.engine.view import InvalidProfile, ProfileProjection

__all__ = ['KeyFileFn', 'KeyRecordFn']

# Rows buffered per file before the bucket batches are emitted, to bound a worker's memory.
_MAX_BUFFERED_ROWS = 100_000
# Records of a file between two additions to the progress tally (one lock each).
_PROGRESS_RECORDS = 10_000


class _Keyer:
    """Keys the profiles of one file into bucket batches, counting what it saw."""

    def __init__(self, projection: ProfileProjection, path: str, stats: FileStats):
        self._projection = projection
        self._path = path
        self.stats = stats
        self.rows = BucketRows(projection, path)

    def add(self, profile: dict, position: int | None, source: str):
        """A profile's row, or its dead letter (and a tombstone if it has a key)."""
        projection = self._projection
        try:
            key, view = projection.project(profile, source)
        except InvalidProfile as err:
            self.stats.invalid += 1
            yield DEAD_LETTER, dead_letter(STAGE_VALIDATE, str(err), source, profile)
            key = projection.key_of(profile)
            if key is None:
                self.stats.unkeyed += 1
            else:  # the comparison must know this key has a record here, if an unusable one
                self.stats.tombstones += 1
                self.rows.add_tombstone(key, position)
            return
        self.stats.keyed += 1
        self.rows.add_view(key, position, view)

    def add_checked(self, checked: CheckedRows) -> None:
        """Rows the columnar checks vouched for."""
        self.stats.records += len(checked.rows)
        self.stats.keyed += len(checked.rows)
        checked.add_to(self.rows, self._projection)

    def flush(self, final: bool = False):
        if final or self.rows.count >= _MAX_BUFFERED_ROWS:
            for batch in self.rows.flush():
                yield 'batches', batch


class KeyFileFn(beam.DoFn):
    """A snapshot file -> `(tag, value)` pairs: `batches` (`(bucket, KeyedRows bytes)`),
    `dead_letters`, and one `FileStats` for the file (the input ledger's read counts)."""

    def __init__(
        self,
        fmt: str | None,
        label: str,
        projection: ProfileProjection,
        max_line_bytes: int | None = None,
    ):
        self._fmt = fmt
        self._label = label
        self._projection = projection
        self._max_line_bytes = max_line_bytes
        self._records_read = Metrics.counter('beam_kinesis', f'{label}_records_read')

    def process(self, path: str):
        from beam_kinesis.snapshot import Unreadable, detect_format, read_records

        fmt = detect_format(path, self._fmt)
        keyer = _Keyer(self._projection, path, FileStats(self._label, path, fmt))
        stats = keyer.stats
        limit = {} if self._max_line_bytes is None else {'max_line_bytes': self._max_line_bytes}
        shown = 0  # records added to the progress tally
        for position, item in read_records(
            path, fmt, self._projection.fields, normalize=False, columnar=self._projection, **limit
        ):
            if isinstance(item, CheckedRows):
                keyer.add_checked(item)
            elif isinstance(item, Unreadable):
                stats.unreadable += 1
                stats.unkeyed += 1
                stats.broken |= item.rest_of_file
                yield DEAD_LETTER, item.entry
                continue
            else:
                stats.records += 1
                yield from keyer.add(item, position, f'{path}:{position}')
            if stats.records - shown >= _PROGRESS_RECORDS:  # a big file shows it moves
                progress.count(records_read=stats.records - shown)
                shown = stats.records
            yield from keyer.flush()
        yield from keyer.flush(final=True)
        self._records_read.inc(stats.records)
        progress.count(files_read=1, records_read=stats.records - shown)
        yield 'stats', stats


class KeyRecordFn(beam.DoFn):
    """`SnapshotRecord`s made in a pipeline -> `(tag, value)` pairs as `KeyFileFn` makes
    them, one batch per record (their rows carry their views: there is no file behind
    them); bucket batches of a projecting `ReadSnapshot` pass through."""

    def __init__(self, projection: ProfileProjection, label: str):
        self._projection = projection
        self._label = label

    def process(self, element):
        from beam_kinesis.snapshot import SnapshotRecord

        if not isinstance(element, SnapshotRecord):
            yield 'batches', element
            return
        path, _, position = element.source.rpartition(':')
        if not position.isdigit():
            path, position = element.source, None
        stats = FileStats(self._label, path)
        keyer = _Keyer(self._projection, path, stats)
        yield from keyer.add(element.profile, int(position) if position else None, element.source)
        yield from keyer.flush(final=True)
        if stats.unkeyed:
            yield 'stats', FileStats(self._label, unkeyed=stats.unkeyed)
