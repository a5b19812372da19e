"""The export job against Kinesis faults: the real job, a fault proxy, kinesalite behind it.

Each scenario runs `export_profiles.run` on one generated snapshot pair (a few hundred export
records, batches of 25 so several requests are in flight), writing through `FaultProxy` to
kinesalite with `--output`, so the expected records are known. Then the ledger reads every
shard back and accounts for each record: landed, dead-lettered, lost (must be 0), duplicated.
Every scenario's row goes to `fault_ledger.json` in pytest's base temp directory and is
printed as a table at the end of the module (run with `-s` to see it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time

import pytest

from beam_kinesis.local_kinesis import read_stream
from pipelines import export_profiles
from tests.fault_proxy import INTERNAL_FAILURE, THROTTLED, FaultSchedule, fault_proxy  # noqa: F401
from tests.generated import generate_pair
from tests.kinesis_servers import client_for, target_args
from tests.ledger import (
    ROW_FIELDS,
    Ledger,
    parse_summary,
    read_dead_letters,
    read_exports,
    reconcile,
)

TOP = os.path.normpath(os.path.join(os.path.dirname(__file__), os.pardir))
AS_OF = '2024-06-01T00:00:00Z'
SEED = 20240601
ACCESS_KEY_ID = 'AKIAFAULTPROXYTEST01'
SECRET = 'fault-secret-5c0d1e-never-print-me'
# Small budgets so that every scenario takes seconds.
FAST_SINK = (
    '--max_batch_records',
    '25',
    '--max_in_flight',
    '4',
    '--base_backoff_seconds',
    '0.01',
    '--max_backoff_seconds',
    '0.1',
    '--retry_deadline_seconds',
    '30',
    '--connect_timeout_seconds',
    '2',
    '--read_timeout_seconds',
    '5',
    '--request_attempts',
    '3',
)

ROWS: list[dict] = []


@pytest.fixture(scope='module')
def snapshots(tmp_path_factory):
    """A generated pair of 6,000 profiles in 3 files (about 320 export records)."""
    return generate_pair(tmp_path_factory.mktemp('fault-snapshots'), 6000, 3)


@pytest.fixture(scope='module')
def baseline(snapshots, tmp_path_factory):
    """The export records of the pair, from a files-only run: what every scenario owes."""
    out = tmp_path_factory.mktemp('fault-baseline')
    status = export_profiles.run(_argv(snapshots, out, sink=False))
    assert status == export_profiles.EXIT_OK
    records = read_exports(str(out / 'out'))
    assert len(records) > 200
    return records


@pytest.fixture(scope='module', autouse=True)
def report(tmp_path_factory):
    """Writes and prints the scenario table once the module's tests are done."""
    yield
    if not ROWS:
        return
    path = tmp_path_factory.getbasetemp() / 'fault_ledger.json'
    path.write_text(json.dumps(ROWS, indent=1))
    print(f'\n\nFault scenarios (ledger rows, also in {path}):\n' + format_table(ROWS))


def format_table(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    columns = ROW_FIELDS + ('both', 'exit', 'seconds', 'proxy', 'note')
    cells = [list(columns)] + [[str(row.get(name, '')) for name in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]

    def line(values):
        return (
            '| '
            + ' | '.join(value.ljust(width) for value, width in zip(values, widths, strict=True))
            + ' |'
        )

    rule = '|' + '|'.join('-' * (width + 2) for width in widths) + '|'
    return '\n'.join([line(cells[0]), rule] + [line(values) for values in cells[1:]])


def _argv(snapshots, out, *extra, sink=True, stream=None, endpoint=None):
    argv = [
        '--current',
        str(snapshots / 'current' / '*.jsonl'),
        '--previous',
        str(snapshots / 'previous' / '*.jsonl'),
        '--destination_config',
        str(snapshots / 'destination.yaml'),
        '--as_of',
        AS_OF,
        '--output',
        str(out / 'out'),
        '--dead_letter',
        str(out / 'dead'),
    ]
    if sink:
        argv += [
            *target_args(endpoint, stream, SECRET, access_key_id=ACCESS_KEY_ID),
            *FAST_SINK,
        ]
    return argv + list(extra)


class Run:
    """One run of the job through the proxy, and what came of it."""

    def __init__(self, status, seconds, captured, logs, directory, stream):
        self.status = status
        self.seconds = seconds
        self.out = captured.out
        self.err = captured.err
        self.logs = logs
        self.directory = directory
        self.stream = stream
        self.summary = parse_summary(self.out)
        self.dead_letters = read_dead_letters(str(directory / 'dead'))

    def texts(self) -> list[str]:
        """Everything the run showed or wrote."""
        shown = [self.out, self.err, self.logs]
        for root, _, names in os.walk(self.directory):
            shown += [
                open(os.path.join(root, name), encoding='utf-8', errors='replace').read()
                for name in names
            ]
        return shown


class Harness:
    """Runs the job through the fault proxy into a fresh kinesalite stream, and accounts."""

    def __init__(self, kinesalite, proxy, snapshots, baseline, tmp_path, capsys, caplog):
        self.kinesalite = kinesalite
        self.proxy = proxy
        self.snapshots = snapshots
        self.baseline = baseline
        self.tmp_path = tmp_path
        self.capsys = capsys
        self.caplog = caplog

    def run(self, schedule, *extra, log_level=logging.INFO) -> Run:
        stream = self.kinesalite.create_stream(3)
        self.proxy.schedule = schedule
        self.capsys.readouterr()
        self.caplog.clear()
        started = time.monotonic()
        with self.caplog.at_level(log_level):
            status = export_profiles.run(
                _argv(
                    self.snapshots,
                    self.tmp_path,
                    *extra,
                    stream=stream,
                    endpoint=self.proxy.endpoint_url,
                )
            )
        seconds = time.monotonic() - started
        return Run(
            status, seconds, self.capsys.readouterr(), self.caplog.text, self.tmp_path, stream
        )

    def stream_records(self, stream) -> dict:
        return stream_records(self.kinesalite, stream)

    def account(self, run, scenario, expected, note='') -> Ledger:
        """Reads the stream back, records the scenario's row, returns the ledger."""
        client = self.kinesalite.client()
        try:
            ledger = reconcile(scenario, client, run.stream, expected, run.dead_letters)
        finally:
            client.close()
        ledger.note = note
        if run.status == export_profiles.EXIT_FAILED:
            # The job stopped and said so: what is not in the stream was not delivered,
            # loudly, which is not a silent loss.
            ledger.note = f'{ledger.lost} not delivered: the job failed, loudly' + (
                f'; {note}' if note else ''
            )
        ROWS.append(
            dict(
                ledger.row(),
                exit=run.status,
                seconds=round(run.seconds, 1),
                lost=ledger.lost if run.status != export_profiles.EXIT_FAILED else '-',
                proxy=proxy_did(self.proxy.summary()),
            )
        )
        return ledger

    def completed(self, scenario, schedule, *extra, note='', log_level=logging.INFO):
        """Runs a scenario that must finish; checks its export, ledger, summary, secrecy."""
        run = self.run(schedule, *extra, log_level=log_level)
        exported = read_exports(str(self.tmp_path / 'out'))
        assert sorted(exported) == sorted(self.baseline), 'the export changed under faults'
        ledger = self.account(run, scenario, exported, note)
        ledger.assert_complete()
        assert_summary_matches(run, ledger)
        assert_credentials_never_show(run)
        stats = self.proxy.summary()
        assert not stats.get('not_json') and not stats.get('proxy errors'), stats
        return run, ledger, stats


@pytest.fixture
def harness(kinesalite, fault_proxy, snapshots, baseline, tmp_path, capsys, caplog):  # noqa: F811
    return Harness(kinesalite, fault_proxy, snapshots, baseline, tmp_path, capsys, caplog)


def stream_records(kinesalite, stream) -> dict:
    """Every record of the stream, per shard, read from kinesalite itself."""
    client = kinesalite.client()
    try:
        return read_stream(client, stream)
    finally:
        client.close()


def proxy_did(stats: dict[str, int]) -> str:
    """The proxy's counts, short: requests and what it injected."""
    short = {
        'requests PutRecords': 'PutRecords',
        'requests PutRecord': 'PutRecord',
        f'entries failed {THROTTLED}': 'entries throttled',
        f'entries failed {INTERNAL_FAILURE}': 'entries InternalFailure',
        'connections dropped after store': 'dropped after store',
        'responses delayed': 'delayed',
        'answered stream not found': 'not found',
        'answered credential error': 'credential errors',
        'streams deleted upstream': 'stream deleted',
    }
    parts = [
        f'{short.get(name, name.removeprefix("requests "))} {count}'
        for name, count in stats.items()
        if name in short or name.startswith('requests answered')
    ]
    return ', '.join(parts)


def assert_credentials_never_show(run, *more):
    """Neither the access key id nor the secret key is in anything the run showed or wrote."""
    for value in (SECRET, ACCESS_KEY_ID):
        leaks = [
            text[max(0, text.index(value) - 150) : text.index(value) + 30]
            for text in run.texts() + list(more)
            if value in text
        ]
        assert not leaks, f'{value} shows in {leaks}'


def kinesis_counts(run) -> dict[str, int]:
    return run.summary['Kinesis']


def assert_summary_matches(run, ledger):
    """The printed summary agrees with the ledger and the dead-letter files."""
    kinesis = kinesis_counts(run)
    write_letters = [entry for entry in run.dead_letters if entry['stage'] == 'write']
    assert kinesis['records dead lettered'] == len(write_letters) == ledger.dead_lettered
    assert run.summary['Dead letters']['write'] == len(write_letters)
    # Each record is acknowledged once or dead-lettered, so the acknowledged ones are those
    # that landed and were not dead-lettered (extra copies come from lost answers, never
    # acknowledged).
    assert kinesis['records sent'] == ledger.landed - ledger.both


def test_no_faults_every_record_lands_once(harness):
    run, ledger, _ = harness.completed('no faults (control)', FaultSchedule(seed=SEED))
    assert run.status == export_profiles.EXIT_OK
    assert (ledger.landed, ledger.duplicated, ledger.dead_lettered) == (len(harness.baseline), 0, 0)
    assert kinesis_counts(run)['records retried'] == 0


def test_ten_percent_of_entries_throttled(harness):
    run, ledger, stats = harness.completed(
        '10% of entries throttled', FaultSchedule(seed=SEED, entry_fault_rate=0.10)
    )
    assert run.status == export_profiles.EXIT_OK
    assert (ledger.landed, ledger.duplicated, ledger.dead_lettered) == (len(harness.baseline), 0, 0)
    failed = stats[f'entries failed {THROTTLED}']
    assert failed >= 10
    kinesis = kinesis_counts(run)
    # Throttles botocore retried by itself (a lone PutRecord's) are counted too.
    assert kinesis['records throttled'] == failed
    assert kinesis['records retried'] >= kinesis['records throttled']


def test_ten_percent_of_entries_fail_internally_or_throttled(harness):
    run, ledger, stats = harness.completed(
        '10% of entries InternalFailure or throttled',
        FaultSchedule(
            seed=SEED + 1, entry_fault_rate=0.10, entry_fault_codes=(INTERNAL_FAILURE, THROTTLED)
        ),
    )
    assert run.status == export_profiles.EXIT_OK
    assert (ledger.landed, ledger.duplicated) == (len(harness.baseline), 0)
    assert stats[f'entries failed {INTERNAL_FAILURE}'] > 0
    assert kinesis_counts(run)['records retried'] > 0


# Seeds picked so that 5 % of some 60 requests is a few faults (with every kind in the mix).
@pytest.mark.parametrize(
    'faults,seed',
    [(('http500',), SEED + 3), (('http503', 'throttled', 'throttling'), SEED + 35)],
    ids=['500', '503-or-throttled'],
)
def test_five_percent_of_requests_fail_whole(harness, faults, seed):
    run, ledger, stats = harness.completed(
        f'5% of requests answered {"/".join(faults)}',
        FaultSchedule(seed=seed, request_fault_rate=0.05, request_faults=faults),
        '--max_batch_records',
        '5',
    )  # enough requests that 5% of them is a few
    assert run.status == export_profiles.EXIT_OK
    assert all(stats.get(f'requests answered {fault}', 0) > 0 for fault in faults), stats
    assert (ledger.landed, ledger.duplicated, ledger.dead_lettered) == (len(harness.baseline), 0, 0)


def test_slow_responses_past_the_read_timeout(harness):
    run, ledger, stats = harness.completed(
        '20% of answers later than the read timeout',
        FaultSchedule(seed=SEED, delay_rate=0.20, delay_seconds=1.5),
        '--read_timeout_seconds',
        '0.5',
        note='stored, answered too late, resent',
    )
    assert run.status == export_profiles.EXIT_OK
    assert stats['responses delayed'] > 0
    # Each late answer was stored upstream, so its resend lands a second copy.
    assert ledger.duplicated > 0 and ledger.lost == 0


def test_every_answer_too_late_dead_letters_records_that_did_land(harness):
    run, ledger, stats = harness.completed(
        'every answer later than the read timeout, --max_retries 1',
        FaultSchedule(seed=SEED, delay_rate=1.0, delay_seconds=0.8),
        '--read_timeout_seconds',
        '0.3',
        '--request_attempts',
        '1',
        '--max_retries',
        '1',
        note='dead-lettered, yet stored: never acknowledged',
    )
    assert run.status == export_profiles.EXIT_DEAD_LETTERS
    # Kinesis stored every attempt but acknowledged none: each record is a dead letter (the
    # sink cannot know better) and is in the stream, twice (first try and one resend).
    assert ledger.dead_lettered == ledger.both == ledger.landed == len(harness.baseline)
    assert ledger.duplicated == len(harness.baseline)
    assert all('ReadTimeoutError' in error for error in ledger.dead_letter_errors)
    assert kinesis_counts(run)['records sent'] == 0
    assert stats['responses delayed'] == stats['requests PutRecords']


def test_connections_dropped_after_store_make_duplicates_not_losses(harness):
    run, ledger, stats = harness.completed(
        '20% of connections dropped after store',
        FaultSchedule(seed=SEED, drop_rate=0.20),
        note='at least once: copies reported',
    )
    assert run.status == export_profiles.EXIT_OK
    assert stats['connections dropped after store'] > 0
    assert ledger.duplicated > 0 and ledger.lost == 0
    assert ledger.landed == len(harness.baseline)


def _unlucky(key: str) -> bool:
    """About one partition key in thirty."""
    return hashlib.md5(key.encode('utf-8')).digest()[0] < 8


def test_retry_budget_exhausted_dead_letters_with_the_error_code(harness):
    run, ledger, _ = harness.completed(
        'some keys always throttled, --max_retries 2',
        FaultSchedule(seed=SEED, entry_fault_rate=1.0, entry_fault_keys=_unlucky),
        # Big batches: every throttled round trip halves the sink's rate (AIMD, floor 10
        # records/s), so fewer requests keep the test fast.
        '--max_retries',
        '2',
        '--max_batch_records',
        '100',
        note='retry budget spent: dead letters',
        log_level=logging.DEBUG,
    )  # dead letters and every log line checked for the keys
    assert run.status == export_profiles.EXIT_DEAD_LETTERS
    doomed = [entry for entry in run.dead_letters if _unlucky(entry['source'][len('profile ') :])]
    assert ledger.dead_lettered == len(doomed) == len(run.dead_letters) > 0
    assert ledger.landed == len(harness.baseline) - len(doomed) and ledger.both == 0
    for entry in run.dead_letters:
        assert entry['stage'] == 'write' and THROTTLED in entry['error'], entry['error']
        assert 'after 3 attempts' in entry['error'], entry['error']
    assert f'{len(doomed):,} dead letters in ' in run.out
    assert kinesis_counts(run)['records throttled'] >= 3 * len(doomed)


def test_everything_throttled_dead_letters_everything_within_the_budget(harness):
    run, ledger, _ = harness.completed(
        'every entry throttled, --max_retries 1',
        FaultSchedule(seed=SEED, entry_fault_rate=1.0),
        '--max_retries',
        '1',
        '--max_batch_records',
        '500',
        note='all dead letters, exit 3',
    )
    assert run.status == export_profiles.EXIT_DEAD_LETTERS
    assert (ledger.landed, ledger.dead_lettered) == (0, len(harness.baseline))
    assert kinesis_counts(run)['records sent'] == 0


@pytest.mark.parametrize('how', ['answered', 'deleted'])
def test_stream_deleted_mid_run_fails_the_job_quickly(harness, how):
    schedule = (
        FaultSchedule(seed=SEED, stream_gone_after=3)
        if how == 'answered'
        else FaultSchedule(seed=SEED, delete_stream_after=3)
    )
    run = harness.run(schedule, log_level=logging.DEBUG)
    assert run.status == export_profiles.EXIT_FAILED
    err = run.err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith('beam-kinesis-export: the job failed: ')
    assert f"'{run.stream}'" in err and 'ResourceNotFoundException' in err, err
    assert run.seconds < 30, f'the failing run took {run.seconds:.0f} s'
    assert 'KinesisWriteError' in run.logs  # the full error, logged by the runner, is checked
    assert_credentials_never_show(run)
    if how == 'answered':
        # The stream is still there: what landed before the failure is accounted for; the
        # rest was not delivered, and the job said so (exit 1), so nothing is lost silently.
        ledger = harness.account(run, f'stream gone mid-run ({how})', harness.baseline)
        assert ledger.unexpected == ledger.wrong_shard == 0
        assert ledger.landed < len(harness.baseline)
    else:
        ROWS.append(
            {
                'scenario': f'stream gone mid-run ({how})',
                'expected': len(harness.baseline),
                'landed': '-',
                'dead_lettered': 0,
                'lost': '-',
                'duplicated': '-',
                'exit': run.status,
                'seconds': round(run.seconds, 1),
                'note': 'the job failed, loudly; the stream is gone, nothing to read',
                'proxy': proxy_did(harness.proxy.summary()),
            }
        )


@pytest.mark.parametrize('code', ['UnrecognizedClientException', 'ExpiredTokenException'])
def test_rejected_credentials_stop_the_job_at_start(harness, code):
    run = harness.run(FaultSchedule(seed=SEED, credential_error=code), log_level=logging.DEBUG)
    assert run.status == export_profiles.EXIT_START_FAILED
    err = run.err.strip()
    assert len(err.splitlines()) == 1 and code in err and 'credentials were rejected' in err
    assert harness.proxy.summary().get('requests PutRecords', 0) == 0
    assert not (harness.tmp_path / 'out').exists() and not (harness.tmp_path / 'dead').exists()
    assert not any(harness.stream_records(run.stream).values())
    assert_credentials_never_show(run)
    ROWS.append(
        {
            'scenario': f'{code} at start',
            'expected': 0,
            'landed': 0,
            'dead_lettered': 0,
            'lost': 0,
            'duplicated': 0,
            'exit': run.status,
            'seconds': round(run.seconds, 1),
            'note': 'nothing read or written',
            'proxy': proxy_did(harness.proxy.summary()),
        }
    )


def test_credentials_expiring_mid_run_fail_the_job_without_showing_the_secret(harness):
    run = harness.run(
        FaultSchedule(
            seed=SEED, credential_error='ExpiredTokenException', credential_error_after=3
        ),
        log_level=logging.DEBUG,
    )
    assert run.status == export_profiles.EXIT_FAILED
    err = run.err.strip()
    assert len(err.splitlines()) == 1 and 'ExpiredTokenException' in err, err
    assert 'KinesisWriteError' in run.logs  # the full error, logged by the runner, is checked
    # The pair is off Beam's command line, so no options dump or display data can show it.
    argv = _argv(
        harness.snapshots, harness.tmp_path, stream=run.stream, endpoint=harness.proxy.endpoint_url
    )
    _, beam_argv = export_profiles._split_credentials(argv)
    options = export_profiles.PipelineOptions(beam_argv)
    assert_credentials_never_show(
        run, ' '.join(beam_argv), repr(options.display_data()), repr(options.get_all_options())
    )
    ledger = harness.account(run, 'credentials expire mid-run', harness.baseline)
    assert ledger.unexpected == ledger.wrong_shard == 0


def test_the_proxy_merges_partial_failures_in_request_order(kinesalite, fault_proxy):  # noqa: F811
    """The proxy's own contract: failed entries keep their place, the rest really landed."""
    stream = kinesalite.create_stream(2)
    fault_proxy.schedule = FaultSchedule(
        seed=SEED, entry_fault_rate=0.3, entry_fault_codes=(THROTTLED, INTERNAL_FAILURE)
    )
    records = [(f'key-{i}', f'record {i}'.encode()) for i in range(40)]
    client = client_for(fault_proxy.endpoint_url)
    try:
        answer = client.put_records(
            StreamName=stream,
            Records=[{'PartitionKey': key, 'Data': data} for key, data in records],
        )
    finally:
        client.close()
    stored = stream_records(kinesalite, stream)
    results = answer['Records']
    failed = [i for i, result in enumerate(results) if 'ErrorCode' in result]
    stats = fault_proxy.summary()
    assert len(results) == 40 and answer['FailedRecordCount'] == len(failed) > 0
    assert len(failed) == sum(
        count for name, count in stats.items() if name.startswith('entries failed ')
    )
    assert all(
        results[i]['ErrorCode'] in (THROTTLED, INTERNAL_FAILURE) and results[i]['ErrorMessage']
        for i in failed
    )
    landed = {
        (key, data, shard) for shard, shard_records in stored.items() for key, data in shard_records
    }
    assert landed == {
        (key, data, results[i]['ShardId'])
        for i, (key, data) in enumerate(records)
        if i not in failed
    }


# ---------------------------------------------------------------------------------------------
# A dead endpoint mid-run, signature errors, per-shard limits (issue 13)


def test_a_black_holed_endpoint_mid_run_fails_the_job_quickly(harness):
    # Every PutRecords after the third is swallowed: no answer, ever.
    run = harness.run(
        FaultSchedule(seed=SEED, blackhole_after=3),
        '--read_timeout_seconds',
        '1',
        '--request_attempts',
        '1',
        '--unreachable_after_requests',
        '3',
        '--unreachable_after_seconds',
        '3',
        log_level=logging.DEBUG,
    )
    assert run.status == export_profiles.EXIT_FAILED
    err = run.err.strip()
    assert len(err.splitlines()) == 1, err
    assert 'has not answered for' in err and 'could not connect or timed out' in err, err
    # Before: each of the 13 batches spent its 30 s budget, 4 at a time, then dead letters.
    assert run.seconds < 40, f'the failing run took {run.seconds:.0f} s'
    assert_credentials_never_show(run)
    ledger = harness.account(
        run,
        'PutRecords black-holed after 3',
        harness.baseline,
        note='unreachable endpoint: the job stops',
    )
    assert ledger.unexpected == ledger.wrong_shard == 0


def test_the_batch_deadline_bounds_its_attempts_timeouts_included(harness):
    # One batch, a 6 s budget, 2 botocore attempts of up to 5 s each: before, the first call
    # alone ran 10 s past nothing but the deadline check between attempts.
    run = harness.run(
        FaultSchedule(seed=SEED, blackhole_after=0),
        '--max_batch_records',
        '500',
        '--retry_deadline_seconds',
        '6',
        '--read_timeout_seconds',
        '5',
        '--connect_timeout_seconds',
        '1',
        '--request_attempts',
        '2',
        '--unreachable_after_requests',
        '1000',
    )
    assert run.status == export_profiles.EXIT_DEAD_LETTERS
    assert {entry['stage'] for entry in run.dead_letters} == {'write'}
    assert all('retry time budget of 6 s' in entry['error'] for entry in run.dead_letters)
    swallowed = harness.proxy.swallowed
    assert swallowed and all(gave_up is not None for _, gave_up in swallowed)
    spent = max(gave_up for _, gave_up in swallowed) - min(came for came, _ in swallowed)
    assert spent <= 6 + 1.5, f'the batch took {spent:.1f} s against its 6 s budget'
    ROWS.append(
        {
            'scenario': 'one batch black-holed, 6 s budget',
            'expected': len(harness.baseline),
            'landed': 0,
            'dead_lettered': len(run.dead_letters),
            'lost': 0,
            'duplicated': 0,
            'exit': run.status,
            'seconds': round(run.seconds, 1),
            'note': f'batch spent {spent:.1f} s',
            'proxy': proxy_did(harness.proxy.summary()),
        }
    )


@pytest.mark.parametrize(
    'code', ['IncompleteSignatureException', 'MissingAuthenticationTokenException']
)
def test_signature_errors_mid_run_stop_the_job_without_showing_the_key_id(harness, code):
    # The proxy quotes the Authorization header back, access key id included, as AWS does.
    run = harness.run(
        FaultSchedule(seed=SEED, credential_error=code, credential_error_after=1),
        log_level=logging.DEBUG,
    )
    assert run.status == export_profiles.EXIT_FAILED
    err = run.err.strip()
    assert len(err.splitlines()) == 1 and code in err, err
    assert_credentials_never_show(run)
    # Before: every request was halved down to single records (2 calls per record).
    assert harness.proxy.summary()['requests PutRecords'] <= 8
    ROWS.append(
        {
            'scenario': f'{code} mid-run',
            'expected': len(harness.baseline),
            'landed': 0,
            'dead_lettered': 0,
            'lost': '-',
            'duplicated': 0,
            'exit': run.status,
            'seconds': round(run.seconds, 1),
            'note': 'the job failed, loudly',
            'proxy': proxy_did(harness.proxy.summary()),
        }
    )


def test_kinesis_shard_limits_are_visible_per_shard_in_the_summary(harness):
    run, ledger, stats = harness.completed(
        'shards limited to 20 records/s',
        FaultSchedule(seed=SEED, shard_records_per_second=20),
        # About 108 records per shard against a burst of 20: throttling is certain.
        '--max_batch_records',
        '100',
        note='throttled per shard, nothing lost',
    )
    assert run.status == export_profiles.EXIT_OK and ledger.duplicated == 0
    kinesis = kinesis_counts(run)
    per_shard = {
        label: count
        for label, count in kinesis.items()
        if label.startswith('records throttled on shardId-')
    }
    assert per_shard and sum(per_shard.values()) == kinesis['records throttled'] > 0
    assert kinesis['throttling msecs'] > 0
    assert 'request latency msecs' in run.out and 'request records' in run.out
    assert (
        stats['entries failed ProvisionedThroughputExceededException']
        == kinesis['records throttled']
    )
