"""Retry failed writes: an earlier run's `write` dead letters, sent again before this run's.

    --retry_failed PATH -> check every dead-letter file at start (launcher)
    -> ReadFailedWrites: (profile_key, record_bytes) of each `write` dead letter (workers)
    -> WriteToKinesis (retry stage) -> its dead letters: failed again, retried by the next run
    -> this run's records wait for that stage to finish (a side input), then their own sink

A `write` dead letter holds the record as text (`record`; `record_base64` as well when the
bytes are not UTF-8) and its profile key (`key`; older ones only in `source`, `profile
<key>`), so the record goes out again with the same bytes and partition key. Dead letters of
other stages are not retried: their input has to be fixed first.
"""

from __future__ import annotations

import base64
import dataclasses
import os

import apache_beam as beam
import orjson
from apache_beam.io.filesystems import FileSystems

from beam_kinesis.config import ConfigError
from beam_kinesis.deadletter import STAGE_WRITE

__all__ = ['ReadFailedWrites', 'RetryError', 'RetryPlan', 'plan_retries', 'record_of', 'wait_for']

# The files a dead-letter directory holds (see WriteDeadLetters).
_DEAD_LETTER_FILES = 'dead_letters-*.jsonl'
_SOURCE_PREFIX = 'profile '
_SHOWN_CHARS = 60


class RetryError(ConfigError):
    """A dead-letter file to retry cannot be read, or holds a write dead letter without its
    record; the job stops at start."""


@dataclasses.dataclass(frozen=True)
class RetryPlan:
    """What `--retry_failed` names: the files, and how many records they hold to send again.

    Attributes:
      pattern: the path given.
      files: the dead-letter files found, sorted.
      records: `write` dead letters among them (each is sent again).
      other_stages: dead letters of other stages (not retried).
    """

    pattern: str
    files: tuple[str, ...]
    records: int
    other_stages: int


def _match(pattern: str) -> list[str]:
    try:
        found = FileSystems.match([pattern])[0].metadata_list
    except Exception as err:  # Beam's BeamIOError nests details; the first line suffices
        raise RetryError(
            f'--retry_failed {pattern!r} cannot be listed: {str(err).splitlines()[0]}'
        ) from err
    return sorted(item.path for item in found if not os.path.isdir(item.path))


def _files_of(pattern: str) -> list[str]:
    """The dead-letter files of a directory (local or remote), a glob or a file."""
    if os.path.isdir(pattern) or pattern.endswith('/'):
        return _match(FileSystems.join(pattern.rstrip('/') or '/', _DEAD_LETTER_FILES))
    files = _match(pattern)
    if not files and not any(char in pattern for char in '*?['):
        files = _match(FileSystems.join(pattern, _DEAD_LETTER_FILES))  # a remote directory
    return files


def record_of(entry: dict, where: str) -> tuple[str, bytes] | None:
    """`(profile_key, record_bytes)` of a `write` dead letter, None for another stage's.

    Raises:
      RetryError: a write dead letter without its record or its key, naming `where`.
    """
    if not isinstance(entry, dict):
        raise RetryError(f'{where} is not a dead letter (a JSON object).')
    if entry.get('stage') != STAGE_WRITE:
        return None
    key = entry.get('key')
    if key is None:
        source = entry.get('source')
        if isinstance(source, str) and source.startswith(_SOURCE_PREFIX):
            key = source[len(_SOURCE_PREFIX) :]
    if not isinstance(key, str) or not key:
        raise RetryError(
            f'{where} is a write dead letter without its profile key, so it cannot be sent again.'
        )
    encoded = entry.get('record_base64')
    if encoded is not None:
        try:
            return key, base64.b64decode(encoded, validate=True)
        except (TypeError, ValueError) as err:
            raise RetryError(f'{where} has a record_base64 that is not base64.') from err
    record = entry.get('record')
    if not isinstance(record, str) or not record:
        raise RetryError(
            f'{where} is a write dead letter without its record, so it cannot be sent again.'
        )
    return key, record.encode('utf-8')


def _entries(path: str):
    """`(line number, parsed line)` of a dead-letter file; raises RetryError if unreadable."""
    try:
        with FileSystems.open(path) as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    yield number, orjson.loads(line)
                except orjson.JSONDecodeError as err:
                    raise RetryError(
                        f'Line {number} of --retry_failed file {path!r} is not '
                        'JSON, so it is no dead letter this job wrote.'
                    ) from err
    except RetryError:
        raise
    except Exception as err:  # an I/O error of any file system
        reason = (str(err).splitlines() or [type(err).__name__])[0][:_SHOWN_CHARS]
        raise RetryError(f'--retry_failed file {path!r} cannot be read: {reason}.') from err


def plan_retries(pattern: str) -> RetryPlan:
    """Reads every dead-letter file `pattern` names (a directory: its `dead_letters-*.jsonl`;
    a glob or a file) and checks each `write` dead letter holds its record and key.

    Runs on the launcher before the pipeline starts. A path that holds no dead-letter file
    (an earlier run without dead letters writes none) retries nothing.

    Raises:
      RetryError: a file cannot be read, a line is not a dead letter, or a write dead
        letter lacks its record or key.
    """
    files = _files_of(pattern)
    records = other = 0
    for path in files:
        for number, entry in _entries(path):
            if record_of(entry, f'Line {number} of --retry_failed file {path!r}') is None:
                other += 1
            else:
                records += 1
    return RetryPlan(pattern, tuple(files), records, other)


class _ReadFailedWritesFn(beam.DoFn):
    """A dead-letter file -> `(profile_key, record_bytes)` of each write dead letter."""

    def process(self, path: str):
        for number, entry in _entries(path):
            record = record_of(entry, f'Line {number} of --retry_failed file {path!r}')
            if record is not None:
                yield record


class ReadFailedWrites(beam.PTransform):
    """The `write` dead letters of the files of a `RetryPlan`, as `(profile_key, data)`
    records for `WriteToKinesis`, the bytes as they were first sent."""

    def __init__(self, plan: RetryPlan):
        super().__init__()
        self._files = list(plan.files)

    def expand(self, pipeline):
        return (
            pipeline
            | 'RetryFiles' >> beam.Create(self._files)
            | 'ReadDeadLetters' >> beam.ParDo(_ReadFailedWritesFn())
        )


def _after(element, done):
    return element


def wait_for(records, stage_output, label: str):
    """`records`, held back until every element of `stage_output` exists: a side input is
    complete only when the step that makes it has finished, on every runner, so nothing of
    `records` reaches the next step before then."""
    done = (
        stage_output
        | f'{label}Count'
        >> beam.CombineGlobally(beam.combiners.CountCombineFn()).without_defaults()
    )
    return records | label >> beam.Map(_after, done=beam.pvalue.AsSingleton(done, default_value=0))
