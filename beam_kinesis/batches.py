"""Bucket batches: how keyed profiles travel from the read to the join.

A batch holds the profiles of one file that fall in one bucket of the key's hash: per row
the profile key, its position in the file and a 64-bit digest of what the destination looks
at (a null digest marks a tombstone: the key had a record there that was dead-lettered as
invalid). That is all the join needs to find the profiles that did not change, nine in ten
of a daily diff, so the profiles themselves stay in their files: the few the join wants are
read again (see `changes`). Profiles that have no file to be read from again (a
`SnapshotRecord` made in a pipeline) carry their view in the batch.

Two rows with equal digests are treated as equal: the digests are 64-bit hashes (BLAKE2b of
the JSON of what the destination looks at, see `ProfileProjection.fingerprint`, or polars'
row hash of the Arrow columns salted with their types), so a wrong "unchanged" needs a
64-bit collision between one profile's own two versions.
"""

from __future__ import annotations

from typing import NamedTuple

from beam_kinesis.profile import ProfileProjection, ProfileView, dumps, loads

__all__ = ['Batch', 'BucketRows', 'decode_batch', 'encode_batch', 'view_parts']


def view_parts(view: ProfileView) -> list:
    """What a view holds besides its source, as JSON values."""
    return [view.segments, view.identities, view.attributes]


def encode_batch(path: str, fmt: str | None, keys: list, positions: list, digests: list,
                 views: list | None = None) -> bytes:
    """One batch as bytes. `fmt` is the file's format (None: no file to read again, and
    `views` then holds each row's `view_parts`, None for tombstones)."""
    return dumps({'file': path, 'format': fmt, 'keys': keys, 'positions': positions,
                  'digests': digests, 'views': views})


class Batch(NamedTuple):
    """A decoded batch (see `encode_batch`)."""
    path: str
    format: str | None
    keys: list
    positions: list
    digests: list
    views: list | None

    def source(self, row: int) -> str:
        position = self.positions[row]
        return self.path if position is None else f'{self.path}:{position}'


def decode_batch(data: bytes) -> Batch:
    """Reads what `encode_batch` wrote."""
    batch = loads(data)
    return Batch(batch['file'], batch['format'], batch['keys'], batch['positions'],
                 batch['digests'], batch['views'])


class BucketRows:
    """Rows of one file projected in Python, gathered per bucket until `flush`."""

    def __init__(self, projection: ProfileProjection, path: str, fmt: str | None):
        """`fmt` None: the rows carry their views (there is no file to read them again)."""
        self._projection = projection
        self._path = path
        self._format = fmt
        self._buckets: dict[int, tuple[list, list, list, list]] = {}
        self.count = 0

    def add(self, key: str, position: int | None, digest: int | None,
            view: ProfileView | None = None) -> None:
        """A profile's row (its view too if the rows carry views); a None digest makes a
        tombstone (the record was dead-lettered)."""
        bucket = self._projection.bucket(key)
        rows = self._buckets.get(bucket)
        if rows is None:
            rows = self._buckets[bucket] = ([], [], [], [])
        keys, positions, digests, views = rows
        keys.append(key)
        positions.append(position)
        digests.append(digest)
        views.append(view_parts(view) if view is not None and self._format is None else None)
        self.count += 1

    def flush(self):
        """`(bucket, batch bytes)` of the rows gathered since the last flush."""
        buckets, self._buckets, self.count = self._buckets, {}, 0
        for bucket, (keys, positions, digests, views) in buckets.items():
            yield bucket, encode_batch(self._path, self._format, keys, positions, digests,
                                       views if self._format is None else None)
