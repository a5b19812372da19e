"""How close `beam-kinesis plan`'s send time is to a real send through shard-limited Kinesis.

    python benchmarks/plan_accuracy.py [--size 100000] [--shards 1,2,4] [--first-run]

On the generated benchmark pair (benchmarks/data/<size>, made by generate_snapshots.py as
run_benchmarks.py makes it, JSON Lines), for each shard count it:

1. creates a kinesalite stream of that many shards behind the shard-limited proxy
   (tests/shard_limited_proxy.py: 1,000 records/s and 1 MiB/s per shard, by the MD5 of the
   partition key, one second of burst);
2. runs `plan` with --stream_name and --endpoint_url at the proxy (so it reads the stream's
   own shard map) and takes its estimate of the send time at the limits;
3. runs the export job into that stream through the proxy, and takes the send time as the
   proxy saw it: from the first PutRecords' arrival to the end of the last one that stored
   records (the diff before it is not part of the send);
4. reads the stream back and checks that every shard holds what the plan said it would.

`--first-run` adds the same cases without --previous (every mapped member exported), a
longer send. Each kind of send is also made once through the proxy with no limits
(`shards` "no limit" in the table), which says how fast this machine's Python and kinesalite
send without throttling: where that is not well below the estimate, the limit is not what
decides. The export job runs as a subprocess (the proxy keeps this process's interpreter to
itself); kinesalite is warmed up first. Prints a table, and writes it with the machine's load
to benchmarks/results/plan-accuracy-<UTC time>.json and plan-accuracy-latest.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / 'benchmarks'))

import run_benchmarks  # noqa: E402

from beam_kinesis.local_kinesis import read_stream  # noqa: E402
from beam_kinesis.plan import plan_job  # noqa: E402
from tests.kinesis_servers import start_kinesalite, target_args  # noqa: E402
from tests.shard_limited_proxy import ShardLimitedProxy  # noqa: E402

AS_OF = '2024-06-01T00:00:00Z'
TARGET = 0.10  # the bound on |estimate - real| / real


def _load() -> str:
    return ' '.join(f'{value:.2f}' for value in os.getloadavg())


def _warm_up(server) -> None:
    """A few thousand records into kinesalite directly: its first requests run before V8
    has compiled it and take several times longer."""
    stream = server.create_stream(1)
    client = server.client()
    for _ in range(8):
        client.put_records(
            StreamName=stream,
            Records=[{'PartitionKey': f'warm-{n}', 'Data': b'w' * 1200} for n in range(500)],
        )
    client.close()


def _case(
    server,
    proxy: ShardLimitedProxy,
    data: Path,
    shards: int,
    first_run: bool,
    work: Path,
    limited: bool = True,
) -> dict:
    stream = server.create_stream(shards)
    inputs = [
        '--current',
        str(data / 'current' / '*.jsonl'),
        '--destination_config',
        str(data / 'destination.yaml'),
        '--as_of',
        AS_OF,
    ]
    if not first_run:
        inputs += ['--previous', str(data / 'previous' / '*.jsonl')]
    target = target_args(proxy.endpoint_url, stream)
    load_before = _load()
    with contextlib.redirect_stdout(io.StringIO()):
        planned = plan_job(inputs + target)
    if planned.status != 0:
        raise SystemExit(f'plan failed with status {planned.status}')
    if 'ListShards' not in planned.shard_source:
        raise SystemExit(f"plan did not read the stream's shard map: {planned.shard_source}")
    proxy.reset()
    started = time.monotonic()
    sent = subprocess.run(
        [
            sys.executable,
            '-m',
            'pipelines.export_profiles',
            *inputs,
            *target,
            '--dead_letter',
            str(work / f'dead-{stream}'),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    job_seconds = time.monotonic() - started
    if sent.returncode != 0:
        raise SystemExit(
            f'the export job failed with status {sent.returncode}: {sent.stderr[-2000:]}'
        )
    records_sent = re.search(r'records sent\s+([\d,]+)', sent.stdout)
    real = proxy.send_seconds()
    client = server.client()
    landed = read_stream(client, stream)
    client.close()
    plan = planned.plan
    per_shard_ok = all(
        len(landed.get(shard, [])) == plan.shards.get(shard, [0])[0]
        for shard in planned.shard_map.shard_ids
    )
    totals = proxy.totals()
    error = (planned.seconds - real) / real if real and limited else None
    return {
        'case': 'first run' if first_run else 'pair',
        'shards': shards if limited else 'no limit',
        'records': plan.records,
        'mib': round(plan.bytes / 2**20, 2),
        'busiest_shard': plan.busiest(planned.shard_map)[0],
        'estimate_seconds': round(planned.seconds, 2),
        'real_send_seconds': round(real, 2),
        'error': round(error, 4) if error is not None else None,
        'within_target': error is not None and abs(error) <= TARGET if limited else None,
        'put_requests': totals['requests'],
        'entries_throttled': totals['entries'] - totals['admitted'],
        'landed_per_shard_as_planned': per_shard_ok,
        'records_sent': int(records_sent.group(1).replace(',', '')) if records_sent else None,
        'job_seconds': round(job_seconds, 1),
        'load_before': load_before,
        'load_after': _load(),
    }


def format_table(rows: list[dict]) -> str:
    header = (
        '| case | shards | records | MiB | estimate s | real send s | error | '
        'PutRecords | throttled entries | landed as planned | load (1, 5, 15 min) |'
    )
    lines = [header, '|' + '---|' * header.count(' | ') + '---|']
    for row in rows:
        error = f'{row["error"]:+.1%}' if row['error'] is not None else '-'
        lines.append(
            f'| {row["case"]} | {row["shards"]} | {row["records"]:,} | {row["mib"]:.1f} | '
            f'{row["estimate_seconds"]:.2f} | '
            f'{row["real_send_seconds"]:.2f} | {error} | '
            f'{row["put_requests"]:,} | {row["entries_throttled"]:,} | '
            f'{"yes" if row["landed_per_shard_as_planned"] else "NO"} | {row["load_after"]} |'
        )
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', type=int, default=100_000)
    parser.add_argument('--shards', default='1,2,4')
    parser.add_argument('--first-run', action='store_true')
    parser.add_argument(
        '--no-baseline', action='store_true', help='skip the sends through the proxy without limits'
    )
    parser.add_argument('--data-dir', default=str(REPO / 'benchmarks' / 'data'))
    parser.add_argument('--results-dir', default=str(REPO / 'benchmarks' / 'results'))
    parser.add_argument('--work', default='/tmp/beam-kinesis-plan-accuracy')
    args = parser.parse_args(argv)
    shard_counts = [int(part) for part in args.shards.split(',')]
    data, _, _ = run_benchmarks.ensure_data(Path(args.data_dir), args.size, ('jsonl',), 1, 3600)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    server = start_kinesalite()
    proxy = ShardLimitedProxy(server.endpoint_url, server.client).start()
    unlimited = ShardLimitedProxy(
        server.endpoint_url, server.client, records_per_second=1e12, bytes_per_second=1e15
    ).start()
    rows = []
    try:
        _warm_up(server)
        for first_run in [False, True] if args.first_run else [False]:
            cases = [(shards, proxy, True) for shards in shard_counts]
            if not args.no_baseline:
                cases.append((max(shard_counts), unlimited, False))
            for shards, through, limited in cases:
                row = _case(server, through, data, shards, first_run, work, limited)
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        proxy.stop()
        unlimited.stop()
        server.stop()
    print(format_table(rows))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
    result = {
        'size': args.size,
        'when': stamp,
        'cpus': os.cpu_count(),
        'target': TARGET,
        'rows': rows,
    }
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    for name in (f'plan-accuracy-{stamp}.json', 'plan-accuracy-latest.json'):
        (results / name).write_text(json.dumps(result, indent=1) + '\n', encoding='utf-8')
    return (
        0
        if all(
            row['within_target'] is not False and row['landed_per_shard_as_planned'] for row in rows
        )
        else 1
    )


if __name__ == '__main__':
    sys.exit(main())
