"""Hostile inputs and broken surroundings (issue 13): what cannot be read stops the job at
start or becomes a dead letter of its own, in bounded time and memory; a run owns its output.

The corpus cases (deep lines, duplicate names, a byte order mark, a long line) are in
`test_bad_input.py`; these need their own runs or surroundings.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import zlib

import pytest

from beam_kinesis.config import ConfigError, load_destination_config, parse_as_of
from beam_kinesis.files import LOCK_NAME
from beam_kinesis.snapshot import SnapshotError, _parse_json_line, _read_jsonl, match_snapshot_files
from beam_kinesis.values import MAX_NESTING_DEPTH, normalize_value
from pipelines import export_profiles
from tests.test_bad_input import AS_OF, DESTINATION, MIB, jsonl, profile, run_job

REPO = os.path.normpath(os.path.join(os.path.dirname(__file__), os.pardir))


def one_sentence(run) -> str:
    lines = [line for line in run.err.strip().splitlines() if 'apitools' not in line]
    assert len(lines) == 1, run.err
    return lines[0]


def job_command(tmp_path, current, *extra: str) -> list[str]:
    """The job over `current` into files under `tmp_path`, as a child process: for runs that
    could hang, that measure their own memory, or whose stderr is the point."""
    return [
        sys.executable,
        '-m',
        'pipelines.export_profiles',
        '--current',
        str(current),
        '--destination_config',
        DESTINATION,
        '--as_of',
        AS_OF,
        '--output',
        str(tmp_path / 'out'),
        '--dead_letter',
        str(tmp_path / 'dead'),
        *extra,
    ]


# 1. Every file a snapshot names is read, or the job stops at start.


@pytest.fixture
def snapshot_dir(tmp_path):
    folder = tmp_path / 'snapshot'
    folder.mkdir()
    (folder / 'part-1.jsonl').write_bytes(jsonl(profile('h-01')))
    return folder


def test_a_dangling_symlink_in_a_snapshot_directory_stops_the_job(tmp_path, snapshot_dir):
    os.symlink(tmp_path / 'gone.jsonl', snapshot_dir / 'part-2.jsonl')
    previous = tmp_path / 'previous.jsonl'
    previous.write_bytes(jsonl(profile('h-01'), profile('h-02')))
    run = run_job(tmp_path, snapshot_dir, previous=previous)
    assert run.status == export_profiles.EXIT_START_FAILED
    sentence = one_sentence(run)
    assert 'part-2.jsonl' in sentence and 'symbolic link' in sentence
    assert run.exports == []  # h-02 is not exported as deleted


def test_a_symlink_loop_matched_by_a_glob_stops_the_job(tmp_path, snapshot_dir):
    os.symlink(snapshot_dir / 'b.jsonl', snapshot_dir / 'a.jsonl')
    os.symlink(snapshot_dir / 'a.jsonl', snapshot_dir / 'b.jsonl')
    run = run_job(tmp_path, f'{snapshot_dir}/*.jsonl')
    assert run.status == export_profiles.EXIT_START_FAILED
    assert "snapshot/a.jsonl' (of " in one_sentence(run)
    assert 'Too many levels of symbolic links' in run.err


def test_a_fifo_in_a_snapshot_directory_stops_the_job_instead_of_hanging(tmp_path, snapshot_dir):
    os.mkfifo(snapshot_dir / 'part-2.jsonl')
    command = job_command(tmp_path, snapshot_dir)
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == export_profiles.EXIT_START_FAILED
    assert f"part-2.jsonl' (of '{snapshot_dir}') is a FIFO, not a regular file" in done.stderr


def test_a_subdirectory_of_a_snapshot_directory_is_refused_unless_the_glob_recurses(snapshot_dir):
    (snapshot_dir / 'dt=2024-06-01').mkdir()
    (snapshot_dir / 'dt=2024-06-01' / 'part-9.jsonl').write_bytes(jsonl(profile('h-09')))
    with pytest.raises(SnapshotError, match='is a directory, whose files a snapshot does not read'):
        match_snapshot_files(str(snapshot_dir))
    assert match_snapshot_files(f'{snapshot_dir}/**.jsonl') == [
        str(snapshot_dir / 'dt=2024-06-01' / 'part-9.jsonl'),
        str(snapshot_dir / 'part-1.jsonl'),
    ]


def test_a_snapshot_path_that_is_a_dangling_link_is_named(tmp_path):
    os.symlink(tmp_path / 'gone.jsonl', tmp_path / 'current.jsonl')
    with pytest.raises(
        SnapshotError, match='current.jsonl.* is a symbolic link that leads nowhere readable'
    ):
        match_snapshot_files(str(tmp_path / 'current.jsonl'))


def test_regular_files_and_links_to_them_are_read(tmp_path, snapshot_dir):
    (tmp_path / 'elsewhere.jsonl').write_bytes(jsonl(profile('h-02')))
    os.symlink(tmp_path / 'elsewhere.jsonl', snapshot_dir / 'part-2.jsonl')
    run = run_job(tmp_path, snapshot_dir)
    assert run.status == export_profiles.EXIT_OK, run.err
    assert run.exported_ids() == {'h-01', 'h-02'}


# 2. Nesting: one limit for values read, applied before anything recurses.


def test_normalize_value_refuses_values_nested_deeper_than_the_limit():
    def nested(depth):
        value = 1
        for _ in range(depth):
            value = {'a': [value]} if depth % 2 else {'a': value}
        return value

    assert normalize_value(nested(MAX_NESTING_DEPTH)) == nested(MAX_NESTING_DEPTH)
    with pytest.raises(ValueError, match='nested more than 64 levels'):
        normalize_value({'a': json.loads('[' * MAX_NESTING_DEPTH + ']' * MAX_NESTING_DEPTH)})
    with pytest.raises(ValueError, match='nested more than 64 levels'):
        normalize_value(json.loads('{"a":' * 900 + '1' + '}' * 900))  # no RecursionError


def test_a_line_nested_beyond_the_parser_is_one_dead_letter_of_its_own_line():
    for depth in (255, 1025, 5000):
        with pytest.raises(ValueError, match='nested more than 254 levels'):
            _parse_json_line(b'{"a":' * depth + b'1' + b'}' * depth)
    big = b'{"n":123456789012345678901234567890,"a":' + b'[' * 300 + b']' * 300 + b'}'
    with pytest.raises(ValueError, match='nested more than 254 levels'):
        _parse_json_line(big)  # the standard library's path has the same limit
    assert _parse_json_line(b'{"a":' + b'[' * 253 + b']' * 253 + b'}')['a'] is not None


def test_a_mapped_attribute_nested_600_deep_does_not_crash_multi_processing(tmp_path):
    current = tmp_path / 'current.jsonl'
    deep = (
        json.dumps(profile('h-02'))[:-1].encode()
        + b', "homeAddress": {"city": '
        + (b'{"a":' * 600 + b'1' + b'}' * 600)
        + b'}}\n'
    )
    current.write_bytes(jsonl(profile('h-01')) + deep + jsonl(profile('h-03')))
    run = run_job(
        tmp_path, current, '--direct_running_mode', 'multi_processing', '--direct_num_workers', '2'
    )
    assert run.status == export_profiles.EXIT_DEAD_LETTERS, run.err
    assert run.where() == {('read', 'current.jsonl', 2)}
    assert run.exported_ids() == {'h-01', 'h-03'}


# 3. Size limits.


def test_lines_over_max_line_bytes_are_dead_letters_and_the_rest_is_read(tmp_path):
    current = tmp_path / 'current.jsonl'
    current.write_bytes(jsonl(profile('h-01'), profile('h-02', 'x' * 5000), profile('h-03')))
    run = run_job(tmp_path, current, '--max_line_bytes', '4096')
    assert run.status == export_profiles.EXIT_DEAD_LETTERS, run.err
    [letter] = run.dead_letters
    assert letter['stage'] == 'read' and letter['source'].endswith('current.jsonl:2')
    assert 'longer than the limit of 4,096 (--max_line_bytes)' in letter['error']
    assert run.exported_ids() == {'h-01', 'h-03'}
    assert ['input', 'ledger', 'balanced', 'yes'] in [line.split() for line in run.out.splitlines()]


def test_the_line_reader_never_holds_a_long_line_whole(tmp_path):
    path = tmp_path / 'long.jsonl'
    path.write_bytes(b'{"a":1}\n' + b'x' * (3 * MIB + 5) + b'\r\n\n   \n' + b'{"b":2}')
    lines = list(_read_jsonl(str(path), None, max_line_bytes=MIB))
    assert [number for number, _ in lines] == [1, 2, 5]
    assert lines[1][1].size == 3 * MIB + 6 and len(lines[1][1].prefix) == 64 * 1024
    assert lines[2][1] == b'{"b":2}'
    # Without a limit, the long line is a line like any other.
    assert [number for number, _ in _read_jsonl(str(path), None, max_line_bytes=None)] == [1, 2, 5]


LONG_LINE_HEAD = b'{"_id": "h-big", "junk": "'


def write_gzip_with_a_long_line(path, size: int) -> None:
    with open(path, 'wb') as raw:
        compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
        raw.write(compressor.compress(LONG_LINE_HEAD))
        piece = b'x' * (64 * MIB)
        for _ in range(size // len(piece)):
            raw.write(compressor.compress(piece))
        raw.write(compressor.compress(b'"}\n' + jsonl(profile('h-02'))))
        raw.write(compressor.flush())


def test_a_2_gib_line_in_a_small_gzip_is_read_in_bounded_memory(tmp_path):
    current = tmp_path / 'current.jsonl.gz'
    write_gzip_with_a_long_line(current, 2048 * MIB)
    assert current.stat().st_size < 4 * MIB
    command = job_command(tmp_path, current)
    with open(tmp_path / 'stderr', 'wb') as err:
        job = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(job.pid, 0)  # the job's own peak, not other children's
    job.returncode = os.waitstatus_to_exitcode(status)
    assert job.returncode == export_profiles.EXIT_DEAD_LETTERS, (tmp_path / 'stderr').read_text()
    assert usage.ru_maxrss < 1024 * 1024  # KiB: under 1 GiB (the issue measured 10.8 GB)
    [letter] = [
        json.loads(line)
        for line in open(tmp_path / 'dead' / os.listdir(tmp_path / 'dead')[0])
        if '"stage"' in line
    ]
    assert letter['source'].endswith('current.jsonl.gz:1')
    size = 2048 * MIB + len(LONG_LINE_HEAD) + len(b'"}')
    assert f'the line is {size:,} bytes' in letter['error']
    assert len(letter['record']) <= 64 * 1024
    assert 'h-02' in (tmp_path / 'out' / 'exports-00000-of-00001.jsonl').read_text().replace(
        'ECID-H02', 'h-02'
    )


def test_max_line_bytes_must_be_positive(tmp_path):
    run = run_job(tmp_path, tmp_path, '--max_line_bytes', '0')
    assert run.status == export_profiles.EXIT_START_FAILED
    assert '--max_line_bytes 0 must be positive' in one_sentence(run)


def config_file(tmp_path, text: str, name: str = 'destination.yaml') -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


_BOMB = (
    '[&a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"], '
    + ', '.join(f'&{chr(98 + i)} [' + ','.join([f'*{chr(97 + i)}'] * 9) + ']' for i in range(8))
    + ']'
)


@pytest.mark.parametrize('field', ['name', 'region', 'description'])
def test_yaml_aliases_are_refused_in_one_short_sentence(tmp_path, field):
    config = config_file(tmp_path, f'stream: s\nsegments: [seg-a]\n{field}: {_BOMB}\n')
    assert len(open(config, 'rb').read()) < 450
    with pytest.raises(ConfigError, match=r'found the alias \*a; aliases are not allowed'):
        load_destination_config(config)
    run = run_job(tmp_path, tmp_path, '--destination_config', config)
    assert run.status == export_profiles.EXIT_START_FAILED
    assert len(one_sentence(run)) < 400


@pytest.mark.parametrize(
    'text,message',
    [
        ('stream: s\nsegments: [seg-a]\nname: [a, b]\n', '"name" that is a list, not a string'),
        ('stream: s\nsegments: [seg-a]\nregion: {a: 1}\n', '"region" that is a dict, not a string'),
        ('stream: s\nsegments: [seg-a]\ndescription: 2024-01-01\n', '"description" that is a date'),
        ('stream: [s]\nsegments: [seg-a]\n', '"stream" that is a list'),
        (
            'stream: s\nsegments: [seg-a, [x]]\n',
            "segments entry 2 is ['x']; it must be a segment id",
        ),
        ('stream: s\nsegments: [seg-a]\n1: x\n', 'unknown keys 1;'),
        (
            'stream: s\nsegments: [seg-a]\nregion: [' + ', '.join(['x' * 10] * 50_000) + ']\n',
            '"region" that is a list',
        ),
    ],
)
def test_every_config_value_has_its_type(tmp_path, text, message):
    config = config_file(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_destination_config(config)
    assert message in str(caught.value) and len(str(caught.value)) < 400


def test_a_config_file_that_is_too_big_or_too_deep_is_refused(tmp_path):
    with pytest.raises(ConfigError, match='a config is at most 1,048,576'):
        load_destination_config(config_file(tmp_path, 'x' * (2 * MIB)))
    with pytest.raises(ConfigError, match='nested too deeply'):
        load_destination_config(config_file(tmp_path, '[' * 5000 + ']' * 5000, 'deep.json'))


# 4. Output surroundings, checked at start; a run owns its output.


def test_output_that_is_a_regular_file_stops_the_job_at_start(tmp_path):
    (tmp_path / 'current.jsonl').write_bytes(jsonl(profile('h-01')))
    (tmp_path / 'out-file').write_text('not a directory')
    run = run_job(tmp_path, tmp_path / 'current.jsonl', '--output', str(tmp_path / 'out-file'))
    assert run.status == export_profiles.EXIT_START_FAILED
    assert "--output '" in one_sentence(run) and 'is a file, not a directory' in run.err


@pytest.fixture
def read_only_dir(tmp_path):
    folder = tmp_path / 'read-only'
    folder.mkdir()
    folder.chmod(0o555)
    immutable = False
    if os.geteuid() == 0:  # root writes into 0555 directories; an immutable one it cannot
        immutable = (
            subprocess.run(['chattr', '+i', str(folder)], capture_output=True).returncode == 0
        )
        if not immutable:
            pytest.skip('running as root without chattr: no read-only directory to test')
    yield folder
    if immutable:
        subprocess.run(['chattr', '-i', str(folder)], check=True)
    folder.chmod(0o755)


@pytest.mark.parametrize('flag', ['--output', '--dead_letter'])
def test_a_read_only_output_stops_the_job_at_start(tmp_path, read_only_dir, flag):
    (tmp_path / 'current.jsonl').write_bytes(jsonl(profile('h-01')))
    done = subprocess.run(
        job_command(tmp_path, tmp_path / 'current.jsonl', flag, str(read_only_dir)),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == export_profiles.EXIT_START_FAILED, done.stderr
    lines = [line for line in done.stderr.splitlines() if 'apitools' not in line]
    assert len(lines) == 1 and f"{flag} '{read_only_dir}' is not writable" in lines[0]
    assert not os.listdir(read_only_dir)


def test_a_report_path_that_is_a_directory_stops_the_job_at_start(tmp_path):
    (tmp_path / 'current.jsonl').write_bytes(jsonl(profile('h-01')))
    run = run_job(tmp_path, tmp_path / 'current.jsonl', '--report', str(tmp_path))
    assert run.status == export_profiles.EXIT_START_FAILED
    assert 'is a directory, not a file' in one_sentence(run)


def test_a_run_removes_the_files_of_earlier_runs_it_did_not_write(tmp_path):
    current = tmp_path / 'current.jsonl'
    current.write_bytes(jsonl(*[profile(f'h-{n:02d}') for n in range(1, 21)]) + b'not json\n')
    first = run_job(tmp_path, current, '--output_shards', '4')
    assert len(os.listdir(tmp_path / 'exports')) == 4 and len(first.exports) == 20
    (tmp_path / 'exports' / '.exports-0123abcd.tmp').write_text('left by a crash')
    (tmp_path / 'exports' / 'notes.txt').write_text("not the job's")
    second = run_job(tmp_path, current, '--output_shards', '1')
    assert sorted(os.listdir(tmp_path / 'exports')) == ['exports-00000-of-00001.jsonl', 'notes.txt']
    assert sorted(second.exports) == sorted(first.exports)
    # A run with nothing to export, no dead letters, leaves no earlier file behind.
    current.write_bytes(jsonl(*[profile(f'h-{n:02d}') for n in range(1, 21)]))
    third = run_job(tmp_path, current, previous=current)
    assert third.status == export_profiles.EXIT_OK, third.err
    assert os.listdir(tmp_path / 'exports') == ['notes.txt']
    assert not [name for name in os.listdir(tmp_path / 'dead') if name.startswith('dead')]


def test_a_second_run_into_a_directory_in_use_refuses_to_start(tmp_path):
    (tmp_path / 'current.jsonl').write_bytes(jsonl(profile('h-01')))
    (tmp_path / 'exports').mkdir()
    sleeper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    try:
        lock = {
            'pid': sleeper.pid,
            'host': socket.gethostname(),
            'started': '2024-06-01T00:00:00Z',
            'run': 'another',
        }
        (tmp_path / 'exports' / LOCK_NAME).write_text(json.dumps(lock))
        run = run_job(tmp_path, tmp_path / 'current.jsonl')
        assert run.status == export_profiles.EXIT_START_FAILED
        sentence = one_sentence(run)
        assert (
            f'is in use by another run (pid {sleeper.pid} on {socket.gethostname()}' in (sentence)
            and LOCK_NAME in sentence
        )
        assert (tmp_path / 'exports' / LOCK_NAME).exists()  # the other run's, kept
    finally:
        sleeper.kill()
        sleeper.wait()
    # Its process gone, the lock is stale: the next run takes it over, and gives it back.
    run = run_job(tmp_path, tmp_path / 'current.jsonl')
    assert run.status == export_profiles.EXIT_OK, run.err
    assert not (tmp_path / 'exports' / LOCK_NAME).exists()
    assert run.exported_ids() == {'h-01'}


def test_the_lock_is_held_while_the_pipeline_runs(tmp_path, monkeypatch):
    seen = []
    real = export_profiles.build

    def build(pipeline, options, *args, **kwargs):
        seen.append(sorted(os.listdir(options.output)) + sorted(os.listdir(options.dead_letter)))
        return real(pipeline, options, *args, **kwargs)

    monkeypatch.setattr(export_profiles, 'build', build)
    (tmp_path / 'current.jsonl').write_bytes(jsonl(profile('h-01')))
    run = run_job(tmp_path, tmp_path / 'current.jsonl')
    assert run.status == export_profiles.EXIT_OK
    assert seen == [[LOCK_NAME, LOCK_NAME]]
    assert LOCK_NAME not in os.listdir(tmp_path / 'exports')


# 5. Smaller ones.


@pytest.mark.parametrize('as_of', ['', '２０２４-06-01T00:00:00Z', '2024-06-01T00:00:0٠Z'])
def test_an_empty_or_non_ascii_as_of_is_refused(tmp_path, as_of):
    with pytest.raises(ConfigError):
        parse_as_of(as_of)
    (tmp_path / 'current.jsonl').write_bytes(jsonl(profile('h-01')))
    run = run_job(tmp_path, tmp_path / 'current.jsonl', '--as_of', as_of)
    assert run.status == export_profiles.EXIT_START_FAILED
    assert '--as_of' in one_sentence(run)


def test_full_width_digits_in_a_record_time_are_refused(tmp_path):
    document = profile('h-01')
    document['segmentMembership'] = {
        'ups': {
            'seg-a': {'status': 'realized', 'lastQualificationTime': '２０２４-05-20T10:00:00Z'}
        }
    }
    (tmp_path / 'current.jsonl').write_bytes(jsonl(document, profile('h-02')))
    run = run_job(tmp_path, tmp_path / 'current.jsonl')
    assert run.where() == {('validate', 'current.jsonl', 1)}
    assert run.exported_ids() == {'h-02'}


@pytest.mark.parametrize(
    'line,ambiguous',
    [
        (b'{"_id":"p-1","_id":"p-2"}', True),
        (b'{"_id": "p-1", "identityMap": {"ecid": [{"id": "a", "id": "b"}]}}', True),
        (b'{"_id":"p-1","x":"a\\u003ab","y":"c:d"}', False),  # colons escaped and not
        (b'{"_id" : "p-1" , "x" : [ {"a" : 1} , {"a" : 2} ] }', False),
        (b'{"_id":"a\\u003A","_id":"b"}', True),
        (b'{"_id":"p-1","loyalty":{"tier":1,"tier":2}}', False),  # not a field the job keeps
    ],
)
def test_member_names_twice_in_one_object_make_a_record_ambiguous(line, ambiguous):
    wanted = frozenset({'_id', 'identityMap', 'segmentMembership'})
    if ambiguous:
        with pytest.raises(ValueError, match='the record is ambiguous'):
            _parse_json_line(line, wanted)
    else:
        assert _parse_json_line(line, wanted)['_id'] == 'p-1'
