"""The counts of a run, declared in one place and typed.

Every step reports what it saw as `Counts` (names made by the functions and constants
here, never spelt out elsewhere) or, for a file read, as one `FileStats`. The run report
(`summary.CollectReport`) sums `Counts`; the input ledger (`ledger`) reads `FileStats` and
the comparison's and the formatting's `Counts`. A name that is not declared here is refused
where it is made, so a count cannot be written under one name and read under another.

The sink's own figures (records sent, throttled, ...) are Beam metrics, declared in
`kinesis.SINK_COUNTERS`, and join the report at the end of a run.
"""

from __future__ import annotations

import dataclasses
import re

import apache_beam as beam

from beam_kinesis.deadletter import (
    STAGE_FORMAT,
    STAGE_JOIN,
    STAGE_READ,
    STAGE_VALIDATE,
    STAGE_WRITE,
)
from beam_kinesis.engine.rules import REASONS

__all__ = [
    'Counts',
    'FileStats',
    'STAGES',
    'SNAPSHOTS',
    'SumCounts',
    'classified',
    'dead_letters',
    'declared',
    'exported',
    'rows',
    'snapshot_count',
    'total',
    'written',
    'written_paths',
    'CLASSIFIED',
    'EXPORTED',
    'DEAD_LETTERS',
    'EXPORT_FILES',
    'DEAD_LETTER_FILES',
    'EXPORTS_WITHHELD',
    'IDENTITIES_EXPORTED',
    'IDENTITIES_WITHHELD',
    'IDENTITIES_WRITE_FAILED',
    'INPUT_LEDGER_BALANCED',
    'PROFILES_COMPARED',
    'PROFILES_INVALID',
    'PROFILES_WITH_DUPLICATE_KEYS',
    'PROFILES_WRITE_FAILED',
    'RETRIED_FROM_EARLIER_RUN',
    'RETRIED_LANDED',
    'RETRIES_FAILED_AGAIN',
]

SNAPSHOTS = ('previous', 'current')
# Dead-letter stages (`deadletter.STAGE_*`); `unknown` for an entry that names none.
STAGES = (STAGE_READ, STAGE_VALIDATE, STAGE_JOIN, STAGE_FORMAT, STAGE_WRITE, 'unknown')
# What a snapshot's files gave (`snapshot_count`).
_SNAPSHOT_FIGURES = ('files', 'records_read', 'records_unreadable', 'profiles_invalid')

# The comparison.
PROFILES_COMPARED = 'profiles_compared'
PROFILES_INVALID = 'profiles_invalid'  # invalid in a snapshot: not exported
PROFILES_WITH_DUPLICATE_KEYS = 'profiles_with_duplicate_keys'
EXPORTS_WITHHELD = 'exports_withheld'  # rests on an absence not trusted
CLASSIFIED = 'classified_'  # + reason: to be exported
# The formatting.
EXPORTED = 'exported_'  # + reason: export records made
DEAD_LETTERS = 'dead_letters_'  # + stage
IDENTITIES_EXPORTED = 'identities_exported'
IDENTITIES_WITHHELD = 'identities_withheld'
# The sink's dead letters, and an earlier run's records sent again.
PROFILES_WRITE_FAILED = 'profiles_write_failed'
IDENTITIES_WRITE_FAILED = 'identities_write_failed'
RETRIED_FROM_EARLIER_RUN = 'retried_from_earlier_run'
RETRIES_FAILED_AGAIN = 'retries_failed_again'
RETRIED_LANDED = 'retried_landed'
# The run's own checks and files.
INPUT_LEDGER_BALANCED = 'input_ledger_balanced'
EXPORT_FILES = 'export_files'
DEAD_LETTER_FILES = 'dead_letter_files'
_WRITTEN = 'written:'  # + path: a file this run wrote

_FIXED = frozenset(
    {
        PROFILES_COMPARED,
        PROFILES_INVALID,
        PROFILES_WITH_DUPLICATE_KEYS,
        EXPORTS_WITHHELD,
        IDENTITIES_EXPORTED,
        IDENTITIES_WITHHELD,
        PROFILES_WRITE_FAILED,
        IDENTITIES_WRITE_FAILED,
        RETRIED_FROM_EARLIER_RUN,
        RETRIES_FAILED_AGAIN,
        RETRIED_LANDED,
        INPUT_LEDGER_BALANCED,
        EXPORT_FILES,
        DEAD_LETTER_FILES,
        *(f'rows_{snapshot}' for snapshot in SNAPSHOTS),
        *(f'{CLASSIFIED}{reason}' for reason in REASONS),
        *(f'{EXPORTED}{reason}' for reason in REASONS),
        *(f'{DEAD_LETTERS}{stage}' for stage in STAGES),
        *(f'{snapshot}_{figure}' for snapshot in SNAPSHOTS for figure in _SNAPSHOT_FIGURES),
    }
)
# AEP's monitoring figures, derived from the others (`summary.monitoring_figures`).
_DERIVED = re.compile(r'monitor_[a-z_]+')


def declared(name: str) -> bool:
    """Whether `name` is a count of this module."""
    return name in _FIXED or name.startswith(_WRITTEN) or _DERIVED.fullmatch(name) is not None


def classified(reason: str) -> str:
    """Profiles the comparison classified for export for `reason` (`rules.REASONS`)."""
    return _checked(f'{CLASSIFIED}{reason}')


def exported(reason: str) -> str:
    """Export records made for `reason`."""
    return _checked(f'{EXPORTED}{reason}')


def dead_letters(stage: str) -> str:
    """Dead letters of a stage (`STAGES`)."""
    return _checked(f'{DEAD_LETTERS}{stage}')


def rows(snapshot: str) -> str:
    """Rows of a snapshot that reached the comparison."""
    return _checked(f'rows_{snapshot}')


def snapshot_count(snapshot: str, figure: str) -> str:
    """A snapshot's `files`, `records_read`, `records_unreadable` or `profiles_invalid`."""
    return _checked(f'{snapshot}_{figure}')


def total(counters: dict, prefix: str) -> int:
    """The sum of the counts whose names start with `prefix` (`EXPORTED`, `DEAD_LETTERS`,
    ...), in any dict of counters (a run's report with the sink's metrics beside it)."""
    return sum(value for name, value in counters.items() if name.startswith(prefix))


def written_paths(counters: dict) -> list[str]:
    """The files a run's report says it wrote (`written`)."""
    return [name[len(_WRITTEN) :] for name in counters if name.startswith(_WRITTEN)]


def written(path: str) -> str:
    """Names a file the run wrote (files of its output directories not named so are an
    earlier run's, removed once the run has finished)."""
    return f'{_WRITTEN}{path}'


def _checked(name: str) -> str:
    if not declared(name):
        raise KeyError(f'{name!r} is not a count declared in beam_kinesis.counts')
    return name


class Counts(dict):
    """Counts by declared name; adding one that is not declared raises `KeyError`."""

    def __init__(self, counts=None, /, **named: int):
        super().__init__()
        for name, value in {**(counts or {}), **named}.items():
            self.add(name, value)

    def add(self, name: str, value: int = 1) -> Counts:
        """Adds `value` to a count (made if absent); returns self."""
        self[_checked(name)] = self.get(name, 0) + value
        return self

    def total(self, prefix: str) -> int:
        """The sum of the counts whose names start with `prefix` (`CLASSIFIED`, ...)."""
        return total(self, prefix)


class SumCounts(beam.CombineFn):
    """Adds up `Counts` (or dicts of declared counts) into one `Counts`."""

    def create_accumulator(self) -> Counts:
        return Counts()

    def add_input(self, accumulator: Counts, counts) -> Counts:
        for name, value in counts.items():
            accumulator.add(name, value)
        return accumulator

    def merge_accumulators(self, accumulators) -> Counts:
        merged = Counts()
        for accumulator in accumulators:
            self.add_input(merged, accumulator)
        return merged

    def extract_output(self, accumulator: Counts) -> Counts:
        return accumulator


@dataclasses.dataclass
class FileStats:
    """What the read of one snapshot file saw (the input ledger's read side).

    `records` were parsed; `unreadable` could not be (each a `read` dead letter); of the
    records, `invalid` failed validation (a `validate` dead letter each) and `keyed` became
    rows of the comparison; `unkeyed` had no readable key, and `tombstones` are the invalid
    ones that had one (their key is known to be in the snapshot). `broken`: the file broke
    off, and what followed was not read. A read of records made in a pipeline (no file)
    reports only `unkeyed`, with `file` ''.
    """

    snapshot: str
    file: str = ''
    format: str | None = None
    records: int = 0
    unreadable: int = 0
    invalid: int = 0
    keyed: int = 0
    unkeyed: int = 0
    tombstones: int = 0
    broken: bool = False

    def counts(self) -> Counts:
        """The file's figures as run counts."""
        return Counts(
            {
                snapshot_count(self.snapshot, 'files'): 1 if self.file else 0,
                snapshot_count(self.snapshot, 'records_read'): self.records,
                snapshot_count(self.snapshot, 'records_unreadable'): self.unreadable,
                snapshot_count(self.snapshot, 'profiles_invalid'): self.invalid,
            }
        )
