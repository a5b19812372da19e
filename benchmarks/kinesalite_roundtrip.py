"""Exports a generated snapshot pair into kinesalite through the real job and reads it back.

    python benchmarks/kinesalite_roundtrip.py --data benchmarks/data/100000 [--shards 4]

Starts kinesalite (tests/servers, `npm install --prefix tests/servers`) on 127.0.0.1, runs
`pipelines.export_profiles` with `--output` and `--stream_name` at once, reads every shard
back and checks that each exported record landed exactly once, on its key's shard, and
nothing else did. Prints the counts, PutRecords calls per 1,000 records and records/s
(records sent over the job's whole wall time: a lower bound for the sink).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
sys.path.insert(0, REPO)

from beam_kinesis.local_kinesis import read_stream  # noqa: E402
from pipelines import export_profiles  # noqa: E402
from tests.kinesis_servers import (  # noqa: E402
    shard_of,
    start_kinesalite,  # noqa: E402
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data', required=True, help='a benchmarks/generate_snapshots.py folder')
    parser.add_argument('--shards', type=int, default=4)
    parser.add_argument('--work', default='/tmp/beam-kinesis-roundtrip')
    parser.add_argument('--format', default='jsonl')
    args = parser.parse_args(argv)
    server = start_kinesalite()
    try:
        stream = server.create_stream(args.shards)
        started = time.monotonic()
        result = export_profiles.run_job(
            [
                '--current',
                os.path.join(args.data, 'current', f'*.{args.format}'),
                '--previous',
                os.path.join(args.data, 'previous', f'*.{args.format}'),
                '--destination_config',
                os.path.join(args.data, 'destination.yaml'),
                '--as_of',
                '2024-06-01T00:00:00Z',
                '--output',
                os.path.join(args.work, 'files'),
                '--dead_letter',
                os.path.join(args.work, 'dead'),
                *server.target_args(stream),
            ]
        )
        seconds = time.monotonic() - started
        expected = [
            line
            for path in glob.glob(os.path.join(args.work, 'files', 'exports*'))
            for line in open(path, 'rb').read().splitlines()
        ]
        client = server.client()
        shards = client.list_shards(StreamName=stream)['Shards']
        landed = read_stream(client, stream)
        client.close()
    finally:
        server.stop()
    copies: dict[bytes, int] = {}
    wrong_shard = 0
    for shard_id, records in landed.items():
        for key, data in records:
            copies[data] = copies.get(data, 0) + 1
            wrong_shard += shard_of(shards, key) != shard_id
    wanted = set(expected)
    report = {
        'exit_status': result.status,
        'expected': len(expected),
        'landed_distinct': len(wanted & copies.keys()),
        'missing': len(wanted - copies.keys()),
        'unexpected': len(copies.keys() - wanted),
        'duplicates': sum(n - 1 for n in copies.values()),
        'wrong_shard': wrong_shard,
        'put_records_calls': result.counters.get('put_records_calls'),
        'calls_per_1000_records': round(
            1000 * result.counters.get('put_records_calls', 0) / max(1, len(expected)), 2
        ),
        'records_sent': result.counters.get('records_sent'),
        'job_seconds': round(seconds, 1),
        'records_per_second_over_the_whole_job': round(len(expected) / seconds),
    }
    print(json.dumps(report, indent=2))
    ok = (
        result.status == 0
        and report['missing'] == report['unexpected'] == 0
        and report['duplicates'] == report['wrong_shard'] == 0
    )
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
