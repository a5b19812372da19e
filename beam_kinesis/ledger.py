"""Input ledger: reconcile what the job read against the files, before anything is written.

Beam runners have been seen to lose records silently (in `multi_processing` mode the tail of
one file vanished, and its profiles then looked deleted). The job therefore counts every
file's records a second, independent way (JSON Lines lines, the Parquet footer's row count,
the Avro blocks' record counts) and checks, once the join is done:

- per file: records read + records unreadable == the independent count;
- per snapshot: profiles keyed at the read == profile rows that reached the join;
- profiles classified for export == records made + `format` dead letters (nothing lost
  between the comparison and the formatting).

The export records pass through a gate that waits for that verdict, so a mismatch stops the
job before anything is written to Kinesis or to files, with both counts in the message.
"""

from __future__ import annotations

import gzip

import apache_beam as beam
import fastavro
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_kinesis import counts
from beam_kinesis.counts import FileStats
from beam_kinesis.snapshot import detect_format

__all__ = ['InputLedgerError', 'ReconcileInput', 'count_file_records', 'reconcile']

_CHUNK_BYTES = 1 << 20


class InputLedgerError(RuntimeError):
    """What the job read does not add up to what the files hold."""


def count_file_records(path: str, fmt: str) -> int:
    """Counts a snapshot file's records without parsing them.

    JSON Lines: non-blank lines. Parquet: the footer's row count. Avro: the record counts of
    its blocks (blocks are not decoded).
    """
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        if fmt == 'parquet':
            return pq.ParquetFile(raw).metadata.num_rows
        if fmt == 'avro':
            return sum(block.num_records for block in fastavro.block_reader(raw))
        handle = gzip.GzipFile(fileobj=raw) if path.lower().endswith('.gz') else raw
        return _count_lines(handle)


def _count_lines(handle) -> int:
    """Non-blank lines (a byte order mark at the start is not content), read in chunks so
    that no line is ever held whole."""
    count, blank, first = 0, True, True
    while True:
        chunk = handle.read(_CHUNK_BYTES)
        if not chunk:
            break
        if first:
            chunk, first = chunk.removeprefix(b'\xef\xbb\xbf'), False
        pieces = chunk.split(b'\n')
        tail = pieces.pop()
        for piece in pieces:
            if not blank or (piece and not piece.isspace()):
                count += 1
            blank = True
        if tail and not tail.isspace():
            blank = False
    return count + (not blank)


class _CountFileFn(beam.DoFn):
    def __init__(self, input_format: str | None):
        self._format = input_format

    def process(self, labelled):
        label, path = labelled
        try:
            count = count_file_records(path, detect_format(path, self._format))
        except Exception as err:  # reported in the verdict, next to what the read saw
            yield {
                'ledger': 'expected',
                'snapshot': label,
                'file': path,
                'error': f'{type(err).__name__}: {err}',
            }
            return
        yield {'ledger': 'expected', 'snapshot': label, 'file': path, 'count': count}


def _merge(entries) -> dict:
    """Folds expected counts (dicts), read stats (`FileStats`) and the join's and the
    formatting's `Counts` into one ledger."""
    ledger = {'files': {}, 'joined': {}, 'cases': {}}
    for entry in entries:
        if isinstance(entry, FileStats):
            if not entry.file:  # records made in a pipeline: no file to reconcile
                continue
            # By snapshot and path: one file may be both snapshots (a diff against itself).
            slot = ledger['files'].setdefault(
                (entry.snapshot, entry.file), {'snapshot': entry.snapshot}
            )
            for name in ('records', 'unreadable', 'invalid', 'keyed', 'tombstones'):
                slot[name] = slot.get(name, 0) + getattr(entry, name)
            slot['broken'] = slot.get('broken', False) or entry.broken
            slot['reads'] = slot.get('reads', 0) + 1
        elif entry.get('ledger') == 'expected':
            slot = ledger['files'].setdefault(
                (entry['snapshot'], entry['file']), {'snapshot': entry['snapshot']}
            )
            slot['expected'] = entry.get('count')
            slot['count_error'] = entry.get('error')
        else:  # the join's and the formatting's counts
            for side in counts.SNAPSHOTS:
                ledger['joined'][side] = ledger['joined'].get(side, 0) + entry.get(
                    counts.rows(side), 0
                )
            for name, value in entry.items():
                if name.startswith(
                    (counts.CLASSIFIED, counts.EXPORTED)
                ) or name == counts.dead_letters('format'):
                    ledger['cases'][name] = ledger['cases'].get(name, 0) + value
    return ledger


class _MergeLedger(beam.CombineFn):
    def create_accumulator(self):
        return []

    def add_input(self, accumulator, entry):
        accumulator.append(entry)
        return accumulator

    def merge_accumulators(self, accumulators):
        return [entry for accumulator in accumulators for entry in accumulator]

    def extract_output(self, accumulator):
        return _merge(accumulator)


def reconcile(ledger: dict, snapshots: tuple[str, ...]) -> dict:
    """Checks a merged ledger; returns its totals per snapshot.

    Raises:
      InputLedgerError: a file whose records read (plus unreadable) differ from its
        independent count, a file read twice or never, keyed profiles that did not all
        reach the join, or profiles classified for export that did not all reach the
        formatting. The message has both counts.
    """
    problems = []
    totals = {name: {'files': 0, 'records': 0, 'keyed': 0} for name in snapshots}
    for (name, path), slot in sorted(ledger['files'].items()):
        totals[name]['files'] += 1
        read = slot.get('records', 0) + slot.get('unreadable', 0)
        totals[name]['records'] += slot.get('records', 0)
        totals[name]['keyed'] += slot.get('keyed', 0)
        totals[name]['rows'] = (
            totals[name].get('rows', 0) + slot.get('keyed', 0) + slot.get('tombstones', 0)
        )
        if slot.get('reads', 0) != 1:
            problems.append(f'{path} was read {slot.get("reads", 0)} times, not once')
        elif slot.get('broken'):
            continue  # the read dead-lettered the unreadable rest of the file; nothing to count
        elif slot.get('count_error'):
            problems.append(
                f'{path} could not be counted ({slot["count_error"]}) but was read '
                f'as {read} records'
            )
        elif read != slot.get('expected'):
            problems.append(
                f'{path}: the job read {read} records (including unreadable ones) '
                f'but the file holds {slot.get("expected")}'
            )
    for name in snapshots:
        joined = ledger['joined'].get(name, 0)
        rows = totals[name].pop('rows', 0)
        if joined != rows:
            problems.append(
                f'the {name} snapshot: {rows} profiles were keyed at the read but '
                f'{joined} reached the join'
            )
    cases = ledger.get('cases', {})
    classified = sum(value for name, value in cases.items() if name.startswith(counts.CLASSIFIED))
    formatted = sum(
        value
        for name, value in cases.items()
        if name.startswith(counts.EXPORTED) or name == counts.dead_letters('format')
    )
    if classified != formatted:
        problems.append(
            f'{classified} profiles were classified for export but {formatted} '
            'reached the formatting (records made or format dead letters)'
        )
    if problems:
        raise InputLedgerError(
            'The input ledger does not balance, so nothing was written: '
            + '; '.join(problems[:5])
            + (f'; and {len(problems) - 5} more' if len(problems) > 5 else '')
        )
    return totals


class ReconcileInput(beam.PTransform):
    """Builds the input ledger's verdict: a one-element PCollection of per-snapshot totals,
    or a failed pipeline (`InputLedgerError`) when the counts disagree.

    Input: `(read_stats, join_stats)`, the `stats` of the `ReadSnapshot`s (flattened), and
    those of `DetectChanges` flattened with `FormatExport`'s and its dead letters' counts.
    """

    def __init__(self, files: dict[str, list[str]], input_format: str | None = None):
        """
        Args:
          files: the files of each snapshot, `{'previous': [...], 'current': [...]}`.
          input_format: the `--input_format` override, if any.
        """
        super().__init__()
        self._files = [(name, path) for name, paths in files.items() for path in paths]
        self._snapshots = tuple(files)
        self._format = input_format

    def expand(self, stats):
        read_stats, join_stats = stats
        expected = (
            read_stats.pipeline
            | 'ListFiles' >> beam.Create(self._files)
            | 'SpreadFiles' >> beam.Reshuffle()
            | 'CountRecords' >> beam.ParDo(_CountFileFn(self._format))
        )
        snapshots = self._snapshots
        return (
            (expected, read_stats, join_stats)
            | 'AllCounts' >> beam.Flatten()
            | 'Merge' >> beam.CombineGlobally(_MergeLedger()).without_defaults()
            | 'Reconcile' >> beam.Map(reconcile, snapshots)
        )


def _pass(element, verdict):
    del verdict  # only waited for
    return element


def after_ledger(records, verdict, label: str = 'AfterInputLedger'):
    """`records`, held back until the input ledger's verdict exists (and balanced)."""
    return records | label >> beam.Map(_pass, verdict=beam.pvalue.AsSingleton(verdict))
