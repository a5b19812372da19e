"""A live progress line for long runs: files read, profiles compared, records sent, rate.

Beam's metrics of a running pipeline are not readable from the launcher while the
DirectRunner's `run()` blocks, so the read, compare and sink steps also add to a tally of
this process (`count`), which a daemon thread draws. That is right wherever those steps run
in the launcher's process: the DirectRunner in memory or in threads (Beam's FnApiRunner).
Elsewhere (subprocess workers, Dask, Flink, Spark, Dataflow) the workers' tallies are their
own, so nothing is drawn live and the end summary stays the record of the run
(`runs_in_process`).

On a terminal the line is redrawn in place (`\\r`); on anything else (a file, a pipe, CI's
log) a plain line is logged at INFO every `PLAIN_INTERVAL_SECONDS`, never a carriage return.
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
import time
from typing import Callable, TextIO

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

__all__ = [
    'FIELDS',
    'PLAIN_INTERVAL_SECONDS',
    'ProgressLine',
    'ProgressTally',
    'TERMINAL_INTERVAL_SECONDS',
    'TALLY',
    'count',
    'format_line',
    'live_progress',
    'runs_in_process',
]

_LOGGER = logging.getLogger(__name__)

# What the tally counts, in the order the line shows them.
FIELDS = ('files_read', 'records_read', 'profiles_compared', 'records_sent', 'records_throttled')

# A terminal's line is redrawn often enough to look alive, rarely enough to cost nothing.
TERMINAL_INTERVAL_SECONDS = 0.5
# A log gets a line every so often: enough to see a run move, not enough to bury its errors.
PLAIN_INTERVAL_SECONDS = 10.0
# The send rate is taken over this many seconds, so a pause shows as a falling rate soon.
RATE_WINDOW_SECONDS = 5.0

# Runners that run every DoFn in the launcher's process, unless told to start subprocesses.
_IN_PROCESS_RUNNERS = ('', 'DirectRunner', 'SwitchingDirectRunner', 'FnApiRunner')
_IN_PROCESS_MODES = (None, 'in_memory', 'multi_threading')


class ProgressTally:
    """Counts of this process, added to by any thread (bundles and sending threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()

    def add(self, **counts: int) -> None:
        """Adds `counts` (names of `FIELDS`; zeros are ignored)."""
        with self._lock:
            for name, value in counts.items():
                if value:
                    self._counts[name] += value

    def snapshot(self) -> dict[str, int]:
        """The counts now, every field present."""
        with self._lock:
            return {name: self._counts.get(name, 0) for name in FIELDS}

    def reset(self) -> None:
        """Forgets every count (a new run in the same process starts from zero)."""
        with self._lock:
            self._counts.clear()


# The tally of this process: the steps add to it wherever they run; it is drawn only where
# they run in the launcher's process.
TALLY = ProgressTally()


def count(**counts: int) -> None:
    """Adds to this process's tally; what the pipeline's steps call (cheap: one lock)."""
    TALLY.add(**counts)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 3600:
        return f'{seconds // 60}:{seconds % 60:02d}'
    return f'{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


def format_line(counts: dict[str, int], elapsed: float, rate: float | None) -> str:
    """The progress line: what the run has done so far, in one line of a terminal's width.

    Args:
      counts: the tally (`ProgressTally.snapshot`).
      elapsed: seconds since the run started.
      rate: records acknowledged per second lately, or None before there is a rate.
    """
    rate_text = '-' if rate is None else f'{rate:,.0f}'
    return (
        f'[{_duration(elapsed)}] files read {counts.get("files_read", 0):,}'
        f' | records read {counts.get("records_read", 0):,}'
        f' | profiles compared {counts.get("profiles_compared", 0):,}'
        f' | records sent {counts.get("records_sent", 0):,} ({rate_text}/s)'
        f' | throttled {counts.get("records_throttled", 0):,}'
    )


class ProgressLine:
    """Draws the tally on `stream` every `interval` seconds from a daemon thread.

    On a terminal (`stream.isatty()`) each drawing returns to the start of the line and
    erases what is left of the previous one; `stop` draws the last state and ends the line,
    so what the job prints next starts on a line of its own. Otherwise each drawing is a
    line logged at INFO.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        tally: ProgressTally = TALLY,
        *,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._tally = tally
        try:
            self.terminal = bool(self._stream.isatty())
        except (AttributeError, ValueError):  # a closed or odd stream: not a terminal
            self.terminal = False
        self._interval = (
            interval
            if interval is not None
            else (TERMINAL_INTERVAL_SECONDS if self.terminal else PLAIN_INTERVAL_SECONDS)
        )
        self._clock = clock
        self._started = clock()
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one drawing at a time: the thread's and stop's

    def rate(self, now: float, sent: int) -> float | None:
        """Records sent per second over the last `RATE_WINDOW_SECONDS` (None: too early)."""
        self._samples.append((now, sent))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW_SECONDS:
            self._samples.popleft()
        first_time, first_sent = self._samples[0]
        if now - first_time <= 0:
            return None
        return (sent - first_sent) / (now - first_time)

    def draw(self, final: bool = False) -> str:
        """Draws the line once and returns its text."""
        with self._lock:
            now = self._clock()
            counts = self._tally.snapshot()
            rate = self.rate(now, counts['records_sent'])
            if final and now > self._started:
                rate = counts['records_sent'] / (now - self._started)  # the whole run's
            line = format_line(counts, now - self._started, rate)
            if self.terminal:
                # \r and erase-to-end: the new line over the old, whatever their lengths.
                self._stream.write('\r' + line + '\x1b[K' + ('\n' if final else ''))
                self._stream.flush()
            else:
                _LOGGER.info('Progress: %s', line)
            return line

    def start(self) -> ProgressLine:
        """Starts drawing from a daemon thread (it never keeps the process alive)."""
        self._started = self._clock()
        self._samples.clear()
        self._thread = threading.Thread(target=self._run, name='beam-kinesis-progress', daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            try:
                self.draw()
            except (OSError, ValueError):  # the stream went away: stop drawing, not the job
                return

    def stop(self) -> None:
        """Stops the thread and, on a terminal, draws the last state and ends the line."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.terminal:
            try:
                self.draw(final=True)
            except (OSError, ValueError):
                pass

    def __enter__(self) -> ProgressLine:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def runs_in_process(options: PipelineOptions) -> bool:
    """Whether the pipeline's steps run in this process, so that the tally sees them: the
    DirectRunner (Beam's FnApiRunner) in memory or in threads, not in subprocesses."""
    runner = (options.view_as(StandardOptions).runner or '').rsplit('.', 1)[-1]
    if runner not in _IN_PROCESS_RUNNERS:
        return False
    return options.view_as(DirectOptions).direct_running_mode in _IN_PROCESS_MODES


def live_progress(
    options: PipelineOptions, quiet: bool = False, stream: TextIO | None = None
) -> ProgressLine | None:
    """The progress line of a run about to start, or None where none is drawn (`quiet`, or
    a runner whose steps run elsewhere). Resets the tally: the line counts this run only
    (two runs at once in one process would share it)."""
    if quiet or not runs_in_process(options):
        return None
    TALLY.reset()
    return ProgressLine(stream)
