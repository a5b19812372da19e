"""The end-of-run summary: what was read, exported, sent and dead-lettered, from metrics."""

from __future__ import annotations

import logging

from apache_beam.metrics.metric import MetricsFilter

__all__ = ['collect_counters', 'format_summary', 'NAMESPACE']

_LOGGER = logging.getLogger(__name__)

# Every counter of the package lives in this metrics namespace.
NAMESPACE = 'beam_kinesis'


def collect_counters(result) -> dict[str, int]:
    """The `beam_kinesis` counters of a finished pipeline, summed over steps.

    Returns an empty dict when the runner keeps no metrics (Beam's DaskRunner).
    """
    try:
        query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    except NotImplementedError:
        _LOGGER.warning('This runner reports no metrics; the summary has no counts.')
        return {}
    counters: dict[str, int] = {}
    for counter in query['counters']:
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
