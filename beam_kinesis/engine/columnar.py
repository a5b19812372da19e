"""Key Parquet rows in Arrow: checked, keyed and encoded without Python objects per row.

Making Python objects of a profile costs more than everything else the job does with an
unchanged one. For Parquet, whose columns arrive typed, the read checks a batch of rows in
Arrow kernels instead: a usable key, statuses the profile store writes, times in the
canonical form, identities with ids, mapped attributes JSON can carry. A row that passes
would be accepted by `ProfileProjection.project`, so it travels to the comparison as its key
and a `ROW` material: the fields the projection reads, and nothing else of the profile,
written as JSON by polars. The comparison projects it, with that same function, only if its
material differs from the other snapshot's. A row that does not pass, and every row of a file
whose schema the checks do not cover, takes the Python path, which validates it exactly and
dead-letters it if need be.

Every check errs on the side of the Python path: a row is fast only when the Python path
would certainly accept it. Nothing here decides what the destination looks at: a material
holds the projection's input, not its output.
"""

from __future__ import annotations

import datetime
from typing import NamedTuple

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from beam_kinesis.engine.rows import ROW, BucketRows
from beam_kinesis.engine.view import STATUSES, ProfileProjection

__all__ = ['CheckedRows', 'ColumnarPlan']

_STATUS_SET = pa.array(sorted(STATUSES), pa.string())
# lastQualificationTime as profile stores write it; the date is checked separately.
_CANONICAL_TIME = (
    r'^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])'
    r'T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z$'
)
# A key with one of these characters is not blank to Python's `str.strip` either.
_VISIBLE_ASCII = r'[!-~]'
# Leaf types of a mapped attribute that become JSON without a possible error.
_PLAIN_TYPES = (
    pa.types.is_string,
    pa.types.is_large_string,
    pa.types.is_boolean,
    pa.types.is_integer,
    pa.types.is_date32,
)


class _Unsupported(Exception):
    """The schema holds something the columnar checks do not cover."""


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _offsets(array) -> tuple[np.ndarray, int, int]:
    """A list or map array's offsets, rebased to its values' slice, and that slice."""
    offsets = array.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    first, last = int(offsets[0]), int(offsets[-1])
    return offsets - first, first, last - first


def _any_per_list(bad: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per list, whether any of its values is bad."""
    counts = np.concatenate(([0], np.cumsum(bad, dtype=np.int64)))
    return counts[offsets[1:]] > counts[offsets[:-1]]


def _mask(array) -> np.ndarray:
    """A boolean Arrow array as numpy, nulls as False."""
    return pc.fill_null(array, False).to_numpy(zero_copy_only=False)


def _struct_field(array, kind: pa.DataType, name: str):
    """A struct array's child by name, null where the struct is, or None if it has none."""
    if kind.get_field_index(name) < 0:
        return None
    return pc.struct_field(array, name)


class _Path(NamedTuple):
    column: str
    steps: tuple[str, ...]


class ColumnarPlan:
    """How one schema's rows are checked and fingerprinted; `for_schema` says whether they
    can be at all."""

    def __init__(self, schema: pa.Schema, projection: ProfileProjection):
        self._projection = projection
        names = set(schema.names)
        key_path = projection.key_path
        if key_path[0] not in names:
            raise _Unsupported(f'no key column {key_path[0]!r}')
        self._key = _Path(key_path[0], key_path[1:])
        if not _is_text(self._walk(schema, self._key, 'key')):
            raise _Unsupported('the key is not text')
        self._segments = 'segmentMembership' in names
        if self._segments:
            self._check_segment_type(schema.field('segmentMembership').type)
        self._identities = 'identityMap' in names
        if self._identities:
            self._check_identity_type(schema.field('identityMap').type)
        self._attributes = []
        for path in projection.attribute_paths:
            if path[0] not in names:
                continue  # never there: the same absence in every row
            attribute = _Path(path[0], path[1:])
            leaf = self._walk(schema, attribute, '.'.join(path))
            if leaf is not None:
                _check_value_type(leaf)
                self._attributes.append(attribute)

    @classmethod
    def for_schema(cls, schema: pa.Schema, projection: ProfileProjection) -> ColumnarPlan | None:
        """The plan for a schema, or None when its rows must take the Python path."""
        try:
            return cls(schema, projection)
        except _Unsupported:
            return None

    @staticmethod
    def _walk(schema: pa.Schema, path: _Path, label: str) -> pa.DataType | None:
        """The type at a path through structs; None when a struct on the way lacks a step
        (the value is then absent in every row)."""
        kind = schema.field(path.column).type
        for step in path.steps:
            if not pa.types.is_struct(kind):
                raise _Unsupported(f'{label}: {kind} where an object is expected')
            index = kind.get_field_index(step)
            if index < 0:
                return None
            kind = kind.field(index).type
        return kind

    @staticmethod
    def _check_segment_type(kind: pa.DataType) -> None:
        if not (
            pa.types.is_map(kind)
            and _is_text(kind.key_type)
            and pa.types.is_map(kind.item_type)
            and _is_text(kind.item_type.key_type)
            and pa.types.is_struct(kind.item_type.item_type)
        ):
            raise _Unsupported(f'segmentMembership is a {kind}')
        entry = kind.item_type.item_type
        status = entry.get_field_index('status')
        if status < 0 or not _is_text(entry.field(status).type):
            raise _Unsupported('segment entries without a text status')
        qualified = entry.get_field_index('lastQualificationTime')
        if qualified >= 0 and not _is_text(entry.field(qualified).type):
            raise _Unsupported('lastQualificationTime is not text')

    @staticmethod
    def _check_identity_type(kind: pa.DataType) -> None:
        if not (
            pa.types.is_map(kind)
            and _is_text(kind.key_type)
            and (pa.types.is_list(kind.item_type) or pa.types.is_large_list(kind.item_type))
            and pa.types.is_struct(kind.item_type.value_type)
        ):
            raise _Unsupported(f'identityMap is a {kind}')
        entry = kind.item_type.value_type
        index = entry.get_field_index('id')
        if index < 0 or not _is_text(entry.field(index).type):
            raise _Unsupported('identities without a text id')

    def _column(self, batch: pa.RecordBatch, path: _Path):
        array = batch.column(path.column)
        for step in path.steps:
            array = pc.struct_field(array, step)
        return array

    def check(self, batch: pa.RecordBatch, positions: np.ndarray) -> CheckedRows:
        """The rows of a batch the Python path is not needed for, keyed and encoded;
        `positions` are the positions of the batch's rows in their file."""
        key = self._column(batch, self._key)
        fast = _mask(pc.match_substring_regex(key, _VISIBLE_ASCII))
        # The projection's input: the key, the two maps (entries slimmed to the fields it
        # reads) and each mapped attribute, nested at their paths as in the profile.
        tree: dict = {}
        _plant(tree, self._key, key)
        if self._segments:
            column = batch.column('segmentMembership')
            fast &= ~self._bad_segments(column)
            tree['segmentMembership'] = _slim_segments(column)
        if self._identities:
            column = batch.column('identityMap')
            fast &= ~self._bad_identities(column)
            tree['identityMap'] = _slim_identities(column)
        for path in self._attributes:
            column = self._column(batch, path)
            fast &= ~_bad_values(column)
            _plant(tree, path, column)
        rows = np.flatnonzero(fast)
        table = pa.table({name: _grow(node) for name, node in tree.items()})
        if len(rows) < len(fast):  # taking rows out of nested columns is costly
            table = table.take(pa.array(rows, pa.int64()))
            key = key.take(pa.array(rows, pa.int64()))
        try:
            encoded = (
                pl.from_arrow(table)
                .select(pl.struct(pl.all()).struct.json_encode())
                .to_series()
                .to_arrow()
            )
        except BaseException as err:
            # A Rust panic (pyo3's PanicException is no Exception) on data polars cannot
            # take: the batch takes the Python path instead.
            if type(err).__name__ != 'PanicException':
                raise
            rows = rows[:0]
            return CheckedRows(rows, positions[rows], [], [])
        return CheckedRows(rows, positions[rows], key.to_pylist(), _split(encoded))

    @staticmethod
    def _bad_segments(column) -> np.ndarray:
        """Per row: some segment entry is null, has a status outside `STATUSES`, or a
        lastQualificationTime that is not a canonical time."""
        namespaces, first, count = _offsets(column)
        segments = column.items.slice(first, count)
        entries_at, first, count = _offsets(segments)
        entries = segments.items.slice(first, count)
        bad = ~_mask(pc.is_in(pc.struct_field(entries, 'status'), value_set=_STATUS_SET))
        bad |= ~_mask(entries.is_valid())
        qualified = _struct_field(entries, entries.type, 'lastQualificationTime')
        if qualified is not None:
            bad |= ~_mask(_valid_time(qualified))
        per_namespace = _any_per_list(bad, entries_at)
        return _any_per_list(per_namespace, namespaces)

    @staticmethod
    def _bad_identities(column) -> np.ndarray:
        """Per row: some identity entry is null or has no id."""
        namespaces, first, count = _offsets(column)
        lists = column.items.slice(first, count)
        entries_at, first, count = _offsets(lists)
        entries = lists.values.slice(first, count)
        bad = ~_mask(entries.is_valid()) | ~_mask(pc.struct_field(entries, 'id').is_valid())
        return _any_per_list(_any_per_list(bad, entries_at), namespaces)


def _check_value_type(kind: pa.DataType) -> None:
    if pa.types.is_struct(kind):
        for index in range(kind.num_fields):
            _check_value_type(kind.field(index).type)
    elif not (pa.types.is_floating(kind) or any(test(kind) for test in _PLAIN_TYPES)):
        raise _Unsupported(f'a mapped attribute of type {kind}')


def _bad_values(array) -> np.ndarray:
    """Per row: the value holds a number JSON cannot carry (NaN, infinity)."""
    kind = array.type
    if pa.types.is_struct(kind):
        bad = np.zeros(len(array), dtype=bool)
        for index in range(kind.num_fields):
            bad |= _bad_values(pc.struct_field(array, index))
        return bad
    if pa.types.is_floating(kind):
        return _mask(pc.invert(pc.is_finite(array))) & _mask(array.is_valid())
    return np.zeros(len(array), dtype=bool)


def _valid_time(texts):
    """True where a lastQualificationTime is absent, or a canonical time of a real date."""
    canonical = _mask(pc.match_substring_regex(texts, _CANONICAL_TIME))
    dates = pc.utf8_slice_codeunits(texts, 0, 10)
    candidates = pc.unique(pc.filter(dates, pa.array(canonical)))
    invalid = [date for date in candidates.to_pylist() if not _is_date(date)]
    if invalid:
        canonical &= ~_mask(pc.is_in(dates, value_set=pa.array(invalid, pa.string())))
    return pa.array(canonical | ~_mask(texts.is_valid()))


def _is_date(text: str) -> bool:
    try:
        datetime.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _plant(tree: dict, path: _Path, array) -> None:
    """Puts an array at its path in a tree of nested dicts (a path inside one that is
    already there whole is covered by it)."""
    node = tree
    steps = (path.column, *path.steps)
    for step in steps[:-1]:
        child = node.get(step)
        if child is not None and not isinstance(child, dict):
            return  # an ancestor is there whole
        node = node.setdefault(step, {})
    node[steps[-1]] = array


def _grow(node):
    """A tree of nested dicts of arrays as one (struct) array."""
    if not isinstance(node, dict):
        return node
    return pa.StructArray.from_arrays([_grow(child) for child in node.values()], names=list(node))


def _slim_entries(entries, names: tuple[str, ...]):
    """A struct array with only the fields `names` (those it has), nulls kept."""
    kind = entries.type
    fields = [name for name in names if kind.get_field_index(name) >= 0]
    return pa.StructArray.from_arrays(
        [pc.struct_field(entries, name) for name in fields],
        names=fields,
        mask=entries.is_null() if entries.null_count else None,
    )


def _remap(column, items):
    """A map array like `column` (keys, validity) whose values are `items`."""
    offsets, first, count = _offsets(column)
    return pa.MapArray.from_arrays(
        pa.array(offsets, pa.int32()),
        column.keys.slice(first, count),
        items,
        mask=column.is_null() if column.null_count else None,
    )


def _slim_segments(column):
    """segmentMembership with entries of status and lastQualificationTime only."""
    _, first, count = _offsets(column)
    segments = column.items.slice(first, count)
    _, inner_first, inner_count = _offsets(segments)
    entries = _slim_entries(
        segments.items.slice(inner_first, inner_count), ('status', 'lastQualificationTime')
    )
    return _remap(column, _remap(segments, entries))


def _slim_identities(column):
    """identityMap with entries of id only."""
    _, first, count = _offsets(column)
    lists = column.items.slice(first, count)
    offsets, inner_first, inner_count = _offsets(lists)
    entries = _slim_entries(lists.values.slice(inner_first, inner_count), ('id',))
    slim = pa.ListArray.from_arrays(
        pa.array(offsets, pa.int32()), entries, mask=lists.is_null() if lists.null_count else None
    )
    return _remap(column, slim)


def _split(encoded) -> list:
    """A string array's values as bytes, one per row."""
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    encoded = encoded.cast(pa.large_string())
    if not len(encoded):
        return []
    offsets = np.frombuffer(
        encoded.buffers()[1], dtype=np.int64, count=len(encoded) + 1, offset=encoded.offset * 8
    ).tolist()
    data = encoded.buffers()[2].to_pybytes()
    return [data[start:end] for start, end in zip(offsets, offsets[1:])]


class CheckedRows(NamedTuple):
    """The rows of a batch that passed the checks: their indices in the batch, positions
    in the file, keys and `ROW` materials."""

    rows: np.ndarray
    positions: np.ndarray
    keys: list
    materials: list

    def add_to(self, bucket_rows: BucketRows, projection: ProfileProjection) -> None:
        """Adds these rows to a file's bucket batches."""
        for key, position, material in zip(self.keys, self.positions.tolist(), self.materials):
            bucket_rows.add(key, position, ROW, material, projection.bucket(key))
