"""Generated snapshot pairs for tests (benchmarks/generate_snapshots.py, run as a script)."""

from __future__ import annotations

import os
import subprocess
import sys

TOP = os.path.normpath(os.path.join(os.path.dirname(__file__), os.pardir))


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
