"""Keyed rows: how profiles travel from the read to the comparison, in bucket batches.

A batch holds the profiles of one file that fall in one bucket of the key's hash. Per row it
carries the profile key, its position in the file, and what the comparison needs to decide
without reading the file again: the profile's *material*, in one of two kinds,

- `VIEW`: its `ProfileView`, as `encode_view` writes it (rows validated in Python);
- `ROW`: the fields of the profile the projection reads, as JSON (Parquet rows that the
  columnar checks vouch for: made by Arrow kernels, projected only if the comparison needs
  their view);

or none at all for a `TOMBSTONE` (the key had a record there that was dead-lettered as
invalid). Equal kind and equal material bytes mean an equal view, so the comparison needs no
Python objects for a profile whose material did not change; any other pair of rows is
decoded and classified by the rules.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import pyarrow as pa

from beam_kinesis.engine.view import (
    InvalidProfile,
    ProfileProjection,
    ProfileView,
    decode_view,
    dumps,
    encode_view,
    loads,
)

__all__ = ['ROW', 'TOMBSTONE', 'VIEW', 'BucketRows', 'KeyedRows', 'view_of']

VIEW, ROW, TOMBSTONE = 0, 1, 2

# Batches are compressed whole: a bucket's rows share most of their bytes (segment ids,
# namespaces, statuses), and the runner holds every batch of a snapshot until the join.
_CODEC = pa.Codec('zstd', compression_level=1)
_SIZE = struct.Struct('<Q')


class KeyedRows(NamedTuple):
    """One batch: rows of one file (`path`, '' when they were made in a pipeline) in one
    bucket. Lists are parallel, one entry per row; `materials` holds b'' for tombstones."""

    path: str
    keys: list
    positions: list
    kinds: list
    materials: list

    def source(self, row: int) -> str:
        """Where a row was read, `path:position`."""
        position = self.positions[row]
        return self.path if position is None else f'{self.path}:{position}'

    def encode(self) -> bytes:
        """The batch as compressed bytes; `decode` reads them back."""
        lengths = [len(material) for material in self.materials]
        header = dumps([self.path, self.keys, self.positions, self.kinds, lengths])
        raw = _SIZE.pack(len(header)) + header + b''.join(self.materials)
        return _SIZE.pack(len(raw)) + _CODEC.compress(raw, asbytes=True)

    @classmethod
    def decode(cls, data: bytes) -> KeyedRows:
        """The batch `encode` wrote."""
        (size,) = _SIZE.unpack_from(data)
        raw = _CODEC.decompress(
            memoryview(data)[_SIZE.size :], decompressed_size=size, asbytes=True
        )
        (header_size,) = _SIZE.unpack_from(raw)
        start = _SIZE.size + header_size
        path, keys, positions, kinds, lengths = loads(raw[_SIZE.size : start])
        materials = []
        for length in lengths:
            materials.append(raw[start : start + length])
            start += length
        return cls(path, keys, positions, kinds, materials)


def view_of(kind: int, material: bytes, source: str, projection: ProfileProjection) -> ProfileView:
    """The view a row's material stands for (not for tombstones).

    Raises:
      InvalidProfile: a `ROW` whose projection refuses it (the columnar checks let through
        only rows it accepts, so this means they and the projection disagree).
    """
    if kind == VIEW:
        return decode_view(material, source)
    if kind == ROW:
        return projection.project(loads(material), source)[1]
    raise InvalidProfile(f'{source} holds no profile (kind {kind})')


class BucketRows:
    """Rows of one file gathered per bucket until `flush`."""

    def __init__(self, projection: ProfileProjection, path: str):
        self._projection = projection
        self._path = path
        self._buckets: dict[int, KeyedRows] = {}
        self.count = 0

    def add(
        self, key: str, position: int | None, kind: int, material: bytes, bucket: int | None = None
    ) -> None:
        """One row (its bucket computed unless given)."""
        if bucket is None:
            bucket = self._projection.bucket(key)
        rows = self._buckets.get(bucket)
        if rows is None:
            rows = self._buckets[bucket] = KeyedRows(self._path, [], [], [], [])
        rows.keys.append(key)
        rows.positions.append(position)
        rows.kinds.append(kind)
        rows.materials.append(material)
        self.count += 1

    def add_view(self, key: str, position: int | None, view: ProfileView) -> None:
        """A validated profile's row, carrying its view."""
        self.add(key, position, VIEW, encode_view(view))

    def add_tombstone(self, key: str, position: int | None) -> None:
        """The row of a key whose record was dead-lettered as invalid."""
        self.add(key, position, TOMBSTONE, b'')

    def flush(self):
        """`(bucket, batch bytes)` of the rows gathered since the last flush."""
        buckets, self._buckets, self.count = self._buckets, {}, 0
        for bucket, rows in buckets.items():
            yield bucket, rows.encode()
