"""Benchmarks of the Kinesis sink's DoFn alone, against fake clients (no network).

Usage:

    python benchmarks/sink_benchmark.py [--fill-records 20000] [--record-bytes 1024] \
        [--throughput-records 100000] [--delay-ms 50] [--max-in-flight 1,4,8,16] [--json]

Two measurements, each driving one `_PutRecordsFn` instance by hand (setup, start_bundle,
process per record, finish_bundle, teardown), as a runner would for one bundle:

- batch fill: records through a client that only records the size of each request; reports
  PutRecords calls per 1,000 records and how much of the 500-record cap a request uses when
  the bundle holds plenty of records;
- throughput: records/s against a client whose every call answers after a fixed delay (an
  endpoint 50 ms away), for several `max_in_flight`, next to a plain loop that sends batches
  of 500 one after the other to the same client.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

# Run from a checkout without installing the package.
_REPO_ROOT = str(Path(__file__).resolve().parents[1])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from beam_kinesis.kinesis import (  # noqa: E402
    MAX_RECORDS_PER_REQUEST,
    KinesisConfig,
    _PutRecordsFn,
)

__all__ = [
    'DelayedClient',
    'RecordingClient',
    'batch_fill',
    'default_max_in_flight',
    'format_sink_results',
    'main',
    'make_records',
    'run_sink_benchmark',
    'throughput',
]

_STREAM = 'benchmark-stream'


class RecordingClient:
    """A Kinesis client that acknowledges every record at once and notes each request's size.

    Thread-safe: the sink calls it from several sending threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.batch_sizes: list[int] = []
        self.request_bytes: list[int] = []

    def _note(self, records: list[dict]) -> None:
        size = sum(len(r['Data']) + len(r['PartitionKey'].encode('utf-8')) for r in records)
        with self._lock:
            self.batch_sizes.append(len(records))
            self.request_bytes.append(size)

    def put_records(self, StreamName: str, Records: list[dict]) -> dict:  # noqa: N803 - boto3's
        self._note(Records)
        return {
            'FailedRecordCount': 0,
            'Records': [
                {'SequenceNumber': '1', 'ShardId': 'shardId-000000000000'} for _ in Records
            ],
        }

    def put_record(self, StreamName: str, PartitionKey: str, Data: bytes) -> dict:  # noqa: N803
        self._note([{'PartitionKey': PartitionKey, 'Data': Data}])
        return {'SequenceNumber': '1', 'ShardId': 'shardId-000000000000'}

    def close(self) -> None:
        pass


class DelayedClient(RecordingClient):
    """A `RecordingClient` whose every call answers after `delay` seconds, as a distant
    endpoint would; calls made from several threads wait at the same time."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self._delay = delay

    def put_records(self, StreamName: str, Records: list[dict]) -> dict:  # noqa: N803
        time.sleep(self._delay)
        return super().put_records(StreamName=StreamName, Records=Records)

    def put_record(self, StreamName: str, PartitionKey: str, Data: bytes) -> dict:  # noqa: N803
        time.sleep(self._delay)
        return super().put_record(StreamName=StreamName, PartitionKey=PartitionKey, Data=Data)


def make_records(count: int, record_bytes: int = 1024) -> list[tuple[str, bytes]]:
    """`count` (profile key, data) pairs whose data is `record_bytes` long, like exports."""
    records = []
    for number in range(1, count + 1):
        key = f'p-{number:09d}'
        head = f'{{"_id":"{key}","pad":"'.encode()
        pad = max(0, record_bytes - len(head) - 2)
        records.append((key, head + b'x' * pad + b'"}'))
    return records


def _drive(
    config: KinesisConfig, client: RecordingClient, records: list[tuple[str, bytes]]
) -> tuple[float, int]:
    """Runs one bundle of `records` through a fresh DoFn; returns seconds and dead letters.

    The time runs from start_bundle to the end of finish_bundle (every request answered).
    """
    fn = _PutRecordsFn(config, client_factory=lambda _config: client)
    fn.setup()
    try:
        started = time.perf_counter()
        fn.start_bundle()
        dead = 0
        for record in records:
            for _ in fn.process(record):
                dead += 1
        for _ in fn.finish_bundle():
            dead += 1
        elapsed = time.perf_counter() - started
    finally:
        fn.teardown()
    return elapsed, dead


def batch_fill(records: int = 20_000, record_bytes: int = 1024) -> dict:
    """Requests made for one bundle of `records`: how full they are against the 500 cap."""
    client = RecordingClient()
    seconds, dead = _drive(
        KinesisConfig(_STREAM, region='us-east-1'), client, make_records(records, record_bytes)
    )
    calls = len(client.batch_sizes)
    sent = sum(client.batch_sizes)
    mean = sent / calls if calls else 0.0
    return {
        'records': records,
        'record_bytes': record_bytes,
        'calls': calls,
        'records_sent': sent,
        'dead_letters': dead,
        'calls_per_1000_records': round(1000 * calls / records, 3) if records else None,
        'mean_records_per_call': round(mean, 1),
        'min_records_per_call': min(client.batch_sizes, default=0),
        'max_records_per_call': max(client.batch_sizes, default=0),
        'max_request_bytes': max(client.request_bytes, default=0),
        'cap_records': MAX_RECORDS_PER_REQUEST,
        'cap_used_percent': round(100 * mean / MAX_RECORDS_PER_REQUEST, 1),
        'seconds': round(seconds, 3),
    }


def _sequential_baseline(client: RecordingClient, records: list[tuple[str, bytes]]) -> float:
    """A plain loop: batches of 500 sent one after the other; returns seconds."""
    started = time.perf_counter()
    for start in range(0, len(records), MAX_RECORDS_PER_REQUEST):
        batch = records[start : start + MAX_RECORDS_PER_REQUEST]
        client.put_records(
            StreamName=_STREAM, Records=[{'PartitionKey': key, 'Data': data} for key, data in batch]
        )
    return time.perf_counter() - started


def throughput(
    records: int = 100_000,
    delay: float = 0.05,
    in_flight: tuple[int, ...] = (1, 4, 8, 16),
    record_bytes: int = 1024,
) -> dict:
    """Records/s of one DoFn instance per `max_in_flight`, against a client `delay` s away,
    and of the sequential loop; each row's ratio is its rate over the loop's."""
    data = make_records(records, record_bytes)
    baseline_client = DelayedClient(delay)
    baseline_seconds = _sequential_baseline(baseline_client, data)
    baseline_rate = records / baseline_seconds
    rows = []
    for count in in_flight:
        client = DelayedClient(delay)
        seconds, dead = _drive(
            KinesisConfig(_STREAM, region='us-east-1', max_in_flight=count), client, data
        )
        rate = records / seconds
        rows.append(
            {
                'max_in_flight': count,
                'seconds': round(seconds, 3),
                'records_per_second': round(rate),
                'calls': len(client.batch_sizes),
                'records_sent': sum(client.batch_sizes),
                'dead_letters': dead,
                'ratio_vs_baseline': round(rate / baseline_rate, 2),
            }
        )
    return {
        'records': records,
        'record_bytes': record_bytes,
        'delay_ms': round(delay * 1000, 3),
        'baseline': {
            'kind': 'sequential put_records loop, batches of 500',
            'seconds': round(baseline_seconds, 3),
            'records_per_second': round(baseline_rate),
            'calls': len(baseline_client.batch_sizes),
        },
        'dofn': rows,
    }


def default_max_in_flight() -> int:
    """The sink's default requests in flight per DoFn instance."""
    return KinesisConfig(_STREAM).max_in_flight


def run_sink_benchmark(
    fill_records: int = 20_000,
    throughput_records: int = 100_000,
    delay: float = 0.05,
    in_flight: tuple[int, ...] = (1, 4, 8, 16),
    record_bytes: int = 1024,
) -> dict:
    """Both measurements, as one JSON-ready dict."""
    return {
        'batch_fill': batch_fill(fill_records, record_bytes),
        'throughput': throughput(throughput_records, delay, in_flight, record_bytes),
    }


def format_sink_results(result: dict) -> str:
    """The sink results as text tables."""
    fill = result['batch_fill']
    lines = [
        f'Sink batch fill: {fill["records"]:,} records of {fill["record_bytes"]:,} bytes in one '
        f'bundle -> {fill["calls"]:,} calls, {fill["calls_per_1000_records"]} calls per 1,000 '
        f'records, {fill["mean_records_per_call"]} records per call '
        f'({fill["cap_used_percent"]}% of the {fill["cap_records"]} cap)',
    ]
    speed = result['throughput']
    base = speed['baseline']
    lines.append(
        f'Sink throughput, {speed["records"]:,} records, every call answered after '
        f'{speed["delay_ms"]:g} ms:'
    )
    lines.append(
        f'  {"sender":<28} {"seconds":>8} {"records/s":>10} {"calls":>6} {"x baseline":>10}'
    )
    lines.append(
        f'  {"sequential loop (baseline)":<28} {base["seconds"]:>8.3f} '
        f'{base["records_per_second"]:>10,} {base["calls"]:>6} {1.0:>10.2f}'
    )
    for row in speed['dofn']:
        lines.append(
            f'  {"DoFn max_in_flight=" + str(row["max_in_flight"]):<28} '
            f'{row["seconds"]:>8.3f} {row["records_per_second"]:>10,} '
            f'{row["calls"]:>6} {row["ratio_vs_baseline"]:>10.2f}'
        )
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--fill-records', type=int, default=20_000)
    parser.add_argument('--throughput-records', type=int, default=100_000)
    parser.add_argument('--record-bytes', type=int, default=1024)
    parser.add_argument('--delay-ms', type=float, default=50.0)
    parser.add_argument(
        '--max-in-flight', default='1,4,8,16', help='comma-separated max_in_flight values'
    )
    parser.add_argument('--json', action='store_true', help='print the result as JSON')
    args = parser.parse_args(argv)
    try:
        in_flight = tuple(int(n) for n in args.max_in_flight.split(','))
    except ValueError:
        parser.error(f'--max-in-flight {args.max_in_flight!r} is not a list of integers')
    for name in ('fill_records', 'throughput_records', 'record_bytes'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be at least 1')
    result = run_sink_benchmark(
        args.fill_records,
        args.throughput_records,
        args.delay_ms / 1000,
        in_flight,
        args.record_bytes,
    )
    print(json.dumps(result, indent=2) if args.json else format_sink_results(result))
    return 0


if __name__ == '__main__':
    sys.exit(main())
