"""Read snapshots: profile files (JSON Lines, Avro, Parquet) to normalised profile records."""

from __future__ import annotations

import functools
import gzip
import io
import json
import logging
import os
from typing import Any, Iterable, Iterator, NamedTuple

import apache_beam as beam
import fastavro
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_kinesis.deadletter import DEAD_LETTER, STAGE_READ, dead_letter
from beam_kinesis.engine.columnar import CheckedRows, ColumnarPlan
from beam_kinesis.engine.view import ProfileProjection
from beam_kinesis.tagged import split_tagged
from beam_kinesis.values import arrow_to_pylist, may_hold_big_integers, normalize_value

__all__ = ['ReadSnapshot', 'SnapshotRecord', 'SnapshotError', 'FORMATS', 'Unreadable',
           'detect_format', 'match_snapshot_files', 'normalize_value', 'read_records']

_LOGGER = logging.getLogger(__name__)

# Input formats and the file name endings (after an optional `.gz`) that select them.
FORMATS = {
    'jsonl': ('.jsonl', '.json', '.ndjson'),
    'avro': ('.avro',),
    'parquet': ('.parquet', '.pq'),
}

# Rows per Arrow batch when reading Parquet: big enough to amortise the conversion,
# small enough that one batch of wide profiles stays a few MB.
_PARQUET_BATCH_ROWS = 4096

# Read buffer for JSON Lines files.
_READ_BUFFER_BYTES = 1 << 20


class SnapshotError(ValueError):
    """A snapshot that cannot be read at all (no such path, unknown format), in one sentence."""


class SnapshotRecord(NamedTuple):
    """One profile as read from a snapshot file.

    Attributes:
      source: where it came from, `path:position` (1-based line of a JSON Lines file, 1-based
        record of an Avro or Parquet file).
      profile: the profile, normalised (see `normalize_value`).
    """
    source: str
    profile: dict


def detect_format(path: str, override: str | None = None) -> str:
    """The format of `path`: `override` if given, else taken from its extension."""
    if override:
        if override not in FORMATS:
            raise SnapshotError(f'Input format {override!r} is not one of {sorted(FORMATS)}.')
        return override
    name = path.lower()
    if name.endswith('.gz'):
        name = name[:-3]
    for fmt, endings in FORMATS.items():
        if name.endswith(endings):
            return fmt
    raise SnapshotError(f'Cannot tell the format of {path!r} from its extension; name it '
                        f'.jsonl, .avro or .parquet or pass --input_format.')


def match_snapshot_files(pattern: str) -> list[str]:
    """The files a snapshot path, directory or glob names, sorted; raises if there are none."""
    if not pattern:
        raise SnapshotError('A snapshot path is empty.')
    if os.path.isdir(pattern):
        pattern = os.path.join(pattern, '*')
    try:
        results = FileSystems.match([pattern])[0].metadata_list
    except Exception as err:  # Beam raises BeamIOError with nested details; one line suffices.
        raise SnapshotError(f'Snapshot path {pattern!r} cannot be listed: '
                            f'{str(err).splitlines()[0]}') from err
    paths = sorted(m.path for m in results if not os.path.isdir(m.path))
    if not paths:
        raise SnapshotError(f'No snapshot file matches {pattern!r}.')
    return paths


def _parse_json_line(line: bytes) -> Any:
    if not may_hold_big_integers(line):
        try:
            return orjson.loads(line)
        except orjson.JSONDecodeError:
            pass  # the standard library decides, and says why
    # Integers beyond 64 bits (orjson would make them floats) or invalid JSON. NaN and
    # Infinity are not JSON and stay refused.
    def _refuse(constant):
        raise ValueError(f'{constant} is not a JSON value')
    value = json.loads(line.decode('utf-8'), parse_constant=_refuse)
    # A lone surrogate escape ("\ud800") parses but is no Unicode text.
    json.dumps(value, ensure_ascii=False).encode('utf-8')
    return value


def _select(profile: dict, fields: frozenset | None) -> dict:
    if fields is None:
        return profile
    return {key: value for key, value in profile.items() if key in fields}


class _Unreadable(NamedTuple):
    entry: dict          # the dead letter
    rest_of_file: bool   # the file broke off: what follows was not read


def _read_positions(path: str, fmt: str, fields: Iterable[str] | None = None,
                    normalize: bool = True, columnar: ProfileProjection | None = None,
                    positions: frozenset | None = None,
                    ) -> Iterator[tuple[int, dict | _Unreadable | CheckedRows]]:
    """`(position, profile or _Unreadable)` for every record of a file (or only those at
    `positions`); profiles normalised unless `normalize` is false (a projection normalises
    only the parts it keeps). Given a `columnar` projection, Parquet rows that pass its
    checks come as `CheckedRows`, at the position of their row group's last row, after the
    row group's other rows."""
    wanted = frozenset(fields) if fields is not None else None
    readers = {'jsonl': _read_jsonl, 'avro': _read_avro,
               'parquet': functools.partial(_read_parquet, columnar=columnar,
                                            positions=positions)}
    position = 0
    try:
        for position, raw in readers[fmt](path, wanted):
            if isinstance(raw, CheckedRows):
                yield position, raw
                continue
            if positions is not None and position not in positions:
                continue  # read again for some records only: the others are not parsed
            if isinstance(raw, bytes):  # a JSON line, parsed here so errors name the line
                try:
                    raw = _parse_json_line(raw)
                except (ValueError, UnicodeDecodeError) as err:
                    yield position, _Unreadable(dead_letter(
                        STAGE_READ, f'not valid JSON: {err}', f'{path}:{position}', raw), False)
                    continue
                if not isinstance(raw, dict):
                    yield position, _Unreadable(dead_letter(
                        STAGE_READ, 'the record is not a JSON object', f'{path}:{position}',
                        orjson.dumps(raw)), False)
                    continue
            if not normalize:
                yield position, _select(raw, wanted)
                continue
            try:
                yield position, normalize_value(_select(raw, wanted))
            except ValueError as err:
                yield position, _Unreadable(dead_letter(
                    STAGE_READ, f'cannot be read as JSON values: {err}', f'{path}:{position}',
                    repr(raw)), False)
    except Exception as err:  # a file that breaks off (cut gzip, bad block) ends here
        _LOGGER.warning('Snapshot file %s is unreadable after record %s: %s',
                        path, position, err)
        yield position + 1, _Unreadable(dead_letter(
            STAGE_READ, f'the file cannot be read after record {position}: '
                        f'{type(err).__name__}: {err}', f'{path}:{position + 1}', None), True)


def _open(path: str):
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def _read_jsonl(path: str, wanted) -> Iterator[tuple[int, bytes]]:
    with _open(path) as raw:
        # GzipFile buffers by itself and hands out every whole line before a cut in the
        # stream; a large buffer on top of it would lose those to the error at the cut.
        reader = (gzip.GzipFile(fileobj=raw) if path.lower().endswith('.gz')
                  else io.BufferedReader(raw, _READ_BUFFER_BYTES))
        for number, line in enumerate(reader, start=1):
            line = line.rstrip(b'\r\n')
            if line.strip():
                yield number, line


def _read_avro(path: str, wanted) -> Iterator[tuple[int, dict]]:
    with _open(path) as handle:
        yield from enumerate(fastavro.reader(handle), start=1)


def _read_parquet(path: str, wanted, columnar: ProfileProjection | None = None,
                  positions: frozenset | None = None) -> Iterator[tuple[int, dict | CheckedRows]]:
    with _open(path) as handle:
        parquet = pq.ParquetFile(handle)
        columns = None
        if wanted is not None:
            columns = [name for name in parquet.schema_arrow.names if name in wanted]
        number = 0
        if columns == []:  # none of the fields the job reads: every row an empty profile
            for _ in range(parquet.metadata.num_rows):
                number += 1
                yield number, {}
            return
        plan = None
        if columnar is not None:
            schema = parquet.schema_arrow
            if columns is not None:
                schema = pa.schema([schema.field(name) for name in columns])
            plan = ColumnarPlan.for_schema(schema, columnar)
        if plan is None:
            for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=columns):
                names = batch.schema.names
                values = [arrow_to_pylist(column) for column in batch.columns]
                for row in zip(*values):
                    number += 1
                    yield number, dict(zip(names, row))
            return
        wanted_positions = (np.array(sorted(positions), dtype=np.int64)
                            if positions is not None else None)
        for group in range(parquet.metadata.num_row_groups):
            first = number + 1
            number += parquet.metadata.row_group(group).num_rows
            if number < first:
                continue
            rows = np.arange(first, number + 1, dtype=np.int64)
            if wanted_positions is not None:
                rows = wanted_positions[(wanted_positions >= first) & (wanted_positions <= number)]
                if not len(rows):
                    continue
            table = parquet.read_row_group(group, columns=columns)
            if wanted_positions is not None:
                table = table.take(pa.array(rows - first, pa.int64()))
            batch = table.combine_chunks().to_batches()[0]
            checked = plan.check(batch, rows)
            yield from _failed_rows(batch, checked, rows)
            yield number, checked


def _failed_rows(batch: pa.RecordBatch, checked: CheckedRows, positions: np.ndarray):
    """`(position, profile)` of the rows of a batch that failed the columnar checks."""
    if len(checked.rows) == batch.num_rows:
        return
    rest = np.setdiff1d(np.arange(batch.num_rows), checked.rows)
    names = batch.schema.names
    values = [arrow_to_pylist(column) for column in batch.take(pa.array(rest, pa.int64())).columns]
    for index, row in zip(rest.tolist(), zip(*values)):
        yield int(positions[index]), dict(zip(names, row))


class _ReadSnapshotFileFn(beam.DoFn):
    """Reads whole snapshot files into `(tag, value)` pairs: `SnapshotRecord`s, dead
    letters, and one stats dict per file."""

    def __init__(self, fmt: str | None, fields: tuple[str, ...] | None, label: str,
                 normalize: bool = True):
        self._fmt = fmt
        self._fields = fields
        self._label = label
        self._normalize = normalize
        self._records_read = Metrics.counter('beam_kinesis', f'{label}_records_read')

    def process(self, path: str):
        fmt = detect_format(path, self._fmt)
        stats = {'snapshot': self._label, 'file': path, 'format': fmt, 'records': 0,
                 'unreadable': 0, 'invalid': 0, 'keyed': 0, 'unkeyed': 0, 'tombstones': 0,
                 'broken': False}
        for position, item in _read_positions(path, fmt, self._fields, self._normalize):
            if isinstance(item, _Unreadable):
                stats['unreadable'] += 1
                stats['unkeyed'] += 1
                stats['broken'] |= item.rest_of_file
                yield 'dead_letters', item.entry
                continue
            stats['records'] += 1
            yield 'records', SnapshotRecord(f'{path}:{position}', item)
        self._records_read.inc(stats['records'])
        yield 'stats', stats


# The reading primitives the engine's keyed read uses (beam_kinesis.engine.keyed).
read_records = _read_positions
Unreadable = _Unreadable


class ReadSnapshot(beam.PTransform):
    """Reads a snapshot (a path, directory or glob of JSON Lines, Avro or Parquet files).

    Files are listed when the transform is built, so a missing snapshot stops the job before
    it starts. The result has three outputs:

    - `records`: one `SnapshotRecord` per profile; or, given a `projection` (as
      `DetectChanges.projection`), `(bucket, batch)` pairs of keyed profiles ready for
      `DetectChanges` (see `beam_kinesis.engine.keyed`), invalid ones already dead-lettered;
    - `dead_letters`: one dead-letter dict per record that could not be read (or used);
    - `stats`: one dict per file: records read, unreadable, invalid and keyed.

    Example:
        result = pipeline | ReadSnapshot('gs://bucket/2024-06-01/*.parquet')
        profiles = result.records | beam.Map(lambda record: record.profile)
    """

    def __init__(self, pattern: str, input_format: str | None = None,
                 fields: Iterable[str] | None = None, label: str = 'snapshot',
                 projection: ProfileProjection | None = None, normalize: bool = True):
        """
        Args:
          pattern: path, directory or glob of the snapshot's files.
          input_format: `jsonl`, `avro` or `parquet`; None takes it from each extension.
          fields: top-level fields to keep, or None for all (a projection brings its own).
          label: names the snapshot in stats and metrics (`<label>_records_read`).
          projection: key, project and batch the profiles for `DetectChanges`.
          normalize: records normalised whole (see `normalize_value`); False leaves that to
            whoever projects them (a value in a field the destination ignores then cannot
            make a record unreadable).
        """
        super().__init__()
        self._files = match_snapshot_files(pattern)
        for path in self._files:
            detect_format(path, input_format)  # an unknown extension fails here, at start
        self._format = input_format
        if projection is not None:
            fields = projection.fields
        self._fields = tuple(sorted(set(fields))) if fields is not None else None
        self._label = label
        self._projection = projection
        self._normalize = normalize

    @property
    def files(self) -> list[str]:
        """The files the snapshot consists of."""
        return list(self._files)

    def expand(self, pbegin):
        files = (pbegin
                 | 'ListFiles' >> beam.Create(self._files)
                 | 'SpreadFiles' >> beam.Reshuffle())
        if self._projection is None:
            tagged = files | 'ReadFiles' >> beam.ParDo(_ReadSnapshotFileFn(
                self._format, self._fields, self._label, self._normalize))
            return split_tagged(tagged, ('records', DEAD_LETTER, 'stats'))
        from beam_kinesis.engine.keyed import KeyFileFn
        tagged = files | 'ReadFiles' >> beam.ParDo(KeyFileFn(
            self._format, self._label, self._projection))
        outputs = split_tagged(tagged, ('batches', DEAD_LETTER, 'stats'))
        outputs['records'] = outputs.pop('batches')
        return outputs
