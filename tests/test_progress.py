"""The live progress line: its drawing, the steps that feed it, and a real run on a pty."""

from __future__ import annotations

import io
import logging
import os
import pty
import re
import select
import subprocess
import sys
import time

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_kinesis import progress
from beam_kinesis.progress import ProgressLine, ProgressTally, format_line, runs_in_process
from beam_kinesis.snapshot import ReadSnapshot
from tests.testdata import TESTDATA_PAIR

TOP = os.path.normpath(os.path.join(os.path.dirname(__file__), os.pardir))
TESTDATA = os.path.join(TOP, 'testdata')
# The progress line, as drawn (the summary's table has "records sent" too, without this).
LINE = re.compile(r'\| records sent [\d,]+ \([\d,-]+/s\)')


class FakeTerminal(io.StringIO):
    """What the line is drawn on in a test: text kept, and a terminal as far as it knows."""

    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_line_says_every_count_and_the_rate():
    line = format_line(
        {
            'files_read': 3,
            'records_read': 12345,
            'profiles_compared': 9000,
            'records_sent': 4321,
            'records_throttled': 17,
        },
        75.4,
        812.6,
    )
    assert line == (
        '[1:15] files read 3 | records read 12,345 | profiles compared 9,000 | '
        'records sent 4,321 (813/s) | throttled 17'
    )
    assert '(-/s)' in format_line({}, 0, None)
    assert format_line({}, 3725, None).startswith('[1:02:05] ')


def test_a_terminal_gets_the_line_redrawn_in_place_with_the_recent_rate():
    tally, clock, stream = ProgressTally(), Clock(), FakeTerminal()
    line = ProgressLine(stream, tally, clock=clock)
    assert line.terminal
    tally.add(files_read=1, records_read=500)
    line.draw()
    clock.now += 2
    tally.add(profiles_compared=400, records_sent=300, records_throttled=20)
    line.draw()
    drawn = stream.getvalue()
    # Two drawings over each other: each starts at the line's start and erases the rest.
    assert drawn.count('\r') == 2 and drawn.count('\x1b[K') == 2 and '\n' not in drawn
    last = drawn.split('\r')[-1]
    assert 'records sent 300 (150/s)' in last and 'throttled 20' in last
    assert 'files read 1' in last and 'profiles compared 400' in last
    line.stop()  # the last state, and the line ended for whatever is printed next
    assert stream.getvalue().endswith('\x1b[K\n')


def test_the_rate_follows_the_last_seconds_not_the_whole_run():
    tally, clock = ProgressTally(), Clock()
    line = ProgressLine(FakeTerminal(), tally, clock=clock)
    for _ in range(10):  # 1,000 records a second for 10 s
        clock.now += 1
        tally.add(records_sent=1000)
        line.draw()
    for _ in range(10):  # then nothing for 10 s: the rate falls to nothing
        clock.now += 1
        text = line.draw()
    assert '(0/s)' in text


def test_elsewhere_than_a_terminal_it_logs_plain_lines(caplog):
    stream = io.StringIO()
    tally = ProgressTally()
    tally.add(records_sent=5)
    line = ProgressLine(stream, tally, clock=Clock())
    assert not line.terminal and line._interval == progress.PLAIN_INTERVAL_SECONDS
    with caplog.at_level(logging.INFO, logger='beam_kinesis.progress'):
        line.draw()
        line.stop()
    assert stream.getvalue() == ''  # no carriage return in a log file
    assert [record.getMessage() for record in caplog.records] == [
        'Progress: [0:00] files read 0 | records read 0 | profiles compared 0 | '
        'records sent 5 (-/s) | throttled 0'
    ]


def test_the_thread_draws_until_stopped():
    tally, stream = ProgressTally(), FakeTerminal()
    tally.add(records_read=7)
    with ProgressLine(stream, tally, interval=0.01):
        deadline = time.monotonic() + 5
        while stream.getvalue().count('\r') < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    drawn = stream.getvalue().count('\r')
    assert drawn >= 3
    time.sleep(0.05)
    assert stream.getvalue().count('\r') == drawn  # stopped: nothing drawn after


@pytest.mark.parametrize(
    'args, live',
    [
        ([], True),
        (['--runner', 'DirectRunner'], True),
        (['--runner', 'FnApiRunner', '--direct_running_mode', 'multi_threading'], True),
        (['--runner', 'DirectRunner', '--direct_running_mode', 'multi_processing'], False),
        (['--runner', 'FlinkRunner'], False),
        (['--runner', 'SparkRunner'], False),
        (['--runner', 'apache_beam.runners.dask.dask_runner.DaskRunner'], False),
    ],
)
def test_only_runners_in_this_process_get_a_live_line(args, live):
    options = PipelineOptions(args)
    assert runs_in_process(options) is live
    assert (progress.live_progress(options) is not None) is live
    assert progress.live_progress(options, quiet=True) is None


def test_the_read_step_adds_its_files_and_records_to_the_tally():
    files = {name: os.path.join(TESTDATA, f'{name}.jsonl') for name in ('previous', 'current')}
    lines = {
        name: sum(1 for line in open(path, 'rb') if line.strip()) for name, path in files.items()
    }
    progress.TALLY.reset()
    pipeline = TestPipeline(runner='FnApiRunner')
    for name, path in files.items():
        read = pipeline | f'Read{name}' >> ReadSnapshot(path, label=name)
        assert_that(
            read.records | f'Count{name}' >> beam.combiners.Count.Globally(),
            equal_to([lines[name]]),
            label=f'Check{name}',
        )
    pipeline.run().wait_until_finish()
    counts = progress.TALLY.snapshot()
    assert counts['files_read'] == 2 and counts['records_read'] == sum(lines.values())


def _run_on_a_pty(tmp_path, *extra: str) -> tuple[int, str, str]:
    """Runs the export job with its stderr on a pseudo-terminal; returns (status, stdout,
    what the terminal showed)."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [
            sys.executable,
            '-m',
            'pipelines.export_profiles',
            *TESTDATA_PAIR,
            '--dead_letter',
            str(tmp_path / 'dead'),
            *extra,
        ],
        cwd=TOP,
        stdout=subprocess.PIPE,
        stderr=terminal,
        stdin=subprocess.DEVNULL,
    )
    os.close(terminal)
    shown = bytearray()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 1)
        if not ready:
            if process.poll() is not None:
                break
            continue
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    out, _ = process.communicate(timeout=60)
    return process.returncode, out.decode(), shown.decode('utf-8', 'replace')


def test_a_real_run_on_a_terminal_shows_the_line_and_quiet_does_not(tmp_path):
    status, out, shown = _run_on_a_pty(tmp_path / 'loud')
    assert status == 0, shown[-2000:]
    sent = int(re.search(r'records sent +([\d,]+)', out).group(1).replace(',', ''))
    drawn = [part for part in shown.split('\r') if LINE.search(part)]
    assert drawn, shown[-2000:]
    # The last drawing is the run's end: the counts the summary prints.
    assert f'records sent {sent:,}' in drawn[-1] and 'files read 2' in drawn[-1]
    assert '\x1b[K' in shown
    assert not LINE.search(out)  # the line is on stderr, the summary on stdout
    status, out, shown = _run_on_a_pty(tmp_path / 'quiet', '--quiet')
    assert status == 0, shown[-2000:]
    assert not LINE.search(shown) and '\x1b[K' not in shown
    assert 'Exported 19 profiles' in out
