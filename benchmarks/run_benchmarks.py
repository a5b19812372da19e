"""Benchmarks the export job against a DuckDB reference diff, and the Kinesis sink.

Usage:

    python benchmarks/run_benchmarks.py --sizes 100000,1000000 --formats jsonl,parquet --sink
    python benchmarks/run_benchmarks.py --sizes 1000000 --churn 1,10,50,first
    python benchmarks/run_benchmarks.py --sizes 200000 --modes in_memory \
        --kinds default,one-file,many-files,few-segments,many-segments,long-lines
    python benchmarks/run_benchmarks.py --write-markdown     # BENCHMARKS.md from latest.json

For each size, change rate (`--churn`: percent of profiles changed, or `first` for a first
run on the current snapshot of the 10% pair), kind of input (`--kinds`: one file or many,
few segments or many, short or long lines; see KINDS) and format, on one generated snapshot
pair (benchmarks/data/<size>[-churn<pct>][-<kind>]/, made by generate_snapshots.py and
reused while its manifest matches), it runs as subprocesses, one after the other:

- the DuckDB reference diff (benchmarks/duckdb_reference.py, 2 threads), which counts the
  profiles to export;
- the export job (`python -m pipelines.export_profiles ... --output DIR`) on the
  DirectRunner, in memory and with multi_processing on 2 workers;

measuring the wall time and the peak RSS summed over the process and all its descendants
(sampled from /proc every 100 ms). Profiles/s is (previous + current profiles) / 2 / seconds.
Each job run is checked: its exported count against DuckDB's, the records it read against
the manifest, and the sorted lines of its output against the other running mode's.

Results are printed as a table and written to <results-dir>/<UTC timestamp>.json and
<results-dir>/latest.json; `--write-markdown` regenerates the results section of
BENCHMARKS.md from latest.json.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / 'benchmarks'

__all__ = [
    'TARGETS',
    'evaluate_targets',
    'format_table',
    'main',
    'measure_process',
    'results_markdown',
    'write_markdown',
]

AS_OF = '2024-06-01T00:00:00Z'
# `reference`: the job in memory with `--engine reference`, the oracle the fast engine's
# output must equal byte for byte.
MODES = ('in_memory', 'multi_processing', 'dask', 'reference')
DEFAULT_MODES = ('in_memory', 'multi_processing')
FORMATS = ('jsonl', 'parquet')
DUCKDB = 'duckdb'
# Statuses of a run: 'ok', 'failed', 'timeout', or 'dead letters' for a job that finished
# with exit status 3 (some records dead-lettered); the completed ones have a usable time.
DEAD_LETTERS = 'dead letters'
COMPLETED = ('ok', DEAD_LETTERS)
EXIT_DEAD_LETTERS = 3  # the job's exit status when it finished with dead letters
# Generator settings of every benchmark pair; a manifest that differs is regenerated.
SEED = 42
_GENERATOR_DEFAULTS = {
    'seed': SEED,
    'segments': 10,
    'memberships': [6, 14],
    'unmapped_fields': 0,
    'rates': {'change': 0.10, 'delete': 0.01, 'new': 0.01},
}
# Generator settings added later: a manifest without them was made with these values.
_MANIFEST_FALLBACKS = {'memberships': [6, 14], 'unmapped_fields': 0}

# Kinds of input (`--kinds`): what each changes in the generated pair, beside the default
# (4 files per snapshot under a million profiles, 8 from a million; a pool of 30 segments,
# 6 to 14 per profile, 5 mapped; about 1.5 KB of JSON per profile). Each has a pair of its
# own, `benchmarks/data/<size>[-churn<pct>]-<kind>/`; `files` is per snapshot.
DEFAULT_KIND = 'default'
KINDS = {
    DEFAULT_KIND: {},
    'one-file': {'files': 1},
    'many-files': {'files': 64},
    # A pool of 6 segments, every profile in all of them (5 mapped).
    'few-segments': {'segments': 2},
    # A pool of 300 segments, 30 to 50 per profile (5 mapped): a big segmentMembership map.
    'many-segments': {'segments': 100, 'memberships': [30, 50]},
    # 115 unmapped custom fields per profile: about 4 KB of JSON per profile.
    'long-lines': {'unmapped_fields': 115},
}
SAMPLE_SECONDS = 0.1
# A process of a run still alive this long after the run's main process ended is a leftover.
LEFTOVER_GRACE_SECONDS = 1.0
DEFAULT_TIMEOUT_SECONDS = 30 * 60
MULTI_PROCESSING_WORKERS = 2
DUCKDB_THREADS = 2
GIB = 1024**3
MARKDOWN_BEGIN = (
    '<!-- BEGIN GENERATED RESULTS: python benchmarks/run_benchmarks.py --write-markdown -->'
)
MARKDOWN_END = '<!-- END GENERATED RESULTS -->'

# The targets of issue 10 (the sink's of issue 6); see BENCHMARKS.md. Speed and the ratio
# to DuckDB apply to the better DirectRunner mode of each pair, at every change rate.
TARGETS = {
    'parquet_1m_profiles_per_second': 75_000,
    'jsonl_1m_profiles_per_second': 40_000,
    'peak_rss_bytes': 2 * GIB,
    'ratio_to_duckdb': 2.0,
    'sink_cap_used_percent': 95.0,
    'sink_ratio_vs_sequential': 4.0,
    'sink_delay_ms': 50.0,
}
TARGET_SIZE = 1_000_000

_SUMMARY_LINE = re.compile(r'^\s+(.+?)\s{2,}([\d,]+)\s*$')
_EXPORTED_LINE = re.compile(r'^Exported ([\d,]+) profiles', re.MULTILINE)
_REASONS = {
    'by segment change': 'segment_change',
    'by identity change': 'identity_change',
    'by attribute change': 'attribute_change',
    'by deletion': 'deletion',
    'by first run': 'first_run',
}


# Measuring a process tree.


def _proc_table() -> dict[int, tuple[int, int, int]]:
    """{pid: (parent pid, session id, RSS bytes)} of every live process (zombies left out),
    from /proc/PID/stat."""
    page = os.sysconf('SC_PAGE_SIZE')
    table = {}
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        try:
            with open(f'/proc/{name}/stat', 'rb') as handle:
                stat = handle.read()
        except OSError:  # gone since the listing
            continue
        # The command name may hold spaces and parentheses: fields start after the last ')'.
        fields = stat[stat.rindex(b')') + 2 :].split()
        # fields[0] is field 3 of proc(5), the state: ppid is 4, session 6, rss (pages) 24.
        if fields[0] in (b'Z', b'X'):
            continue
        table[int(name)] = (int(fields[1]), int(fields[3]), int(fields[21]) * page)
    return table


def _tree(root: int, table: dict[int, tuple[int, int, int]]) -> set[int]:
    """`root`, its descendants, and whatever else is left in its session (orphans)."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(pid)
    members: set[int] = set()
    stack = [root] if root in table else []
    while stack:
        pid = stack.pop()
        if pid not in members:
            members.add(pid)
            stack.extend(children.get(pid, ()))
    return members | {pid for pid, (_, session, _) in table.items() if session == root}


def _session(root: int) -> set[int]:
    """The live processes of the session `root` leads."""
    return {pid for pid, (_, session, _) in _proc_table().items() if session == root}


def _wait_for_session_end(root: int, seconds: float) -> None:
    deadline = time.perf_counter() + seconds
    while _session(root) and time.perf_counter() < deadline:
        time.sleep(0.05)


def _kill(pids: set[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def measure_process(
    command: list[str],
    *,
    cwd: Path,
    env: dict,
    timeout: float,
    stdout_path: Path,
    stderr_path: Path,
    interval: float = SAMPLE_SECONDS,
) -> dict:
    """Runs `command` in its own session; returns its wall time, peak tree RSS and status.

    The tree's RSS (the process, its descendants and any orphan left in its session) is
    summed every `interval` seconds; a run past `timeout` seconds is killed, tree and all.
    Shared pages are counted once per process, so the sum can overstate the memory in use.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_rss, peak_processes, members = 0, 0, set()
    status = 'ok'
    with open(stdout_path, 'wb') as out, open(stderr_path, 'wb') as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        while True:
            try:
                process.wait(timeout=interval)
                break
            except subprocess.TimeoutExpired:
                pass
            table = _proc_table()
            members = _tree(process.pid, table) | (members & table.keys())
            rss = sum(table[pid][2] for pid in members if pid in table)
            peak_rss = max(peak_rss, rss)
            peak_processes = max(peak_processes, len(members))
            if time.perf_counter() - started > timeout:
                status = 'timeout'
                _kill(members, signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
                _kill(_tree(process.pid, _proc_table()) | members, signal.SIGKILL)
                process.wait()
                break
        seconds = time.perf_counter() - started
    # Processes of the run still alive a second after its main process ended (workers
    # left behind, or ones killed that have not died yet) would hold memory: end them.
    _wait_for_session_end(process.pid, LEFTOVER_GRACE_SECONDS)
    leftovers = _session(process.pid)
    _kill(leftovers, signal.SIGKILL)
    _wait_for_session_end(process.pid, 5.0)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if status == 'ok' and process.returncode != 0:
        status = 'failed'
    return {
        'status': status,
        'exit_code': process.returncode,
        'seconds': round(seconds, 3),
        'peak_rss_bytes': peak_rss,
        'peak_processes': peak_processes,
        'cpu_seconds': round(
            after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 2
        ),
        'leftover_processes': len(leftovers),
    }


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding='utf-8', errors='replace')
    except OSError:
        return ''
    return '\n'.join(text.strip().splitlines()[-lines:])


# Data.


def _files_per_snapshot(size: int, kind: str = DEFAULT_KIND) -> int:
    return KINDS[kind].get('files') or (8 if size >= 1_000_000 else 4)


DEFAULT_CHANGE_RATE = _GENERATOR_DEFAULTS['rates']['change']
FIRST_RUN = 'first'


def _settings(change_rate: float, kind: str = DEFAULT_KIND) -> dict:
    """The generator settings of a pair, as its manifest records them."""
    overrides = {key: value for key, value in KINDS[kind].items() if key != 'files'}
    return {
        **_GENERATOR_DEFAULTS,
        **overrides,
        'rates': {**_GENERATOR_DEFAULTS['rates'], 'change': change_rate},
    }


def _manifest_matches(
    manifest: dict,
    size: int,
    files: int,
    change_rate: float = DEFAULT_CHANGE_RATE,
    kind: str = DEFAULT_KIND,
) -> bool:
    return (
        manifest.get('profiles') == size
        and manifest.get('files_per_snapshot') == files
        and all(
            manifest.get(key, _MANIFEST_FALLBACKS.get(key)) == value
            for key, value in _settings(change_rate, kind).items()
        )
    )


def _data_folder(data_dir: Path, size: int, change_rate: float, kind: str) -> Path:
    name = str(size)
    if change_rate != DEFAULT_CHANGE_RATE:
        name += f'-churn{round(change_rate * 100)}'
    if kind != DEFAULT_KIND:
        name += f'-{kind}'
    return data_dir / name


def _churn_rate(churn: str) -> float:
    """The generator's change rate of a `--churn` value (a first run reads the 10% pair)."""
    return DEFAULT_CHANGE_RATE if churn == FIRST_RUN else int(churn) / 100


def ensure_data(
    data_dir: Path,
    size: int,
    formats: tuple[str, ...],
    jobs: int,
    timeout: float,
    change_rate: float = DEFAULT_CHANGE_RATE,
    kind: str = DEFAULT_KIND,
) -> tuple[Path, dict, float | None]:
    """The generated pair for `size`, `change_rate` and kind of input: reused when its
    manifest matches and its files of `formats` are there, else (re)generated. Returns its
    folder, manifest and the seconds generation took (None when reused)."""
    folder = _data_folder(data_dir, size, change_rate, kind)
    files = _files_per_snapshot(size, kind)
    manifest_path = folder / 'manifest.json'
    manifest = {}
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text(encoding='utf-8'))
    keep = (
        manifest.get('formats', [])
        if _manifest_matches(manifest, size, files, change_rate, kind)
        else []
    )
    present = all(
        (folder / entry['path']).is_file()
        for snapshot in ('previous', 'current')
        for entry in manifest.get('files', {}).get(snapshot, [])
        if entry['format'] in formats
    )
    if keep and set(formats) <= set(keep) and present:
        return folder, manifest, None
    # The generator's manifest lists only the formats of its last run: write them all.
    wanted = tuple(sorted(set(formats) | set(keep)))
    # Without a manifest, an interrupted generation cannot be taken for a finished one.
    manifest_path.unlink(missing_ok=True)
    print(
        f'generating {size:,} profiles ({", ".join(wanted)}, {files} files) in {folder}', flush=True
    )
    settings = _settings(change_rate, kind)
    keywords = {
        'seed': settings['seed'],
        'segments': settings['segments'],
        'memberships': settings['memberships'],
        'unmapped_fields': settings['unmapped_fields'],
        'change_rate': change_rate,
    }
    code = (
        'import json, sys; sys.path.insert(0, sys.argv[1]); import generate_snapshots as g; '
        'k = json.loads(sys.argv[7]); k["memberships"] = tuple(k["memberships"]); '
        'g.generate(g.GeneratorSettings(int(sys.argv[3]), **k), '
        'sys.argv[2], tuple(sys.argv[4].split(",")), files=int(sys.argv[5]), '
        'jobs=int(sys.argv[6]))'
    )
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            '-c',
            code,
            str(BENCHMARKS),
            str(folder),
            str(size),
            ','.join(wanted),
            str(files),
            str(jobs),
            json.dumps(keywords),
        ],
        cwd=REPO,
        check=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - started
    manifest = json.loads(manifest_path.read_text(encoding='utf-8'))
    return folder, manifest, round(seconds, 1)


def _warm_cache(paths: list[Path]) -> None:
    """Reads the input files once, so that the first engine measured is not the only one to
    read them from disk."""
    for path in paths:
        with open(path, 'rb') as handle:
            while handle.read(1 << 22):
                pass


def _input_files(folder: Path, manifest: dict, fmt: str) -> list[Path]:
    return [
        folder / entry['path']
        for snapshot in ('previous', 'current')
        for entry in manifest['files'][snapshot]
        if entry['format'] == fmt
    ]


# The runs.


def _env(checkout: Path = REPO) -> dict:
    env = dict(os.environ)
    # The job under test is this checkout's (or the baseline's), in the job's process and in
    # Beam's workers.
    env['PYTHONPATH'] = os.pathsep.join([str(checkout), *filter(None, [env.get('PYTHONPATH')])])
    return env


def _parse_job_stdout(text: str) -> dict:
    """Counts from the job's summary: exported (total and by reason) and records read."""
    counters = {}
    for line in text.splitlines():
        match = _SUMMARY_LINE.match(line)
        if match:
            counters[match.group(1).strip()] = int(match.group(2).replace(',', ''))
    exported = _EXPORTED_LINE.search(text)
    return {
        'exported': int(exported.group(1).replace(',', '')) if exported else None,
        'exported_by_reason': {
            reason: counters[label] for label, reason in _REASONS.items() if label in counters
        },
        'records_read': {
            'previous': counters.get('previous snapshot records'),
            'current': counters.get('current snapshot records'),
        },
        'profiles_compared': counters.get('profiles compared'),
    }


def _output_digest(folder: Path, prefix: str) -> tuple[int, str]:
    """Lines in the folder's `prefix-*` files and the SHA-256 of those lines sorted."""
    lines = []
    for path in sorted(folder.glob(f'{prefix}-*')):
        with open(path, 'rb') as handle:
            lines.extend(line.rstrip(b'\n') for line in handle)
    lines.sort()
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line)
        digest.update(b'\n')
    return len(lines), digest.hexdigest()


def _previous(folder: Path, fmt: str, first_run: bool) -> list[str]:
    return [] if first_run else ['--previous', str(folder / 'previous' / f'*.{fmt}')]


def run_duckdb(folder: Path, fmt: str, work: Path, timeout: float, first_run: bool = False) -> dict:
    """The DuckDB reference diff on one pair (or first run), measured."""
    run_dir = work / f'{folder.name}-{fmt}-duckdb{"-first" if first_run else ""}'
    run_dir.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        str(BENCHMARKS / 'duckdb_reference.py'),
        '--current',
        str(folder / 'current' / f'*.{fmt}'),
        *_previous(folder, fmt, first_run),
        '--destination_config',
        str(folder / 'destination.yaml'),
        '--threads',
        str(DUCKDB_THREADS),
        '--json',
    ]
    row = measure_process(
        command,
        cwd=REPO,
        env=_env(),
        timeout=timeout,
        stdout_path=run_dir / 'stdout.txt',
        stderr_path=run_dir / 'stderr.txt',
    )
    if row['status'] == 'ok':
        result = json.loads((run_dir / 'stdout.txt').read_text().strip().splitlines()[-1])
        row.update(
            exported=result['exported'],
            exported_by_reason=result['by_reason'],
            profiles_compared=result['profiles_compared'],
            duplicated_keys=result['duplicated_keys'],
            query_seconds=result['query_seconds'],
            threads=result['threads'],
        )
    else:
        row['error'] = _tail(run_dir / 'stderr.txt')
    return row


def run_job(
    folder: Path,
    fmt: str,
    mode: str,
    work: Path,
    timeout: float,
    first_run: bool = False,
    checkout: Path | None = None,
) -> dict:
    """The export job on one pair (or first run) in one DirectRunner mode, measured; its
    output digested. `checkout`: another checkout of the job (a baseline) instead of this."""
    label = f'{mode}{"-first" if first_run else ""}{"-baseline" if checkout else ""}'
    run_dir = work / f'{folder.name}-{fmt}-{label}'
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    command = [
        sys.executable,
        '-m',
        'pipelines.export_profiles',
        '--current',
        str(folder / 'current' / f'*.{fmt}'),
        *_previous(folder, fmt, first_run),
        '--destination_config',
        str(folder / 'destination.yaml'),
        '--output',
        str(run_dir / 'exports'),
        '--dead_letter',
        str(run_dir / 'dead_letters'),
        '--as_of',
        AS_OF,
        '--direct_running_mode',
        'multi_processing' if mode == 'multi_processing' else 'in_memory',
        # A Prism binary that is not there: the DirectRunner skips its attempt to
        # download one (no traffic off the machine) and runs on Beam's Python runner.
        '--prism_location',
        str(run_dir / 'no-prism-binary'),
    ]
    if mode == 'multi_processing':
        command += ['--direct_num_workers', str(MULTI_PROCESSING_WORKERS)]
    if mode == 'reference':
        command += ['--engine', 'reference']
    if mode == 'dask':
        # Beam's DaskRunner; with no scheduler address Dask starts a LocalCluster of one
        # worker process per core inside the job's process tree, so its memory is counted.
        command += [
            '--runner',
            'DaskRunner',
            '--dask_npartitions',
            str(MULTI_PROCESSING_WORKERS * 2),
        ]
    row = measure_process(
        command,
        cwd=checkout or REPO,
        env=_env(checkout or REPO),
        timeout=timeout,
        stdout_path=run_dir / 'stdout.txt',
        stderr_path=run_dir / 'stderr.txt',
    )
    row.update(_parse_job_stdout((run_dir / 'stdout.txt').read_text(errors='replace')))
    row['output_lines'], row['output_sha256'] = _output_digest(run_dir / 'exports', 'exports')
    row['dead_letters'], row['dead_letters_sha256'] = _output_digest(
        run_dir / 'dead_letters', 'dead_letters'
    )
    if row['status'] == 'failed' and row['exit_code'] == EXIT_DEAD_LETTERS:
        row['status'] = DEAD_LETTERS  # finished: the times count, the notes say how many
    if row['status'] not in COMPLETED:
        row['error'] = _tail(run_dir / 'stderr.txt')
    return row


def _rate(profiles: float, seconds: float | None) -> int | None:
    return round(profiles / seconds) if seconds else None


def _combine(runs: list[dict]) -> dict:
    """One row from repeated runs: the median time, the largest peak, the last counts."""
    row = dict(runs[-1])
    if len(runs) > 1:
        ok = [run['seconds'] for run in runs if run['status'] in COMPLETED] or [runs[-1]['seconds']]
        row['seconds'] = round(statistics.median(ok), 3)
        row['all_seconds'] = [run['seconds'] for run in runs]
        row['peak_rss_bytes'] = max(run['peak_rss_bytes'] for run in runs)
        row['status'] = next((run['status'] for run in runs if run['status'] != 'ok'), 'ok')
    return row


def benchmark_pair(
    folder: Path,
    manifest: dict,
    fmt: str,
    modes: tuple[str, ...],
    work: Path,
    timeout: float,
    repeat: int,
    duckdb: bool,
    churn: str = '10',
    baseline: Path | None = None,
    kind: str = DEFAULT_KIND,
) -> tuple[list, dict]:
    """Every engine on one pair (a first run on its current snapshot when `churn` is
    `first`); returns the rows and the output comparison."""
    counts = manifest['counts']
    inputs = _input_files(folder, manifest, fmt)
    first_run = churn == FIRST_RUN
    # Profiles/s counts the profiles of a snapshot: their mean over a pair, the current ones
    # of a first run.
    profiles = counts['current'] if first_run else (counts['previous'] + counts['current']) / 2
    base = {
        'size': manifest['profiles'],
        'format': fmt,
        'churn': churn,
        'kind': kind,
        'files_per_snapshot': manifest['files_per_snapshot'],
        'previous_profiles': 0 if first_run else counts['previous'],
        'current_profiles': counts['current'],
        # Of both snapshots, whatever the run reads: what a line (or row) weighs.
        'input_bytes_per_profile': round(
            sum(path.stat().st_size for path in inputs) / (counts['previous'] + counts['current'])
        ),
    }
    _warm_cache(inputs)
    where = f'{fmt} churn {churn}' + ('' if kind == DEFAULT_KIND else f' {kind}')
    rows = []
    reference = None
    if duckdb:
        print(f'  {where}: DuckDB reference', flush=True)
        reference = {
            'engine': DUCKDB,
            **base,
            **_combine([run_duckdb(folder, fmt, work, timeout, first_run) for _ in range(repeat)]),
        }
        rows.append(reference)
    runs = [(f'beam {mode}', mode, None) for mode in modes]
    if baseline is not None:
        runs.append(('baseline in_memory', 'in_memory', baseline))
    for engine, mode, checkout in runs:
        print(f'  {where}: export job, {engine}', flush=True)
        row = {
            'engine': engine,
            **base,
            **_combine(
                [
                    run_job(folder, fmt, mode, work, timeout, first_run, checkout)
                    for _ in range(repeat)
                ]
            ),
        }
        read = row.get('records_read') or {}
        row['reads_reconciled'] = (
            read.get('previous') in (None, 0)
            if first_run
            else read.get('previous') == counts['previous']
        ) and read.get('current') == counts['current']
        rows.append(row)
    for row in rows:
        done = row['status'] in COMPLETED
        row['profiles_per_second'] = _rate(profiles, row['seconds'] if done else None)
        usable = reference is not None and reference['status'] == 'ok' and done
        row['duckdb_exported'] = reference.get('exported') if usable else None
        row['ratio_to_duckdb'] = round(row['seconds'] / reference['seconds'], 2) if usable else None
        if row['engine'] != DUCKDB:
            row['agrees_with_duckdb'] = (
                row.get('exported') == reference['exported'] if usable else None
            )
            if usable and row['agrees_with_duckdb'] is False:
                row['disagreement_by_reason'] = {
                    reason: {'job': row['exported_by_reason'].get(reason, 0), 'duckdb': n}
                    for reason, n in reference['exported_by_reason'].items()
                    if row['exported_by_reason'].get(reason, 0) != n
                }
    comparison = {'size': manifest['profiles'], 'format': fmt, 'churn': churn, 'kind': kind}
    jobs = {
        row['engine']: row for row in rows if row['engine'] != DUCKDB and row['status'] in COMPLETED
    }
    first = jobs.get('beam in_memory') or next(iter(jobs.values()), None)
    others = {engine: row for engine, row in jobs.items() if row is not first}
    if first is None or not others:
        comparison['outputs'] = 'not compared (fewer than two runs completed)'
    else:
        comparison['outputs'] = {
            f'{first["engine"]} vs {engine}': (
                'identical'
                if (row['output_sha256'], row['dead_letters_sha256'])
                == (first['output_sha256'], first['dead_letters_sha256'])
                else 'different'
            )
            for engine, row in others.items()
        }
        comparison['lines'] = {engine: row['output_lines'] for engine, row in jobs.items()}
    return rows, comparison


# Results.


def machine_info() -> dict:
    """Cores, memory, load and versions of the machine the benchmark runs on."""
    meminfo = {}
    with open('/proc/meminfo', encoding='ascii') as handle:
        for line in handle:
            name, _, rest = line.partition(':')
            if name in ('MemTotal', 'MemAvailable'):
                meminfo[name] = int(rest.split()[0]) * 1024
    versions = {}
    for package in ('apache-beam', 'duckdb', 'pyarrow', 'orjson', 'boto3'):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        'cpu_count': os.cpu_count(),
        'mem_total_bytes': meminfo.get('MemTotal'),
        'mem_available_bytes': meminfo.get('MemAvailable'),
        'load_average': list(os.getloadavg()),
        'python': platform.python_version(),
        'beam': versions['apache-beam'],
        'versions': versions,
        'platform': platform.platform(),
    }


def git_info() -> dict:
    """The commit benchmarked, and the tracked files changed since it (work in progress)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ['git', *args], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()

    status = subprocess.run(
        ['git', 'status', '--porcelain', '--untracked-files=no'],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    return {
        'commit': git('rev-parse', 'HEAD') or None,
        'changed_files': changed,
        'dirty': bool(changed),
    }


def _pair_label(item: dict) -> str:
    """`200,000 jsonl churn 10`, and the kind of input when it is not the default."""
    text = f'{item["size"]:,} {item["format"]} churn {item.get("churn", "10")}'
    kind = item.get('kind', DEFAULT_KIND)
    return text if kind == DEFAULT_KIND else f'{text} {kind}'


def _pair_key(item: dict) -> tuple:
    return (item['size'], item['format'], item.get('churn', '10'), item.get('kind', DEFAULT_KIND))


def evaluate_targets(result: dict) -> list[dict]:
    """Each target of BENCHMARKS.md against the runs it applies to."""
    checks = []

    def check(target: str, run: str, value, threshold, met: bool) -> None:
        checks.append(
            {'target': target, 'run': run, 'value': value, 'threshold': threshold, 'met': met}
        )

    best: dict = {}
    for row in result['pipeline']:
        if row['engine'] == DUCKDB:
            continue
        run = f'{_pair_label(row)} {row["engine"]}'
        if row['status'] not in COMPLETED:
            check('the run completes', run, row['status'], 'ok', False)
            continue
        check(
            'peak memory < 2 GiB',
            run,
            row['peak_rss_bytes'],
            TARGETS['peak_rss_bytes'],
            row['peak_rss_bytes'] < TARGETS['peak_rss_bytes'],
        )
        if row['engine'] in ('beam in_memory', 'beam multi_processing'):
            pair = _pair_key(row)
            if pair not in best or row['seconds'] < best[pair]['seconds']:
                best[pair] = row
    for row in best.values():
        size, fmt = row['size'], row['format']
        run = f'{_pair_label(row)} {row["engine"]} (the better mode)'
        if size == TARGET_SIZE:
            floor = TARGETS[f'{fmt}_1m_profiles_per_second']
            check(
                f'1M {fmt} >= {floor:,} profiles/s',
                run,
                row['profiles_per_second'],
                floor,
                row['profiles_per_second'] >= floor,
            )
        if row['ratio_to_duckdb'] is not None:
            check(
                'within 2x of DuckDB',
                run,
                row['ratio_to_duckdb'],
                TARGETS['ratio_to_duckdb'],
                row['ratio_to_duckdb'] <= TARGETS['ratio_to_duckdb'],
            )
    for item in result['comparisons']:
        outputs = item.get('outputs')
        if isinstance(outputs, dict):
            for pair, verdict in outputs.items():
                check(
                    'output byte-identical (exports and dead letters)',
                    f'{_pair_label(item)}: {pair}',
                    verdict,
                    'identical',
                    verdict == 'identical',
                )
    sink = result.get('sink')
    if sink:
        fill = sink['batch_fill']
        check(
            'sink fills >= 95% of the 500-record cap',
            f'{fill["records"]:,} records',
            fill['cap_used_percent'],
            TARGETS['sink_cap_used_percent'],
            fill['cap_used_percent'] >= TARGETS['sink_cap_used_percent'],
        )
        speed = sink['throughput']
        if speed['delay_ms'] == TARGETS['sink_delay_ms'] and speed['dofn']:
            default = sink.get('default_max_in_flight')
            rows = {row['max_in_flight']: row for row in speed['dofn']}
            best = max(speed['dofn'], key=lambda row: row['ratio_vs_baseline'])
            picks = [('default', rows.get(default)), ('best', best)]
            for label, row in picks:
                if row is None:
                    continue
                check(
                    'sink >= 4x the sequential loop at 50 ms',
                    f'max_in_flight={row["max_in_flight"]} ({label})',
                    row['ratio_vs_baseline'],
                    TARGETS['sink_ratio_vs_sequential'],
                    row['ratio_vs_baseline'] >= TARGETS['sink_ratio_vs_sequential'],
                )
    return checks


def _mib(value: int | None) -> str:
    return f'{value / 1024**2:,.0f} MiB' if value else '-'


def _number(value, digits: int = 0) -> str:
    if value is None:
        return '-'
    return f'{value:,.{digits}f}' if isinstance(value, float) else f'{value:,}'


_COLUMNS = (
    'size',
    'format',
    'churn %',
    'engine',
    'status',
    'seconds',
    'profiles/s',
    'peak RSS',
    'exported',
    'DuckDB count',
    'agrees',
    'x DuckDB',
)


# With `--kinds`: which kind of input, its files per snapshot and bytes per profile.
_KIND_COLUMNS = ('input', 'files', 'bytes/profile')


def _shows_kinds(result: dict) -> bool:
    return any(row.get('kind', DEFAULT_KIND) != DEFAULT_KIND for row in result['pipeline'])


def _columns(result: dict) -> tuple[str, ...]:
    """The table's columns: the kind of input's only when a run measured some."""
    if not _shows_kinds(result):
        return _COLUMNS
    split = _COLUMNS.index('engine')
    return (*_COLUMNS[:split], *_KIND_COLUMNS, *_COLUMNS[split:])


def _table_rows(result: dict) -> list[tuple[str, ...]]:
    kinds = _shows_kinds(result)
    rows = []
    for row in result['pipeline']:
        agrees = row.get('agrees_with_duckdb')
        input_cells = (
            (
                row.get('kind', DEFAULT_KIND),
                _number(row.get('files_per_snapshot')),
                _number(row.get('input_bytes_per_profile')),
            )
            if kinds
            else ()
        )
        rows.append(
            (
                _number(row['size']),
                row['format'],
                row.get('churn', '10'),
                *input_cells,
                row['engine'],
                row['status'],
                _number(row['seconds'], 2),
                _number(row.get('profiles_per_second')),
                _mib(row['peak_rss_bytes']),
                _number(row.get('exported')),
                _number(row.get('duckdb_exported')),
                '-' if agrees is None else ('yes' if agrees else 'NO'),
                _number(row.get('ratio_to_duckdb'), 2),
            )
        )
    return rows


def _notes(result: dict) -> list[str]:
    notes = []
    for item in result['comparisons']:
        outputs = item.get('outputs', 'not compared')
        if isinstance(outputs, dict):
            outputs = '; '.join(f'{pair}: {verdict}' for pair, verdict in outputs.items())
        text = f'{_pair_label(item)}: exports and dead letters (sorted lines) {outputs}'
        if 'lines' in item:
            text += (
                ' ('
                + ', '.join(f'{lines:,}' for lines in item['lines'].values())
                + ' export lines)'
            )
        notes.append(text)
    reference_compared = {
        _pair_key(row): row.get('profiles_compared')
        for row in result['pipeline']
        if row['engine'] == DUCKDB
    }
    for row in result['pipeline']:
        where = f'{_pair_label(row)} {row["engine"]}'
        key = _pair_key(row)
        if (
            row['engine'] != DUCKDB
            and row['status'] in COMPLETED
            and not row.get('reads_reconciled')
        ):
            notes.append(
                f'{where}: records read {row.get("records_read")} differ from the generated counts'
            )
        if row.get('disagreement_by_reason'):
            notes.append(
                f"{where}: exports differ from DuckDB's by reason: {row['disagreement_by_reason']}"
            )
        if (
            row['engine'] != DUCKDB
            and row.get('exported') is not None
            and row.get('output_lines') is not None
            and row['exported'] != row['output_lines']
        ):
            notes.append(
                f'{where}: {row["exported"]:,} exports counted but '
                f'{row["output_lines"]:,} lines written'
            )
        if (
            row['engine'] != DUCKDB
            and row.get('agrees_with_duckdb') is not None
            and row.get('profiles_compared') != reference_compared.get(key)
        ):
            notes.append(
                f'{where}: compared {row.get("profiles_compared")} profiles, DuckDB '
                f'{reference_compared.get(key)}'
            )
        if row.get('dead_letters'):
            notes.append(f'{where}: {row["dead_letters"]:,} dead letters')
        if row.get('error'):
            notes.append(f'{where}: {row["status"]}: {row["error"].splitlines()[-1]}')
    return notes


def _sink_rows(sink: dict) -> tuple[str, list[tuple[str, ...]]]:
    speed = sink['throughput']
    base = speed['baseline']
    rows = [
        (
            'sequential loop (baseline)',
            _number(base['seconds'], 3),
            _number(base['records_per_second']),
            _number(base['calls']),
            '1.00',
        )
    ]
    for row in speed['dofn']:
        rows.append(
            (
                f'DoFn, max_in_flight={row["max_in_flight"]}',
                _number(row['seconds'], 3),
                _number(row['records_per_second']),
                _number(row['calls']),
                f'{row["ratio_vs_baseline"]:.2f}',
            )
        )
    fill = sink['batch_fill']
    summary = (
        f'batch fill: {fill["records"]:,} records of {fill["record_bytes"]:,} bytes in '
        f'one bundle -> {fill["calls"]:,} PutRecords calls, '
        f'{fill["calls_per_1000_records"]} per 1,000 records, '
        f'{fill["mean_records_per_call"]} records per call = '
        f'{fill["cap_used_percent"]}% of the {fill["cap_records"]}-record cap'
    )
    return summary, rows


_SINK_COLUMNS = ('sender', 'seconds', 'records/s', 'calls', 'x sequential')


def _text_table(
    columns: tuple[str, ...], rows: list[tuple[str, ...]], left: tuple[str, ...] = ()
) -> str:
    """A plain text table; the `left` columns are aligned left, the others right."""
    widths = [
        max(len(column), *(len(row[n]) for row in rows)) if rows else len(column)
        for n, column in enumerate(columns)
    ]

    def line(cells) -> str:
        return '  '.join(
            cell.ljust(width) if column in left else cell.rjust(width)
            for cell, width, column in zip(cells, widths, columns, strict=True)
        ).rstrip()

    return '\n'.join(
        [line(columns), '  '.join('-' * width for width in widths), *(line(row) for row in rows)]
    )


def _target_rows(result: dict) -> list[tuple[str, ...]]:
    def shown(item: dict) -> str:
        value, threshold = item['value'], item['threshold']
        if isinstance(threshold, int) and threshold >= GIB:
            return _mib(value)
        if item['target'].startswith('sink fills'):
            return f'{value:.1f}%'
        if not isinstance(value, (int, float)):
            return str(value)
        return _number(value, 2) if isinstance(value, float) else _number(value)

    rows = [
        (item['target'], item['run'], shown(item), 'met' if item['met'] else 'NOT MET')
        for item in result['targets']
    ]
    if result['pipeline'] and not any(row['size'] == TARGET_SIZE for row in result['pipeline']):
        rows.append(
            (
                '1M profiles/s (Parquet, JSON Lines)',
                f'no {TARGET_SIZE:,}-profile run',
                '-',
                'not measured',
            )
        )
    return rows


def format_table(result: dict) -> str:
    """The results as text: the runs, notes, the sink and the targets."""
    parts = []
    if result['pipeline']:
        parts.append(
            _text_table(
                _columns(result),
                _table_rows(result),
                left=('format', 'input', 'engine', 'status', 'agrees'),
            )
        )
        parts.extend(_notes(result))
    if result.get('sink'):
        summary, rows = _sink_rows(result['sink'])
        parts.append(f'Sink {summary}')
        parts.append(
            f'Sink throughput, {result["sink"]["throughput"]["records"]:,} records, '
            f'every call answered after {result["sink"]["throughput"]["delay_ms"]:g} ms:'
        )
        parts.append(_text_table(_SINK_COLUMNS, rows, left=('sender',)))
    if _target_rows(result):
        parts.append(
            _text_table(
                ('target', 'run', 'value', 'result'),
                _target_rows(result),
                left=('target', 'run', 'result'),
            )
        )
    return '\n\n'.join(parts)


def _markdown_table(columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
    lines.extend('| ' + ' | '.join(row) + ' |' for row in rows)
    return '\n'.join(lines)


def results_markdown(result: dict) -> str:
    """The results section of BENCHMARKS.md, from a results JSON."""
    machine = result['machine']
    git = result['git']
    commit = (git.get('commit') or 'unknown')[:12]
    if git.get('dirty'):
        commit += f' + uncommitted changes to {", ".join(git["changed_files"])}'
    lines = [
        f'Run {result["timestamp"]} on commit {commit}: {machine["cpu_count"]} cores, '
        f'{machine["mem_total_bytes"] / GIB:.1f} GiB, Python {machine["python"]}, '
        f'Beam {machine["beam"]}, DuckDB {machine["versions"].get("duckdb")}; load average '
        f'{machine["load_average"][0]:.2f} at the start. Raw numbers: '
        f'`benchmarks/results/{result["file"]}`.',
        '',
    ]
    if result['pipeline']:
        lines.append(_markdown_table(_columns(result), _table_rows(result)))
        lines.append('')
        lines.extend(f'- {note}' for note in _notes(result))
        lines.append('')
    if result.get('sink'):
        summary, rows = _sink_rows(result['sink'])
        speed = result['sink']['throughput']
        lines.append(f'Sink, {summary}.')
        lines.append('')
        lines.append(
            f'Sink throughput, {speed["records"]:,} records of '
            f'{speed["record_bytes"]:,} bytes, every call answered after '
            f'{speed["delay_ms"]:g} ms:'
        )
        lines.append('')
        lines.append(_markdown_table(_SINK_COLUMNS, rows))
        lines.append('')
    if _target_rows(result):
        lines.append('Targets:')
        lines.append('')
        lines.append(_markdown_table(('target', 'run', 'value', 'result'), _target_rows(result)))
        lines.append('')
    return '\n'.join(lines).rstrip() + '\n'


def write_markdown(results_file: Path, markdown: Path) -> None:
    """Replaces the generated section of `markdown` (appending it if missing)."""
    result = json.loads(results_file.read_text(encoding='utf-8'))
    section = f'{MARKDOWN_BEGIN}\n{results_markdown(result)}{MARKDOWN_END}'
    text = markdown.read_text(encoding='utf-8') if markdown.exists() else ''
    if MARKDOWN_BEGIN in text and MARKDOWN_END in text:
        head, _, rest = text.partition(MARKDOWN_BEGIN)
        _, _, tail = rest.partition(MARKDOWN_END)
        text = head + section + tail
    else:
        text = text.rstrip('\n') + ('\n\n' if text else '') + section + '\n'
    markdown.write_text(text, encoding='utf-8')


def _list(text: str, kind=str) -> tuple:
    return tuple(
        kind(item.strip().replace('_', '') if kind is int else item.strip())
        for item in text.split(',')
        if item.strip()
    )


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status (1 if a run failed)."""
    parser = argparse.ArgumentParser(
        description='Benchmark the export job against DuckDB, and the Kinesis sink.',
        epilog='Give --sizes and/or --sink to measure; --write-markdown alone only rewrites '
        'BENCHMARKS.md from latest.json.',
    )
    parser.add_argument(
        '--sizes', default=None, help='comma-separated profile counts, e.g. 100000,1000000'
    )
    parser.add_argument(
        '--formats',
        default=','.join(FORMATS),
        help='comma-separated, of jsonl and parquet (default both)',
    )
    parser.add_argument(
        '--modes',
        default=','.join(DEFAULT_MODES),
        help='runner modes, of in_memory and multi_processing (the '
        "DirectRunner) and dask (Beam's DaskRunner on a local cluster); "
        'default in_memory,multi_processing',
    )
    parser.add_argument(
        '--churn',
        default='10',
        help='comma-separated change rates in percent of profiles changed, '
        'and/or "first" for a first run (default 10)',
    )
    parser.add_argument(
        '--kinds',
        default=DEFAULT_KIND,
        help='comma-separated kinds of input, each a pair of its own, measured side by '
        f'side: {", ".join(KINDS)} (default {DEFAULT_KIND}; see KINDS)',
    )
    parser.add_argument(
        '--baseline',
        type=Path,
        default=None,
        help='another checkout of the job (e.g. a git worktree of an earlier '
        'commit) to run in memory beside this one, on the same data',
    )
    parser.add_argument('--no-duckdb', action='store_true', help='skip the DuckDB reference')
    parser.add_argument(
        '--repeat', type=int, default=1, help='runs of each engine; the median time is reported'
    )
    parser.add_argument(
        '--timeout',
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        help='seconds before a run is killed (default 1800)',
    )
    parser.add_argument('--data-dir', type=Path, default=BENCHMARKS / 'data')
    parser.add_argument('--results-dir', type=Path, default=BENCHMARKS / 'results')
    parser.add_argument(
        '--work-dir',
        type=Path,
        default=None,
        help='where runs write their outputs (default: a temporary folder, removed afterwards)',
    )
    parser.add_argument(
        '--jobs', type=int, default=os.cpu_count() or 1, help='processes generating data'
    )
    parser.add_argument('--sink', action='store_true', help='also run the sink benchmark')
    parser.add_argument('--sink-fill-records', type=int, default=20_000)
    parser.add_argument('--sink-throughput-records', type=int, default=100_000)
    parser.add_argument('--sink-delay-ms', type=float, default=50.0)
    parser.add_argument('--sink-max-in-flight', default='1,4,8,16')
    parser.add_argument(
        '--write-markdown',
        action='store_true',
        help='rewrite the results section of --markdown from latest.json '
        '(after the run, if one was asked for)',
    )
    parser.add_argument('--markdown', type=Path, default=REPO / 'BENCHMARKS.md')
    args = parser.parse_args(argv)

    try:
        sizes = _list(args.sizes, int) if args.sizes else ()
        in_flight = _list(args.sink_max_in_flight, int)
    except ValueError as err:
        parser.error(f'not a list of integers: {err}')
    formats, modes = _list(args.formats), _list(args.modes)
    churns = _list(args.churn)
    kinds = _list(args.kinds)
    unknown = [kind for kind in kinds if kind not in KINDS]
    if not kinds or unknown:
        parser.error(f'--kinds takes some of {", ".join(KINDS)}, not {args.kinds!r}')
    for churn in churns:
        if churn != FIRST_RUN and not (churn.isdigit() and 0 <= int(churn) <= 98):
            parser.error(f'--churn takes percentages from 0 to 98 and "first", not {churn!r}')
    for value, allowed, flag in ((formats, FORMATS, '--formats'), (modes, MODES, '--modes')):
        if not value or set(value) - set(allowed):
            parser.error(f'{flag} takes some of {", ".join(allowed)}, not {",".join(value)}')
    if any(size < 1 for size in sizes) or args.repeat < 1 or args.timeout <= 0:
        parser.error('sizes, --repeat and --timeout must be positive')
    if not sizes and not args.sink:
        if args.write_markdown:
            write_markdown(args.results_dir / 'latest.json', args.markdown)
            print(f'wrote the results of {args.results_dir / "latest.json"} to {args.markdown}')
            return 0
        parser.error('nothing to measure: give --sizes and/or --sink')

    started = datetime.datetime.now(datetime.timezone.utc)
    stamp = started.strftime('%Y%m%dT%H%M%SZ')
    result = {
        'timestamp': started.strftime('%Y-%m-%dT%H:%M:%SZ'),
        'file': f'{stamp}.json',
        'machine': machine_info(),
        'git': git_info(),
        'settings': {
            'sizes': list(sizes),
            'formats': list(formats),
            'modes': list(modes),
            'churn': list(churns),
            'kinds': {kind: KINDS[kind] for kind in kinds},
            'baseline': str(args.baseline) if args.baseline else None,
            'duckdb': not args.no_duckdb,
            'duckdb_threads': DUCKDB_THREADS,
            'multi_processing_workers': MULTI_PROCESSING_WORKERS,
            'repeat': args.repeat,
            'timeout_seconds': args.timeout,
            'as_of': AS_OF,
            'sample_seconds': SAMPLE_SECONDS,
            'peak_rss': 'sum of RSS over the process tree, sampled',
        },
        'data': [],
        'pipeline': [],
        'comparisons': [],
    }
    work = args.work_dir or Path(tempfile.mkdtemp(prefix='beam-kinesis-bench-'))
    work.mkdir(parents=True, exist_ok=True)
    try:
        for size in sizes:
            for churn in churns:
                for kind in kinds:
                    folder, manifest, generated = ensure_data(
                        args.data_dir,
                        size,
                        formats,
                        args.jobs,
                        args.timeout,
                        _churn_rate(churn),
                        kind,
                    )
                    result['data'].append(
                        {
                            'size': size,
                            'churn': churn,
                            'kind': kind,
                            'folder': str(folder),
                            'counts': manifest['counts'],
                            'files_per_snapshot': manifest['files_per_snapshot'],
                            'generated_seconds': generated,
                        }
                    )
                    print(
                        f'{size:,} profiles, churn {churn}, {kind} input '
                        f'({manifest["counts"]["current"]:,} current)',
                        flush=True,
                    )
                    for fmt in formats:
                        rows, comparison = benchmark_pair(
                            folder,
                            manifest,
                            fmt,
                            modes,
                            work,
                            args.timeout,
                            args.repeat,
                            not args.no_duckdb,
                            churn,
                            args.baseline,
                            kind,
                        )
                        result['pipeline'].extend(rows)
                        result['comparisons'].append(comparison)
        if args.sink:
            print('sink benchmark', flush=True)
            # Imported here: it imports the package (and Beam), which a pipeline-only run
            # never needs in this process.
            if str(BENCHMARKS) not in sys.path:
                sys.path.insert(0, str(BENCHMARKS))
            import sink_benchmark

            result['sink'] = sink_benchmark.run_sink_benchmark(
                args.sink_fill_records,
                args.sink_throughput_records,
                args.sink_delay_ms / 1000,
                in_flight,
            )
            result['sink']['default_max_in_flight'] = sink_benchmark.default_max_in_flight()
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    result['machine']['load_average_end'] = list(os.getloadavg())
    result['targets'] = evaluate_targets(result)

    args.results_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2, sort_keys=True) + '\n'
    (args.results_dir / result['file']).write_text(text, encoding='utf-8')
    (args.results_dir / 'latest.json').write_text(text, encoding='utf-8')
    print()
    print(format_table(result))
    print(f'\nresults: {args.results_dir / result["file"]} (and latest.json)')
    if args.write_markdown:
        write_markdown(args.results_dir / 'latest.json', args.markdown)
        print(f'wrote the results section of {args.markdown}')
    failed = any(row['status'] not in COMPLETED for row in result['pipeline'])
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
