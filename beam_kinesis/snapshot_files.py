"""Profile snapshot files: writing profiles as JSON Lines, Avro or Parquet, and converting."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import itertools
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO

import fastavro
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from beam_kinesis.formats import FORMATS as NAME_ENDINGS
from beam_kinesis.formats import format_of_name

__all__ = [
    'FORMATS',
    'SAMPLE_SIZE',
    'convert_snapshot',
    'main',
    'profile_schema_arrow',
    'profile_schema_avro',
    'snapshot_format',
    'write_snapshot',
]

_LOGGER = logging.getLogger(__name__)

# Format names accepted by `fmt`, and the file extensions (before any `.gz`) that imply them.
FORMATS = ('jsonl', 'avro', 'parquet')
_FORMAT_ALIASES = {'json': 'jsonl', 'ndjson': 'jsonl'}

# Records a schema is inferred from when the profiles arrive as a stream (a generator or a
# large file); later records are checked against it.
SAMPLE_SIZE = 10_000

# Avro: deflate blocks of about this many bytes (fastavro's default sync interval).
_AVRO_SYNC_INTERVAL_BYTES = 16_000
# gzip level for `.gz` JSON Lines: 6 is zlib's default speed/size trade-off.
_GZIP_LEVEL = 6
# Profiles per Parquet row group unless told (the default of `write_snapshot`).
_ROW_GROUP_ROWS = 65536
# Profiles converted to Arrow at a time (a Parquet row group is made of several).
_ARROW_CHUNK_ROWS = 8192
# Lines of JSON joined into one write.
_JSONL_LINES_PER_WRITE = 1000
# Avro long and Parquet int64 range.
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
# Avro names (records and fields): https://avro.apache.org/docs/1.11.1/specification/#names
_AVRO_NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_]*\Z')

# Inferred types: a leaf name, or ('struct', {field: type}), ('list', item), ('map', value).
# 'null' means no non-null value was seen; it becomes a string in the written schema.
_NULL, _STRING, _LONG, _DOUBLE, _BOOLEAN = 'null', 'string', 'long', 'double', 'boolean'
_STRUCT, _LIST, _MAP = 'struct', 'list', 'map'


def _segment_membership_type() -> tuple:
    # segmentMembership: {namespace: {segment id: {status, lastQualificationTime, ...}}}
    membership = (_STRUCT, {'status': _STRING, 'lastQualificationTime': _STRING})
    return (_MAP, (_MAP, membership))


def _identity_map_type() -> tuple:
    # identityMap: {namespace: [{id, authenticatedState, primary, ...}]}
    identity = (_STRUCT, {'id': _STRING, 'authenticatedState': _STRING, 'primary': _BOOLEAN})
    return (_MAP, (_LIST, identity))


# Top-level fields stored as MAP types (their keys are data: namespaces, segment and
# identity ids), so that a new segment does not change the schema.
_MAP_FIELDS: dict[str, Callable[[], tuple]] = {
    'segmentMembership': _segment_membership_type,
    'identityMap': _identity_map_type,
}


class _SchemaMismatch(ValueError):
    """A value does not fit the schema; `path` collects field names innermost first."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []

    def located(self, record_number: int, note: str = '') -> _SchemaMismatch:
        """Returns a copy whose message names the record and the field."""
        error = _SchemaMismatch(
            f'record {record_number}: field {_dotted(self.path)!r} {self.reason}{note}'
        )
        error.path = self.path
        return error


def _dotted(reversed_path: list[str]) -> str:
    text = ''
    for part in reversed(reversed_path):
        text += part if (part.startswith('[') or not text) else '.' + part
    return text


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + '...'
    return f'{type(value).__name__} {text}'


def _not_an_object(record_number: int, profile: Any) -> ValueError:
    return ValueError(
        f'record {record_number}: a profile must be a JSON object, got {_describe(profile)}'
    )


def _leaf_kind(value: Any) -> str | None:
    # bool before int: bool is a subclass of int.
    if isinstance(value, bool):
        return _BOOLEAN
    if isinstance(value, int):
        return _LONG
    if isinstance(value, float):
        return _DOUBLE
    if isinstance(value, str):
        return _STRING
    return None


def _kind_name(inferred: Any) -> str:
    return (
        inferred
        if isinstance(inferred, str)
        else ('object' if inferred[0] == _STRUCT else inferred[0])
    )


def _absorb(inferred: Any, value: Any) -> Any:
    """Returns `inferred` widened to also hold `value`; raises `_SchemaMismatch` on a conflict."""
    if value is None:
        return inferred
    leaf = _leaf_kind(value)
    if leaf is not None:
        if inferred == leaf or inferred == _NULL:
            return leaf
        if inferred in (_LONG, _DOUBLE) and leaf in (_LONG, _DOUBLE):
            return _DOUBLE
        raise _SchemaMismatch(
            f'holds both {_kind_name(inferred)} and {leaf} values ({_describe(value)})'
        )
    if isinstance(value, dict):
        if inferred == _NULL:
            inferred = (_STRUCT, {})
        if not isinstance(inferred, tuple) or inferred[0] not in (_STRUCT, _MAP):
            raise _SchemaMismatch(
                f'holds both {_kind_name(inferred)} and object values ({_describe(value)})'
            )
        if inferred[0] == _MAP:
            item = inferred[1]
            for key, member in value.items():
                if member is None:
                    raise _SchemaMismatch(f'has a null entry {key!r}')
                try:
                    item = _absorb(item, member)
                except _SchemaMismatch as err:
                    err.path.append(str(key))
                    raise
            return inferred if item is inferred[1] else (_MAP, item)
        fields = inferred[1]
        for key, member in value.items():
            if not isinstance(key, str):
                raise _SchemaMismatch(f'has a non-string key {key!r}')
            try:
                fields[key] = _absorb(fields.get(key, _NULL), member)
            except _SchemaMismatch as err:
                err.path.append(key)
                raise
        return inferred
    if isinstance(value, (list, tuple)):
        if inferred == _NULL:
            inferred = (_LIST, _NULL)
        if not isinstance(inferred, tuple) or inferred[0] != _LIST:
            raise _SchemaMismatch(
                f'holds both {_kind_name(inferred)} and list values ({_describe(value)})'
            )
        item = inferred[1]
        for index, member in enumerate(value):
            if member is None:
                raise _SchemaMismatch(f'holds a null list element at [{index}]')
            try:
                item = _absorb(item, member)
            except _SchemaMismatch as err:
                err.path.append(f'[{index}]')
                raise
        return inferred if item is inferred[1] else (_LIST, item)
    raise _SchemaMismatch(f'holds an unsupported value ({_describe(value)})')


def _absorb_profile(root: dict, profile: Any, record_number: int) -> None:
    if type(profile) is not dict:
        raise _not_an_object(record_number, profile)
    for key, value in profile.items():
        current = root.get(key)
        if current is None:
            current = _MAP_FIELDS[key]() if key in _MAP_FIELDS else _NULL
        try:
            if key in _MAP_FIELDS and value is not None and not isinstance(value, dict):
                raise _SchemaMismatch(f'must be an object (a map), got {_describe(value)}')
            root[key] = _absorb(current, value)
        except _SchemaMismatch as err:
            err.path.append(key)
            raise err.located(record_number) from None


def _finalize(inferred: Any) -> Any:
    """Turns never-seen ('null') types into strings, recursively."""
    if inferred == _NULL:
        return _STRING
    if isinstance(inferred, str):
        return inferred
    kind, inner = inferred
    if kind == _STRUCT:
        return (_STRUCT, {name: _finalize(child) for name, child in inner.items()})
    return (kind, _finalize(inner))


def _infer(profiles: Iterable[Any], first_record: int = 1) -> tuple:
    """Infers the profile type (a top-level struct) from `profiles`."""
    root: dict = {}
    for number, profile in enumerate(profiles, start=first_record):
        _absorb_profile(root, profile, number)
    for name, factory in _MAP_FIELDS.items():
        root.setdefault(name, factory())
    return _finalize((_STRUCT, root))


def _arrow_type(inferred: Any, path: str) -> pa.DataType:
    if isinstance(inferred, str):
        return {
            _STRING: pa.string(),
            _LONG: pa.int64(),
            _DOUBLE: pa.float64(),
            _BOOLEAN: pa.bool_(),
        }[inferred]
    kind, inner = inferred
    if kind == _LIST:
        return pa.list_(_arrow_type(inner, path + '[]'))
    if kind == _MAP:
        return pa.map_(pa.string(), _arrow_type(inner, path + '.*'))
    if not inner:
        raise ValueError(
            f'field {path!r} is always an empty object: Parquet cannot store a '
            'struct with no fields'
        )
    return pa.struct(
        [pa.field(name, _arrow_type(child, f'{path}.{name}')) for name, child in inner.items()]
    )


def _arrow_schema(profile_type: tuple) -> pa.Schema:
    return pa.schema(
        [pa.field(name, _arrow_type(child, name)) for name, child in profile_type[1].items()]
    )


def _avro_name(name: str, path: str) -> str:
    if not _AVRO_NAME.match(name):
        raise ValueError(
            f'field {path!r}: {name!r} is not a valid Avro name (letters, digits '
            'and _, not starting with a digit)'
        )
    return name


def _avro_type(inferred: Any, path: str, record_names: set[str]) -> Any:
    if isinstance(inferred, str):
        return inferred
    kind, inner = inferred
    if kind == _LIST:
        return {'type': 'array', 'items': _avro_type(inner, path + '[]', record_names)}
    if kind == _MAP:
        return {'type': 'map', 'values': _avro_type(inner, path + '.*', record_names)}
    base = 'Profile' + ''.join('_' + part for part in re.findall(r'[A-Za-z0-9_]+', path))
    record_name = base
    for suffix in itertools.count(2):
        if record_name not in record_names:
            break
        record_name = f'{base}_{suffix}'
    record_names.add(record_name)
    fields = []
    for name, child in inner.items():
        child_path = f'{path}.{name}' if path else name
        fields.append(
            {
                'name': _avro_name(name, child_path),
                'type': ['null', _avro_type(child, child_path, record_names)],
                'default': None,
            }
        )
    return {'type': 'record', 'name': record_name, 'fields': fields}


def _avro_schema(profile_type: tuple) -> dict:
    return _avro_type(profile_type, '', set())


def profile_schema_arrow(sample: list[dict]) -> pa.Schema:
    """Infers a Parquet/Arrow schema for profiles from a sample of them.

    `segmentMembership` becomes `map<string, map<string, struct<status, lastQualificationTime,
    ...>>>` and `identityMap` becomes `map<string, list<struct<id, authenticatedState, primary,
    ...>>>`; every other field is a nullable struct member whose type follows the values seen
    (string, int64, double, bool, struct, list). Ints and floats in one field give double; a
    field only ever null gives string.

    Args:
      sample: profiles (dicts as parsed from JSON).

    Returns:
      The schema, one top-level field per profile attribute seen plus the two maps.

    Raises:
      ValueError: a field holds values of incompatible types (the message names the record
        and the field), or an object that is always empty.
    """
    return _arrow_schema(_infer(sample))


def profile_schema_avro(sample: list[dict]) -> dict:
    """Infers an Avro schema for profiles from a sample of them.

    The same shape as `profile_schema_arrow`: `segmentMembership` is a map of maps of records,
    `identityMap` a map of arrays of records, and every field of every record is a
    `["null", T]` union with default null.

    Args:
      sample: profiles (dicts as parsed from JSON).

    Returns:
      The schema as a JSON-compatible dict (a record named `Profile`).

    Raises:
      ValueError: a field holds values of incompatible types, or a field name is not a valid
        Avro name.
    """
    return _avro_schema(_infer(sample))


def _validator(inferred: Any) -> Callable[[Any], Any]:
    """Returns a function raising `_SchemaMismatch` when a non-null value does not fit.

    Valid profiles are written as they are (pyarrow and fastavro widen ints to doubles
    themselves), so this only checks; it also catches what both writers would silently drop,
    such as a member not in the schema.
    """
    if isinstance(inferred, str):
        return _LEAF_CHECKS[inferred]
    kind, inner = inferred
    if kind == _LIST:
        return _list_validator(_validator(inner))
    if kind == _MAP:
        return _map_validator(_validator(inner))
    # Leaf members are checked inline, the costly part being one call per value.
    leaf_types = {
        name: _PYTHON_TYPES[child] for name, child in inner.items() if isinstance(child, str)
    }
    leaf_checks = {
        name: _LEAF_CHECKS[child] for name, child in inner.items() if isinstance(child, str)
    }
    nested = {
        name: _validator(child) for name, child in inner.items() if not isinstance(child, str)
    }

    def check_struct(value: Any) -> None:
        if type(value) is not dict:
            raise _SchemaMismatch(f'expected an object, got {_describe(value)}')
        for key, item in value.items():
            if item is None:
                continue
            expected = leaf_types.get(key)
            if expected is not None:
                if type(item) is expected and (
                    expected is not int or _INT64_MIN <= item <= _INT64_MAX
                ):
                    continue
                if expected is float and type(item) is int:
                    continue
                check = leaf_checks[key]
            else:
                check = nested.get(key)
                if check is None:
                    err = _SchemaMismatch('is not in the schema')
                    err.path.append(str(key))
                    raise err
            try:
                check(item)
            except _SchemaMismatch as err:
                err.path.append(key)
                raise

    return check_struct


def _list_validator(check_item: Callable[[Any], Any]) -> Callable[[Any], None]:
    def check_list(value: Any) -> None:
        if type(value) is not list and type(value) is not tuple:
            raise _SchemaMismatch(f'expected a list, got {_describe(value)}')
        for index, item in enumerate(value):
            if item is None:
                err = _SchemaMismatch('holds a null list element (not supported)')
                err.path.append(f'[{index}]')
                raise err
            try:
                check_item(item)
            except _SchemaMismatch as err:
                err.path.append(f'[{index}]')
                raise

    return check_list


def _map_validator(check_value: Callable[[Any], Any]) -> Callable[[Any], None]:
    def check_map(value: Any) -> None:
        if type(value) is not dict:
            raise _SchemaMismatch(f'expected an object (a map), got {_describe(value)}')
        for key, item in value.items():
            try:
                if item is None:
                    raise _SchemaMismatch('is null (null map values are not supported)')
                check_value(item)
            except _SchemaMismatch as err:
                err.path.append(str(key))
                raise

    return check_map


def _check_string(value: Any) -> None:
    if type(value) is not str:
        raise _SchemaMismatch(f'expected a string, got {_describe(value)}')


def _check_long(value: Any) -> None:
    if type(value) is not int or not _INT64_MIN <= value <= _INT64_MAX:
        raise _SchemaMismatch(f'expected a 64-bit integer, got {_describe(value)}')


def _check_double(value: Any) -> None:
    if type(value) is not float and type(value) is not int:
        raise _SchemaMismatch(f'expected a number, got {_describe(value)}')


def _check_boolean(value: Any) -> None:
    if type(value) is not bool:
        raise _SchemaMismatch(f'expected a boolean, got {_describe(value)}')


_LEAF_CHECKS: dict[str, Callable[[Any], None]] = {
    _STRING: _check_string,
    _LONG: _check_long,
    _DOUBLE: _check_double,
    _BOOLEAN: _check_boolean,
}
_PYTHON_TYPES = {_STRING: str, _LONG: int, _DOUBLE: float, _BOOLEAN: bool}


def _avro_encoder(schema: Any) -> Callable[[Any], Any] | None:
    """Returns a function preparing a valid value of `schema` for fastavro, None if as is.

    Values of `["null", T]` unions become `(T's name, value)`, fastavro's notation for a
    chosen branch: without it fastavro validates the whole value against each branch at
    every level of nesting, which costs more than the writing.
    """
    if isinstance(schema, str):
        return float if schema == 'double' else None
    kind = schema['type']
    if kind == 'array':
        encode_item = _avro_encoder(schema['items'])
        if encode_item is None:
            return list
        return lambda value: [encode_item(item) for item in value]
    if kind == 'map':
        encode_value = _avro_encoder(schema['values'])
        if encode_value is None:
            return None
        return lambda value: {key: encode_value(item) for key, item in value.items()}
    branches = {}
    for field in schema['fields']:
        branch = field['type'][1]  # ['null', T]
        name = branch if isinstance(branch, str) else branch.get('name', branch['type'])
        branches[field['name']] = (name, _avro_encoder(branch))

    def encode_record(value: dict) -> dict:
        out = {}
        for key, item in value.items():
            if item is not None:
                name, encode = branches[key]
                out[key] = (name, item if encode is None else encode(item))
        return out

    return encode_record


def _validated(
    profiles: Iterable[Any], profile_type: tuple, note: str, counter: list[int]
) -> Iterator[dict]:
    """Yields each profile after checking it fits, counting them in `counter[0]`."""
    check = _validator(profile_type)
    for number, profile in enumerate(profiles, start=1):
        if type(profile) is not dict:
            raise _not_an_object(number, profile)
        try:
            check(profile)
        except _SchemaMismatch as err:
            raise err.located(number, note) from None
        counter[0] = number
        yield profile


def snapshot_format(path: str, fmt: str | None = None) -> str:
    """Returns the snapshot format of `path`: `fmt` if given, else from the extension.

    Args:
      path: a file path; a trailing `.gz` is ignored when reading the extension.
      fmt: `jsonl` (or `json`, `ndjson`), `avro` or `parquet`; overrides the extension.

    Raises:
      ValueError: `fmt` is unknown, or it is None and the extension is not a known one.
    """
    if fmt is not None:
        name = _FORMAT_ALIASES.get(fmt.lower(), fmt.lower())
        if name not in FORMATS:
            raise ValueError(
                f'unknown snapshot format {fmt!r}: expected one of {", ".join(FORMATS)}'
            )
        return name
    found = format_of_name(path)
    if found is None:
        endings = sorted(ending for group in NAME_ENDINGS.values() for ending in group)
        raise ValueError(
            f'cannot tell the snapshot format of {path!r} from its extension: use '
            f'one of {", ".join(endings)} or give the format'
        )
    return found


def _schema_and_stream(profiles: Iterable[Any]) -> tuple[tuple, Iterable[Any], str]:
    """Infers the profile type from all of `profiles` if in memory, else from a sample.

    Returns the type, the profiles to write (the sample chained back in front), and a note
    to add to a mismatch message.
    """
    if isinstance(profiles, (list, tuple)):
        return _infer(profiles), profiles, ''
    iterator = iter(profiles)
    sample = list(itertools.islice(iterator, SAMPLE_SIZE))
    if len(sample) < SAMPLE_SIZE:
        return _infer(sample), sample, ''
    note = f' (the schema was inferred from the first {SAMPLE_SIZE} records)'
    return _infer(sample), itertools.chain(sample, iterator), note


def write_snapshot(
    profiles: Iterable[dict], path: str, fmt: str | None = None, *, row_group_size: int = 65536
) -> int:
    """Writes profiles to one snapshot file, streaming.

    JSON Lines (`.jsonl`, `.json`; gzip when `path` ends with `.gz`) holds one compact JSON
    object per line with keys in the order given. Avro (`.avro`) is written with fastavro
    and the deflate codec, Parquet (`.parquet`) with pyarrow and snappy; their schema
    (see `profile_schema_arrow`) is inferred from all the profiles when they are a list,
    else from the first `SAMPLE_SIZE` of them, the rest being checked against it. At most
    that sample or one row group of profiles is held in memory. Output is deterministic: the
    same profiles give byte-identical files. A partly written file is removed on error.

    Args:
      profiles: the profiles (dicts), any iterable; a generator is consumed once.
      path: the file to write (parent directories must exist).
      fmt: `jsonl`, `avro` or `parquet`, overriding the extension of `path`.
      row_group_size: profiles per Parquet row group.

    Returns:
      The number of profiles written.

    Raises:
      ValueError: an unknown format, a bad `row_group_size`, or a profile that is not an
        object or does not fit the schema (the message names the record and the field).
    """
    fmt = snapshot_format(path, fmt)
    if (
        isinstance(row_group_size, bool)
        or not isinstance(row_group_size, int)
        or row_group_size < 1
    ):
        raise ValueError(f'row_group_size must be a positive integer, got {row_group_size!r}')
    if fmt == 'jsonl':
        return _write_or_remove(path, lambda: _write_jsonl(profiles, path))
    profile_type, stream, note = _schema_and_stream(profiles)
    return _write_typed(stream, path, fmt, profile_type, note, row_group_size)


def _write_typed(
    profiles: Iterable[Any],
    path: str,
    fmt: str,
    profile_type: tuple,
    note: str,
    row_group_size: int,
) -> int:
    # Schemas are built before the file is opened: a schema error leaves no file behind.
    if fmt == 'avro':
        schema = _avro_schema(profile_type)
        return _write_or_remove(
            path, lambda: _write_avro(profiles, path, schema, profile_type, note)
        )
    arrow_schema = _arrow_schema(profile_type)
    return _write_or_remove(
        path,
        lambda: _write_parquet(profiles, path, arrow_schema, profile_type, note, row_group_size),
    )


def _write_or_remove(path: str, write: Callable[[], int]) -> int:
    try:
        return write()
    except BaseException:
        if os.path.exists(path):
            os.remove(path)
        raise


def _write_jsonl(profiles: Iterable[Any], path: str) -> int:
    count = 0
    with open(path, 'wb') as raw:
        out: BinaryIO = raw
        if path.endswith('.gz'):
            # mtime=0 and no file name in the header keep the output byte-identical.
            out = gzip.GzipFile(
                filename='', mode='wb', fileobj=raw, compresslevel=_GZIP_LEVEL, mtime=0
            )
        try:
            lines: list[bytes] = []
            for profile in profiles:
                count += 1
                if type(profile) is not dict:
                    raise _not_an_object(count, profile)
                try:
                    lines.append(orjson.dumps(profile))
                except orjson.JSONEncodeError as err:
                    raise ValueError(f'record {count}: cannot be written as JSON: {err}') from err
                if len(lines) == _JSONL_LINES_PER_WRITE:
                    lines.append(b'')
                    out.write(b'\n'.join(lines))
                    lines = []
            if lines:
                lines.append(b'')
                out.write(b'\n'.join(lines))
        finally:
            if out is not raw:
                out.close()
    return count


def _write_avro(
    profiles: Iterable[Any], path: str, schema: dict, profile_type: tuple, note: str
) -> int:
    parsed = fastavro.parse_schema(schema)
    # A sync marker derived from the schema rather than random bytes: deterministic output.
    marker = hashlib.md5(json.dumps(schema, sort_keys=True).encode('utf-8')).digest()
    encode = _avro_encoder(schema)
    counter = [0]
    records = map(encode, _validated(profiles, profile_type, note, counter))
    with open(path, 'wb') as out:
        fastavro.writer(
            out,
            parsed,
            records,
            codec='deflate',
            sync_interval=_AVRO_SYNC_INTERVAL_BYTES,
            sync_marker=marker,
        )
    return counter[0]


def _write_parquet(
    profiles: Iterable[Any],
    path: str,
    schema: pa.Schema,
    profile_type: tuple,
    note: str,
    row_group_size: int,
) -> int:
    counter = [0]
    rows = _validated(profiles, profile_type, note, counter)
    with pq.ParquetWriter(path, schema, compression='snappy') as writer:
        while True:
            # A row group is built from Arrow chunks: the dicts of one chunk at a time are
            # alive, the rest of the group is in Arrow's much smaller columnar form.
            chunks = []
            wanted = row_group_size
            while wanted:
                batch = list(itertools.islice(rows, min(wanted, _ARROW_CHUNK_ROWS)))
                if not batch:
                    break
                chunks.append(pa.Table.from_pylist(batch, schema=schema))
                wanted -= len(batch)
            if not chunks:
                break
            writer.write_table(pa.concat_tables(chunks), row_group_size=row_group_size)
    return counter[0]


def _read_jsonl(path: str) -> Iterator[Any]:
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rb') as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError as err:
                raise ValueError(f'{path}:{number}: not valid JSON: {err}') from err


def convert_snapshot(src: str, dst: str, fmt: str | None = None) -> int:
    """Converts a JSON Lines snapshot (optionally gzip) to the format of `dst`.

    The schema comes from the whole file when it holds at most `SAMPLE_SIZE` profiles, else
    from the first `SAMPLE_SIZE`; should a later profile not fit it, the schema is inferred
    again from the whole file and `dst` rewritten.

    Args:
      src: a JSON Lines file, `.gz` for gzip.
      dst: the file to write.
      fmt: the format of `dst` (`jsonl`, `avro`, `parquet`), overriding its extension.

    Returns:
      The number of profiles written.

    Raises:
      ValueError: a line of `src` is not JSON, or the profiles' types conflict.
    """
    fmt = snapshot_format(dst, fmt)
    if fmt == 'jsonl':
        return write_snapshot(_read_jsonl(src), dst, fmt)
    profile_type, stream, note = _schema_and_stream(_read_jsonl(src))
    try:
        return _write_typed(stream, dst, fmt, profile_type, note, _ROW_GROUP_ROWS)
    except _SchemaMismatch as err:
        if not note:
            raise
        _LOGGER.info('%s; inferring the schema from the whole of %s', err, src)
    return _write_typed(_read_jsonl(src), dst, fmt, _infer(_read_jsonl(src)), '', _ROW_GROUP_ROWS)


def main(argv: list[str] | None = None) -> int:
    """Command line: `python -m beam_kinesis.snapshot_files SRC DST [--format FMT]`."""
    return run(argv, 'python -m beam_kinesis.snapshot_files')


def run(argv: list[str] | None = None, prog: str = 'beam-kinesis convert') -> int:
    """`beam-kinesis convert SRC DST [--format FMT]`; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description='Convert a JSON Lines profile snapshot (optionally .gz) to JSON Lines, '
        'Avro or Parquet, chosen by the extension of DST or --format.',
    )
    parser.add_argument('src', metavar='SRC', help='JSON Lines file (.jsonl, .jsonl.gz)')
    parser.add_argument('dst', metavar='DST', help='file to write (.jsonl[.gz], .avro, .parquet)')
    parser.add_argument('--format', choices=FORMATS, help='format of DST (default: extension)')
    args = parser.parse_args(argv)
    try:
        count = convert_snapshot(args.src, args.dst, args.format)
    except (OSError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(f'wrote {count} profiles to {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
