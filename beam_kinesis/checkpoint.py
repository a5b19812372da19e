"""The checkpoint of a run: which records Kinesis acknowledged, so that a rerun sends the rest.

A checkpoint is a directory on any Beam file system (local, `gs://`, `s3://`):

    DIR/manifest.json              what run it belongs to: a fingerprint of its identity
                                   (inputs, config, options that shape the records, as-of,
                                   stream) and that identity, for a readable refusal
    DIR/acknowledged/<id>-<n>.ack  one file per PutRecords answer that acknowledged records

A record is identified by what reaches the sink: a 128-bit digest of its partition key and
its bytes (the job's records are deterministic, so a rerun of the same run makes the same
records). Each `.ack` file holds the digests one answer acknowledged, followed by a SHA-256 of
its content; it is written, flushed (and fsynced on a local disk) in the sending thread as
soon as the answer arrives, before that thread sends anything else. A file torn by a kill
fails its checksum and is ignored, so its records are sent again: a rerun re-sends at most
the records that were in flight, never fewer than were not acknowledged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import os
import threading
import uuid
from typing import Any, Iterable

import numpy as np
from apache_beam.io.filesystems import FileSystems

__all__ = [
    'Acknowledged',
    'Checkpoint',
    'CheckpointError',
    'DIGEST_BYTES',
    'Recorder',
    'fingerprint',
    'open_checkpoint',
    'record_digest',
    'run_identity',
]

_LOGGER = logging.getLogger(__name__)

DIGEST_BYTES = 16  # 128 bits: a collision among even 10**9 records has odds below 10**-20
_FORMAT = 1
_MAGIC = b'beam-kinesis acknowledged v1\n'
_CHECKSUM_BYTES = 32
_MANIFEST = 'manifest.json'
_ACKNOWLEDGED = 'acknowledged'


class CheckpointError(ValueError):
    """The checkpoint cannot be used by this run: the message is one sentence saying why."""


def record_digest(partition_key: str, data: bytes) -> bytes:
    """The identity of a record in a checkpoint: 16 bytes of SHA-256 of its key and data."""
    key = partition_key.encode('utf-8', 'surrogatepass')
    return hashlib.sha256(len(key).to_bytes(4, 'big') + key + data).digest()[:DIGEST_BYTES]


def fingerprint(identity: dict) -> str:
    """SHA-256 of the identity's canonical JSON."""
    text = json.dumps(identity, sort_keys=True, separators=(',', ':'), ensure_ascii=False)
    return hashlib.sha256(text.encode('utf-8')).hexdigest()


class Acknowledged:
    """A read-only set of record digests, as one sorted array (16 bytes per record)."""

    def __init__(self, digests: Iterable[bytes] = ()) -> None:
        joined = b''.join(digests)
        array = (
            np.frombuffer(joined, dtype=f'S{DIGEST_BYTES}')
            if joined
            else np.array([], dtype=f'S{DIGEST_BYTES}')
        )
        self._digests = np.unique(array)

    def __len__(self) -> int:
        return len(self._digests)

    def __contains__(self, digest: bytes) -> bool:
        index = int(np.searchsorted(self._digests, digest))
        # numpy's fixed-width bytes drop trailing NULs when an element is read back.
        return index < len(self._digests) and self._digests[index] == digest.rstrip(b'\x00')


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """An opened checkpoint (see `open_checkpoint`); picklable, for the sink's workers.

    Attributes:
      directory: where it lives.
      fingerprint: the run it belongs to.
      acknowledged_before: records acknowledged by earlier attempts when the run started.
    """

    directory: str
    fingerprint: str
    acknowledged_before: int = 0

    def load(self) -> Acknowledged:
        """Every digest of the intact `.ack` files (a torn one is skipped, with a warning)."""
        digests = []
        for path in _ack_files(self.directory):
            with FileSystems.open(path) as handle:
                content = handle.read()
            body = _intact_body(content)
            if body is None:
                _LOGGER.warning(
                    'Checkpoint file %s is incomplete (the run was killed while '
                    'writing it); its records will be sent again',
                    path,
                )
                continue
            digests.append(body)
        return Acknowledged(digests)

    def recorder(self) -> Recorder:
        """A writer of `.ack` files, one per sink instance."""
        return Recorder(self.directory)


class Recorder:
    """Writes the digests an answer acknowledged as one self-checking file; thread-safe."""

    def __init__(self, directory: str) -> None:
        self._prefix = FileSystems.join(directory, _ACKNOWLEDGED, uuid.uuid4().hex)
        self._numbers = itertools.count()
        self._lock = threading.Lock()

    def record(self, digests: list[bytes]) -> None:
        """Records `digests` durably before returning. Raises OSError (or Beam's IOError)."""
        if not digests:
            return
        with self._lock:
            number = next(self._numbers)
        body = _MAGIC + b''.join(digests)
        path = f'{self._prefix}-{number:08d}.ack'
        with FileSystems.create(path) as handle:
            handle.write(body + hashlib.sha256(body).digest())
            _sync(handle)


def _sync(handle: Any) -> None:
    """Flushes a local file to the disk; other file systems make an object whole on close."""
    try:
        handle.flush()
        os.fsync(handle.fileno())
    except (AttributeError, OSError, ValueError):
        pass


def _intact_body(content: bytes) -> bytes | None:
    """The digests of an `.ack` file's content, or None if it is torn or not one."""
    if not content.startswith(_MAGIC) or len(content) < len(_MAGIC) + _CHECKSUM_BYTES:
        return None
    body, checksum = content[:-_CHECKSUM_BYTES], content[-_CHECKSUM_BYTES:]
    if hashlib.sha256(body).digest() != checksum or (len(body) - len(_MAGIC)) % DIGEST_BYTES:
        return None
    return body[len(_MAGIC) :]


def _ack_files(directory: str) -> list[str]:
    pattern = FileSystems.join(directory, _ACKNOWLEDGED, '*.ack')
    return sorted(
        metadata.path
        for result in FileSystems.match([pattern])
        for metadata in result.metadata_list
    )


def _first_difference(old: Any, new: Any, where: str = '') -> str | None:
    """Where two identities first differ, for the refusal's sentence."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            found = _first_difference(old.get(key), new.get(key), f'{where}.{key}'.strip('.'))
            if found:
                return found
        return None
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for index, (left, right) in enumerate(zip(old, new)):
            found = _first_difference(left, right, f'{where}[{index}]')
            if found:
                return found
        return None
    if old != new:
        shown = [json.dumps(value, sort_keys=True)[:120] for value in (old, new)]
        return f'{where or "identity"} was {shown[0]}, is now {shown[1]}'
    return None


def open_checkpoint(directory: str, identity: dict) -> Checkpoint:
    """Opens the checkpoint of the run described by `identity`, creating it if need be.

    Args:
      directory: the checkpoint directory (any path Beam's FileSystems can write).
      identity: what makes the run's records and where they go (JSON-serialisable); a
        checkpoint made for another identity is refused.

    Raises:
      CheckpointError: the checkpoint belongs to another run, is unreadable, or cannot be
        written.
    """
    manifest_path = FileSystems.join(directory, _MANIFEST)
    wanted = fingerprint(identity)
    try:
        exists = FileSystems.exists(manifest_path)
        if exists:
            with FileSystems.open(manifest_path) as handle:
                manifest = json.loads(handle.read().decode('utf-8'))
        elif _ack_files(directory):
            raise CheckpointError(
                f'The checkpoint {directory} holds acknowledgements but no {_MANIFEST}, so the '
                'run they belong to is unknown; give another --checkpoint directory'
            )
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 - any file system's error, or bad JSON
        raise CheckpointError(
            f'The checkpoint {directory} cannot be read: {type(err).__name__}: {str(err)[:200]}'
        ) from err
    if exists:
        if not isinstance(manifest, dict) or manifest.get('format') != _FORMAT:
            raise CheckpointError(
                f'The checkpoint {manifest_path} is not a beam-kinesis '
                'checkpoint manifest of this version'
            )
        if manifest.get('fingerprint') != wanted:
            difference = _first_difference(manifest.get('identity'), identity) or 'it differs'
            raise CheckpointError(
                f'The checkpoint {directory} belongs to another run ({difference}), so its '
                "acknowledgements do not describe this run's records; rerun with the same "
                'inputs, config and options, or give another --checkpoint directory'
            )
        checkpoint = Checkpoint(directory, wanted)
        return dataclasses.replace(checkpoint, acknowledged_before=len(checkpoint.load()))
    try:
        FileSystems.mkdirs(directory)
    except Exception:  # noqa: BLE001 - it exists already, or the file system has no dirs
        pass
    try:
        temporary = FileSystems.join(directory, f'.{_MANIFEST}.{uuid.uuid4().hex}')
        with FileSystems.create(temporary) as handle:
            handle.write(
                json.dumps(
                    {'format': _FORMAT, 'fingerprint': wanted, 'identity': identity},
                    indent=1,
                    sort_keys=True,
                    ensure_ascii=False,
                ).encode('utf-8')
            )
            _sync(handle)
        FileSystems.rename([temporary], [manifest_path])
    except Exception as err:  # noqa: BLE001 - any file system's error
        raise CheckpointError(
            f'The checkpoint {directory} cannot be written: {type(err).__name__}: {str(err)[:200]}'
        ) from err
    return Checkpoint(directory, wanted)


def run_identity(
    files: dict[str, list[str]], config_path: str, options: dict, destination: dict
) -> dict:
    """What identifies a run for its checkpoint.

    Args:
      files: every input file by role (`current`, `previous`, ...); each is described by its
        path, size and modification time (cheap on every file system; a file changed in place
        to the same size within the same second would go unnoticed).
      config_path: the destination config, identified by the SHA-256 of its bytes.
      options: the options that shape the records (as-of time, key field, policies, ...).
      destination: where the records go (stream, endpoint, region).
    """
    described: dict[str, list] = {}
    for role, paths in sorted(files.items()):
        described[role] = []
        for result in FileSystems.match(sorted(paths)):
            for metadata in result.metadata_list:
                described[role].append(
                    [
                        metadata.path,
                        metadata.size_in_bytes,
                        getattr(metadata, 'last_updated_in_seconds', None),
                    ]
                )
        described[role].sort()
    with FileSystems.open(config_path) as handle:
        config_digest = hashlib.sha256(handle.read()).hexdigest()
    return {
        'inputs': described,
        'destination_config_sha256': config_digest,
        'options': dict(sorted(options.items())),
        'destination': destination,
    }
