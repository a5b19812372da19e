"""JSON Lines files written the same way on every runner: sharded, sorted, replaced whole.

Beam's `WriteToText` names its files from bundle results emitted in `finish_bundle`, which
Beam's DaskRunner drops, leaving empty outputs behind. Here lines are grouped by shard (a
stable hash of the line), and each shard is written from `process` to a temporary name and
renamed, its lines sorted: the same inputs give the same files on any runner.
"""

from __future__ import annotations

import uuid
import zlib

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

__all__ = ['WriteJsonLines', 'shard_name']


def shard_name(directory: str, prefix: str, shard: int, shards: int) -> str:
    """`<directory>/<prefix>-SSSSS-of-NNNNN.jsonl`."""
    return FileSystems.join(directory, f'{prefix}-{shard:05d}-of-{shards:05d}.jsonl')


class _ShardOf:
    def __init__(self, shards: int):
        self._shards = shards

    def __call__(self, line: str):
        return zlib.crc32(line.encode('utf-8', 'surrogatepass')) % self._shards, line


class _WriteShardFn(beam.DoFn):
    def __init__(self, directory: str, prefix: str, shards: int):
        self._directory = directory
        self._prefix = prefix
        self._shards = shards

    def process(self, element):
        shard, lines = element
        final = shard_name(self._directory, self._prefix, shard, self._shards)
        temporary = FileSystems.join(self._directory, f'.{self._prefix}-{uuid.uuid4().hex}.tmp')
        if not FileSystems.exists(self._directory):
            FileSystems.mkdirs(self._directory)
        with FileSystems.create(temporary) as handle:
            for line in sorted(lines):
                handle.write(line.encode('utf-8', 'surrogatepass') + b'\n')
        if FileSystems.exists(final):
            FileSystems.delete([final])
        FileSystems.rename([temporary], [final])
        yield final


class WriteJsonLines(beam.PTransform):
    """Writes text lines to `<directory>/<prefix>-SSSSS-of-NNNNN.jsonl`; returns the paths.

    Shards with no lines are not written. A retried shard replaces its file.
    """

    def __init__(self, directory: str, prefix: str, shards: int = 1):
        super().__init__()
        if not isinstance(shards, int) or shards < 1:
            raise ValueError(f'shards {shards!r} must be a positive integer')
        self._directory = directory
        self._prefix = prefix
        self._shards = shards

    def expand(self, lines):
        return (lines
                | 'Shard' >> beam.Map(_ShardOf(self._shards))
                | 'GroupShards' >> beam.GroupByKey()
                | 'WriteShards' >> beam.ParDo(_WriteShardFn(self._directory, self._prefix,
                                                            self._shards)))
