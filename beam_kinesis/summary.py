"""The end-of-run summary: what was read, exported, sent and dead-lettered."""

from __future__ import annotations

import json
import logging

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter

__all__ = ['CollectReport', 'NAMESPACE', 'collect_counters', 'dead_letter_counts',
           'format_summary', 'read_counts', 'read_report']

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
        counters[counter.key.metric.name] = counters.get(counter.key.metric.name, 0) + (
            value or 0)
    return counters


def _line(label: str, value) -> str:
    return f'  {label:<38} {value:>12,}' if isinstance(value, int) else f'  {label:<38} {value}'


def format_summary(counters: dict[str, int], sections: dict[str, list[tuple[str, str]]]
                   ) -> str:
    """Renders counters as titled sections of `(label, counter_name)` rows."""
    lines = []
    for title, rows in sections.items():
        lines.append(title)
        for label, name in rows:
            lines.append(_line(label, counters.get(name, 0)))
    return '\n'.join(lines)


class _SumCounts(beam.CombineFn):
    """Adds up dicts of counts."""

    def create_accumulator(self):
        return {}

    def add_input(self, accumulator, counts):
        for name, value in counts.items():
            accumulator[name] = accumulator.get(name, 0) + value
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = {}
        for accumulator in accumulators:
            self.add_input(merged, accumulator)
        return merged

    def extract_output(self, accumulator):
        return accumulator


def read_counts(stats: dict) -> dict:
    """A `ReadSnapshot` file's stats as summary counts."""
    name = stats['snapshot']
    return {f'{name}_files': 1, f'{name}_records_read': stats['records'],
            f'{name}_records_unreadable': stats['unreadable'],
            f'{name}_profiles_invalid': stats['invalid']}


def dead_letter_counts(entry: dict) -> dict:
    """One dead letter as summary counts."""
    return {f'dead_letters_{entry.get("stage", "unknown")}': 1}


class _WriteReport:
    def __init__(self, path: str):
        self._path = path

    def __call__(self, counts: dict) -> str:
        with FileSystems.create(self._path) as handle:
            handle.write(json.dumps(counts, sort_keys=True).encode('utf-8'))
        return self._path


class CollectReport(beam.PTransform):
    """Sums a PCollection of dicts of counts into one report file (JSON).

    The pipeline's last step: it depends on every output, so a runner that computes only
    the last leaf of the graph (Beam's DaskRunner) still runs all of it, and the counts do
    not depend on the runner's metrics.
    """

    def __init__(self, path: str):
        super().__init__()
        self._path = path

    def expand(self, counts):
        return (counts
                | 'Sum' >> beam.CombineGlobally(_SumCounts()).without_defaults()
                | 'WriteReport' >> beam.Map(_WriteReport(self._path)))


def read_report(path: str) -> dict[str, int]:
    """The counts a `CollectReport` wrote (empty if it never ran)."""
    try:
        with FileSystems.open(path) as handle:
            return json.loads(handle.read().decode('utf-8'))
    except Exception:  # no report: the pipeline failed before its end
        return {}
