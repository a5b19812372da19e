"""Smoke tests of the benchmarks: a tiny run of every part, so that they cannot rot."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / 'benchmarks'


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f'benchmarks_{name}', BENCHMARKS / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_benchmarks = _load('run_benchmarks')
duckdb_reference = _load('duckdb_reference')


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """2,000 profiles, JSON Lines, a 10% day and a first run, the job in memory with both
    engines, DuckDB, and a small sink run at 5 ms."""
    root = tmp_path_factory.mktemp('bench')
    (root / 'BENCHMARKS.md').write_text('# Benchmarks\n\nWritten by hand.\n', encoding='utf-8')
    done = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / 'run_benchmarks.py'),
            '--sizes',
            '2000',
            '--formats',
            'jsonl',
            '--modes',
            'in_memory,reference',
            '--churn',
            '10,first',
            '--data-dir',
            str(root / 'data'),
            '--results-dir',
            str(root / 'results'),
            '--work-dir',
            str(root / 'work'),
            '--jobs',
            '1',
            '--timeout',
            '300',
            '--sink',
            '--sink-fill-records',
            '2000',
            '--sink-throughput-records',
            '5000',
            '--sink-delay-ms',
            '5',
            '--sink-max-in-flight',
            '1,4',
            '--write-markdown',
            '--markdown',
            str(root / 'BENCHMARKS.md'),
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return root, done


def test_tiny_run_succeeds_and_prints_the_table(tiny_run):
    _, done = tiny_run
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'x DuckDB' in done.stdout
    assert 'beam in_memory' in done.stdout


def test_results_json_has_the_expected_fields(tiny_run):
    root, _ = tiny_run
    latest = json.loads((root / 'results' / 'latest.json').read_text(encoding='utf-8'))
    assert (root / 'results' / latest['file']).read_text(encoding='utf-8') == (
        root / 'results' / 'latest.json'
    ).read_text(encoding='utf-8')
    assert latest['machine']['cpu_count'] >= 1
    assert latest['machine']['mem_total_bytes'] > 0
    assert latest['machine']['python'] and latest['machine']['beam']
    assert len(latest['git']['commit']) == 40
    assert latest['data'][0]['counts']['previous'] == 2000

    rows = {row['engine']: row for row in latest['pipeline'] if row['churn'] == '10'}
    assert set(rows) == {'duckdb', 'beam in_memory', 'beam reference'}
    job, reference = rows['beam in_memory'], rows['duckdb']
    for row in (job, reference):
        assert row['status'] == 'ok', row.get('error')
        assert row['size'] == 2000 and row['format'] == 'jsonl'
        assert row['seconds'] > 0 and row['profiles_per_second'] > 0
        assert row['peak_rss_bytes'] > 10 * 1024**2
        assert row['ratio_to_duckdb'] > 0
    assert reference['ratio_to_duckdb'] == 1.0
    assert reference['threads'] == 2

    # The job and the reference diff agree on what to export, and why.
    assert job['exported'] > 0
    assert job['exported'] == reference['exported'] == job['duckdb_exported']
    assert job['agrees_with_duckdb'] is True
    for reason, count in reference['exported_by_reason'].items():
        assert job['exported_by_reason'][reason] == count, reason
    assert job['profiles_compared'] == reference['profiles_compared']
    assert job['output_lines'] == job['exported']
    assert job['reads_reconciled'] is True
    assert latest['comparisons'][0]['outputs'] == {'beam in_memory vs beam reference': 'identical'}

    # A first run on the same current snapshot: every member of a mapped segment.
    first = {row['engine']: row for row in latest['pipeline'] if row['churn'] == 'first'}
    assert first['beam in_memory']['exported'] == first['duckdb']['exported'] > job['exported']
    assert (
        first['beam in_memory']['exported_by_reason']['first_run']
        == first['beam in_memory']['exported']
    )
    assert first['beam in_memory']['reads_reconciled'] is True
    assert latest['comparisons'][1]['outputs'] == {'beam in_memory vs beam reference': 'identical'}

    fill = latest['sink']['batch_fill']
    assert fill['records_sent'] == 2000
    assert fill['calls_per_1000_records'] == 2.0
    assert fill['cap_used_percent'] == 100.0
    speed = latest['sink']['throughput']
    assert speed['delay_ms'] == 5
    assert speed['baseline']['records_per_second'] > 0
    assert [row['max_in_flight'] for row in speed['dofn']] == [1, 4]
    assert all(
        row['records_sent'] == 5000 and row['ratio_vs_baseline'] > 0 for row in speed['dofn']
    )

    targets = {item['target'] for item in latest['targets']}
    assert 'peak memory < 2 GiB' in targets
    assert 'output byte-identical (exports and dead letters)' in targets
    assert 'sink fills >= 95% of the 500-record cap' in targets


def test_markdown_section_is_generated_from_latest(tiny_run):
    root, _ = tiny_run
    text = (root / 'BENCHMARKS.md').read_text(encoding='utf-8')
    assert text.startswith('# Benchmarks\n\nWritten by hand.\n')
    assert run_benchmarks.MARKDOWN_BEGIN in text and run_benchmarks.MARKDOWN_END in text
    assert '| 2,000 | jsonl | 10 | beam in_memory | ok |' in text
    assert '| 2,000 | jsonl | first | beam reference | ok |' in text
    # Rewriting replaces the section instead of adding a second one.
    run_benchmarks.write_markdown(root / 'results' / 'latest.json', root / 'BENCHMARKS.md')
    assert (root / 'BENCHMARKS.md').read_text(encoding='utf-8') == text


def test_peak_rss_sums_the_process_tree(tmp_path):
    # A parent of 60 MB that starts a child of 150 MB: the tree holds both.
    child = 'b = bytearray(150 * 2**20); import time; time.sleep(1.5)'
    parent = (
        f'import subprocess, sys, time; a = bytearray(60 * 2**20); '
        f'subprocess.run([sys.executable, "-c", {child!r}])'
    )
    row = run_benchmarks.measure_process(
        [sys.executable, '-c', parent],
        cwd=tmp_path,
        env=None,
        timeout=60,
        stdout_path=tmp_path / 'out',
        stderr_path=tmp_path / 'err',
    )
    assert row['status'] == 'ok' and row['exit_code'] == 0
    assert row['peak_processes'] == 2
    assert row['peak_rss_bytes'] > 210 * 2**20


def test_a_run_past_its_timeout_is_killed_with_its_children(tmp_path):
    script = (
        'import subprocess, sys, time; '
        'subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]); '
        'time.sleep(60)'
    )
    row = run_benchmarks.measure_process(
        [sys.executable, '-c', script],
        cwd=tmp_path,
        env=None,
        timeout=1.0,
        stdout_path=tmp_path / 'out',
        stderr_path=tmp_path / 'err',
    )
    assert row['status'] == 'timeout'
    assert row['seconds'] < 20
    assert row['leftover_processes'] == 0


@pytest.mark.parametrize(
    'on_delete, expected',
    [('exit', 'expected_export.jsonl'), ('ignore', 'expected_export_ignore_deletes.jsonl')],
)
def test_duckdb_reference_counts_the_golden_exports(on_delete, expected):
    testdata = REPO / 'testdata'
    result = duckdb_reference.reference_diff(
        str(testdata / 'current.jsonl'),
        str(testdata / 'previous.jsonl'),
        str(testdata / 'destination.yaml'),
        on_delete=on_delete,
    )
    lines = (testdata / expected).read_text(encoding='utf-8').splitlines()
    assert result['exported'] == len([line for line in lines if line.strip()])


@pytest.fixture(scope='module')
def kinds_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """400 profiles, JSON Lines, in memory: one file per snapshot against long lines."""
    root = tmp_path_factory.mktemp('kinds')
    done = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / 'run_benchmarks.py'),
            '--sizes',
            '400',
            '--formats',
            'jsonl',
            '--modes',
            'in_memory',
            '--kinds',
            'one-file,long-lines',
            '--data-dir',
            str(root / 'data'),
            '--results-dir',
            str(root / 'results'),
            '--jobs',
            '1',
            '--timeout',
            '300',
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return root, done


def test_kinds_of_input_run_side_by_side_and_agree_with_duckdb(kinds_run):
    root, done = kinds_run
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'bytes/profile' in done.stdout and 'long-lines' in done.stdout
    latest = json.loads((root / 'results' / 'latest.json').read_text(encoding='utf-8'))
    rows = {(row['kind'], row['engine']): row for row in latest['pipeline']}
    assert set(rows) == {
        (kind, engine)
        for kind in ('one-file', 'long-lines')
        for engine in ('duckdb', 'beam in_memory')
    }
    for kind in ('one-file', 'long-lines'):
        job = rows[kind, 'beam in_memory']
        assert job['status'] == 'ok', job.get('error')
        assert job['agrees_with_duckdb'] is True
        assert job['reads_reconciled'] is True
    one_file, long_lines = rows['one-file', 'beam in_memory'], rows['long-lines', 'beam in_memory']
    assert one_file['files_per_snapshot'] == 1
    assert len(list((root / 'data' / '400-one-file' / 'current').glob('*.jsonl'))) == 1
    # The custom fields lengthen every line and change nothing that is exported.
    assert long_lines['input_bytes_per_profile'] > 2.5 * one_file['input_bytes_per_profile']
    assert long_lines['exported'] == one_file['exported'] > 0
    assert long_lines['exported_by_reason'] == one_file['exported_by_reason']


def test_an_unknown_kind_of_input_is_refused():
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / 'run_benchmarks.py'), '--sizes', '10', '--kinds', 'huge'],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert '--kinds takes some of default, one-file' in done.stderr
    assert 'Traceback' not in done.stderr


def test_a_pair_generated_before_kinds_existed_is_still_the_default_kind():
    manifest = {
        'profiles': 1000,
        'files_per_snapshot': 4,
        'seed': run_benchmarks.SEED,
        'segments': 10,
        'rates': {'change': 0.10, 'delete': 0.01, 'new': 0.01},
    }
    assert run_benchmarks._manifest_matches(manifest, 1000, 4)
    assert not run_benchmarks._manifest_matches(manifest, 1000, 4, kind='long-lines')
    assert not run_benchmarks._manifest_matches(manifest, 1000, 4, kind='many-segments')
