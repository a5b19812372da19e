"""The HTML run report: its charts from counters, its path checked at start, no fetch."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytest.importorskip(
    'matplotlib', reason='the HTML report needs matplotlib (pip install "beam-kinesis[report]")'
)

from beam_kinesis.engine.rules import REASONS  # noqa: E402
from beam_kinesis.report import (  # noqa: E402
    CONTENT_SECURITY_POLICY,
    ReportPathError,
    bar_id,
    check_report_path,
    html_report,
    timeline,
    write_html_report,
)
from tests.testdata import TESTDATA_PAIR  # noqa: E402

TOP = os.path.normpath(os.path.join(os.path.dirname(__file__), os.pardir))
TESTDATA = os.path.join(TOP, 'testdata')
SECOND = 1_717_200_000


def counters() -> dict:
    found = {
        'exported_segment_change': 120,
        'exported_identity_change': 30,
        'exported_deletion': 6,
        'dead_letters_read': 4,
        'dead_letters_write': 1,
        'records_sent': 155,
        'records_retried': 12,
        'records_throttled': 12,
        'records_dead_lettered': 1,
        'put_records_calls': 5,
        'records_sent_to_shardId-000000000000': 100,
        'records_sent_to_shardId-000000000001': 55,
        'records_throttled_on_shardId-000000000001': 12,
        f'per_second_sent_{SECOND}': 100,
        f'per_second_sent_{SECOND + 3}': 55,
        f'per_second_throttled_{SECOND}': 12,
        f'per_second_retried_{SECOND + 3}': 12,
        'request_latency_msecs': '5 requests: mean 40, min 20, max 90',
    }
    return found


def bar_width(document: str, identifier: str) -> float:
    """The horizontal extent of the bar drawn under SVG id `identifier`."""
    found = re.search(rf'<g id="{re.escape(identifier)}">\s*<path d="([^"]+)"', document)
    assert found, f'no bar {identifier}'
    xs = [float(x) for x in re.findall(r'([\d.]+) [\d.]+', found.group(1))]
    return max(xs) - min(xs)


def bar_height(document: str, identifier: str) -> float:
    """The vertical extent of the bar drawn under SVG id `identifier`."""
    found = re.search(rf'<g id="{re.escape(identifier)}">\s*<path d="([^"]+)"', document)
    assert found, f'no bar {identifier}'
    ys = [float(y) for y in re.findall(r'[\d.]+ ([\d.]+)', found.group(1))]
    return max(ys) - min(ys)


def test_timeline_has_a_row_for_every_second_from_first_to_last():
    assert timeline(counters()) == [
        (SECOND, 100, 12, 0),
        (SECOND + 1, 0, 0, 0),
        (SECOND + 2, 0, 0, 0),
        (SECOND + 3, 55, 0, 12),
    ]
    assert timeline({'records_sent': 3}) == []


def test_bars_are_drawn_in_proportion_to_the_counts():
    document = html_report(counters())
    # Exports: 120 segment changes against 30 identity changes.
    ratio = bar_width(document, bar_id('exports', 'segment change')) / bar_width(
        document, bar_id('exports', 'identity change')
    )
    assert ratio == pytest.approx(4, rel=0.01)
    assert bar_width(document, bar_id('exports', 'newly mapped')) == 0
    assert bar_width(document, bar_id('dead-letters', 'read')) == pytest.approx(
        4 * bar_width(document, bar_id('dead-letters', 'write')), rel=0.01
    )
    assert bar_width(document, bar_id('shards', 'shardId-000000000000')) == pytest.approx(
        100 / 55 * bar_width(document, bar_id('shards', 'shardId-000000000001')), rel=0.01
    )
    assert bar_width(document, bar_id('retries', 'resent')) > 0
    # The rate chart: a bar per second since the first, quiet ones included (height 0).
    heights = [bar_height(document, bar_id('rate', str(second))) for second in range(4)]
    assert heights[1] == heights[2] == 0
    assert heights[0] == pytest.approx(100 / 55 * heights[3], rel=0.01)
    assert 'id="line-throttled"' in document and 'id="line-retried"' in document


def test_the_page_can_fetch_nothing():
    document = html_report(
        counters(),
        sections={'Kinesis': [('records sent', 'records_sent')]},
        facts={'as of': '2024-06-01T00:00:00Z'},
    )
    assert (
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">'
        in document
    )
    # Nothing by URL: no src or href attributes, no CSS url() or @import outside the page.
    assert not re.search(r'\s(?:src|href|xlink:href)="(?!#)', document)
    assert not re.search(r'url\((?!#)', document) and '@import' not in document
    assert '<script' not in document
    assert document.count('<svg') == 5


def test_the_summary_table_and_facts_are_in_the_page():
    sections = {
        'Exported': [
            (f'by {reason.replace("_", " ")}', f'exported_{reason}') for reason in REASONS
        ],
        'Kinesis': [('request latency msecs', 'request_latency_msecs')],
    }
    document = html_report(
        counters(), sections=sections, facts={'destination': "Kinesis stream 'a<b>'"}
    )
    assert '<td>by segment change</td><td class="n">120</td>' in document
    assert '<td>by first run</td><td class="n">0</td>' in document
    assert '5 requests: mean 40, min 20, max 90' in document
    assert 'Kinesis stream &#x27;a&lt;b&gt;&#x27;' in document  # escaped, not markup


def test_a_run_without_a_sink_says_so_instead_of_empty_charts():
    document = html_report({'exported_first_run': 19})
    assert document.count('<svg') == 1  # exports only
    assert 'No dead letter: every record was used.' in document
    assert 'Nothing was sent to Kinesis in this run' in document
    assert 'No Kinesis sink in this run.' in document


def test_the_report_file_is_written_whole(tmp_path):
    path = str(tmp_path / 'report.html')
    assert write_html_report(path, counters()) == path
    assert open(path, encoding='utf-8').read() == html_report(counters())
    assert os.listdir(tmp_path) == ['report.html']  # no partial file left beside it


def test_a_report_path_that_cannot_be_written_is_refused_in_one_sentence(tmp_path):
    with pytest.raises(ReportPathError, match=r"the directory '.*missing' does not exist\.$"):
        check_report_path(str(tmp_path / 'missing' / 'report.html'))
    with pytest.raises(ReportPathError, match='is a directory'):
        check_report_path(str(tmp_path))
    (tmp_path / 'file').write_text('x')
    with pytest.raises(ReportPathError, match='does not exist'):
        check_report_path(str(tmp_path / 'file' / 'report.html'))
    good = tmp_path / 'sub' / 'report.html'
    good.parent.mkdir()
    assert check_report_path(str(good)) == str(good)
    assert os.listdir(good.parent) == []  # the write probe is gone


def job(tmp_path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            '-m',
            'pipelines.export_profiles',
            *TESTDATA_PAIR,
            '--output',
            str(tmp_path / 'out'),
            '--dead_letter',
            str(tmp_path / 'dead'),
            *extra,
        ],
        cwd=TOP,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_job_refuses_a_bad_report_path_before_reading_anything(tmp_path):
    done = job(tmp_path, '--html_report', str(tmp_path / 'nowhere' / 'report.html'))
    lines = [line for line in done.stderr.splitlines() if line.startswith('beam-kinesis')]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0] == (
        f'beam-kinesis-export: --html_report '
        f"'{tmp_path / 'nowhere' / 'report.html'}': the directory "
        f"'{tmp_path / 'nowhere'}' does not exist."
    )
    assert 'Traceback' not in done.stderr
    assert not (tmp_path / 'out').exists() and not (tmp_path / 'dead').exists()


def test_the_job_writes_the_report_of_a_files_only_run(tmp_path):
    path = tmp_path / 'report.html'
    done = job(tmp_path, '--html_report', str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith(f'Run report (HTML): {path}')
    document = path.read_text(encoding='utf-8')
    exported = {
        reason: int(re.search(rf'by {reason.replace("_", " ")} +(\d+)', done.stdout).group(1))
        for reason in REASONS
    }
    assert sum(exported.values()) == 19
    for reason, count in exported.items():
        label = reason.replace('_', ' ')
        assert f'<td>by {label}</td><td class="n">{count}</td>' in document
        assert (bar_width(document, bar_id('exports', label)) > 0) == (count > 0)
    assert 'No Kinesis sink in this run.' in document
    assert '<dt>as of</dt><dd>2024-06-01T00:00:00Z</dd>' in document
