"""After a run: was every export record delivered or dead-lettered, and how often did it land?

The ledger reads the whole stream back and accounts for each expected export record. A record
is identified by (partition key, data bytes). The job's `--output` files give the expected
data but not the keys, so for each distinct data value the keys are learnt from where the
record turned up (the stream or a write-stage dead letter, whose source is `profile <key>`),
and their number is compared with how often the data is expected.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import json
import os
from typing import Any, Iterable

from beam_kinesis.kinesis import partition_key_for
from beam_kinesis.local_kinesis import read_stream
from tests.kinesis_servers import shard_of

__all__ = [
    'Ledger',
    'ROW_FIELDS',
    'SUMMARY_SECTIONS',
    'parse_summary',
    'read_dead_letters',
    'read_exports',
    'reconcile',
    'write_letters',
]

ROW_FIELDS = ('scenario', 'expected', 'landed', 'dead_lettered', 'lost', 'duplicated')
_SOURCE_PREFIX = 'profile '


def read_exports(directory: str) -> list[bytes]:
    """The records of the job's `--output` files, one per line."""
    return [
        line
        for path in sorted(glob.glob(os.path.join(directory, 'exports*')))
        for line in open(path, 'rb').read().splitlines()
    ]


def read_dead_letters(directory: str) -> list[dict]:
    """Every dead-letter entry of the job's `--dead_letter` directory."""
    paths = sorted(glob.glob(os.path.join(directory, 'dead_letters*.jsonl')))
    return [json.loads(line) for path in paths for line in open(path, encoding='utf-8')]


@dataclasses.dataclass
class Ledger:
    """The accounts of one run.

    Attributes:
      scenario: what the run was.
      expected: export records the run should have delivered.
      landed: expected records found in the stream (each counted once).
      dead_lettered: expected records found in the write-stage dead letters.
      lost: expected records found in neither.
      duplicated: extra copies in the stream (a record that landed three times counts 2).
      both: records that landed and were also dead-lettered (a lost answer, then the budget
        ran out): delivered, but reported as not.
      unexpected: records in the stream or the write dead letters that were not expected.
      wrong_shard: records on a shard other than the one their partition key hashes to.
      dead_letter_errors: the error of each write-stage dead letter.
    """

    scenario: str
    expected: int = 0
    landed: int = 0
    dead_lettered: int = 0
    lost: int = 0
    duplicated: int = 0
    both: int = 0
    unexpected: int = 0
    wrong_shard: int = 0
    dead_letter_errors: list[str] = dataclasses.field(default_factory=list)
    note: str = ''

    def row(self) -> dict[str, Any]:
        """The scenario's line of the report."""
        return {name: getattr(self, name) for name in ROW_FIELDS + ('both', 'note')}

    def assert_complete(self) -> None:
        """Nothing lost, nothing unexpected, every record on its key's shard."""
        problems = {
            name: getattr(self, name)
            for name in ('lost', 'unexpected', 'wrong_shard')
            if getattr(self, name)
        }
        assert not problems, f'{self.scenario}: {problems} ({self.row()})'
        assert self.landed + self.dead_lettered - self.both == self.expected, self.row()


def write_letters(dead_letters: Iterable[dict]) -> list[tuple[str, bytes, str]]:
    """(partition key, data, error) of each write-stage dead letter."""
    letters = []
    for entry in dead_letters:
        if entry.get('stage') != 'write':
            continue
        source = entry['source']
        assert source.startswith(_SOURCE_PREFIX), f'write dead letter from {source!r}'
        key = partition_key_for(source[len(_SOURCE_PREFIX) :])
        letters.append((key, entry['record'].encode('utf-8'), entry['error']))
    return letters


def reconcile(
    scenario: str,
    client: Any,
    stream_name: str,
    expected: Iterable[bytes],
    dead_letters: Iterable[dict],
    records: dict | None = None,
) -> Ledger:
    """Accounts for every expected record of a run.

    Args:
      scenario: the name on the report.
      client: a boto3 Kinesis client of the server that holds the stream (not a proxy).
      stream_name: the stream the run wrote to.
      expected: the export records (data bytes), as the job's `--output` wrote them.
      dead_letters: the run's dead-letter entries (only stage `write` is used).
      records: the stream's records per shard if already read (else they are read here).
    """
    if records is None:
        records = read_stream(client, stream_name)
    shards = client.list_shards(StreamName=stream_name)['Shards']
    ledger = Ledger(scenario)
    wanted = collections.Counter(expected)
    ledger.expected = sum(wanted.values())

    copies: collections.Counter[tuple[str, bytes]] = collections.Counter()
    for shard_id, shard_records in records.items():
        for key, data in shard_records:
            copies[(key, data)] += 1
            if shard_of(shards, key) != shard_id:
                ledger.wrong_shard += 1
    ledger.duplicated = sum(count - 1 for count in copies.values())

    letters = write_letters(dead_letters)
    ledger.dead_letter_errors = [error for _, _, error in letters]
    dead = {(key, data) for key, data, _ in letters}

    keys_of: dict[bytes, dict[str, set[str]]] = collections.defaultdict(
        lambda: {'landed': set(), 'dead': set()}
    )
    for key, data in copies:
        keys_of[data]['landed'].add(key)
    for key, data in dead:
        keys_of[data]['dead'].add(key)
    for data, keys in keys_of.items():
        if data not in wanted:
            ledger.unexpected += len(keys['landed'] | keys['dead'])
    for data, count in wanted.items():
        keys = keys_of.get(data, {'landed': set(), 'dead': set()})
        found = keys['landed'] | keys['dead']
        ledger.landed += len(keys['landed'])
        ledger.dead_lettered += len(keys['dead'])
        ledger.both += len(keys['landed'] & keys['dead'])
        ledger.lost += max(0, count - len(found))
        ledger.unexpected += max(0, len(found) - count)
    return ledger


SUMMARY_SECTIONS = (
    'Read',
    'Exported',
    'Kinesis',
    'Retried from an earlier run',
    'Monitoring (this run)',
    'Dead letters',
)


def parse_summary(text: str) -> dict[str, dict[str, int]]:
    """The job's printed summary as {section: {label: count}}.

    A section starts at its unindented title (`SUMMARY_SECTIONS`); its rows are the indented
    `label   1,234` lines that follow. Other output is ignored.
    """
    sections: dict[str, dict[str, int]] = {}
    current = None
    for line in text.splitlines():
        if line and not line[0].isspace():
            current = sections.setdefault(line, {}) if line in SUMMARY_SECTIONS else None
            continue
        label, _, value = line.strip().rpartition(' ')
        if current is not None and label:
            try:
                current[label.strip()] = int(value.replace(',', ''))
            except ValueError:
                pass
    return sections
