"""Generated snapshot pairs for tests (benchmarks/generate_snapshots.py, run as a script), and
the job run on one into files on a chosen runner, as the runner tests compare them."""

from __future__ import annotations

import contextlib
import glob
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

from pipelines import export_profiles

TOP = os.path.normpath(os.path.join(os.path.dirname(__file__), os.pardir))
AS_OF = '2024-06-01T00:00:00Z'
# The runners the job is compared on besides the in-memory DirectRunner.
MULTI_PROCESSING = ('--direct_running_mode', 'multi_processing', '--direct_num_workers', '2')
PORTABLE_EMBEDDED = (
    '--runner',
    'PortableRunner',
    '--job_endpoint',
    'embed',
    '--environment_type',
    'LOOPBACK',
)


def generate_pair(out, profiles: int, files: int, fmt: str = 'jsonl'):
    """Writes `<out>/previous`, `<out>/current` and `<out>/destination.yaml`; returns `out`."""
    subprocess.run(
        [
            sys.executable,
            os.path.join(TOP, 'benchmarks', 'generate_snapshots.py'),
            '--profiles',
            str(profiles),
            '--files',
            str(files),
            '--format',
            fmt,
            '--out',
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    return out


def generate_pair_with_bad_lines(out: Path, profiles: int, files: int) -> Path:
    """A generated pair whose current snapshot has one more part, testdata's bad lines, so
    that every runner has dead letters (and withheld deletions) to agree on."""
    generate_pair(out, profiles, files)
    bad = Path(TOP, 'testdata', 'bad', 'current_bad.jsonl').read_bytes()
    (out / 'current' / 'part-bad.jsonl').write_bytes(bad)
    return out


def run_into_files(
    generated: Path, out: Path, *args: str, config: str = 'destination.yaml'
) -> tuple[int, dict[str, bytes]]:
    """Runs the export job on a generated pair into files under `out` (exports and dead
    letters) with the extra `args`; returns its exit status and every written .jsonl file's
    bytes by its path under `out`, for comparing one runner's run with another's."""
    argv = [
        '--current',
        str(generated / 'current' / '*.jsonl'),
        '--previous',
        str(generated / 'previous' / '*.jsonl'),
        '--destination_config',
        str(generated / config),
        '--output',
        str(out),
        '--dead_letter',
        str(out / 'dead'),
        '--as_of',
        AS_OF,
        *args,
    ]
    status = export_profiles.run(argv)
    files = {
        os.path.relpath(path, out): open(path, 'rb').read()
        for path in glob.glob(str(out / '**' / '*.jsonl'), recursive=True)
    }
    return status, files


@contextlib.contextmanager
def dask_cluster() -> Iterator[tuple[str, ...]]:
    """A two-worker Dask LocalCluster of separate processes, a real distributed engine; yields
    the job's flags that run it there, and closes the cluster afterwards."""
    import distributed  # the dask extra, installed by .ci/run; a test without it fails

    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        yield ('--runner', 'DaskRunner', '--dask_client_address', cluster.scheduler_address)
