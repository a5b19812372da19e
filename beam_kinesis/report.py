"""The run report as one self-contained HTML file: charts of the run and its summary table.

Whoever runs the job, or reads its output the next morning, wants to see at a glance what
was exported and why, what went to the dead letters, how the records spread over the
stream's shards and how the send went over time (rate, throttling, resends). The report is
a single HTML file that needs nothing but itself to open: the charts are SVG drawn by
matplotlib and written inline, the style is inline, and a Content-Security-Policy forbids
the page any fetch at all, so it can be mailed, attached to a ticket or opened offline.

Everything comes from the run's counters (the report counts of `CollectReport` and the
`beam_kinesis` Beam metrics, which the sink's per-shard and per-second counters are part
of): `html_report(counters, ...)` is a pure function of them.
"""

from __future__ import annotations

import datetime
import html
import io
import os
import re
from typing import Iterable, Mapping

from beam_kinesis.deadletter import (
    STAGE_FORMAT,
    STAGE_JOIN,
    STAGE_READ,
    STAGE_VALIDATE,
    STAGE_WRITE,
)
from beam_kinesis.engine.rules import REASONS
from beam_kinesis.kinesis import SENT_TO_SHARD, THROTTLED_ON_SHARD, TIMELINE

__all__ = [
    'CHART_COLORS',
    'CONTENT_SECURITY_POLICY',
    'ReportPathError',
    'bar_id',
    'check_report_path',
    'html_report',
    'timeline',
    'write_html_report',
]

# No fetch of any kind: inline SVG and inline style only (data: images allowed, none used).
CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

# One colour per chart, so that a picture of the report tells which chart was drawn.
CHART_COLORS = {
    'exports': '#1f77b4',  # blue
    'dead_letters': '#d62728',  # red
    'shards': '#2ca02c',  # green
    'rate': '#ff7f0e',  # orange (sent per second; throttled is drawn in red over it)
    'retries': '#9467bd',  # purple
}
_THROTTLED_COLOR = '#d62728'
_RETRIED_COLOR = '#8c564b'
_STAGES = (STAGE_READ, STAGE_VALIDATE, STAGE_JOIN, STAGE_FORMAT, STAGE_WRITE)
_TIMELINE_NAME = re.compile(re.escape(TIMELINE) + r'(sent|throttled|retried)_(\d+)$')
_METADATA = re.compile(r'\s*<metadata>.*?</metadata>', re.DOTALL)
_NOT_ID = re.compile(r'[^A-Za-z0-9_.-]+')
# A legend under the axes, so that every chart keeps the same width (and the same text size).
_LEGEND_BELOW = {
    'loc': 'upper center',
    'bbox_to_anchor': (0.5, -0.22),
    'ncols': 3,
    'frameon': False,
}
# Inches at matplotlib's 100 dpi: 6.4 x 3.2 draws 640 x 320 CSS pixels.
_FIGURE_SIZE = (6.4, 3.2)


class ReportPathError(ValueError):
    """The report cannot be written where asked: one sentence saying why."""


def check_report_path(path: str) -> str:
    """Checks, before the run reads anything, that `path` can take the report; returns it
    absolute. A run that worked for an hour must not fail at its end for a typo.

    Raises:
      ReportPathError: the directory is missing or not writable, or `path` is a directory.
    """
    absolute = os.path.abspath(path)
    directory = os.path.dirname(absolute)
    if os.path.isdir(absolute):
        raise ReportPathError(
            f'--html_report {path!r} is a directory; give the path of the HTML file to write.'
        )
    if not os.path.isdir(directory):
        raise ReportPathError(
            f'--html_report {path!r}: the directory {directory!r} does not exist.'
        )
    probe = os.path.join(directory, f'.beam-kinesis-report-probe-{os.getpid()}')
    try:
        with open(probe, 'w', encoding='utf-8'):
            pass
        os.remove(probe)
    except OSError as err:
        raise ReportPathError(
            f'--html_report {path!r}: the directory {directory!r} cannot be '
            f'written to ({err.strerror or err}).'
        ) from err
    if os.path.exists(absolute) and not os.access(absolute, os.W_OK):
        raise ReportPathError(f'--html_report {path!r} exists and cannot be written to.')
    return absolute


def timeline(counters: Mapping[str, object]) -> list[tuple[int, int, int, int]]:
    """The sink's per-second counters as `(epoch_second, sent, throttled, retried)` rows,
    one for every second from the first to the last (a quiet second is a row of zeros)."""
    seconds: dict[int, list[int]] = {}
    for name, value in counters.items():
        found = _TIMELINE_NAME.match(name)
        if found and isinstance(value, int):
            row = seconds.setdefault(int(found.group(2)), [0, 0, 0])
            row[('sent', 'throttled', 'retried').index(found.group(1))] += value
    if not seconds:
        return []
    first, last = min(seconds), max(seconds)
    return [(second, *seconds.get(second, (0, 0, 0))) for second in range(first, last + 1)]


def _counts(counters: Mapping[str, object], prefix: str) -> dict[str, int]:
    return {
        name[len(prefix) :]: value
        for name, value in sorted(counters.items())
        if name.startswith(prefix) and isinstance(value, int) and value
    }


def _svg(figure) -> str:
    """The figure as SVG markup to put inside HTML (no XML prolog or doctype)."""
    import matplotlib

    buffer = io.StringIO()
    # Text as text (the browser's own fonts; no glyph paths), and ids that do not change
    # from one run to the next.
    with matplotlib.rc_context({'svg.fonttype': 'none', 'svg.hashsalt': 'beam-kinesis'}):
        figure.savefig(buffer, format='svg', bbox_inches='tight')
    markup = buffer.getvalue()
    start = markup.find('<svg')
    markup = markup[start:] if start >= 0 else markup
    return _METADATA.sub('', markup)  # matplotlib's RDF block: namespace URLs, no content


def bar_id(kind: str, label: str) -> str:
    """The SVG id of the bar of `label` in chart `kind` (`exports`, `dead-letters`,
    `shards`, `rate`, `retries`): what a test or a script looks a bar up by."""
    return f'bar-{kind}-{_NOT_ID.sub("-", label)}'


def _figure():
    # The object API, not pyplot: no global figure state, safe beside other threads.
    from matplotlib.figure import Figure

    figure = Figure(figsize=_FIGURE_SIZE)
    axes = figure.add_subplot()
    axes.spines[['top', 'right']].set_visible(False)
    return figure, axes


def _whole_numbers(axis) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))  # records come whole: no 0.5 ticks


def _bar_chart(
    title: str, values: dict[str, int], color: str, kind: str, xlabel: str = 'records'
) -> str:
    """Horizontal bars, one per label, with its value written beside it."""
    figure, axes = _figure()
    labels = list(values)
    bars = axes.barh(labels, [values[label] for label in labels], color=color)
    for label, bar in zip(labels, bars):
        bar.set_gid(bar_id(kind, label))  # an id in the SVG: the tests find the bars
    axes.bar_label(bars, labels=[f'{values[label]:,}' for label in labels], padding=3)
    axes.invert_yaxis()  # the first label on top, as in the summary
    axes.set_title(title, loc='left')
    axes.set_xlabel(xlabel)
    axes.margins(x=0.15)
    _whole_numbers(axes.xaxis)
    return _svg(figure)


def _shard_chart(sent: dict[str, int], throttled: dict[str, int]) -> str:
    """Records acknowledged per shard, and the attempts each shard throttled beside them."""
    figure, axes = _figure()
    shards = sorted(set(sent) | set(throttled))
    positions = range(len(shards))
    height = 0.4
    bars = axes.barh(
        [p - height / 2 for p in positions],
        [sent.get(s, 0) for s in shards],
        height,
        color=CHART_COLORS['shards'],
        label='acknowledged',
    )
    for shard, bar in zip(shards, bars):
        bar.set_gid(bar_id('shards', shard))
    axes.bar_label(bars, labels=[f'{sent.get(s, 0):,}' for s in shards], padding=3)
    if throttled:
        over = axes.barh(
            [p + height / 2 for p in positions],
            [throttled.get(s, 0) for s in shards],
            height,
            color=_THROTTLED_COLOR,
            label='throttled attempts',
        )
        axes.bar_label(
            over,
            labels=[f'{throttled.get(s, 0):,}' if throttled.get(s) else '' for s in shards],
            padding=3,
        )
        axes.legend(**_LEGEND_BELOW)
    axes.set_yticks(list(positions), [shard.replace('shardId-', '') for shard in shards])
    axes.invert_yaxis()
    axes.set_title('Records per shard', loc='left')
    axes.set_xlabel('records')
    axes.set_ylabel('shard')
    axes.margins(x=0.15)
    _whole_numbers(axes.xaxis)
    return _svg(figure)


def _rate_chart(rows: list[tuple[int, int, int, int]]) -> str:
    """Records acknowledged per second of the run, with throttled and resent attempts."""
    figure, axes = _figure()
    first = rows[0][0]
    seconds = [row[0] - first for row in rows]
    bars = axes.bar(
        seconds,
        [row[1] for row in rows],
        width=1.0,
        align='edge',
        color=CHART_COLORS['rate'],
        label='acknowledged / s',
    )
    for second, bar in zip(seconds, bars):
        bar.set_gid(bar_id('rate', str(second)))
    edges = seconds + [seconds[-1] + 1]
    if any(row[2] for row in rows):
        axes.stairs(
            [row[2] for row in rows],
            edges,
            color=_THROTTLED_COLOR,
            linewidth=2,
            label='throttled / s',
            gid='line-throttled',
        )
    if any(row[3] for row in rows):
        # Points, not a line: resends follow throttling within the second, so a line would
        # lie on the throttled one and hide it.
        resent = [(second + 0.5, row[3]) for second, row in zip(seconds, rows) if row[3]]
        axes.plot(
            [x for x, _ in resent],
            [y for _, y in resent],
            'D',
            color=_RETRIED_COLOR,
            markersize=6,
            label='resent / s',
            gid='line-retried',
        )
    axes.set_title('Send rate and throttling over the run', loc='left')
    axes.set_xlabel(f'seconds since {_utc(first)}')
    axes.set_ylabel('records per second')
    _whole_numbers(axes.xaxis)
    _whole_numbers(axes.yaxis)
    axes.legend(**_LEGEND_BELOW)
    return _svg(figure)


def _utc(second: int) -> str:
    return datetime.datetime.fromtimestamp(second, datetime.timezone.utc).strftime('%H:%M:%S UTC')


def _chart_block(title: str, svg: str | None, empty: str, note: str) -> str:
    body = svg if svg is not None else f'<p class="empty">{html.escape(empty)}</p>'
    return (
        f'<figure aria-label="{html.escape(title)}">{body}'
        f'<figcaption>{html.escape(note)}</figcaption></figure>'
    )


def _value(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return 'n/a' if value is None else str(value)
    if isinstance(value, int):
        return f'{value:,}'
    if isinstance(value, float):
        return f'{value:,.1f}%'
    return str(value)


def _summary_table(
    counters: Mapping[str, object], sections: Mapping[str, Iterable[tuple[str, str]]]
) -> str:
    rows = []
    for title, entries in sections.items():
        rows.append(f'<tr class="section"><th colspan="2">{html.escape(title)}</th></tr>')
        for label, name in entries:
            value = counters.get(name, None if name.endswith('_rate') else 0)
            rows.append(
                f'<tr><td>{html.escape(label)}</td>'
                f'<td class="n">{html.escape(_value(value))}</td></tr>'
            )
    return '<table class="summary">' + ''.join(rows) + '</table>'


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 22px; margin: 0 0 8px; }
h2 { font-size: 17px; margin: 24px 0 8px; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; margin: 0; }
dl.facts dt { color: #555; } dl.facts dd { margin: 0; }
.charts { display: grid; grid-template-columns: repeat(2, 660px); gap: 12px; }
figure { margin: 0; border: 1px solid #ddd; padding: 8px; }
figure svg { width: 640px; height: auto; }
figcaption { color: #555; font-size: 12px; }
p.empty { width: 640px; height: 120px; color: #777; font-style: italic; }
table.summary { border-collapse: collapse; font-size: 14px; }
table.summary td, table.summary th { padding: 2px 12px; text-align: left; }
table.summary td.n { text-align: right; font-variant-numeric: tabular-nums; }
table.summary tr.section th { padding-top: 10px; border-bottom: 1px solid #ccc; }
"""


def html_report(
    counters: Mapping[str, object],
    *,
    sections: Mapping[str, Iterable[tuple[str, str]]] | None = None,
    facts: Mapping[str, str] | None = None,
    title: str = 'beam-kinesis run report',
) -> str:
    """The run report as one HTML document (a string), from the run's counters.

    Args:
      counters: the run's counts by name: the report counts (`exported_<reason>`,
        `dead_letters_<stage>`, ...) and the sink's Beam counters (`records_sent`,
        `records_retried`, `records_sent_to_<shard>`, `records_throttled_on_<shard>`,
        `per_second_<kind>_<epoch second>`, ...). Values that are not numbers (a
        distribution already written as text) are shown in the table only.
      sections: the summary table, as the job's text summary has it: titles and
        `(label, counter_name)` rows (None: no table).
      facts: lines shown under the title (when, what, where, how it ended).
      title: the page's title.
    """
    exports = {
        reason.replace('_', ' '): counters.get(f'exported_{reason}', 0) or 0 for reason in REASONS
    }
    withheld = counters.get('exports_withheld', 0) or 0
    if withheld:
        exports['withheld (dead letter)'] = withheld
    dead = {stage: counters.get(f'dead_letters_{stage}', 0) or 0 for stage in _STAGES}
    dead.update(
        {
            name: value
            for name, value in _counts(counters, 'dead_letters_').items()
            if name not in dead
        }
    )
    sent_by_shard = _counts(counters, SENT_TO_SHARD)
    throttled_by_shard = _counts(counters, THROTTLED_ON_SHARD)
    rows = timeline(counters)
    sink_ran = any(
        isinstance(counters.get(name), int) for name in ('records_sent', 'put_records_calls')
    )
    retries = {
        'acknowledged': counters.get('records_sent', 0) or 0,
        'resent': counters.get('records_retried', 0) or 0,
        'throttled attempts': counters.get('records_throttled', 0) or 0,
        'given up (write dead letters)': counters.get('records_dead_lettered', 0) or 0,
        'PutRecords calls': counters.get('put_records_calls', 0) or 0,
    }
    charts = [
        _chart_block(
            'Exports by reason',
            _bar_chart('Exports by reason', exports, CHART_COLORS['exports'], 'exports', 'profiles')
            if any(exports.values())
            else None,
            'No profile was exported in this run.',
            'Profiles whose export record was made, by the first rule that exported them; '
            'withheld ones rest on an absence that cannot be trusted.',
        ),
        _chart_block(
            'Dead letters by stage',
            _bar_chart('Dead letters by stage', dead, CHART_COLORS['dead_letters'], 'dead-letters')
            if any(dead.values())
            else None,
            'No dead letter: every record was used.',
            'Records in the dead-letter files, by the step that could not use them.',
        ),
        _chart_block(
            'Records per shard',
            _shard_chart(sent_by_shard, throttled_by_shard)
            if sent_by_shard or throttled_by_shard
            else None,
            'Nothing was sent to Kinesis in this run (or the runner keeps no metrics).',
            'Records Kinesis acknowledged on each shard (the ShardId of its answer), '
            'and the attempts each shard refused as over its throughput.',
        ),
        _chart_block(
            'Send rate and throttling',
            _rate_chart(rows) if rows else None,
            'Nothing was sent to Kinesis in this run (or the runner keeps no metrics).',
            'Per second of wall clock, over every worker: records acknowledged, '
            'attempts throttled and records resent.',
        ),
        _chart_block(
            'Sends and retries',
            _bar_chart('Sends and retries', retries, CHART_COLORS['retries'], 'retries')
            if sink_ran and any(retries.values())
            else None,
            'No Kinesis sink in this run.',
            'Resends are of single failed records (throttled or failed entries), not of '
            'whole requests; given-up records are write dead letters.',
        ),
    ]
    facts_html = ''.join(
        f'<dt>{html.escape(name)}</dt><dd>{html.escape(str(value))}</dd>'
        for name, value in (facts or {}).items()
    )
    table = _summary_table(counters, sections) if sections else ''
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">'
        f'<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>'
        f'<h1>{html.escape(title)}</h1><dl class="facts">{facts_html}</dl>'
        f'<h2>Charts</h2><div class="charts">{"".join(charts)}</div>'
        + (f'<h2>Summary</h2>{table}' if table else '')
        + '</body></html>\n'
    )


def write_html_report(path: str, counters: Mapping[str, object], **kwargs) -> str:
    """Writes `html_report(counters, **kwargs)` to `path` (whole, or not at all: it is
    written beside and renamed, so a reader never opens half a report); returns the path."""
    document = html_report(counters, **kwargs)
    partial = f'{path}.partial-{os.getpid()}'
    with open(partial, 'w', encoding='utf-8') as handle:
        handle.write(document)
    os.replace(partial, path)
    return path
