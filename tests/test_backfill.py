"""The backfill job: a series of dated snapshots exported pair by pair, in order, resumably.

The series is `testdata/backfill/` (see its CASES.md): four daily snapshots whose exports are
derived by hand in `expected/export-<day>.jsonl`. Every exported record belongs to exactly
one day, so the records in a stream tell which pairs sent them and in which order.
"""

import base64
import glob
import http.client
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.parse

import pytest

from pipelines import backfill
from pipelines.backfill import BackfillError, Pair, Snapshot
from tests.kinesis_servers import read_back, target_args

TOP = os.path.normpath(os.path.join(os.path.dirname(__file__), os.pardir))
SERIES = os.path.join(TOP, 'testdata', 'backfill')
CONFIG = os.path.join(SERIES, 'destination.yaml')
MANIFEST = os.path.join(SERIES, 'manifest.yaml')
GLOB = os.path.join(SERIES, 'snapshots', 'profiles-*.jsonl')
DAYS = ('2024-06-01', '2024-06-02', '2024-06-03', '2024-06-04')


def snapshot(day):
    return os.path.join(SERIES, 'snapshots', f'profiles-{day}.jsonl')


def expected(day):
    with open(os.path.join(SERIES, 'expected', f'export-{day}.jsonl'), 'rb') as handle:
        return handle.read().splitlines()


EXPECTED = {day: expected(day) for day in DAYS}
DAY_OF = {record: day for day, records in EXPECTED.items() for record in records}
assert len(DAY_OF) == 11, 'every exported record of the series belongs to exactly one day'


def profile_key(record):
    """b-NN, from the record's ecid E-NN (the profile key itself is not exported)."""
    return 'b-' + json.loads(record)['identityMap']['ecid'][0]['id'][2:]


def kinesis_argv(tmp_path, endpoint_url, stream, *extra, series=('--snapshots', GLOB)):
    return [
        *series,
        '--destination_config',
        CONFIG,
        *target_args(endpoint_url, stream),
        '--dead_letter',
        str(tmp_path / 'dead'),
        '--state_file',
        str(tmp_path / 'state.json'),
        *extra,
    ]


def files_argv(tmp_path, snapshots=GLOB):
    """The series into files: exports under out/, dead letters under dead/, one state file."""
    return [
        '--snapshots',
        snapshots,
        '--destination_config',
        CONFIG,
        '--output',
        str(tmp_path / 'out'),
        '--dead_letter',
        str(tmp_path / 'dead'),
        '--state_file',
        str(tmp_path / 'state.json'),
    ]


def landed(server, stream):
    return read_back(server, stream)[0]


def check_stream(server, stream, copies):
    """The stream holds `copies[day]` copies of each record of that day, nothing else; each
    profile's records are on one shard, under its key, in day order."""
    records = landed(server, stream)
    got = sorted(data for shard in records.values() for _, data in shard)
    assert got == sorted(record for day, n in copies.items() for record in EXPECTED[day] * n)
    shard_of_key = {}
    for shard, shard_records in records.items():
        days_of_key = {}
        for key, data in shard_records:
            assert key == profile_key(data)
            assert shard_of_key.setdefault(key, shard) == shard, f'{key} is on two shards'
            days_of_key.setdefault(key, []).append(DAY_OF[data])
        for key, days in days_of_key.items():
            assert days == sorted(days), f'{key} records arrived out of day order: {days}'
    return records


def state_of(tmp_path):
    with open(tmp_path / 'state.json', encoding='utf-8') as handle:
        return json.load(handle)


def exports_in(folder):
    return sorted(
        line
        for path in glob.glob(os.path.join(folder, 'exports*'))
        for line in open(path, 'rb').read().splitlines()
    )


# --- the series: names, manifests, ranges (no pipelines) ---


@pytest.mark.parametrize(
    'name, moment',
    [
        ('profiles-2024-06-01.jsonl', '2024-06-01T00:00:00Z'),
        ('2024-06-01', '2024-06-01T00:00:00Z'),
        ('snap_2024-06-01T06:30:00Z.parquet', '2024-06-01T06:30:00Z'),
        ('snap-2024-06-01T063000.avro', '2024-06-01T06:30:00Z'),
        ('snap-2024-06-01_06-30', '2024-06-01T06:30:00Z'),
        ('part-2024-06-01-00003.jsonl', '2024-06-01T00:00:00Z'),
        ('profiles.jsonl', None),
        ('x12024-06-01.jsonl', None),
    ],
)
def test_time_in_name(name, moment):
    assert backfill.time_in_name(name) == moment


@pytest.mark.parametrize(
    'name, error',
    [
        ('from-2024-06-01-to-2024-06-02.jsonl', 'more than one date'),
        ('profiles-2024-02-30.jsonl', 'not a real date'),
    ],
)
def test_time_in_name_refuses(name, error):
    with pytest.raises(BackfillError, match=error):
        backfill.time_in_name(name)


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{}\n')


def test_glob_of_dated_files_and_directories(tmp_path):
    for day in ('2024-06-02', '2024-06-01', '2024-06-10'):
        touch(tmp_path / 'daily' / day / 'part-0.jsonl')
        touch(tmp_path / 'daily' / day / '_SUCCESS')
    touch(tmp_path / 'hourly' / 'p-2024-06-01T12-00-00Z.jsonl')
    touch(tmp_path / 'hourly' / 'p-2024-06-01T06-00-00Z.jsonl')
    folders = backfill.snapshots_from_glob(str(tmp_path / 'daily' / '*'))
    assert folders == [
        Snapshot(str(tmp_path / 'daily' / day), f'{day}T00:00:00Z')
        for day in ('2024-06-01', '2024-06-02', '2024-06-10')
    ]
    parts = backfill.snapshots_from_glob(str(tmp_path / 'daily' / '*' / 'part-*.jsonl'))
    assert [s.path for s in parts] == [
        str(tmp_path / 'daily' / day / 'part-*.jsonl')
        for day in ('2024-06-01', '2024-06-02', '2024-06-10')
    ]
    hourly = backfill.snapshots_from_glob(str(tmp_path / 'hourly' / '*.jsonl'))
    assert [s.as_of for s in hourly] == ['2024-06-01T06:00:00Z', '2024-06-01T12:00:00Z']


def test_glob_refusals(tmp_path):
    touch(tmp_path / 'a' / 'profiles.jsonl')
    touch(tmp_path / 'b' / 'x-2024-06-01.jsonl')
    touch(tmp_path / 'b' / 'y-2024-06-01.jsonl')
    with pytest.raises(BackfillError, match='matches nothing'):
        backfill.snapshots_from_glob(str(tmp_path / 'none' / '*'))
    with pytest.raises(BackfillError, match='has no date'):
        backfill.snapshots_from_glob(str(tmp_path / 'a' / '*'))
    with pytest.raises(BackfillError, match='both carry the time 2024-06-01T00:00:00Z'):
        backfill.snapshots_from_glob(str(tmp_path / 'b' / '*'))


def test_manifest_and_glob_name_the_same_series():
    from_glob = backfill.snapshots_from_glob(GLOB)
    assert from_glob == [Snapshot(snapshot(day), f'{day}T00:00:00Z') for day in DAYS]
    assert backfill.snapshots_from_manifest(MANIFEST) == from_glob


def test_manifest_forms_and_refusals(tmp_path):
    (tmp_path / 'm.json').write_text(
        json.dumps(
            [
                {'path': 'a.jsonl', 'as_of': '2024-06-01'},
                {'path': 'gs://bucket/b/*.parquet', 'as_of': '2024-06-01T06:00:00Z'},
            ]
        )
    )
    assert backfill.snapshots_from_manifest(str(tmp_path / 'm.json')) == [
        Snapshot(str(tmp_path / 'a.jsonl'), '2024-06-01T00:00:00Z'),
        Snapshot('gs://bucket/b/*.parquet', '2024-06-01T06:00:00Z'),
    ]
    # Unquoted YAML dates and times are read as date/datetime objects.
    (tmp_path / 'm.yaml').write_text(
        '- {path: a, as_of: 2024-06-01}\n- {path: b, as_of: 2024-06-01T08:00:00+02:00}\n'
    )
    assert [s.as_of for s in backfill.snapshots_from_manifest(str(tmp_path / 'm.yaml'))] == [
        '2024-06-01T00:00:00Z',
        '2024-06-01T06:00:00Z',
    ]
    for text, error in [
        (
            '- {path: a, as_of: 2024-06-02}\n- {path: b, as_of: 2024-06-01}\n',
            'not in time order: entry 2',
        ),
        ('- {path: a}\n', 'exactly the keys path and as_of'),
        ('- {path: a, as_of: yesterday}\n', "as_of 'yesterday' is not a date"),
        ('{path: a, as_of: 2024-06-01}\n', 'non-empty list'),
        ('[', 'not YAML or JSON'),
    ]:
        (tmp_path / 'bad.yaml').write_text(text)
        with pytest.raises(BackfillError, match=error):
            backfill.snapshots_from_manifest(str(tmp_path / 'bad.yaml'))


def test_from_and_to_select_pairs_by_their_current_snapshot():
    pairs = backfill.series_pairs(backfill.snapshots_from_glob(GLOB))
    assert pairs[0] == Pair(1, None, Snapshot(snapshot(DAYS[0]), '2024-06-01T00:00:00Z'))
    assert pairs[3].previous.path == snapshot(DAYS[2]) and pairs[3].label == '004-20240604T000000Z'

    def numbers(*args, **kwargs):
        return [pair.number for pair in backfill.select_pairs(pairs, *args, **kwargs)]

    assert numbers() == [1, 2, 3, 4]
    assert numbers(skip_first_run=True) == [2, 3, 4]
    assert numbers('2024-06-02', '2024-06-03') == [2, 3]
    assert numbers('2024-06-01T00:00:01Z', '2024-06-02T23:59:59Z') == [2]
    assert numbers(None, '2024-06-01', skip_first_run=True) == []
    with pytest.raises(BackfillError, match='--from 2024-06-03 is after --to 2024-06-02'):
        numbers('2024-06-03', '2024-06-02')
    with pytest.raises(BackfillError, match="--to '06/02/2024' is not a date"):
        numbers(None, '06/02/2024')


@pytest.mark.parametrize(
    'argv, error',
    [
        (['--destination_config', CONFIG], '--manifest or --snapshots must be given'),
        (['--snapshots', GLOB], '--destination_config must be given'),
        (
            ['--snapshots', GLOB, '--destination_config', CONFIG, '--current', 'x'],
            '--current is set by the backfill for each pair',
        ),
        (
            [
                '--snapshots',
                GLOB,
                '--destination_config',
                CONFIG,
                '--from',
                '2024-07-01',
                '--output',
                'out',
            ],
            'No pair of the series is left to run',
        ),
        (
            ['--manifest', os.path.join(SERIES, 'missing.yaml'), '--destination_config', CONFIG],
            'cannot be read',
        ),
    ],
)
def test_the_backfill_refuses_to_start(argv, error, capsys):
    assert backfill.run(argv) == backfill.EXIT_START_FAILED
    err = capsys.readouterr().err.strip()
    assert err.startswith('beam-kinesis-backfill: ') and error in err
    assert len(err.splitlines()) == 1


def test_a_missing_snapshot_stops_the_series_before_it_starts(tmp_path, capsys):
    (tmp_path / 'm.yaml').write_text(
        f'- {{path: {snapshot(DAYS[0])}, as_of: 2024-06-01}}\n'
        f'- {{path: gone.jsonl, as_of: 2024-06-02}}\n'
    )
    argv = [
        '--manifest',
        str(tmp_path / 'm.yaml'),
        '--destination_config',
        CONFIG,
        '--output',
        str(tmp_path / 'out'),
        '--state_file',
        str(tmp_path / 'state.json'),
    ]
    assert backfill.run(argv) == backfill.EXIT_START_FAILED
    assert 'gone.jsonl' in capsys.readouterr().err
    assert not (tmp_path / 'out').exists() and not (tmp_path / 'state.json').exists()


# --- whole series into kinesalite ---


def test_glob_series_into_kinesalite_in_day_order(kinesalite, tmp_path, capsys):
    stream = kinesalite.create_stream(2)
    argv = kinesis_argv(tmp_path, kinesalite.endpoint_url, stream)
    assert backfill.run(argv) == backfill.EXIT_OK
    check_stream(kinesalite, stream, dict.fromkeys(DAYS, 1))
    out = capsys.readouterr().out
    assert out.count('Exported ') == 4  # each pair's own summary
    assert 'Backfill done: 4 pairs into kinesis:' in out
    assert '11 profiles exported, 0 dead letters.' in out
    state = state_of(tmp_path)
    assert state['series']['destination'] == f'kinesis:{stream}'
    assert [s['path'] for s in state['series']['snapshots']] == [snapshot(d) for d in DAYS]
    assert [
        (
            e['pair'],
            e['previous'],
            e['current'],
            e['as_of'],
            e['exit_status'],
            e['exported'],
            e['dead_letters'],
        )
        for e in state['completed']
    ] == [
        (
            n,
            snapshot(DAYS[n - 2]) if n > 1 else None,
            snapshot(DAYS[n - 1]),
            f'{DAYS[n - 1]}T00:00:00Z',
            0,
            len(EXPECTED[DAYS[n - 1]]),
            0,
        )
        for n in (1, 2, 3, 4)
    ]
    assert state['in_flight'] is None and all(e['finished'] for e in state['completed'])
    # Run again: every pair is done, nothing is sent twice.
    assert backfill.run(argv) == backfill.EXIT_OK
    assert capsys.readouterr().out.count('): already done (exit 0') == 4
    check_stream(kinesalite, stream, dict.fromkeys(DAYS, 1))


def test_manifest_series_without_the_first_run(kinesalite, tmp_path, capsys):
    stream = kinesalite.create_stream(3)
    argv = kinesis_argv(
        tmp_path,
        kinesalite.endpoint_url,
        stream,
        '--skip_first_run',
        series=('--manifest', MANIFEST),
    )
    assert backfill.run(argv) == backfill.EXIT_OK
    check_stream(kinesalite, stream, dict.fromkeys(DAYS[1:], 1))
    assert [e['pair'] for e in state_of(tmp_path)['completed']] == [2, 3, 4]
    assert 'Backfill done: 3 pairs' in capsys.readouterr().out


def test_range_to_files_then_a_dry_run_of_the_rest(tmp_path, capsys):
    base = files_argv(tmp_path)
    assert backfill.run([*base, '--from', '2024-06-02', '--to', '2024-06-03']) == 0
    assert sorted(os.listdir(tmp_path / 'out')) == ['002-20240602T000000Z', '003-20240603T000000Z']
    assert sorted(os.listdir(tmp_path / 'dead')) == sorted(os.listdir(tmp_path / 'out'))
    report = json.loads(
        (tmp_path / 'dead' / '003-20240603T000000Z' / 'run-report.json').read_text()
    )
    assert report['current_records_read'] == 6 and report['exported_attribute_change'] == 2
    assert exports_in(tmp_path / 'out' / '002-20240602T000000Z') == sorted(EXPECTED[DAYS[1]])
    assert exports_in(tmp_path / 'out' / '003-20240603T000000Z') == sorted(EXPECTED[DAYS[2]])
    assert state_of(tmp_path)['series']['destination'] == f'files:{tmp_path / "out"}'
    capsys.readouterr()
    assert backfill.run([*base, '--dry_run']) == 0
    out = capsys.readouterr().out
    lines = [line.strip() for line in out.splitlines()]
    assert 'pair 1 (first run -> 2024-06-01T00:00:00Z): would run' in lines
    assert any(
        line.startswith(
            'pair 2 (2024-06-01T00:00:00Z -> 2024-06-02T00:00:00Z): done '
            '(exit 0, 3 exported, 0 dead letters'
        )
        for line in lines
    )
    assert any(
        line.startswith('pair 3 (2024-06-02T00:00:00Z -> 2024-06-03T00:00:00Z): done ')
        for line in lines
    )
    assert 'pair 4 (2024-06-03T00:00:00Z -> 2024-06-04T00:00:00Z): would run' in lines
    assert f'{snapshot(DAYS[2])} -> {snapshot(DAYS[3])}' in lines
    assert lines[-1] == 'Would run 2 pairs; 2 already done.'
    assert len(os.listdir(tmp_path / 'out')) == 2  # the dry run ran nothing


def test_dead_letters_do_not_stop_the_series_and_another_series_is_refused(tmp_path, capsys):
    days = tmp_path / 'days'
    days.mkdir()
    for day in DAYS[:3]:
        shutil.copy(snapshot(day), days / f'profiles-{day}.jsonl')
    with open(days / 'profiles-2024-06-02.jsonl', 'a', encoding='utf-8') as handle:
        handle.write('{"_id": "b-99", "segmentMembership": {"ups": {"seg-a": "broken"}}}\n')
    argv = files_argv(tmp_path, str(days / '*.jsonl'))
    assert backfill.run(argv) == backfill.EXIT_DEAD_LETTERS
    out = capsys.readouterr().out
    assert 'recorded as completed with dead letters; the series goes on' in out
    # The bad record is dead-lettered by both pairs that read day 2; pair 3 still ran.
    assert [
        (e['pair'], e['exit_status'], e['dead_letters']) for e in state_of(tmp_path)['completed']
    ] == [(1, 0, 0), (2, 3, 1), (3, 3, 1)]
    assert exports_in(tmp_path / 'out' / '003-20240603T000000Z') == sorted(EXPECTED[DAYS[2]])
    assert len(open(glob.glob(str(tmp_path / 'dead' / '002-*' / '*'))[0]).readlines()) == 1
    # A re-run has nothing left to do but still reports the series' dead letters.
    assert backfill.run(argv) == backfill.EXIT_DEAD_LETTERS
    capsys.readouterr()
    # Another snapshot list with the same state file is refused.
    os.remove(days / 'profiles-2024-06-03.jsonl')
    assert backfill.run(argv) == backfill.EXIT_START_FAILED
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'belongs to another series' in err
    assert 'it has 3 snapshots, this one 2' in err
    # And so is another destination.
    argv[argv.index('--output') + 1] = str(tmp_path / 'elsewhere')
    assert backfill.run(argv) == backfill.EXIT_START_FAILED
    assert f"it writes to 'files:{tmp_path / 'out'}'" in capsys.readouterr().err


def test_without_a_destination_one_embedded_kinesis_takes_the_whole_series(tmp_path, capsys):
    # Its own region: moto keeps streams per region for the whole process.
    argv = [
        '--snapshots',
        GLOB,
        '--destination_config',
        CONFIG,
        '--to',
        '2024-06-02',
        '--aws_region',
        'eu-west-3',
        '--dead_letter',
        str(tmp_path / 'dead'),
    ]
    assert backfill.run(argv) == backfill.EXIT_OK
    out = capsys.readouterr().out
    assert (
        out.count('the whole series goes to one embedded local Kinesis at http://127.0.0.1:') == 1
    )
    assert 'writing to an embedded local Kinesis' not in out  # no pair started its own
    assert "Read back from the embedded stream 'profile-exports': 6 records" in out
    assert 'Backfill done: 2 pairs into embedded-kinesis:profile-exports' in out


# --- failures in the middle of a series, then resume ---


class KinesisProxy:
    """A proxy on 127.0.0.1 in front of a Kinesis server that meddles with the PutRecord(s)
    requests carrying one of `records`: `fail` answers them ResourceNotFoundException;
    `hold` forwards them, then never answers (until closed)."""

    def __init__(self, upstream_url, records, action):
        self.upstream = urllib.parse.urlsplit(upstream_url)
        self.records = set(records)
        self.action = action
        self.triggered = threading.Event()
        self.released = threading.Event()
        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), self._handler())
        self.server.daemon_threads = True
        self.endpoint_url = f'http://127.0.0.1:{self.server.server_port}'
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.released.set()
        self.server.shutdown()
        self.server.server_close()

    def carries(self, body):
        request = json.loads(body)
        entries = request.get('Records') or [request]
        return any(base64.b64decode(entry.get('Data', '')) in self.records for entry in entries)

    def forward(self, path, headers, body):
        connection = http.client.HTTPConnection(
            self.upstream.hostname, self.upstream.port, timeout=30
        )
        try:
            connection.request('POST', path, body, headers)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    def _handler(self):
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get('Content-Length') or 0))
                target = self.headers.get('X-Amz-Target', '')
                meddle = target.endswith(('.PutRecords', '.PutRecord')) and proxy.carries(body)
                if meddle and proxy.action == 'fail':
                    proxy.triggered.set()
                    self.reply(
                        400,
                        [('Content-Type', 'application/x-amz-json-1.1')],
                        json.dumps(
                            {
                                '__type': 'ResourceNotFoundException',
                                'message': 'injected by the test proxy',
                            }
                        ).encode(),
                    )
                    return
                headers = {
                    name: value
                    for name, value in self.headers.items()
                    if name.lower() not in ('host', 'connection')
                }
                status, response_headers, payload = proxy.forward(self.path, headers, body)
                if meddle and proxy.action == 'hold':
                    proxy.triggered.set()
                    proxy.released.wait(120)
                    return
                self.reply(status, response_headers, payload)

            def reply(self, status, headers, payload):
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in (
                        'content-length',
                        'connection',
                        'date',
                        'server',
                        'transfer-encoding',
                    ):
                        self.send_header(name, value)
                self.send_header('Content-Length', str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler


@pytest.fixture
def proxy_factory():
    proxies = []

    def make(upstream_url, records, action):
        proxies.append(KinesisProxy(upstream_url, records, action))
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.close()


def test_crash_during_pair_three_then_resume(kinesalite, proxy_factory, tmp_path, capsys):
    stream = kinesalite.create_stream(2)
    # Pair three's records reach the stream, but the answer never comes back: the backfill
    # is killed while it waits, the worst moment for an at-least-once sink.
    proxy = proxy_factory(kinesalite.endpoint_url, EXPECTED[DAYS[2]], 'hold')
    with open(tmp_path / 'crashed.log', 'wb') as log:
        process = subprocess.Popen(
            [
                sys.executable,
                '-m',
                'pipelines.backfill',
                *kinesis_argv(tmp_path, proxy.endpoint_url, stream),
            ],
            cwd=TOP,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            assert proxy.triggered.wait(120), (tmp_path / 'crashed.log').read_text()
            state = state_of(tmp_path)
            assert [e['pair'] for e in state['completed']] == [1, 2]
            assert state['in_flight']['pair'] == 3
            # Meanwhile, a second backfill of the same series is refused.
            argv = kinesis_argv(tmp_path, kinesalite.endpoint_url, stream)
            assert backfill.run(argv) == backfill.EXIT_START_FAILED
            assert 'Another backfill is running the series' in capsys.readouterr().err
        finally:
            process.kill()
            process.wait(30)
    check_stream(kinesalite, stream, {DAYS[0]: 1, DAYS[1]: 1, DAYS[2]: 1})
    capsys.readouterr()
    assert backfill.run(kinesis_argv(tmp_path, kinesalite.endpoint_url, stream)) == 0
    out = capsys.readouterr().out
    assert 'Resuming: pair 3 was in flight when the last run stopped' in out
    assert out.count('): already done (exit 0') == 2
    # Days 1 and 2 exactly once; pair three ran twice, so day 3 is there twice.
    check_stream(kinesalite, stream, {DAYS[0]: 1, DAYS[1]: 1, DAYS[2]: 2, DAYS[3]: 1})
    state = state_of(tmp_path)
    assert [e['pair'] for e in state['completed']] == [1, 2, 3, 4]
    assert state['in_flight'] is None


def test_a_failing_pair_stops_the_series_then_resume(kinesalite, proxy_factory, tmp_path, capsys):
    stream = kinesalite.create_stream(2)
    proxy = proxy_factory(kinesalite.endpoint_url, EXPECTED[DAYS[2]], 'fail')
    status = backfill.run(
        kinesis_argv(tmp_path, proxy.endpoint_url, stream, '--request_attempts', '1')
    )
    assert status == backfill.EXIT_FAILED and proxy.triggered.is_set()
    captured = capsys.readouterr()
    assert (
        'beam-kinesis-backfill: pair 3 (2024-06-02T00:00:00Z -> 2024-06-03T00:00:00Z) '
        'failed while running (exit 1), so the series stops there; fix the cause and run '
        'the same command again to resume from it.'
    ) in captured.err
    assert 'pair 4' not in captured.out
    state = state_of(tmp_path)
    assert [e['pair'] for e in state['completed']] == [1, 2] and state['in_flight'] is None
    assert (state['last_failure']['pair'], state['last_failure']['exit_status']) == (3, 1)
    check_stream(kinesalite, stream, {DAYS[0]: 1, DAYS[1]: 1})
    argv = kinesis_argv(tmp_path, kinesalite.endpoint_url, stream)
    assert backfill.run([*argv, '--dry_run']) == 0
    assert 'would run again (it exited 1 last time)' in capsys.readouterr().out
    assert backfill.run(argv) == backfill.EXIT_OK
    check_stream(kinesalite, stream, dict.fromkeys(DAYS, 1))
    assert state_of(tmp_path)['last_failure'] is None
