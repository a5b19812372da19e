"""Tests of the benchmark snapshot generator, run as a script the way a benchmark runs it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.test_snapshot_files import read_avro, read_jsonl, read_parquet

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / 'benchmarks' / 'generate_snapshots.py'

PROFILES = 2000
FILES = 2
READERS = {'jsonl': read_jsonl, 'parquet': read_parquet, 'avro': read_avro}
TIME = re.compile(r'\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z\Z')


def generate(out: Path, *args: str) -> subprocess.CompletedProcess:
    # Run from elsewhere than the checkout: the script must find the package itself.
    return subprocess.run(
        [sys.executable, str(SCRIPT), '--out', str(out), *args],
        cwd=out.parent,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope='module')
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """The same small pair generated twice, once in parallel and once in one process."""
    outs = []
    for jobs in ('2', '1'):
        out = tmp_path_factory.mktemp('generated') / 'data'
        done = generate(
            out,
            '--profiles',
            str(PROFILES),
            '--files',
            str(FILES),
            '--format',
            'all',
            '--jobs',
            jobs,
        )
        assert done.returncode == 0, done.stderr
        outs.append(out)
    return outs[0], outs[1]


@pytest.fixture(scope='module')
def out(runs) -> Path:
    return runs[0]


@pytest.fixture(scope='module')
def manifest(out) -> dict:
    return json.loads((out / 'manifest.json').read_text(encoding='utf-8'))


def snapshot(out: Path, name: str, fmt: str) -> list[dict]:
    profiles = []
    for path in sorted((out / name).glob(f'part-*.{fmt}')):
        profiles.extend(READERS[fmt](path))
    return profiles


def test_files_and_counts_match_the_manifest(out, manifest):
    counts = manifest['counts']
    assert counts['previous'] == PROFILES
    assert counts['new'] == round(PROFILES * 0.01)
    assert counts['current'] == PROFILES - counts['deleted'] + counts['new']
    assert counts['changed'] + counts['deleted'] + counts['unchanged'] == PROFILES
    assert sum(manifest['change_kinds'].values()) == counts['changed']
    for name in ('previous', 'current'):
        names = sorted(path.name for path in (out / name).iterdir())
        assert names == sorted(
            f'part-{k:05d}-of-{FILES:05d}.{ext}'
            for k in range(FILES)
            for ext in ('jsonl', 'parquet', 'avro')
        )
        for entry in manifest['files'][name]:
            assert len(READERS[entry['format']](out / entry['path'])) == entry['profiles']
        for fmt in READERS:
            total = sum(
                entry['profiles'] for entry in manifest['files'][name] if entry['format'] == fmt
            )
            assert total == counts[name]


def test_generation_is_deterministic(runs):
    first, second = runs
    files = sorted(path.relative_to(first) for path in first.rglob('*') if path.is_file())
    assert files == sorted(path.relative_to(second) for path in second.rglob('*') if path.is_file())
    assert len(files) == 2 * FILES * 3 + 2
    for name in files:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_another_seed_gives_other_profiles(tmp_path, out):
    done = generate(tmp_path / 'other', '--profiles', '50', '--seed', '7')
    assert done.returncode == 0, done.stderr
    other = read_jsonl(tmp_path / 'other' / 'previous' / 'part-00000-of-00001.jsonl')
    assert len(other) == 50
    assert other != snapshot(out, 'previous', 'jsonl')[:50]


def test_changes_are_as_the_manifest_says_and_near_the_rates(out, manifest):
    previous = {p['_id']: p for p in snapshot(out, 'previous', 'jsonl')}
    current = {p['_id']: p for p in snapshot(out, 'current', 'jsonl')}
    deleted = previous.keys() - current.keys()
    new = current.keys() - previous.keys()
    changed = [key for key in previous.keys() & current.keys() if previous[key] != current[key]]
    counts = manifest['counts']
    assert (len(deleted), len(new), len(changed)) == (
        counts['deleted'],
        counts['new'],
        counts['changed'],
    )
    assert len(previous) == counts['previous'] and len(current) == counts['current']
    # Binomial draws: 200 +- 13 changed and 20 +- 4.4 deleted expected.
    assert 150 <= len(changed) <= 250
    assert 5 <= len(deleted) <= 40
    assert len(new) == 20
    assert min(new) == f'p-{PROFILES + 1:07d}'
    # Every kind of change occurs.
    assert all(count > 0 for count in manifest['change_kinds'].values())


def test_the_formats_hold_the_same_profiles(out):
    for name in ('previous', 'current'):
        profiles = snapshot(out, name, 'jsonl')
        assert snapshot(out, name, 'parquet') == profiles
        assert snapshot(out, name, 'avro') == profiles


def test_profiles_look_like_xdm_profiles(out, manifest):
    profiles = snapshot(out, 'previous', 'jsonl')
    assert [p['_id'] for p in profiles] == [f'p-{n:07d}' for n in range(1, PROFILES + 1)]
    pool = {f'seg-{n:04d}' for n in range(1, 31)}
    segment_counts = []
    for profile in profiles:
        assert profile['person']['name']['firstName'] and profile['person']['name']['lastName']
        assert '@' in profile['personalEmail']['address']
        assert isinstance(profile['loyalty']['points'], int)
        memberships = profile['segmentMembership']['ups']
        segment_counts.append(len(memberships))
        assert set(memberships) <= pool
        for membership in memberships.values():
            assert membership['status'] in ('realized', 'existing', 'exited')
            assert TIME.match(membership['lastQualificationTime'])
        identities = profile['identityMap']
        assert 'ecid' in identities and 2 <= len(identities) <= 3
        assert set(identities) <= {'ecid', 'email_lc_sha256', 'crmid'}
        for entries in identities.values():
            for entry in entries:
                assert set(entry) == {'id', 'authenticatedState', 'primary'}
                assert entry['authenticatedState'] in ('ambiguous', 'authenticated')
    assert 9 <= sum(segment_counts) / len(segment_counts) <= 11
    statuses = [m['status'] for p in profiles for m in p['segmentMembership']['ups'].values()]
    assert statuses.count('realized') > statuses.count('existing') > statuses.count('exited')
    assert sum('crmid' in p['identityMap'] for p in profiles) > PROFILES * 0.2
    assert sum('email_lc_sha256' in p['identityMap'] for p in profiles) > PROFILES * 0.7


def test_destination_maps_generated_segments(out, manifest):
    destination = yaml.safe_load((out / 'destination.yaml').read_text(encoding='utf-8'))
    assert destination['stream'] == 'profile-exports'
    assert destination['region'] == 'us-east-1'
    assert destination['name'] and destination['description']
    assert len(destination['segments']) == 5
    assert destination['segments'] == manifest['mapped_segments']
    assert set(destination['segments']) <= {f'seg-{n:04d}' for n in range(1, 31)}
    assert 'person.name.firstName' in destination['attributes']
    assert 'personalEmail.address' in destination['attributes']


def test_bad_arguments_are_refused(tmp_path):
    done = generate(tmp_path / 'bad', '--profiles', '10', '--files', '0')
    assert done.returncode == 2
    assert 'files' in done.stderr
    done = generate(tmp_path / 'bad', '--profiles', '10', '--change-rate', '1.5')
    assert done.returncode == 2
    assert 'change_rate' in done.stderr


def test_unmapped_fields_lengthen_lines_and_change_nothing_else(tmp_path, out):
    done = generate(
        tmp_path / 'long', '--profiles', str(PROFILES), '--files', '1', '--unmapped-fields', '25'
    )
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / 'long' / 'manifest.json').read_text(encoding='utf-8'))
    assert manifest['unmapped_fields'] == 25
    for name in ('previous', 'current'):
        short = snapshot(out, name, 'jsonl')
        long = snapshot(tmp_path / 'long', name, 'jsonl')
        custom = [profile.pop('_acme') for profile in long]
        # Everything but the custom fields is the pair generated without them.
        assert long == short
        assert all(sum(len(group) for group in fields.values()) == 25 for fields in custom)
        assert sorted(custom[0]) == ['group00', 'group01', 'group02']
    previous = {p['_id']: p for p in snapshot(tmp_path / 'long', 'previous', 'jsonl')}
    current = {p['_id']: p for p in snapshot(tmp_path / 'long', 'current', 'jsonl')}
    # The same in both snapshots: they never make a change.
    assert all(
        current[key]['_acme'] == previous[key]['_acme'] for key in previous.keys() & current.keys()
    )
    # About 22 bytes of JSON per field, on every line.
    added = sum(path.stat().st_size for path in (tmp_path / 'long' / 'previous').glob('*.jsonl'))
    added -= sum(path.stat().st_size for path in (out / 'previous').glob('*.jsonl'))
    assert 18 * 25 <= added / PROFILES <= 28 * 25


def test_memberships_per_profile_follow_the_option(tmp_path):
    done = generate(
        tmp_path / 'many', '--profiles', '300', '--segments', '100', '--memberships', '30-50'
    )
    assert done.returncode == 0, done.stderr
    profiles = read_jsonl(tmp_path / 'many' / 'previous' / 'part-00000-of-00001.jsonl')
    counts = [len(p['segmentMembership']['ups']) for p in profiles]
    assert 30 <= min(counts) and max(counts) <= 50
    assert 37 <= sum(counts) / len(counts) <= 43
    manifest = json.loads((tmp_path / 'many' / 'manifest.json').read_text(encoding='utf-8'))
    assert manifest['memberships'] == [30, 50] and manifest['segment_pool'] == 300


@pytest.mark.parametrize('memberships', ['0-3', '5-2', 'many', '3-x'])
def test_bad_memberships_are_refused(tmp_path, memberships):
    done = generate(tmp_path / 'bad', '--profiles', '10', '--memberships', memberships)
    assert done.returncode == 2
    assert 'memberships' in done.stderr and 'Traceback' not in done.stderr
