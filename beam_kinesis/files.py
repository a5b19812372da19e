"""JSON Lines files written the same way on every runner: sharded, sorted, replaced whole.

Beam's `WriteToText` names its files from bundle results emitted in `finish_bundle`, which
Beam's DaskRunner drops, leaving empty outputs behind. Here lines are grouped by shard (a
stable hash of the line), and each shard is written from `process` to a temporary name and
renamed, its lines sorted: the same inputs give the same files on any runner.

A run owns its output directories (`OutputClaim`): it proves them writable before it reads
anything, holds a lock file in each while it runs, and, once it has finished, removes the
files of earlier runs that are not part of its own result.
"""

from __future__ import annotations

import datetime
import errno
import json
import logging
import os
import socket
import uuid
import zlib

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

__all__ = [
    'LOCK_NAME',
    'OutputClaim',
    'OutputError',
    'WriteJsonLines',
    'check_writable',
    'remove_stale',
    'shard_name',
]

_LOGGER = logging.getLogger(__name__)

# The lock file a run holds in each of its output directories.
LOCK_NAME = '.beam-kinesis.lock'


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
        return (
            lines
            | 'Shard' >> beam.Map(_ShardOf(self._shards))
            | 'GroupShards' >> beam.GroupByKey()
            | 'WriteShards'
            >> beam.ParDo(_WriteShardFn(self._directory, self._prefix, self._shards))
        )


class OutputError(ValueError):
    """An output location that cannot be used, or that another run is using, in one sentence."""


def _is_local(path: str) -> bool:
    return '://' not in path


def _reason(err: Exception) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def check_writable(directory: str, what: str) -> bool:
    """Makes `directory` if it is missing and proves it writable by writing a small probe
    file there and removing it. Returns whether the directory was made.

    The probe catches a path that is a file, a read-only file system or directory, missing
    permissions, an unreachable bucket, and a disk with no space left at all; it cannot
    promise room for everything the run will write.

    Raises:
      OutputError: the directory cannot be made or written, in one sentence naming `what`.
    """
    made = False
    if _is_local(directory) and os.path.lexists(directory) and not os.path.isdir(directory):
        raise OutputError(f'{what} {directory!r} is a file, not a directory.')
    try:
        if not FileSystems.exists(directory):
            FileSystems.mkdirs(directory)
            made = True
        probe = FileSystems.join(directory, f'.beam-kinesis-probe-{uuid.uuid4().hex}')
        with FileSystems.create(probe) as handle:
            handle.write(b'probe\n')
        FileSystems.delete([probe])
    except Exception as err:  # BeamIOError wraps the OSError; one line of it suffices
        cause = getattr(err, 'exception_details', None) or {}
        inner = next(iter(cause.values()), err) if isinstance(cause, dict) else err
        raise OutputError(
            f'{what} {directory!r} is not writable: '
            f'{_reason(inner if isinstance(inner, Exception) else err)}.'
        ) from err
    return made


class OutputClaim:
    """A run's hold on its output directories (`--output`, `--dead_letter`) and the
    directory of its report.

    `acquire` proves each writable (see `check_writable`) and takes a lock file,
    `<directory>/.beam-kinesis.lock` (pid, host, start time), created exclusively on a local
    file system, so that a second run into the same directory refuses to start. A lock left
    by a run of this host whose process is gone is taken over. On `gs://`, `s3://` and other
    Beam file systems, which have no exclusive create, the lock is checked and written
    without that guarantee (two runs started at the same moment may both go on).
    """

    def __init__(self, directories: dict[str, str], report: str | None = None):
        """
        Args:
          directories: `{what: directory}`, e.g. `{'--output': 'out'}`.
          report: the run report's path, whose directory must be writable (not locked).
        """
        self._directories = {}
        for what, directory in directories.items():
            if directory and os.path.normpath(directory) not in {
                os.path.normpath(known) for known in self._directories.values()
            }:
                self._directories[what] = directory
        self._report = report
        self._held: list[str] = []
        self._made: list[str] = []
        self._token = {
            'pid': os.getpid(),
            'host': socket.gethostname(),
            'started': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'),
            'run': uuid.uuid4().hex,
        }

    def acquire(self) -> OutputClaim:
        """Raises OutputError (and holds nothing) if a directory cannot be used."""
        try:
            for what, directory in self._directories.items():
                if check_writable(directory, what):
                    self._made.append(directory)
            if self._report:
                self._check_report(self._report)
            for what, directory in self._directories.items():
                self._lock(what, directory)
        except Exception:
            self.release()
            raise
        return self

    def release(self) -> None:
        """Removes the locks this run holds (and directories it made that stayed empty)."""
        for directory in self._held:
            path = FileSystems.join(directory, LOCK_NAME)
            try:
                if (self._read_lock(path) or {}).get('run') == self._token['run']:
                    FileSystems.delete([path])
            except Exception:  # pylint: disable=broad-except
                pass  # the lock is gone already, or cannot be read: nothing to give back
        self._held = []
        for directory in self._made:
            if _is_local(directory):
                try:
                    os.rmdir(directory)  # only if empty
                except OSError:
                    pass
        self._made = []

    @staticmethod
    def _check_report(report: str) -> None:
        if _is_local(report) and os.path.isdir(report):
            raise OutputError(f'--report {report!r} is a directory, not a file.')
        parent = os.path.dirname(report) if _is_local(report) else report.rsplit('/', 1)[0]
        check_writable(parent or '.', "--report's directory")

    @staticmethod
    def _read_lock(path: str) -> dict | None:
        with FileSystems.open(path) as handle:
            data = handle.read(4096)
        try:
            return json.loads(data.decode('utf-8'))
        except ValueError:
            return None

    def _lock(self, what: str, directory: str) -> None:
        path = FileSystems.join(directory, LOCK_NAME)
        data = json.dumps(self._token).encode('utf-8')
        for _ in range(2):
            if self._create_exclusively(path, data):
                self._held.append(directory)
                return
            holder = self._holder(path)
            if holder is None:  # the lock went away meanwhile, or its run is gone
                continue
            raise OutputError(
                f'{what} {directory!r} is in use by another run ({holder}); if '
                f'no such run is going on, remove {path!r}.'
            )
        raise OutputError(f'{what} {directory!r}: the lock file {path!r} cannot be taken.')

    @staticmethod
    def _create_exclusively(path: str, data: bytes) -> bool:
        if _is_local(path):
            try:
                handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(handle, 'wb') as stream:
                stream.write(data)
            return True
        if FileSystems.exists(path):
            return False
        with FileSystems.create(path) as stream:
            stream.write(data)
        return True

    def _holder(self, path: str) -> str | None:
        """Who holds a lock, or None once a stale one (its process gone) is removed."""
        try:
            holder = self._read_lock(path)
        except Exception:  # pylint: disable=broad-except
            return None  # removed since: try again
        if not isinstance(holder, dict):
            return 'a lock file that cannot be read'
        pid, host = holder.get('pid'), holder.get('host')
        if host == self._token['host'] and isinstance(pid, int) and not _alive(pid):
            FileSystems.delete([path])
            return None
        return f'pid {pid} on {str(host)[:100]}, since {str(holder.get("started"))[:40]}'


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError as err:
        return err.errno == errno.EPERM  # it exists, under another user
    return True


def remove_stale(directory: str, prefix: str, keep) -> list[str]:
    """Removes `<prefix>-*-of-*.jsonl` files (and leftover temporaries) of earlier runs from
    `directory`: those whose names are not in `keep` (the files this run wrote). Returns the
    paths removed."""
    keep = {os.path.basename(path) for path in keep}
    patterns = [
        FileSystems.join(directory, f'{prefix}-*-of-*.jsonl'),
        FileSystems.join(directory, f'.{prefix}-*.tmp'),
    ]
    try:
        if not FileSystems.exists(directory):
            return []
        found = [
            metadata.path
            for result in FileSystems.match(patterns)
            for metadata in result.metadata_list
        ]
    except Exception:  # pylint: disable=broad-except
        return []
    stale = [path for path in found if os.path.basename(path) not in keep]
    removed = []
    for path in stale:
        try:
            FileSystems.delete([path])
            removed.append(path)
        except Exception as err:  # pylint: disable=broad-except
            _LOGGER.warning('Could not remove %s, a file of an earlier run: %s', path, err)
    return removed
