"""A run killed mid-send, run again with the same `--checkpoint`: nothing lost, little re-sent.

The job runs as a child process (so it can be SIGKILLed) into kinesalite behind the fault
proxy in shard-limit mode: each shard takes Kinesis's 1,000 records/s and 1 MiB/s, so sending
a few thousand records into one shard takes seconds, and the kill lands mid-send.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from beam_kinesis.checkpoint import Checkpoint, record_digest
from tests.fault_proxy import FaultSchedule, fault_proxy  # noqa: F401 - fixture
from tests.generated import generate_pair
from tests.kinesis_servers import read_back, target_args
from tests.ledger import parse_summary, read_exports

TOP = os.path.normpath(os.path.join(os.path.dirname(__file__), os.pardir))
AS_OF = '2024-06-01T00:00:00Z'
KILL_AFTER = 2000  # records the proxy let through to kinesalite
SINK = (
    '--max_batch_records',
    '100',
    '--max_in_flight',
    '4',
    '--base_backoff_seconds',
    '0.05',
    '--max_backoff_seconds',
    '0.5',
    '--max_retries',
    '30',
)


@pytest.fixture(scope='module')
def snapshot(tmp_path_factory):
    """A first run of 7,500 generated profiles: about 6,200 export records."""
    return generate_pair(tmp_path_factory.mktemp('resume-snapshot'), 7500, 1)


def argv(snapshot, work, stream, endpoint, *extra, as_of=AS_OF):
    return [
        '--current',
        str(snapshot / 'current' / '*.jsonl'),
        '--destination_config',
        str(snapshot / 'destination.yaml'),
        '--as_of',
        as_of,
        '--output',
        str(work / 'out'),
        '--dead_letter',
        str(work / 'dead'),
        *target_args(endpoint, stream),
        *SINK,
        *extra,
    ]


def run_job(args, kill_when=None, timeout=300):
    """Runs the job as a child; returns (exit status or 'killed', stdout, stderr)."""
    process = subprocess.Popen(
        [sys.executable, '-m', 'pipelines.export_profiles', *args],
        cwd=TOP,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + timeout
    while kill_when is not None and process.poll() is None and time.monotonic() < deadline:
        if kill_when():
            os.kill(process.pid, signal.SIGKILL)
            process.communicate()
            return 'killed', '', ''
        time.sleep(0.01)
    out, err = process.communicate(timeout=max(1, deadline - time.monotonic()))
    return process.returncode, out.decode(), err.decode()


def landed(kinesalite, stream) -> list[tuple[str, bytes]]:
    records, _ = read_back(kinesalite, stream)
    return [record for shard in records.values() for record in shard]


def test_a_killed_run_resumes_from_its_checkpoint(
    kinesalite,
    fault_proxy,
    snapshot,  # noqa: F811
    tmp_path,
):
    stream = kinesalite.create_stream(1)
    fault_proxy.schedule = FaultSchedule(
        shard_records_per_second=1000, shard_bytes_per_second=1024 * 1024
    )
    checkpoint_dir = tmp_path / 'checkpoint'
    args = argv(
        snapshot, tmp_path, stream, fault_proxy.endpoint_url, '--checkpoint', str(checkpoint_dir)
    )

    status, _, _ = run_job(
        args, kill_when=lambda: fault_proxy.stats['entries forwarded'] >= KILL_AFTER
    )
    assert status == 'killed', 'the job finished before it could be killed mid-send'
    time.sleep(0.5)  # let kinesalite store what the proxy had forwarded
    first = landed(kinesalite, stream)
    recorded = Checkpoint(str(checkpoint_dir), '').load()
    # What landed but was not recorded was in flight at the kill (or its answer was).
    in_flight = [record for record in first if record_digest(*record) not in recorded]
    assert KILL_AFTER <= len(first) and len(recorded) <= len(first)
    assert len(in_flight) <= 4 * 100  # max_in_flight x max_batch_records

    status, out, err = run_job(args)
    assert status == 0, err[-2000:]
    expected = sorted(read_exports(str(tmp_path / 'out')))
    everything = landed(kinesalite, stream)
    assert sorted({data for _, data in everything}) == expected, 'records were lost'
    resent = len(everything) - len(first)
    assert resent == len(expected) - len(recorded)  # the rerun sent only the unrecorded ones
    duplicates = len(everything) - len({record for record in everything})
    assert duplicates <= len(in_flight), 'the rerun re-sent more than was in flight'
    kinesis = parse_summary(out)['Kinesis']
    assert kinesis['records already acknowledged'] == len(recorded)
    assert kinesis['records sent'] == len(expected) - len(recorded)
    assert f'{len(recorded):,} records acknowledged by an earlier attempt' in out
    # The send went at the shard's limit: the sink paces itself at what the stream's one
    # shard takes (the launch's check read it), so Kinesis need not throttle it, and the kill
    # above landed mid-send. The proxy forwarded every record of both runs.
    stats = fault_proxy.summary()
    assert stats['entries forwarded'] >= len(everything)

    # The same checkpoint with another --as_of is refused at start, in one sentence.
    status, out, err = run_job(
        argv(
            snapshot,
            tmp_path,
            stream,
            fault_proxy.endpoint_url,
            '--checkpoint',
            str(checkpoint_dir),
            as_of='2024-06-02T00:00:00Z',
        )
    )
    lines = [line for line in err.splitlines() if line.startswith('beam-kinesis-export')]
    assert status == 2 and len(lines) == 1, err
    assert 'belongs to another run (options.as_of was' in lines[0]
    assert len(landed(kinesalite, stream)) == len(everything)
