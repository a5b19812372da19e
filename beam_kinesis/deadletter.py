"""Dead-letter records: what could not be exported, where it came from, and why."""

from __future__ import annotations

import base64
from typing import Any

import orjson
from apache_beam import Map, PTransform

__all__ = ['DEAD_LETTER', 'WriteDeadLetters', 'dead_letter', 'encode_dead_letter', 'printable',
           'write_dead_letter']

# Tag of the dead-letter output of every multi-output step in the package.
DEAD_LETTER = 'dead_letters'

# Stages, in the order a record meets them.
STAGE_READ = 'read'          # the bytes could not be parsed into a profile
STAGE_VALIDATE = 'validate'  # parsed, but no key, a bad status or a wrong type
STAGE_JOIN = 'join'          # the key occurs twice in one snapshot
STAGE_FORMAT = 'format'      # the export record could not be built
STAGE_WRITE = 'write'        # Kinesis did not accept the record


def printable(value: Any) -> Any:
    """Returns `value` in a form JSON can carry: bytes become text, undecodable bytes escaped."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode('utf-8', errors='backslashreplace')
    return value


def dead_letter(stage: str, error: str, source: str, record: Any) -> dict:
    """Builds one dead-letter entry.

    Args:
      stage: where the record failed (`read`, `validate`, `join`, `format`, `write`).
      error: one sentence saying why.
      source: where the record came from, `path:position` for input records (position is the
        1-based line of a JSON Lines file or the 1-based record of an Avro/Parquet file), or
        `profile <key>` once a record is keyed.
      record: the record as far as it was read (raw text, a profile, or an export record).
    """
    return {'stage': stage, 'error': error, 'source': source, 'record': printable(record)}


def write_dead_letter(error: str, key: str, data: bytes) -> dict:
    """A `write` dead letter from which the record can be sent again exactly as it was.

    Beside `dead_letter`'s fields it holds the profile `key` (the partition key is made from
    it), and, when the bytes are not UTF-8 (so `record`, text, cannot hold them exactly),
    `record_base64`.
    """
    entry = dead_letter(STAGE_WRITE, error, f'profile {key}', data)
    entry['key'] = key
    data = bytes(data)
    try:
        data.decode('utf-8')
    except UnicodeDecodeError:
        entry['record_base64'] = base64.b64encode(data).decode('ascii')
    return entry


def encode_dead_letter(entry: dict) -> str:
    """One JSON line for a dead-letter file (sorted keys, UTF-8 text)."""
    return orjson.dumps(entry, option=orjson.OPT_SORT_KEYS, default=repr).decode('utf-8')


class _CountByStageFn:
    """Counts dead letters per stage (a Beam metric each) and encodes them as JSON lines."""

    def __init__(self):
        self._counters = {}

    def __call__(self, entry: dict) -> str:
        from apache_beam.metrics import Metrics
        stage = entry.get('stage', 'unknown')
        counter = self._counters.get(stage)
        if counter is None:
            counter = self._counters[stage] = Metrics.counter('beam_kinesis',
                                                              f'dead_letters_{stage}')
        counter.inc()
        return encode_dead_letter(entry)


class WriteDeadLetters(PTransform):
    """Writes dead-letter dicts as JSON Lines files under a directory, counting each stage.

    Files are `<directory>/dead_letters-SSSSS-of-NNNNN.jsonl`, lines sorted, written only
    when there are dead letters; the counters are `dead_letters_<stage>` in the
    `beam_kinesis` namespace. Returns the paths written.
    """

    def __init__(self, directory: str, shards: int = 1):
        super().__init__()
        self._directory = directory
        self._shards = shards

    def expand(self, entries):
        from beam_kinesis.files import WriteJsonLines
        return (entries
                | 'CountAndEncode' >> Map(_CountByStageFn())
                | 'WriteFiles' >> WriteJsonLines(self._directory, 'dead_letters',
                                                 self._shards))
