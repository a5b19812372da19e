"""The HTML report of a real run, opened in headless Chromium: the charts are drawn, and
the page asks for nothing beyond its own file.

The run sends about 750 records of generated profiles through a proxy that holds each of two
shards to 100 records a second (so the send takes seconds and is throttled), with one
unreadable line in the current snapshot (so there are dead letters of two stages). Chromium
takes a screenshot of the report and writes a net log; the test counts each chart's colour
in the picture and reads from the log every URL the page (not the browser) asked for. Both
checks are first shown to fail where they should: a report without charts has none of the
colours, and a page with an image by URL shows up in the net log.

Set BEAM_KINESIS_REPORT_SCREENSHOT to a path to keep the screenshot.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

pytest.importorskip(
    'matplotlib', reason='the HTML report needs matplotlib (pip install "beam-kinesis[report]")'
)
Image = pytest.importorskip(
    'PIL.Image', reason='Pillow (a matplotlib dependency) reads the screenshot'
)

from beam_kinesis.report import CHART_COLORS, bar_id, html_report  # noqa: E402
from tests.fault_proxy import FaultSchedule, fault_proxy  # noqa: E402, F401 - fixture
from tests.kinesis_servers import kinesalite, target_args  # noqa: E402, F401 - fixture

TOP = os.path.normpath(os.path.join(os.path.dirname(__file__), os.pardir))
CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
WINDOW = (1400, 2300)
# Pixels of a chart's colour that make it drawn: a bar of the smallest chart is thousands.
MIN_PIXELS = 1500

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason='chromium is not installed (apt-get install chromium; .ci/run installs it)',
)


def open_in_chromium(page: str, work) -> tuple[Image.Image, list[str]]:
    """Opens `page` (a local file) in headless Chromium; returns its screenshot and every
    URL the browser requested while it was open."""
    screenshot, net_log = work / 'screenshot.png', work / 'net-log.json'
    done = subprocess.run(
        [
            CHROMIUM,
            '--headless',
            '--no-sandbox',
            '--disable-gpu',
            '--disable-background-networking',
            '--no-first-run',
            '--disable-extensions',
            '--disable-component-update',
            '--disable-sync',
            '--hide-scrollbars',
            # A name that is looked up resolves nowhere, so a request could not reach anything.
            '--host-resolver-rules=MAP * ~NOTFOUND',
            f'--user-data-dir={work / "profile"}',
            f'--log-net-log={net_log}',
            '--net-log-capture-mode=Default',
            f'--window-size={WINDOW[0]},{WINDOW[1]}',
            f'--screenshot={screenshot}',
            f'file://{page}',
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert screenshot.exists(), done.stderr[-2000:]
    return Image.open(screenshot).convert('RGB'), page_requests(net_log)


def page_requests(net_log) -> list[str]:
    """The URLs the page asked the network for, from Chromium's net log.

    The browser makes requests of its own (component updates, its clock, accounts), which
    the host resolver rule sends nowhere; those have no initiating origin ("not an
    origin"). A request of the page has the page's origin as initiator (a file's origin is
    opaque, "null") and its site in the network isolation key.
    """
    text = net_log.read_text(encoding='utf-8', errors='replace').rstrip()
    try:
        log = json.loads(text)
    except json.JSONDecodeError:  # a log cut short: close its list of events
        log = json.loads(text.rstrip(',') + ']}')
    start = log['constants']['logEventTypes']['URL_REQUEST_START_JOB']
    urls = []
    for event in log['events']:
        params = event.get('params') or {}
        if event['type'] != start or 'url' not in params:
            continue
        if params.get('initiator') != 'not an origin' or 'file://' in params.get(
            'network_isolation_key', ''
        ):
            urls.append(params['url'])
    return urls


def pixels_of(image: Image.Image, color: str, tolerance: int = 12) -> int:
    """How many pixels of `image` are within `tolerance` of `color` (#rrggbb) per channel."""
    want = tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))
    bands = image.split()
    masks = [
        band.point(lambda value, c=c: 255 if abs(value - c) <= tolerance else 0)
        for band, c in zip(bands, want)
    ]
    both = masks[0]
    for mask in masks[1:]:
        both = Image.composite(mask, Image.new('L', image.size, 0), both)
    return both.histogram()[255]


def test_the_checks_can_fail(tmp_path):
    """A report without charts has none of their colours; an image by URL is seen."""
    empty = tmp_path / 'empty.html'
    empty.write_text(html_report({}), encoding='utf-8')
    (tmp_path / 'empty').mkdir()
    image, urls = open_in_chromium(str(empty), tmp_path / 'empty')
    assert all(pixels_of(image, color) < MIN_PIXELS for color in CHART_COLORS.values())
    assert urls == []
    leaky = tmp_path / 'leaky.html'
    leaky.write_text(
        '<!DOCTYPE html><html><body><img src="http://example.invalid/x.png"></body></html>',
        encoding='utf-8',
    )
    (tmp_path / 'leaky').mkdir()
    _, urls = open_in_chromium(str(leaky), tmp_path / 'leaky')
    assert urls == ['http://example.invalid/x.png']


def test_a_real_runs_report_draws_its_charts_and_fetches_nothing(
    kinesalite,  # noqa: F811
    fault_proxy,  # noqa: F811
    tmp_path,
):
    data = tmp_path / 'data'
    subprocess.run(
        [
            sys.executable,
            os.path.join(TOP, 'benchmarks', 'generate_snapshots.py'),
            '--profiles',
            '4000',
            '--files',
            '2',
            '--change-rate',
            '0.5',
            '--delete-rate',
            '0.05',
            '--out',
            str(data),
        ],
        check=True,
        capture_output=True,
    )
    with open(sorted((data / 'current').glob('*.jsonl'))[0], 'a', encoding='utf-8') as handle:
        handle.write('this line is not JSON\n')  # a read dead letter, and withheld deletions
    stream = kinesalite.create_stream(2)
    fault_proxy.schedule = FaultSchedule(shard_records_per_second=100)
    page = tmp_path / 'report.html'
    done = subprocess.run(
        [
            sys.executable,
            '-m',
            'pipelines.export_profiles',
            '--current',
            str(data / 'current' / '*.jsonl'),
            '--previous',
            str(data / 'previous' / '*.jsonl'),
            '--destination_config',
            str(data / 'destination.yaml'),
            '--as_of',
            '2024-06-01T00:00:00Z',
            '--dead_letter',
            str(tmp_path / 'dead'),
            *target_args(fault_proxy.endpoint_url, stream),
            '--max_batch_records',
            '100',
            '--base_backoff_seconds',
            '0.05',
            '--html_report',
            str(page),
            '--quiet',
        ],
        cwd=TOP,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 3, done.stderr[-3000:]  # dead letters, as planted
    summary = dict(re.findall(r'^  (\S[\w ,()-]*?) {2,}([\d,]+)$', done.stdout, re.MULTILINE))
    number = {label: int(value.replace(',', '')) for label, value in summary.items()}
    assert number['records throttled'] > 0, 'the shard limit never bit'

    document = page.read_text(encoding='utf-8')
    # Every chart is drawn from this run's counts: a bar per shard that took records, ...
    for shard in ('shardId-000000000000', 'shardId-000000000001'):
        assert f'id="{bar_id("shards", shard)}"' in document
    assert f'id="{bar_id("dead-letters", "read")}"' in document
    assert f'id="{bar_id("dead-letters", "join")}"' in document
    assert 'id="line-throttled"' in document and f'id="{bar_id("rate", "0")}"' in document
    assert f'<td>records sent</td><td class="n">{number["records sent"]:,}</td>' in document

    image, urls = open_in_chromium(str(page), tmp_path)
    keep = os.environ.get('BEAM_KINESIS_REPORT_SCREENSHOT')
    if keep:
        image.save(keep)
    # ... and on screen: every chart's own colour covers a bar's worth of pixels.
    drawn = {chart: pixels_of(image, color) for chart, color in CHART_COLORS.items()}
    assert all(count >= MIN_PIXELS for count in drawn.values()), drawn
    # The page asked the network for nothing (its own file is read without it).
    assert urls == []
