"""Dead-letter records: what could not be exported, where it came from, and why."""

from __future__ import annotations

import base64
import json
from typing import Any, Dict

import orjson
from apache_beam import Map, PTransform
from apache_beam.typehints import with_input_types

__all__ = [
    'DEAD_LETTER',
    'MAX_ERROR_CHARS',
    'MAX_RECORD_BYTES',
    'WriteDeadLetters',
    'bounded',
    'dead_letter',
    'encode_dead_letter',
    'printable',
    'write_dead_letter',
]

# Tag of the dead-letter output of every multi-output step in the package.
DEAD_LETTER = 'dead_letters'

# Stages, in the order a record meets them.
STAGE_READ = 'read'  # the bytes could not be parsed into a profile
STAGE_VALIDATE = 'validate'  # parsed, but no key, a bad status or a wrong type
STAGE_JOIN = 'join'  # the key occurs twice in one snapshot
STAGE_FORMAT = 'format'  # the export record could not be built
STAGE_WRITE = 'write'  # Kinesis did not accept the record


# A dead letter keeps at most this much of the input record it is about (its source names
# where the whole of it is): enough to see what is wrong, never the 2 GB line itself.
MAX_RECORD_BYTES = 64 * 1024
# Longest error sentence kept (an error may quote a value of the record).
MAX_ERROR_CHARS = 1000


def printable(value: Any) -> Any:
    """Returns `value` in a form JSON can carry: bytes become text, undecodable bytes escaped."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode('utf-8', errors='backslashreplace')
    return value


def bounded(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """`text` cut to `limit` characters, saying how long it was when it is cut."""
    if len(text) <= limit:
        return text
    return f'{text[:limit]}... [{len(text):,} characters in all]'


def _bounded_record(record: Any) -> Any:
    """An input record as a dead letter keeps it: whole if it is small and JSON can write
    it, else the first `MAX_RECORD_BYTES` of its text, saying how long it was."""
    if isinstance(record, (bytes, bytearray, memoryview)):
        data = bytes(record)
        if len(data) <= MAX_RECORD_BYTES:
            return printable(data)
        return printable(data[:MAX_RECORD_BYTES]) + f'... [{len(data):,} bytes in all]'
    if isinstance(record, str):
        return bounded(record, MAX_RECORD_BYTES)
    if record is None or isinstance(record, (bool, int, float)):
        return record
    try:
        size = len(orjson.dumps(record, default=repr))
    except TypeError:  # nested beyond orjson's 254 levels, or an integer beyond 64 bits
        try:
            text = json.dumps(record, default=repr, ensure_ascii=False)
        except (RecursionError, ValueError, TypeError) as err:
            return f'[the record cannot be written as JSON: {type(err).__name__}]'
        return bounded(text, MAX_RECORD_BYTES)  # as text: the writer's orjson refuses it
    if size <= MAX_RECORD_BYTES:
        return record
    return bounded(orjson.dumps(record, default=repr).decode('utf-8'), MAX_RECORD_BYTES)


def dead_letter(stage: str, error: str, source: str, record: Any) -> dict:
    """Builds one dead-letter entry.

    Args:
      stage: where the record failed (`read`, `validate`, `join`, `format`, `write`).
      error: one sentence saying why (cut to `MAX_ERROR_CHARS`).
      source: where the record came from, `path:position` for input records (position is the
        1-based line of a JSON Lines file or the 1-based record of an Avro/Parquet file), or
        `profile <key>` once a record is keyed.
      record: the record as far as it was read (raw text, a profile, or an export record).
        An input record over `MAX_RECORD_BYTES` keeps only its beginning, as text; a `write`
        dead letter keeps its export record whole, as a later run resends it.
    """
    return {
        'stage': stage,
        'error': bounded(str(error)),
        'source': bounded(str(source)),
        'record': printable(record) if stage == STAGE_WRITE else _bounded_record(record),
    }


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
    try:
        return orjson.dumps(entry, option=orjson.OPT_SORT_KEYS, default=repr).decode('utf-8')
    except TypeError:  # a lone surrogate in a write stage's error, say: escaped, not lost
        return json.dumps(entry, sort_keys=True, separators=(',', ':'), default=repr)


class _CountByStageFn:
    """Counts dead letters per stage (a Beam metric each) and encodes them as JSON lines."""

    def __init__(self):
        self._counters = {}

    def __call__(self, entry: dict) -> str:
        from apache_beam.metrics import Metrics

        stage = entry.get('stage', 'unknown')
        counter = self._counters.get(stage)
        if counter is None:
            counter = self._counters[stage] = Metrics.counter(
                'beam_kinesis', f'dead_letters_{stage}'
            )
        counter.inc()
        return encode_dead_letter(entry)


@with_input_types(Dict[str, Any])
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

        return (
            entries
            | 'CountAndEncode' >> Map(_CountByStageFn())
            | 'WriteFiles' >> WriteJsonLines(self._directory, 'dead_letters', self._shards)
        )
