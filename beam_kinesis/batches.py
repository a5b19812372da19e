"""Bucket batches: how keyed profiles travel from the read to the join.

A batch holds the profiles of one file that fall in one bucket of the key's hash, as one
Arrow IPC stream, LZ4-compressed as a whole: per row the profile key, its position in the file, a
64-bit digest of what the destination looks at, and the profile itself in one of two forms:

- a `view` column: the `ProfileView` as compact JSON, for profiles projected in Python
  (JSON Lines, Avro, and Parquet rows the columnar path left to Python);
- the profile's own Arrow columns (the fields the diff reads), for Parquet rows the
  columnar path checked and fingerprinted without making Python objects of them.

A null digest marks a tombstone: the key had a record in the file that was dead-lettered as
invalid. The join compares digests first and builds Python views only for the rows whose
digests differ (see `changes._JoinBucketFn`), which is what makes unchanged profiles cheap.

Two rows with equal digests are treated as equal: the digests are 64-bit hashes (BLAKE2b of
the view's JSON, or polars' row hash of the Arrow columns salted with their types), so a
wrong "unchanged" needs a 64-bit collision between one profile's own two versions.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

import pyarrow as pa

from beam_kinesis.profile import ProfileProjection, ProfileView, dumps, loads
from beam_kinesis.values import arrow_to_pylist

__all__ = ['Batch', 'decode_batch', 'encode_batch', 'view_digest', 'view_payload']

# The internal columns, first in every batch; the profile's own columns (if any) follow.
_KEY, _POSITION, _DIGEST, _VIEW = 0, 1, 2, 3
_INTERNAL = pa.schema([('key', pa.string()), ('position', pa.int64()),
                       ('digest', pa.int64()), ('view', pa.binary())])
_FILE_METADATA = b'beam_kinesis.file'
# The whole stream is compressed in one call: it shrinks it by almost half for about a
# microsecond a row, which keeps the runner's in-memory copies of a million-profile diff
# within a few GB. (Arrow's own IPC compression, buffer by buffer, costs some 15 times as
# much on batches of a hundred nested rows.)
_CODEC = 'zstd'
_SIZE_BYTES = 8


def view_payload(view: ProfileView) -> bytes:
    """The view's parts as compact JSON, as a batch carries them."""
    return dumps([view.segments, view.identities, view.attributes])


def view_digest(payload: bytes) -> int:
    """A signed 64-bit digest of a view's JSON."""
    return int.from_bytes(hashlib.blake2b(payload, digest_size=8).digest(), 'little',
                          signed=True)


def encode_batch(path: str, keys: list, positions: list, digests: list,
                 payloads: list | None = None, columns: pa.Table | None = None) -> bytes:
    """One batch as bytes: `payloads` (view JSON, None for tombstones) or `columns` (the
    profiles' own Arrow columns, one row per key) carry the profiles."""
    arrays = [pa.array(keys, pa.string()), pa.array(positions, pa.int64()),
              pa.array(digests, pa.int64()),
              pa.array(payloads if payloads is not None else [None] * len(keys), pa.binary())]
    fields = list(_INTERNAL)
    if columns is not None:
        arrays.extend(columns.columns)
        fields.extend(columns.schema)
    table = pa.Table.from_arrays(arrays, schema=pa.schema(
        fields, metadata={_FILE_METADATA: path.encode('utf-8', 'surrogatepass')}))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    stream = sink.getvalue()
    return stream.size.to_bytes(_SIZE_BYTES, 'little') + pa.compress(stream, codec=_CODEC,
                                                                     asbytes=True)


class Batch(NamedTuple):
    """A decoded batch: `keys`, `positions` and `digests` as lists, the rest left in Arrow
    until `views` is asked for some rows."""
    path: str
    keys: list
    positions: list
    digests: list
    table: pa.Table

    def source(self, row: int) -> str:
        return f'{self.path}:{self.positions[row]}'

    def views(self, rows: list[int], projection: ProfileProjection) -> list[ProfileView]:
        """The `ProfileView`s of some rows (not tombstones), in the order asked."""
        if not rows:
            return []
        taken = self.table.take(pa.array(rows, pa.int64()))
        payloads = taken.column(_VIEW).to_pylist()
        names = taken.schema.names[len(_INTERNAL):]
        columns = [arrow_to_pylist(column.combine_chunks())
                   for column in taken.columns[len(_INTERNAL):]]
        views = []
        for index, (row, payload) in enumerate(zip(rows, payloads)):
            source = self.source(row)
            if payload is not None:
                segments, identities, attributes = loads(payload)
                views.append(ProfileView(source, segments, identities, attributes))
            else:
                profile = dict(zip(names, (column[index] for column in columns)))
                views.append(projection.project(profile, source)[1])
        return views


def decode_batch(data: bytes) -> Batch:
    """Reads what `encode_batch` wrote."""
    size = int.from_bytes(data[:_SIZE_BYTES], 'little')
    stream = pa.decompress(memoryview(data)[_SIZE_BYTES:], decompressed_size=size,
                           codec=_CODEC)
    table = pa.ipc.open_stream(stream).read_all()
    path = table.schema.metadata[_FILE_METADATA].decode('utf-8', 'surrogatepass')
    return Batch(path, table.column(_KEY).to_pylist(), table.column(_POSITION).to_pylist(),
                 table.column(_DIGEST).to_pylist(), table)


class BucketRows:
    """Rows of one file projected in Python, gathered per bucket until `flush`."""

    def __init__(self, projection: ProfileProjection, path: str):
        self._projection = projection
        self._path = path
        self._buckets: dict[int, tuple[list, list, list, list]] = {}
        self.count = 0

    def add(self, key: str, position: int | None, view: ProfileView | None) -> None:
        """A profile's row; a None view makes a tombstone (the record was dead-lettered)."""
        bucket = self._projection.bucket(key)
        rows = self._buckets.get(bucket)
        if rows is None:
            rows = self._buckets[bucket] = ([], [], [], [])
        keys, positions, digests, payloads = rows
        keys.append(key)
        positions.append(position)
        if view is None:
            digests.append(None)
            payloads.append(None)
        else:
            payload = view_payload(view)
            digests.append(view_digest(payload))
            payloads.append(payload)
        self.count += 1

    def flush(self):
        """`(bucket, batch bytes)` of the rows gathered since the last flush."""
        buckets, self._buckets, self.count = self._buckets, {}, 0
        for bucket, (keys, positions, digests, payloads) in buckets.items():
            yield bucket, encode_batch(self._path, keys, positions, digests, payloads)
