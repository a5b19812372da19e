"""Read snapshots: profile files (JSON Lines, Avro, Parquet) to normalised profile records."""

from __future__ import annotations

import functools
import gzip
import json
import logging
import os
import re
import stat
from typing import Any, Iterable, Iterator, NamedTuple

import apache_beam as beam
import fastavro
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes, FileSystem
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_kinesis import progress
from beam_kinesis.deadletter import DEAD_LETTER, MAX_RECORD_BYTES, STAGE_READ, dead_letter
from beam_kinesis.engine.columnar import CheckedRows, ColumnarPlan
from beam_kinesis.engine.view import ProfileProjection
from beam_kinesis.formats import FORMATS, format_of_name
from beam_kinesis.hints import DeadLetter, ReadStats
from beam_kinesis.tagged import split_tagged
from beam_kinesis.values import arrow_to_pylist, may_hold_big_integers, normalize_value

__all__ = [
    'ReadSnapshot',
    'SnapshotRecord',
    'SnapshotError',
    'FORMATS',
    'Unreadable',
    'DEFAULT_MAX_LINE_BYTES',
    'detect_format',
    'match_snapshot_files',
    'normalize_value',
    'read_records',
]

_LOGGER = logging.getLogger(__name__)


# Rows per Arrow batch when reading Parquet: big enough to amortise the conversion,
# small enough that one batch of wide profiles stays a few MB.
_PARQUET_BATCH_ROWS = 4096

# Read buffer for JSON Lines files: lines are cut from chunks of this size, so that memory
# stays bounded whatever the length of a line.
_READ_BUFFER_BYTES = 1 << 20

# Longest JSON line read (`--max_line_bytes`), the line ending not counted. The largest
# profile AEP stores is far smaller (Kinesis itself takes 1 MiB per record, 10 MiB raised);
# 16 MiB leaves room for profiles with thousands of segments and identities, and bounds
# what one line can cost a worker (about 10 times its size once parsed into Python objects).
DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024

# A line nested deeper than this is unreadable: orjson writes no deeper, and the check for
# repeated member names needs it to (its parser stops at 1,024). Values the destination
# reads have a lower limit, `values.MAX_NESTING_DEPTH`.
_LINE_DEPTH = 254

_BOM = b'\xef\xbb\xbf'


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
    fmt = format_of_name(path)
    if fmt is not None:
        return fmt
    raise SnapshotError(
        f'Cannot tell the format of {path!r} from its extension; name it '
        f'.jsonl, .avro or .parquet or pass --input_format.'
    )


def match_snapshot_files(pattern: str) -> list[str]:
    """The files a snapshot path, directory or glob names, sorted; raises if there are none,
    or if a local name among them cannot be read as a file (a dangling or looping symbolic
    link, a FIFO or device, a subdirectory, a file without read permission): what is not
    read must not be taken for deleted profiles."""
    if not pattern:
        raise SnapshotError('A snapshot path is empty.')
    given = pattern
    if os.path.isdir(pattern):
        pattern = os.path.join(pattern, '*')
    try:
        results = FileSystems.match([pattern])[0].metadata_list
    except Exception as err:  # Beam raises BeamIOError with nested details; one line suffices.
        raise SnapshotError(
            f'Snapshot path {pattern!r} cannot be listed: {str(err).splitlines()[0]}'
        ) from err
    paths = sorted(m.path for m in results if not os.path.isdir(m.path))
    if '://' not in pattern:
        for name in _local_names(pattern):
            _check_readable_file(name, given)
    if not paths:
        raise SnapshotError(f'No snapshot file matches {pattern!r}.')
    return paths


def _local_names(pattern: str) -> list[str]:
    """Every name a local path or glob matches as Beam's local file system lists them, with
    what Beam's listing drops without a word: links it cannot follow, and, unless the glob
    has `**`, subdirectories (whose files it would not read)."""
    prefix = re.match(r'^[^[*?]*', pattern).group(0)
    if prefix == pattern:
        return [pattern] if os.path.lexists(pattern) else []
    root = os.path.dirname(prefix)
    if not os.path.isdir(root):
        return []
    matches = re.compile(FileSystem.translate_pattern(pattern)).match
    names = []
    for directory, subdirectories, files in os.walk(root):
        candidates = files if '**' in pattern else files + subdirectories
        names.extend(
            name
            for name in (os.path.join(directory, entry) for entry in candidates)
            if matches(name)
        )
    return sorted(names)


def _check_readable_file(name: str, pattern: str) -> None:
    where = f'Snapshot file {name!r}' + ('' if name == pattern else f' (of {pattern!r})')
    try:
        mode = os.stat(name).st_mode
    except OSError as err:
        if os.path.islink(name):
            raise SnapshotError(
                f'{where} is a symbolic link that leads nowhere readable '
                f'({err.strerror}); fix or remove it.'
            ) from err
        raise SnapshotError(f'{where} cannot be read: {err.strerror}.') from err
    if stat.S_ISDIR(mode):
        raise SnapshotError(
            f'{where} is a directory, whose files a snapshot does not read; '
            f'name them with a glob such as {os.path.join(name, "*")!r}.'
        )
    if not stat.S_ISREG(mode):
        kind = (
            'a FIFO' if stat.S_ISFIFO(mode) else 'a socket' if stat.S_ISSOCK(mode) else 'a device'
        )
        raise SnapshotError(f'{where} is {kind}, not a regular file.')
    try:
        with open(name, 'rb'):
            pass
    except OSError as err:
        raise SnapshotError(f'{where} cannot be read: {err.strerror}.') from err


class _Ambiguous(dict):
    """An object in which a member name occurs more than once (`names`)."""

    names: tuple = ()


def _object_without_repeats(pairs: list) -> dict:
    result = dict(pairs)
    if len(result) == len(pairs):
        return result
    seen, repeated = set(), []
    for name, _ in pairs:
        if name in seen and name not in repeated:
            repeated.append(name)
        seen.add(name)
    result = _Ambiguous(pairs)
    result.names = tuple(repeated)
    return result


def _names_may_repeat(line: bytes, text: bytes) -> bool:
    """Whether the JSON text `line`, which orjson parsed and wrote again as `text` (keeping
    the last of repeated member names), may have held a name twice in one object.

    Every member has one `:` after its name; colons inside strings are written by orjson as
    they are, and may be escaped as `\\u003a` in the input. So the output of orjson has as
    many colons as the input (escapes counted) unless some member was dropped."""
    if text == line:  # the usual case for compact files: nothing was dropped
        return False
    colons = line.count(b':')
    if b'\\u003' in line:
        colons += line.count(b'\\u003a') + line.count(b'\\u003A')
    return text.count(b':') != colons


def _repeated_names(value: dict, wanted: frozenset | None) -> list[str]:
    """Dotted paths of the objects with repeated names in the fields the job keeps."""
    found = []
    if isinstance(value, _Ambiguous):
        found += [name for name in value.names if wanted is None or name in wanted]
    pending = [(name, item) for name, item in value.items() if wanted is None or name in wanted]
    while pending:  # no recursion: the value may be nested as deep as the parser allows
        path, item = pending.pop()
        if isinstance(item, _Ambiguous):
            found += [f'{path}.{name}' for name in item.names]
        if isinstance(item, dict):
            pending += [(f'{path}.{name}', child) for name, child in item.items()]
        elif isinstance(item, list):
            pending += [(f'{path}[{index}]', child) for index, child in enumerate(item)]
    return sorted(found)


def _nested_deeper(value: Any, limit: int) -> bool:
    """Whether objects and arrays nest more than `limit` levels in `value` (no recursion)."""
    pending = [(value, 1)] if isinstance(value, (dict, list)) else []
    while pending:
        item, depth = pending.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        pending += [(child, depth + 1) for child in children if isinstance(child, (dict, list))]
    return False


def _too_deep() -> ValueError:
    return ValueError(f'objects and arrays are nested more than {_LINE_DEPTH} levels deep')


def _parse_json_line(line: bytes, wanted: frozenset | None = None) -> Any:
    """One JSON line as Python values.

    Raises:
      ValueError: not JSON, a value JSON cannot carry (NaN, a lone surrogate), nesting the
        parser cannot take, or a member name twice in one object within the fields the job
        keeps (`wanted`; all if None), which would make the record ambiguous.
    """
    if not may_hold_big_integers(line):
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as err:
            if 'depth limit' in str(err):
                raise _too_deep() from err
        else:
            try:
                text = orjson.dumps(value)
            except TypeError as err:  # orjson's writer stops at the same depth as _LINE_DEPTH
                raise _too_deep() from err
            if not _names_may_repeat(line, text):
                return value

    # Integers beyond 64 bits (orjson would make them floats), invalid JSON, or member names
    # that may repeat. NaN and Infinity are not JSON and stay refused.
    def _refuse(constant):
        raise ValueError(f'{constant} is not a JSON value')

    try:
        value = json.loads(
            line.decode('utf-8'), parse_constant=_refuse, object_pairs_hook=_object_without_repeats
        )
        # A lone surrogate escape ("\ud800") parses but is no Unicode text.
        json.dumps(value, ensure_ascii=False).encode('utf-8')
    except RecursionError as err:
        raise _too_deep() from err
    if _nested_deeper(value, _LINE_DEPTH):
        raise _too_deep()
    if isinstance(value, dict):
        repeated = _repeated_names(value, wanted)
        if repeated:
            raise ValueError(
                f'the record is ambiguous: member name {repeated[0]!r} occurs more '
                'than once in one object'
            )
        if isinstance(value, _Ambiguous):  # repeats only in fields the job drops
            value = dict(value)
    return value


def _select(profile: dict, fields: frozenset | None) -> dict:
    if fields is None:
        return profile
    return {key: value for key, value in profile.items() if key in fields}


class _Unreadable(NamedTuple):
    entry: dict  # the dead letter
    rest_of_file: bool  # the file broke off: what follows was not read


def _read_positions(
    path: str,
    fmt: str,
    fields: Iterable[str] | None = None,
    normalize: bool = True,
    columnar: ProfileProjection | None = None,
    max_line_bytes: int | None = DEFAULT_MAX_LINE_BYTES,
) -> Iterator[tuple[int, dict | _Unreadable | CheckedRows]]:
    """`(position, profile or _Unreadable)` for every record of a file; profiles normalised
    unless `normalize` is false (a projection normalises only the parts it keeps). Given a
    `columnar` projection, Parquet rows that pass its checks come as `CheckedRows`, at the
    position of their row group's last row, after the row group's other rows. A JSON line
    longer than `max_line_bytes` is unreadable (None: no limit)."""
    wanted = frozenset(fields) if fields is not None else None
    readers = {
        'jsonl': functools.partial(_read_jsonl, max_line_bytes=max_line_bytes),
        'avro': _read_avro,
        'parquet': functools.partial(_read_parquet, columnar=columnar),
    }
    position = 0
    try:
        for position, raw in readers[fmt](path, wanted):
            if isinstance(raw, CheckedRows):
                yield position, raw
                continue
            if isinstance(raw, _LongLine):
                yield (
                    position,
                    _Unreadable(
                        dead_letter(
                            STAGE_READ,
                            f'the line is {raw.size:,} bytes, longer than the limit of '
                            f'{max_line_bytes:,} (--max_line_bytes); only its beginning '
                            'is kept here',
                            f'{path}:{position}',
                            raw.prefix,
                        ),
                        False,
                    ),
                )
                continue
            if isinstance(raw, bytes):  # a JSON line, parsed here so errors name the line
                line = raw
                try:
                    raw = _parse_json_line(line, wanted)
                except (ValueError, UnicodeDecodeError) as err:
                    yield (
                        position,
                        _Unreadable(
                            dead_letter(
                                STAGE_READ, f'not valid JSON: {err}', f'{path}:{position}', line
                            ),
                            False,
                        ),
                    )
                    continue
                if not isinstance(raw, dict):
                    yield (
                        position,
                        _Unreadable(
                            dead_letter(
                                STAGE_READ,
                                'the record is not a JSON object',
                                f'{path}:{position}',
                                line,
                            ),
                            False,
                        ),
                    )
                    continue
            if not normalize:
                yield position, _select(raw, wanted)
                continue
            try:
                yield position, normalize_value(_select(raw, wanted))
            except ValueError as err:
                yield (
                    position,
                    _Unreadable(
                        dead_letter(
                            STAGE_READ,
                            f'cannot be read as JSON values: {err}',
                            f'{path}:{position}',
                            raw,
                        ),
                        False,
                    ),
                )
    except Exception as err:  # a file that breaks off (cut gzip, bad block) ends here
        _LOGGER.warning('Snapshot file %s is unreadable after record %s: %s', path, position, err)
        yield (
            position + 1,
            _Unreadable(
                dead_letter(
                    STAGE_READ,
                    f'the file cannot be read after record {position}: {type(err).__name__}: {err}',
                    f'{path}:{position + 1}',
                    None,
                ),
                True,
            ),
        )


def _open(path: str):
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


class _LongLine(NamedTuple):
    """A JSON line over the length limit, skipped without being held whole."""

    size: int  # its bytes, the line ending not counted
    prefix: bytes  # its first bytes, for the dead letter


def _read_jsonl(
    path: str, wanted, max_line_bytes: int | None = DEFAULT_MAX_LINE_BYTES
) -> Iterator[tuple[int, bytes | _LongLine]]:
    """`(line number, line)` of the non-blank lines of a JSON Lines file (a UTF-8 byte order
    mark at its start skipped), or `_LongLine` for one longer than `max_line_bytes`."""
    with _open(path) as raw:
        # Chunks, not lines: a line is never held whole beyond the limit, and gzip hands
        # out every whole line before a cut in the stream before raising at the cut.
        stream = gzip.GzipFile(fileobj=raw) if path.lower().endswith('.gz') else raw
        # read1: one read of the stream underneath, so that what came before an error in it
        # (a cut gzip member) is handed out first.
        read = getattr(stream, 'read1', stream.read)
        number = 1  # of the line being read
        parts: list = []  # its bytes so far, unless it is too long
        held = 0  # their length
        skipped = -1  # the bytes of a line too long to hold, or -1
        prefix = b''
        while True:
            chunk = read(_READ_BUFFER_BYTES)
            if not chunk:
                break
            pieces = chunk.split(b'\n')
            tail = pieces.pop()
            for piece in pieces:  # each ends a line
                if skipped >= 0:
                    yield number, _LongLine(skipped + len(piece), prefix)
                    skipped, prefix = -1, b''
                else:
                    if parts:
                        parts.append(piece)
                        piece, parts, held = b''.join(parts), [], 0
                    if max_line_bytes is not None and len(piece) > max_line_bytes:
                        yield number, _LongLine(len(piece), piece[:MAX_RECORD_BYTES])
                    else:
                        line = piece.rstrip(b'\r')
                        if number == 1 and line.startswith(_BOM):
                            line = line[len(_BOM) :]
                        if line and not line.isspace():
                            yield number, line
                number += 1
            if not tail:
                continue
            if skipped >= 0:
                skipped += len(tail)
            else:
                parts.append(tail)
                held += len(tail)
                if max_line_bytes is not None and held > max_line_bytes:
                    prefix = b''.join(parts)[:MAX_RECORD_BYTES]
                    skipped, parts, held = held, [], 0
        if skipped >= 0:
            yield number, _LongLine(skipped, prefix)
        elif parts:  # the last line, without a line ending
            line = b''.join(parts).rstrip(b'\r')
            if number == 1 and line.startswith(_BOM):
                line = line[len(_BOM) :]
            if line and not line.isspace():
                yield number, line


def _read_avro(path: str, wanted) -> Iterator[tuple[int, dict]]:
    with _open(path) as handle:
        yield from enumerate(fastavro.reader(handle), start=1)


def _read_parquet(
    path: str, wanted, columnar: ProfileProjection | None = None
) -> Iterator[tuple[int, dict | CheckedRows]]:
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
        for group in range(parquet.metadata.num_row_groups):
            first = number + 1
            number += parquet.metadata.row_group(group).num_rows
            if number < first:
                continue
            rows = np.arange(first, number + 1, dtype=np.int64)
            table = parquet.read_row_group(group, columns=columns)
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
    letters, and one `FileStats` per file."""

    def __init__(
        self,
        fmt: str | None,
        fields: tuple[str, ...] | None,
        label: str,
        normalize: bool = True,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    ):
        self._fmt = fmt
        self._max_line_bytes = max_line_bytes
        self._fields = fields
        self._label = label
        self._normalize = normalize
        self._records_read = Metrics.counter('beam_kinesis', f'{label}_records_read')

    def process(self, path: str):
        fmt = detect_format(path, self._fmt)
        from beam_kinesis.counts import FileStats

        stats = FileStats(self._label, path, fmt)
        for position, item in _read_positions(
            path, fmt, self._fields, self._normalize, max_line_bytes=self._max_line_bytes
        ):
            if isinstance(item, _Unreadable):
                stats.unreadable += 1
                stats.unkeyed += 1
                stats.broken |= item.rest_of_file
                yield 'dead_letters', item.entry
                continue
            stats.records += 1
            yield 'records', SnapshotRecord(f'{path}:{position}', item)
        self._records_read.inc(stats.records)
        progress.count(files_read=1, records_read=stats.records)
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
    - `stats`: one `FileStats` per file: records read, unreadable, invalid and keyed.

    Example:
        result = pipeline | ReadSnapshot('gs://bucket/2024-06-01/*.parquet')
        profiles = result.records | beam.Map(lambda record: record.profile)
    """

    def __init__(
        self,
        pattern: str,
        input_format: str | None = None,
        fields: Iterable[str] | None = None,
        label: str = 'snapshot',
        projection: ProfileProjection | None = None,
        normalize: bool = True,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    ):
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
          max_line_bytes: a longer JSON line is a dead letter, skipped without being held.
        """
        if not isinstance(max_line_bytes, int) or max_line_bytes < 1:
            raise SnapshotError(
                f'The longest line allowed, {max_line_bytes!r} bytes, must be a positive integer.'
            )
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
        self._max_line_bytes = max_line_bytes

    @property
    def files(self) -> list[str]:
        """The files the snapshot consists of."""
        return list(self._files)

    def expand(self, pbegin):
        files = pbegin | 'ListFiles' >> beam.Create(self._files) | 'SpreadFiles' >> beam.Reshuffle()
        if self._projection is None:
            tagged = files | 'ReadFiles' >> beam.ParDo(
                _ReadSnapshotFileFn(
                    self._format, self._fields, self._label, self._normalize, self._max_line_bytes
                )
            )
            return split_tagged(
                tagged,
                ('records', DEAD_LETTER, 'stats'),
                types={'records': SnapshotRecord, DEAD_LETTER: DeadLetter, 'stats': ReadStats},
            )
        from beam_kinesis.engine.keyed import KeyFileFn

        tagged = files | 'ReadFiles' >> beam.ParDo(
            KeyFileFn(self._format, self._label, self._projection, self._max_line_bytes)
        )
        outputs = split_tagged(
            tagged,
            ('batches', DEAD_LETTER, 'stats'),
            types={DEAD_LETTER: DeadLetter, 'stats': ReadStats},
        )
        outputs['records'] = outputs.pop('batches')
        return outputs
