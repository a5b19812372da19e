"""The end-of-run summary: what was read, exported, sent and dead-lettered."""

from __future__ import annotations

import json
import logging

import apache_beam as beam
import orjson
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter

from beam_kinesis import counts
from beam_kinesis.counts import Counts, FileStats, SumCounts

__all__ = [
    'CollectReport',
    'MONITORING_ROWS',
    'NAMESPACE',
    'collect_counters',
    'dead_letter_counts',
    'excluded_identity_counts',
    'format_summary',
    'identities_in',
    'monitoring_figures',
    'read_counts',
    'read_report',
    'retry_failure_counts',
    'write_failure_counts',
]

_LOGGER = logging.getLogger(__name__)

# Every counter of the package lives in this metrics namespace.
NAMESPACE = 'beam_kinesis'


def collect_counters(result, names=None) -> dict[str, int]:
    """The `beam_kinesis` counters of a finished pipeline, summed over steps (only `names`,
    if given). Returns an empty dict when the runner keeps no metrics (Beam's DaskRunner).
    """
    try:
        query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    except NotImplementedError:
        _LOGGER.warning('This runner reports no metrics; the summary has no counts.')
        return {}
    counters: dict[str, int] = {}
    for counter in query['counters']:
        if names is not None and counter.key.metric.name not in names:
            continue
        value = counter.committed if counter.committed is not None else counter.attempted
        counters[counter.key.metric.name] = counters.get(counter.key.metric.name, 0) + (value or 0)
    return counters


def _line(label: str, value) -> str:
    if isinstance(value, float):
        return f'  {label:<38} {value:>11.1f}%'
    if value is None:
        return f'  {label:<38} {"n/a":>12}'
    return f'  {label:<38} {value:>12,}' if isinstance(value, int) else f'  {label:<38} {value}'


# Counts that say whether a check passed: shown as words, not as a number.
_VERDICTS = {counts.INPUT_LEDGER_BALANCED: ('no', 'yes')}


def format_summary(counters: dict[str, int], sections: dict[str, list[tuple[str, str]]]) -> str:
    """Renders counters as titled sections of `(label, counter_name)` rows."""
    lines = []
    for title, rows in sections.items():
        lines.append(title)
        for label, name in rows:
            value = counters.get(name, None if name.endswith('_rate') else 0)
            if name in _VERDICTS:
                value = f'{_VERDICTS[name][bool(value)]:>12}'
            lines.append(_line(label, value))
    return '\n'.join(lines)


def read_counts(stats: FileStats) -> Counts:
    """A `ReadSnapshot` file's stats as summary counts."""
    return stats.counts()


def dead_letter_counts(entry: dict) -> Counts:
    """One dead letter as summary counts."""
    return Counts({counts.dead_letters(entry.get('stage', 'unknown')): 1})


# AEP's figures of a dataflow run, for this run (see `monitoring_figures` and the README).
MONITORING_ROWS = [
    ('profiles received', 'monitor_profiles_received'),
    ('profiles activated', 'monitor_profiles_activated'),
    ('profiles excluded', 'monitor_profiles_excluded'),
    ('  withheld (absence not trusted)', 'exports_withheld'),
    ('  skipped, invalid in a snapshot', 'profiles_invalid'),
    ('  skipped, key twice in a snapshot', 'profiles_with_duplicate_keys'),
    ('profiles failed', 'monitor_profiles_failed'),
    ('identities received', 'monitor_identities_received'),
    ('identities activated', 'monitor_identities_activated'),
    ('identities excluded (withheld)', 'monitor_identities_excluded'),
    ('identities failed', 'monitor_identities_failed'),
    ('activation rate (identities)', 'monitor_activation_rate'),
]


def identities_in(record: dict) -> int:
    """The identities of an export record: the ids of its identityMap."""
    identity_map = record.get('identityMap')
    if not isinstance(identity_map, dict):
        return 0
    return sum(len(ids) for ids in identity_map.values() if isinstance(ids, list))


def write_failure_counts(entry: dict) -> Counts:
    """A dead letter of this run's sink as summary counts: a failed profile and its
    identities (counted from the record it holds)."""
    identities = 0
    try:
        identities = identities_in(orjson.loads(entry.get('record') or b'{}'))
    except (orjson.JSONDecodeError, TypeError, AttributeError):
        pass
    return Counts({counts.PROFILES_WRITE_FAILED: 1, counts.IDENTITIES_WRITE_FAILED: identities})


def retry_failure_counts(entry: dict) -> Counts:
    """A dead letter of the retry stage (a record of an earlier run that failed again)."""
    return Counts({counts.RETRIES_FAILED_AGAIN: 1})


def excluded_identity_counts(entry: dict) -> Counts:
    """The identities of a profile whose export was withheld (a `join` dead letter that says
    so; its record holds the profile's identities by namespace)."""
    record = entry.get('record')
    if (
        entry.get('stage') != 'join'
        or 'withheld' not in str(entry.get('error'))
        or not isinstance(record, dict)
        or not isinstance(record.get('identities'), dict)
    ):
        return Counts()
    return Counts(
        {counts.IDENTITIES_WITHHELD: sum(len(ids) for ids in record['identities'].values())}
    )


def monitoring_figures(run: dict) -> dict:
    """AEP's dataflow-run figures for this run, from the run's counts (the report's own).

    Profiles *received*: those that qualified for export (any reason of `REASONS`) and those
    excluded: *withheld* (the export rests on an absence that cannot be trusted) or skipped
    (*invalid* in a snapshot, or a *key twice* in one). *Activated*: qualified records that
    Kinesis acknowledged (or that were written to files, without a sink). *Failed*: records
    of this run that are `write` (or `format`) dead letters. Identities are the ids of the
    records' identityMap (of the profile, for a withheld one); the activation rate is
    identities activated over identities received, in percent. Retries of an earlier run's
    records are counted apart (`retried_*`), not here.
    """
    run = Counts(run)
    qualified = run.total(counts.EXPORTED)
    excluded = sum(
        run.get(name, 0)
        for name in (
            counts.EXPORTS_WITHHELD,
            counts.PROFILES_INVALID,
            counts.PROFILES_WITH_DUPLICATE_KEYS,
        )
    )
    failed = run.get(counts.PROFILES_WRITE_FAILED, 0) + run.get(counts.dead_letters('format'), 0)
    identities = run.get(counts.IDENTITIES_EXPORTED, 0)
    identities_excluded = run.get(counts.IDENTITIES_WITHHELD, 0)
    identities_failed = run.get(counts.IDENTITIES_WRITE_FAILED, 0)
    received = identities + identities_excluded
    activated = identities - identities_failed
    figures = {
        'monitor_profiles_received': qualified + excluded,
        'monitor_profiles_activated': qualified - failed,
        'monitor_profiles_excluded': excluded,
        'monitor_profiles_failed': failed,
        'monitor_identities_received': received,
        'monitor_identities_activated': activated,
        'monitor_identities_excluded': identities_excluded,
        'monitor_identities_failed': identities_failed,
    }
    if received:
        figures['monitor_activation_rate'] = round(100.0 * activated / received, 1)
    if counts.RETRIED_FROM_EARLIER_RUN in run:
        figures[counts.RETRIED_LANDED] = run[counts.RETRIED_FROM_EARLIER_RUN] - run.get(
            counts.RETRIES_FAILED_AGAIN, 0
        )
    return figures


class _WriteReport:
    def __init__(self, path: str, derive=None):
        self._path = path
        self._derive = derive

    def __call__(self, run: dict) -> str:
        if self._derive is not None:
            run = {**run, **self._derive(run)}
        with FileSystems.create(self._path) as handle:
            handle.write(json.dumps(run, sort_keys=True).encode('utf-8'))
        return self._path


class CollectReport(beam.PTransform):
    """Sums a PCollection of `Counts` (or dicts of declared counts, `beam_kinesis.counts`)
    into one report file (JSON).

    The pipeline's last step: it depends on every output, so a runner that computes only
    the last leaf of the graph (Beam's DaskRunner) still runs all of it, and the counts do
    not depend on the runner's metrics.
    """

    def __init__(self, path: str, derive=None):
        """
        Args:
          path: where the report is written.
          derive: a function of the summed counts returning more figures to write beside
            them (`monitoring_figures`), or None.
        """
        super().__init__()
        self._path = path
        self._derive = derive

    def expand(self, run_counts):
        return (
            run_counts
            | 'Sum' >> beam.CombineGlobally(SumCounts()).without_defaults()
            | 'WriteReport' >> beam.Map(_WriteReport(self._path, self._derive))
        )


def read_report(path: str) -> dict[str, int]:
    """The counts a `CollectReport` wrote (empty if it never ran)."""
    try:
        with FileSystems.open(path) as handle:
            return json.loads(handle.read().decode('utf-8'))
    except Exception:  # no report: the pipeline failed before its end
        return {}
