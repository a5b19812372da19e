"""`beam-kinesis plan`: what an export run would send, and how long Kinesis needs to take it.

It runs the export job's diff on the same options, without sending anything and without
writing exports, and prints what the run would do: the exports by reason (the run's report),
the records and bytes it would send, the largest record, the records over Kinesis's size limit
(which a real run dead-letters), how the records spread over the stream's shards and how long
the send needs at Kinesis's per-shard write limits, where the busiest shard decides; with
`--within 10m`, also how many shards would bring the send under that time.

The shard of a record is the one whose hash-key range holds the MD5 of its partition key, as
Kinesis routes it. The ranges are the stream's own (ListShards) when `--stream_name` or
`--endpoint_url` is given and the stream can be read with the run's credentials, else those
of a new stream of `--shards N` shards (an even split of the hash-key space).

    python -m beam_kinesis.plan --current C --previous P --destination_config D.yaml \
        --as_of 2024-06-01T00:00:00Z --shards 4 --within 10m

The per-shard totals are computed inside the pipeline by `PlanSend`, a combiner: no record
is collected to the launcher, only one small summary (totals per shard, and a histogram of
the hash-key space for the shard counts of `--within`).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
from typing import Any, Iterable, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from botocore.exceptions import BotoCoreError, ClientError

from beam_kinesis import counts
from beam_kinesis.config import ConfigError, load_destination_config, parse_as_of
from beam_kinesis.kinesis import (
    DEFAULT_MAX_RECORD_BYTES,
    KinesisConfig,
    make_client,
    partition_key_for,
    redact,
)
from beam_kinesis.shards import (
    BURST_SECONDS,
    BYTES_PER_SHARD_SECOND,
    HASH_KEY_SPACE,
    RECORDS_PER_SHARD_SECOND,
    ShardMap,
    hash_key,
    shard_seconds,
)
from beam_kinesis.snapshot import SnapshotError
from beam_kinesis.summary import format_summary, read_report

__all__ = [
    'PlanOptions',
    'PlanResult',
    'PlanSend',
    'SendPlan',
    'format_plan',
    'main',
    'parse_duration',
    'plan_job',
    'read_shard_map',
    'run',
    'shards_within',
]

_LOGGER = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_START_FAILED = 2
_PROGRAM = 'beam-kinesis plan'

# The hash-key space is cut into this many equal buckets for the shard counts of `--within`
# (a stream of n shards has n even ranges that need not fall on bucket edges, so a range's
# share of a bucket it cuts is taken in proportion). 2**16 buckets keep the error of a shard's
# total under one bucket's records at each of its two edges: for 10,000 shards a bucket is
# 0.15 of a shard's range. The histogram is two arrays of 2**16 integers (1 MiB).
HISTOGRAM_BITS = 16
_BUCKET_SHIFT = 128 - HISTOGRAM_BITS
# The largest shard count `--within` proposes (Kinesis's default quota per account and
# region in most regions is 500 or 200 shards; 10,000 is far beyond any that asks).
MAX_SHARDS = 10_000

_DURATION = re.compile(r'(\d+(?:\.\d+)?)\s*([smhd])', re.IGNORECASE)
_UNIT_SECONDS = {'s': 1, 'm': 60, 'h': 3600, 'd': 86400}


def parse_duration(text: str) -> float:
    """Seconds of a duration such as `90s`, `10m`, `2h`, `1h30m` or `1.5h`.

    Raises:
      ValueError: with one sentence, for anything else or a duration of zero.
    """
    cleaned = (text or '').strip().lower()
    parts = _DURATION.findall(cleaned)
    if not parts or _DURATION.sub('', cleaned).strip():
        raise ValueError(
            f'--within {text!r} is not a duration: give a number and a unit, '
            's, m, h or d (90s, 10m, 2h, 1h30m)'
        )
    seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    if seconds <= 0:
        raise ValueError(f'--within {text!r} must be longer than zero')
    return seconds


class PlanOptions(PipelineOptions):
    """The options `plan` adds to the export job's (`ExportOptions`)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            '--shards',
            default=None,
            type=int,
            help='Shards of the stream, assumed evenly split, when its own '
            'shard map cannot be read (no --stream_name or '
            '--endpoint_url, or ListShards failed); default 1.',
        )
        parser.add_argument(
            '--within',
            default=None,
            help='A time the send should take at most (90s, 10m, 2h): the '
            'plan says how many shards would bring it under that.',
        )


@dataclasses.dataclass
class SendPlan:
    """What a send would be: totals, per shard, and a histogram of the hash-key space.

    Attributes:
      records: records that would be sent (within the size limit, with a valid key).
      bytes: their data + partition key bytes, as Kinesis counts them.
      largest_bytes: the size of the largest record, sent or not.
      largest_key: its profile key.
      over_limit: records over `max_record_bytes` (a real run dead-letters them).
      over_limit_bytes: their bytes.
      unsendable: records whose key is no partition key (a real run dead-letters them).
      shards: `shard id -> [records, bytes]` of the records to send, for the plan's map.
      histogram_records: records per bucket of the hash-key space (2**HISTOGRAM_BITS).
      histogram_bytes: bytes per bucket.
    """

    records: int = 0
    bytes: int = 0
    largest_bytes: int = 0
    largest_key: str = ''
    over_limit: int = 0
    over_limit_bytes: int = 0
    unsendable: int = 0
    shards: dict = dataclasses.field(default_factory=dict)
    histogram_records: Any = None
    histogram_bytes: Any = None

    def __post_init__(self) -> None:
        size = 1 << HISTOGRAM_BITS
        if self.histogram_records is None:
            self.histogram_records = np.zeros(size, dtype=np.int64)
        if self.histogram_bytes is None:
            self.histogram_bytes = np.zeros(size, dtype=np.int64)

    def add(
        self,
        key: str,
        partition_key: str | None,
        shard_id: str | None,
        size: int,
        max_record_bytes: int,
    ) -> None:
        """Counts one record: `partition_key` None when the key is no partition key."""
        if size > self.largest_bytes or (size == self.largest_bytes and key < self.largest_key):
            self.largest_bytes, self.largest_key = size, key
        if partition_key is None:
            self.unsendable += 1
            return
        if size > max_record_bytes:
            self.over_limit += 1
            self.over_limit_bytes += size
            return
        self.records += 1
        self.bytes += size
        totals = self.shards.setdefault(shard_id, [0, 0])
        totals[0] += 1
        totals[1] += size
        bucket = hash_key(partition_key) >> _BUCKET_SHIFT
        self.histogram_records[bucket] += 1
        self.histogram_bytes[bucket] += size

    def merge(self, other: SendPlan) -> None:
        """Adds `other`'s counts to this plan's."""
        self.records += other.records
        self.bytes += other.bytes
        if other.largest_bytes > self.largest_bytes or (
            other.largest_bytes == self.largest_bytes
            and other.largest_key
            and other.largest_key < self.largest_key
        ):
            self.largest_bytes, self.largest_key = other.largest_bytes, other.largest_key
        self.over_limit += other.over_limit
        self.over_limit_bytes += other.over_limit_bytes
        self.unsendable += other.unsendable
        for shard_id, (records, size) in other.shards.items():
            totals = self.shards.setdefault(shard_id, [0, 0])
            totals[0] += records
            totals[1] += size
        self.histogram_records += other.histogram_records
        self.histogram_bytes += other.histogram_bytes

    # What the send takes at the limits.

    def shard_time(self, shard_id: str) -> float:
        records, size = self.shards.get(shard_id, (0, 0))
        return shard_seconds(records, size)

    def busiest(self, shard_map: ShardMap) -> tuple[str, float]:
        """The shard of `shard_map` that needs the longest, and how long (seconds)."""
        return max(
            ((shard_id, self.shard_time(shard_id)) for shard_id in shard_map.shard_ids),
            key=lambda item: (item[1], self.shards.get(item[0], (0, 0))[0]),
        )

    def seconds(self, shard_map: ShardMap) -> float:
        """Least time the send needs at the per-shard limits: the busiest shard's."""
        return self.busiest(shard_map)[1]

    def even_loads(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Records and bytes per shard of a new stream of `count` shards (an even split),
        from the histogram: exact where a range edge falls on a bucket edge, else the cut
        bucket shared in proportion."""
        buckets = 1 << HISTOGRAM_BITS
        width = HASH_KEY_SPACE // count
        edges = np.array(
            [
                (width * index if index < count else HASH_KEY_SPACE) / (1 << _BUCKET_SHIFT)
                for index in range(count + 1)
            ],
            dtype=np.float64,
        )
        loads = []
        for histogram in (self.histogram_records, self.histogram_bytes):
            cumulative = np.concatenate(([0], np.cumsum(histogram))).astype(np.float64)
            whole = np.minimum(np.floor(edges).astype(np.int64), buckets - 1)
            at_edge = cumulative[whole] + (edges - whole) * histogram[whole]
            loads.append(np.diff(at_edge))
        return loads[0], loads[1]

    def even_seconds(self, count: int) -> float:
        """Least time the send needs on a new stream of `count` shards (see `even_loads`)."""
        if self.records == 0:
            return 0.0
        records, size = self.even_loads(count)
        return max(shard_seconds(r, b) for r, b in zip(records.tolist(), size.tolist()))

    # On the way from the pipeline to the launcher.

    def to_json(self) -> str:
        buckets = np.nonzero(self.histogram_records)[0].tolist()
        return json.dumps(
            {
                'records': self.records,
                'bytes': self.bytes,
                'largest_bytes': self.largest_bytes,
                'largest_key': self.largest_key,
                'over_limit': self.over_limit,
                'over_limit_bytes': self.over_limit_bytes,
                'unsendable': self.unsendable,
                'shards': self.shards,
                'histogram': [
                    [bucket, int(self.histogram_records[bucket]), int(self.histogram_bytes[bucket])]
                    for bucket in buckets
                ],
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> SendPlan:
        data = json.loads(text)
        histogram = data.pop('histogram')
        plan = cls(**data)
        for bucket, records, size in histogram:
            plan.histogram_records[bucket] = records
            plan.histogram_bytes[bucket] = size
        return plan


def shards_within(plan: SendPlan, seconds: float, most: int = MAX_SHARDS) -> int | None:
    """The fewest shards of an evenly split stream that take `plan`'s send within `seconds`
    at the limits, or None if even `most` shards would not."""
    if plan.even_seconds(1) <= seconds:
        return 1
    # No stream does better than a perfectly even spread: start there.
    quota = seconds + BURST_SECONDS
    count = max(
        1,
        math.ceil(
            max(
                plan.records / (RECORDS_PER_SHARD_SECOND * quota),
                plan.bytes / (BYTES_PER_SHARD_SECOND * quota),
            )
        ),
    )
    while count <= most:
        if plan.even_seconds(count) <= seconds:
            return count
        count += 1
    return None


class _SendPlanFn(beam.CombineFn):
    """Adds `(key, partition key, shard, size)` measures up into one `SendPlan`."""

    def __init__(self, max_record_bytes: int) -> None:
        self._max_record_bytes = max_record_bytes

    def create_accumulator(self) -> SendPlan:
        return SendPlan()

    def add_input(self, accumulator: SendPlan, measure: tuple) -> SendPlan:
        accumulator.add(*measure, self._max_record_bytes)
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[SendPlan]) -> SendPlan:
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for accumulator in accumulators:
            merged.merge(accumulator)
        return merged

    def extract_output(self, accumulator: SendPlan) -> SendPlan:
        return accumulator


class _Measure:
    """`(profile key, data)` -> `(key, partition key, shard id, size)`, as the sink sends it."""

    def __init__(self, shard_map: ShardMap) -> None:
        self._shard_map = shard_map

    def __call__(self, record: tuple[str, bytes]) -> tuple[str, str | None, str | None, int]:
        key, data = record
        try:
            partition_key = partition_key_for(key)
        except (TypeError, ValueError):
            return str(key), None, None, len(data)
        size = len(data) + len(partition_key.encode('utf-8', 'surrogatepass'))
        return key, partition_key, self._shard_map.shard_of(partition_key), size


@beam.typehints.with_input_types(Tuple[str, bytes])
@beam.typehints.with_output_types(SendPlan)
class PlanSend(beam.PTransform):
    """Measures what `WriteToKinesis` would send of `(partition_key, data)` records.

    Returns a PCollection of one `SendPlan` (an empty one for no records): totals, the
    largest record, the records over the size limit, per-shard totals on `shard_map`, and a
    histogram of the hash-key space; computed by a combiner, so no worker and not the
    launcher holds more than the summary.
    """

    def __init__(
        self, shard_map: ShardMap, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    ) -> None:
        """Args:
        shard_map: the stream's shards (`ShardMap`, `read_shard_map`, `ShardMap.even`).
        max_record_bytes: the per-record limit, data + partition key (the sink's).
        """
        super().__init__()
        if not isinstance(shard_map, ShardMap):
            raise ValueError(f'shard_map must be a ShardMap, not {type(shard_map).__name__}')
        if (
            isinstance(max_record_bytes, bool)
            or not isinstance(max_record_bytes, int)
            or (max_record_bytes < 1)
        ):
            raise ValueError(f'max_record_bytes {max_record_bytes!r} must be a positive integer')
        self._shard_map = shard_map
        self._max_record_bytes = max_record_bytes

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        return (
            records
            | 'Measure'
            >> beam.Map(_Measure(self._shard_map)).with_output_types(Tuple[str, Any, Any, int])
            | 'Totals'
            >> beam.CombineGlobally(_SendPlanFn(self._max_record_bytes)).with_output_types(SendPlan)
        )


def read_shard_map(config: KinesisConfig) -> ShardMap:
    """The open shards of `config`'s stream, from ListShards (every page).

    Raises:
      ValueError: with what went wrong, credentials removed, when it cannot be read.
    """
    quick = dataclasses.replace(
        config,
        connect_timeout_seconds=min(config.connect_timeout_seconds, 3.0),
        read_timeout_seconds=min(config.read_timeout_seconds, 10.0),
        request_attempts=1,
    )
    try:
        client = make_client(quick)
        try:
            shards: list[dict] = []
            response = client.list_shards(StreamName=config.stream_name)
            shards.extend(response.get('Shards') or [])
            while response.get('NextToken'):
                response = client.list_shards(NextToken=response['NextToken'])
                shards.extend(response.get('Shards') or [])
        finally:
            client.close()
        return ShardMap(shards)
    except ClientError as err:
        error = err.response.get('Error', {})
        detail = f'{error.get("Code") or "error"}: {error.get("Message") or ""}'.strip(': ')
    except (BotoCoreError, ValueError) as err:
        detail = f'{type(err).__name__}: {err}'
    raise ValueError(' '.join(redact(detail, config.explicit_values).split())[:300])


@dataclasses.dataclass(frozen=True)
class _Where:
    """The shard map the plan uses, and how it was found (for the printed table)."""

    shard_map: ShardMap
    source: str


def _shard_map_for(options: Any, sink: KinesisConfig, shards: int | None) -> _Where:
    assumed = shards or 1
    note = 'assumed: a new stream of {n} shard{s}, evenly split{why}'
    if options.stream_name or options.endpoint_url:
        try:
            found = read_shard_map(sink)
        except ValueError as err:
            why = f' (the shard map of {sink.stream_name!r} could not be read: {err})'
        else:
            extra = f'; --shards {shards} not used' if shards and shards != len(found) else ''
            return _Where(
                found, f'the shard map of stream {sink.stream_name!r} (ListShards){extra}'
            )
    else:
        why = '' if shards else " (give --shards N, or --stream_name to read the stream's)"
    return _Where(
        ShardMap.even(assumed), note.format(n=assumed, s='' if assumed == 1 else 's', why=why)
    )


class _WritePlan:
    def __init__(self, path: str) -> None:
        self._path = path

    def __call__(self, plan: SendPlan) -> str:
        with FileSystems.create(self._path) as handle:
            handle.write(plan.to_json().encode('utf-8'))
        return self._path


def _read_plan(path: str) -> SendPlan:
    with FileSystems.open(path) as handle:
        return SendPlan.from_json(handle.read().decode('utf-8'))


def _duration(seconds: float) -> str:
    """`2 h 05 min`, `12 min 30 s`, `4.2 s`."""
    if seconds < 60:
        return f'{seconds:.1f} s'
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f'{hours} h {minutes:02d} min'
    return f'{minutes} min {secs:02d} s'


def _mib(size: float) -> str:
    if size < 1024 * 1024:
        return f'{size / 1024:,.1f} KiB'
    return f'{size / (1024 * 1024):,.1f} MiB'


def format_plan(
    plan: SendPlan,
    where: _Where,
    max_record_bytes: int,
    within: float | None = None,
    within_text: str | None = None,
) -> str:
    """The send plan as the table `plan` prints."""
    shard_map = where.shard_map
    lines = [
        f'Send (nothing was sent; shards: {where.source})',
        f'  {"records to send":<38} {plan.records:>12,}',
        f'  {"bytes to send (data + partition key)":<38} {plan.bytes:>12,}  ({_mib(plan.bytes)})',
    ]
    if plan.largest_key:
        lines.append(
            f'  {"largest record":<38} {plan.largest_bytes:>12,}  bytes, profile '
            f'{plan.largest_key!r}'
        )
    lines.append(
        f'  {f"over the {max_record_bytes:,}-byte record limit":<38} '
        f'{plan.over_limit:>12,}'
        + ('  (dead letters in a real run, not sent)' if plan.over_limit else '')
    )
    if plan.unsendable:
        lines.append(
            f'  {"key not a partition key":<38} {plan.unsendable:>12,}  '
            '(dead letters in a real run)'
        )
    busiest, seconds = plan.busiest(shard_map)
    mean = plan.records / len(shard_map)
    lines.append(
        f'Per shard ({len(shard_map)}; at most {RECORDS_PER_SHARD_SECOND:,} '
        'records/s and 1 MiB/s each)'
    )
    for shard_id in shard_map.shard_ids:
        records, size = plan.shards.get(shard_id, (0, 0))
        share = f'{records / mean:.2f}x mean' if mean else '-'
        lines.append(
            f'  {shard_id:<24} {records:>10,} records {_mib(size):>12}  {share:>10}  '
            f'{_duration(plan.shard_time(shard_id)):>12}'
            + ('  <- busiest' if shard_id == busiest and plan.records else '')
        )
    records, size = plan.shards.get(busiest, (0, 0))
    limit = (
        'its bytes'
        if size / BYTES_PER_SHARD_SECOND > records / RECORDS_PER_SHARD_SECOND
        else 'its records'
    )
    lines.append(
        f'Send time at the shard limits: {_duration(seconds)} ({busiest}, by {limit}; '
        f'a quiet shard takes its first {BURST_SECONDS:g} s of quota at once)'
    )
    if within is not None:
        needed = shards_within(plan, within)
        if needed is None:
            lines.append(f'Within {within_text}: not even with {MAX_SHARDS:,} shards.')
        else:
            verdict = (
                'met by this stream'
                if seconds <= within
                else f'not met by this stream ({len(shard_map)} shards)'
            )
            lines.append(
                f'Within {within_text}: {verdict}; an evenly split stream needs '
                f'{needed:,} shard{"" if needed == 1 else "s"} '
                f'({_duration(plan.even_seconds(needed))} at the limits).'
            )
    return '\n'.join(lines)


def _summary_sections() -> dict:
    from beam_kinesis.job import SUMMARY

    return {
        title: rows
        for title, rows in SUMMARY.items()
        if title in ('Read', 'Exported', 'Dead letters')
    }


def _start_error(message: str) -> int:
    print(f'{_PROGRAM}: {" ".join(message.split())[:1000]}', file=sys.stderr)
    return EXIT_START_FAILED


@dataclasses.dataclass(frozen=True)
class PlanResult:
    """What `plan_job` found.

    Attributes:
      status: the exit status (0; 1 if the pipeline failed; 2 on bad options).
      counters: the run's report (reads, exports by reason, dead letters).
      plan: the send's measures (None unless status is 0).
      shard_map: the shards the plan spread the records over.
      shard_source: where that map came from, for people.
      seconds: least time the send needs at the per-shard limits (busiest shard).
      within: the `--within` seconds, or None.
      shards_within: fewest evenly split shards for `--within`, or None.
      text: the table as printed.
    """

    status: int
    counters: dict = dataclasses.field(default_factory=dict)
    plan: SendPlan | None = None
    shard_map: ShardMap | None = None
    shard_source: str = ''
    seconds: float = 0.0
    within: float | None = None
    shards_within: int | None = None
    text: str = ''


def run(argv: list[str] | None = None) -> int:
    """Runs the plan and prints its table; returns the exit status (see `plan_job`)."""
    return plan_job(argv, echo=True).status


def plan_job(argv: list[str] | None = None, echo: bool = False) -> PlanResult:
    """Runs the export job's diff on `argv` (the export job's options, `--shards` and
    `--within`), sending nothing and writing no exports, and measures the send.

    Returns the result with status 0; 1 if the pipeline failed; 2 with one sentence on
    stderr when an option is bad (nothing is read then). With `echo`, prints the table.
    """
    # The export job's pieces; imported here so that the library does not load the job's
    # launcher until a plan runs.
    from beam_kinesis import job
    from beam_kinesis.job_options import (
        ExportOptions,
        OptionsError,
        help_parser,
        parse_job_options,
    )
    from beam_kinesis.runners import prepare_runner, runner_for
    from beam_kinesis.sink_options import KinesisSinkOptions, split_credentials
    from pipelines.export_profiles import build

    classes = (ExportOptions, KinesisSinkOptions, PlanOptions)
    argv = list(sys.argv[1:] if argv is None else argv)
    if '--help' in argv or '-h' in argv:
        help_parser(_PROGRAM, __doc__.split('\n\n')[1].replace('\n', ' '), classes).print_help()
        return PlanResult(EXIT_OK)
    credentials, argv = split_credentials(argv)
    try:
        options = parse_job_options(argv, classes)
    except OptionsError as err:
        return PlanResult(_start_error(str(err)))
    export = options.view_as(ExportOptions)
    own = options.view_as(PlanOptions)
    missing = [
        f'--{name}' for name in ('current', 'destination_config') if not getattr(export, name)
    ]
    if missing:
        return PlanResult(_start_error(f'{" and ".join(missing)} must be given (see --help).'))
    scratch = None
    try:
        prepare_runner(options)
        if own.shards is not None and not 1 <= own.shards <= MAX_SHARDS:
            raise ConfigError(f'--shards {own.shards} must be from 1 to {MAX_SHARDS:,}.')
        within = parse_duration(own.within) if own.within is not None else None
        if export.max_line_bytes < 1:
            raise ConfigError(f'--max_line_bytes {export.max_line_bytes} must be positive.')
        config = load_destination_config(export.destination_config)
        as_of = (
            parse_as_of(export.as_of)
            if export.as_of is not None
            else (datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'))
        )
        run_config = job.run_config(export, config, as_of)
        sink = job.kinesis_config(export, config, credentials)
        if export.previous and not export.allow_empty_current:
            job.refuse_empty_current(export.current)
        where = _shard_map_for(export, sink, own.shards)
        ignored = [
            flag
            for flag, value in (
                ('--output', export.output),
                ('--checkpoint', export.checkpoint),
                ('--retry_failed', export.retry_failed),
            )
            if value
        ]
        # Nothing of the user's is written: exports nowhere, dead letters and the report to
        # a scratch directory removed at the end.
        scratch = tempfile.mkdtemp(prefix='beam-kinesis-plan-')
        export.output = None
        export.dead_letter = os.path.join(scratch, 'dead_letters')
        report = os.path.join(scratch, 'run-report.json')
        plan_path = os.path.join(scratch, 'send-plan.json')
        pipeline = beam.Pipeline(runner=runner_for(options), options=options)
        outputs = build(pipeline, export, run_config, as_of, sink=None, report=report)
        _ = (
            outputs['records']
            | 'PlanSend' >> PlanSend(where.shard_map, sink.max_record_bytes)
            | 'WritePlan' >> beam.Map(_WritePlan(plan_path))
        )
    except (ConfigError, SnapshotError, ValueError) as err:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        return PlanResult(_start_error(str(err)))
    try:
        try:
            result = pipeline.run()
            result.wait_until_finish()
            counters = read_report(report)
            plan = _read_plan(plan_path)
        except Exception as err:  # the runner's error, perhaps wrapped in a worker's traceback
            print(f'{_PROGRAM}: the diff failed: {job.failure_sentence(err)}', file=sys.stderr)
            return PlanResult(EXIT_FAILED)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    exported = counts.total(counters, counts.EXPORTED)
    dead = counts.total(counters, counts.DEAD_LETTERS)
    text = '\n'.join(
        [
            format_summary(counters, _summary_sections()),
            format_plan(plan, where, sink.max_record_bytes, within, own.within),
            f'Plan as of {as_of}: {exported:,} profiles would be exported to Kinesis stream '
            f'{sink.stream_name!r}; {dead:,} dead letters before the send'
            + (f'; {", ".join(ignored)} not used by a plan' if ignored else '')
            + '.',
        ]
    )
    if echo:
        print(text)
    return PlanResult(
        EXIT_OK,
        counters,
        plan,
        where.shard_map,
        where.source,
        plan.seconds(where.shard_map),
        within,
        shards_within(plan, within) if within is not None else None,
        text,
    )


def main() -> None:
    """Entry point of `python -m beam_kinesis.plan`."""
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    sys.exit(run(sys.argv[1:]))


if __name__ == '__main__':
    main()
