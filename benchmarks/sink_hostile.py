"""Hostile Kinesis surroundings, measured: exit status, wall time and peak memory of the job.

    python benchmarks/sink_hostile.py --data DIR [--code CHECKOUT] [--scenarios a,b] [--out F]

Starts kinesalite (tests/servers) and the fault proxy of the tests in front of it, then runs
`pipelines.export_profiles` from CHECKOUT (default: this checkout) as a child process for
each scenario, with `--as_of` fixed and a first run (no previous snapshot) of the generated
snapshot in DIR/<size> (made with benchmarks/generate_snapshots.py when missing: 8 profiles
give 6 export records, 24,050 give 20,031). Peak memory is the child's maximum RSS.

Scenarios:
  blackhole6, blackhole20k   PutRecords swallowed (never answered) after the start-up check
  incomplete_signature20k    IncompleteSignatureException, quoting the Authorization header
  resume20k                  2 shards limited to Kinesis's 1,000 records/s and 1 MiB/s each;
                             SIGKILL once 8,000 records were accepted, then the same command
                             again (with --checkpoint when the checkout has it)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[1]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from tests.fault_proxy import FaultProxy, FaultSchedule  # noqa: E402
from tests.kinesis_servers import read_back, start_kinesalite, target_args  # noqa: E402

AS_OF = '2024-06-01T00:00:00Z'
KEY_ID = 'AKIAHOSTILEBENCH0001'
SECRET = 'hostile-bench-secret-do-not-print'
SIZES = {'6': 8, '20k': 24050}


def snapshot(data: Path, size: str) -> Path:
    where = data / f'g{size}'
    if not (where / 'destination.yaml').exists():
        subprocess.run(
            [
                sys.executable,
                str(_REPO_ROOT / 'benchmarks' / 'generate_snapshots.py'),
                '--profiles',
                str(SIZES[size]),
                '--files',
                '2' if size != '6' else '1',
                '--out',
                str(where),
            ],
            check=True,
            capture_output=True,
        )
    return where


def job(code: Path, argv: list[str], kill_when=None) -> dict:
    """Runs the job; returns its exit status, seconds, peak RSS (MiB) and output."""
    env = dict(os.environ, PYTHONPATH=str(code))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, '-m', 'pipelines.export_profiles', *argv],
            cwd=code,
            env=env,
            stdout=out,
            stderr=err,
        )
        killed = False
        while kill_when is not None and process.poll() is None:
            if kill_when():
                os.kill(process.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.02)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.monotonic() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {
            'exit': 'SIGKILL' if killed else process.returncode,
            'seconds': round(seconds, 1),
            'peak_mib': round(usage.ru_maxrss / 1024),
            'stdout': out.read().decode('utf-8', 'replace'),
            'stderr': err.read().decode('utf-8', 'replace'),
        }


def argv_for(where: Path, work: Path, stream: str, endpoint: str, *extra: str) -> list[str]:
    return [
        '--current',
        str(where / 'current' / '*.jsonl'),
        '--destination_config',
        str(where / 'destination.yaml'),
        '--as_of',
        AS_OF,
        '--dead_letter',
        str(work / 'dead'),
        '--report',
        str(work / 'report.json'),
        *target_args(endpoint, stream, SECRET, access_key_id=KEY_ID),
        *extra,
    ]


def summary_value(stdout: str, label: str) -> int | None:
    for line in stdout.splitlines():
        if line.strip().startswith(label):
            tail = line.strip()[len(label) :].strip().replace(',', '')
            if tail.isdigit():
                return int(tail)
    return None


def leaks(run: dict, work: Path) -> int:
    texts = [run['stdout'], run['stderr']]
    for root, _, names in os.walk(work):
        texts += [Path(root, name).read_text('utf-8', 'replace') for name in names]
    return sum(text.count(KEY_ID) + text.count(SECRET) for text in texts)


def landed(server, stream: str) -> int:
    records, _ = read_back(server, stream)
    return sum(len(shard) for shard in records.values())


def has_option(code: Path, flag: str) -> bool:
    # Where a checkout defines its options (the library modules since the CLI's options moved
    # out of pipelines/); the files an older checkout lacks are skipped.
    files = [
        code / 'pipelines' / 'export_profiles.py',
        code / 'beam_kinesis' / 'kinesis.py',
        code / 'beam_kinesis' / 'job_options.py',
        code / 'beam_kinesis' / 'sink_options.py',
    ]
    source = ''.join(path.read_text() for path in files if path.exists())
    return flag.strip('-') in source


def run_scenario(name: str, code: Path, data: Path, server, proxy) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f'hostile-{name}-'))
    size = '6' if name.endswith('6') else '20k'
    where = snapshot(data, size)
    stream = server.create_stream(2)
    row: dict = {'scenario': name, 'code': str(code)}
    if name.startswith('blackhole'):
        proxy.schedule = FaultSchedule(blackhole_after=0)
        run = job(code, argv_for(where, work, stream, proxy.endpoint_url))
    elif name.startswith('incomplete_signature'):
        proxy.schedule = FaultSchedule(
            credential_error='IncompleteSignatureException', credential_error_after=1
        )
        run = job(code, argv_for(where, work, stream, proxy.endpoint_url))
    elif name.startswith('resume'):
        proxy.schedule = FaultSchedule(
            shard_records_per_second=1000, shard_bytes_per_second=1024 * 1024
        )
        extra = (
            ['--checkpoint', str(work / 'checkpoint')] if has_option(code, '--checkpoint') else []
        )
        first = job(
            code,
            argv_for(where, work, stream, proxy.endpoint_url, *extra),
            kill_when=lambda: proxy.stats['entries forwarded'] >= 8000,
        )
        time.sleep(1.0)
        after_first = landed(server, stream)
        row.update(
            first_exit=first['exit'],
            first_seconds=first['seconds'],
            first_peak_mib=first['peak_mib'],
            landed_first=after_first,
        )
        run = job(code, argv_for(where, work, stream, proxy.endpoint_url, *extra))
        total = landed(server, stream)
        row.update(
            resent_by_rerun=total - after_first,
            landed_total=total,
            skipped=summary_value(run['stdout'], 'records already acknowledged'),
        )
    else:
        raise SystemExit(f'unknown scenario {name}')
    row.update(
        exit=run['exit'],
        seconds=run['seconds'],
        peak_mib=run['peak_mib'],
        calls=summary_value(run['stdout'], 'put records calls'),
        sent=summary_value(run['stdout'], 'records sent'),
        dead_letters=summary_value(run['stdout'], 'write'),
        secret_or_key_shown=leaks(run, work),
        stderr=run['stderr'].strip().splitlines()[-1:] if run['stderr'].strip() else [],
        proxy=proxy.summary(),
    )
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data', required=True, type=Path)
    parser.add_argument('--code', default=_REPO_ROOT, type=Path)
    parser.add_argument(
        '--scenarios', default='blackhole6,incomplete_signature20k,resume20k,blackhole20k'
    )
    parser.add_argument('--out', type=Path)
    args = parser.parse_args(argv)
    server = start_kinesalite()
    proxy = FaultProxy(server.endpoint_url, upstream_client=server.client).start()
    rows = []
    try:
        for name in args.scenarios.split(','):
            row = run_scenario(name, args.code.resolve(), args.data, server, proxy)
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        proxy.stop()
        server.stop()
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == '__main__':
    main()
