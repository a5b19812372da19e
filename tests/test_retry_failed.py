"""--retry_failed (SPEC 9): an earlier run's write dead letters, sent again before this run's
records; the dead letters themselves; kinesalite behind the fault proxy for the first run."""

import json
import os

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_kinesis.deadletter import encode_dead_letter, write_dead_letter
from beam_kinesis.kinesis import WriteToKinesis
from beam_kinesis.retry import ReadFailedWrites, RetryError, plan_retries, record_of
from pipelines import export_profiles
from tests.fault_proxy import INTERNAL_FAILURE, FaultSchedule, fault_proxy  # noqa: F401
from tests.kinesis_servers import REGION, assert_landed_once, read_back, target_args
from tests.ledger import parse_summary

TESTDATA = os.path.normpath(os.path.join(os.path.dirname(__file__), os.pardir, 'testdata'))
AS_OF = '2024-06-01T00:00:00Z'
FAILING = frozenset({'p-01', 'p-08', 'p-26'})  # exported by testdata's pair (CASES.md)


def data(*parts):
    return os.path.join(TESTDATA, *parts)


INPUT = [
    '--current',
    data('current.jsonl'),
    '--destination_config',
    data('destination.yaml'),
    '--as_of',
    AS_OF,
]
# A stream the job would never reach: these runs must stop at start, before sending.
UNREACHED_STREAM = [
    '--stream_name',
    's',
    '--endpoint_url',
    'http://127.0.0.1:9',
    '--aws_region',
    REGION,
]


def golden() -> list[bytes]:
    with open(data('expected_export.jsonl'), 'rb') as handle:
        return sorted(handle.read().splitlines())


def write_letters(path, entries):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        ''.join(encode_dead_letter(entry) + '\n' for entry in entries), encoding='utf-8'
    )
    return path


# The dead letters


def test_a_write_dead_letter_gives_back_its_bytes_and_key_exactly():
    for data_bytes in (b'{"a":"\xc5\x81ukasz"}', b'\xff\xfe not UTF-8 \x80'):
        entry = json.loads(encode_dead_letter(write_dead_letter('rejected', 'p-1', data_bytes)))
        assert entry['stage'] == 'write' and entry['key'] == 'p-1'
        assert entry['source'] == 'profile p-1'
        assert ('record_base64' in entry) == (data_bytes[0] == 0xFF)
        assert record_of(entry, 'x') == ('p-1', data_bytes)


def test_an_older_write_dead_letter_without_its_key_field_is_read_from_its_source():
    entry = {
        'stage': 'write',
        'error': 'e',
        'source': 'profile key with spaces',
        'record': '{"identityMap":{}}',
    }
    assert record_of(entry, 'x') == ('key with spaces', b'{"identityMap":{}}')


def test_dead_letters_of_other_stages_are_not_retried():
    assert record_of({'stage': 'validate', 'record': {'_id': 'x'}, 'source': 'f:1'}, 'x') is None


@pytest.mark.parametrize(
    'entry,message',
    [
        ({'stage': 'write', 'source': 'profile p-1', 'record': None}, 'without its record'),
        ({'stage': 'write', 'source': 'profile p-1'}, 'without its record'),
        ({'stage': 'write', 'source': 'profile p-1', 'record': {'a': 1}}, 'without its record'),
        ({'stage': 'write', 'source': 'f.jsonl:3', 'record': '{}'}, 'without its profile key'),
        ({'stage': 'write', 'key': 'p', 'record_base64': '***', 'record': 'x'}, 'not base64'),
        (['stage', 'write'], 'is not a dead letter'),
    ],
)
def test_a_write_dead_letter_that_cannot_be_sent_again(entry, message):
    with pytest.raises(RetryError, match=message):
        record_of(entry, 'Line 1 of f')


def test_plan_reads_a_directory_of_dead_letters(tmp_path):
    write_letters(
        tmp_path / 'dead' / 'dead_letters-00000-of-00001.jsonl',
        [
            write_dead_letter('e', 'p-1', b'{"x":1}'),
            write_dead_letter('e', 'p-2', b'{"x":2}'),
            {'stage': 'join', 'error': 'e', 'source': 'f:1', 'record': {}},
        ],
    )
    (tmp_path / 'dead' / 'run-report.json').write_text('{}')  # not a dead-letter file
    plan = plan_retries(str(tmp_path / 'dead'))
    assert (len(plan.files), plan.records, plan.other_stages) == (1, 2, 1)
    glob_plan = plan_retries(str(tmp_path / 'dead' / 'dead_letters-*.jsonl'))
    assert glob_plan.files == plan.files


def test_a_path_without_dead_letters_retries_nothing(tmp_path):
    (tmp_path / 'empty').mkdir()
    for path in (tmp_path / 'empty', tmp_path / 'never-written'):
        plan = plan_retries(str(path))
        assert (plan.files, plan.records) == ((), 0)


@pytest.mark.parametrize(
    'text,message',
    [
        (
            '{"stage": "write", "source": "profile p", "record": "{}"}\nnot json\n',
            'Line 2 of --retry_failed file .* is not JSON',
        ),
        ('{"stage": "write", "source": "profile p", "error": "e"}\n', 'without its record'),
        ('[1, 2]\n', 'is not a dead letter'),
    ],
)
def test_an_unreadable_retry_file_stops_the_job_at_start(tmp_path, capsys, text, message):
    letters = tmp_path / 'dead' / 'dead_letters-00000-of-00001.jsonl'
    letters.parent.mkdir()
    letters.write_text(text, encoding='utf-8')
    with pytest.raises(RetryError, match=message):
        plan_retries(str(letters.parent))
    status = export_profiles.run(
        [
            *INPUT,
            '--retry_failed',
            str(letters.parent),
            *UNREACHED_STREAM,
            '--dead_letter',
            str(tmp_path / 'out'),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert status == export_profiles.EXIT_START_FAILED and len(err.splitlines()) == 1
    assert 'retry_failed' in err and not (tmp_path / 'out').exists()


def test_retry_needs_a_stream(tmp_path, capsys):
    (tmp_path / 'dead').mkdir()
    status = export_profiles.run(
        [
            *INPUT,
            '--retry_failed',
            str(tmp_path / 'dead'),
            '--output',
            str(tmp_path / 'out'),
        ]
    )
    assert status == export_profiles.EXIT_START_FAILED
    assert '--retry_failed sends records to Kinesis' in capsys.readouterr().err


def test_retry_from_this_runs_own_dead_letter_directory_is_refused(tmp_path, capsys):
    status = export_profiles.run(
        [
            *INPUT,
            '--retry_failed',
            str(tmp_path / 'dead') + '/',
            '--dead_letter',
            str(tmp_path / 'dead'),
            *UNREACHED_STREAM,
        ]
    )
    assert status == export_profiles.EXIT_START_FAILED
    assert "names this run's own --dead_letter directory" in capsys.readouterr().err


class _RecordingClient:
    """A scripted Kinesis client: acknowledges every record, remembering the order."""

    sent: list = []

    def __init__(self, config):
        pass

    def put_records(self, StreamName, Records):  # noqa: N803 - boto3's names
        _RecordingClient.sent.extend((r['PartitionKey'], r['Data']) for r in Records)
        return {
            'FailedRecordCount': 0,
            'Records': [{'SequenceNumber': '1', 'ShardId': 's'} for _ in Records],
        }

    def put_record(self, StreamName, PartitionKey, Data):  # noqa: N803
        _RecordingClient.sent.append((PartitionKey, Data))
        return {'SequenceNumber': '1', 'ShardId': 's'}

    def close(self):
        pass


def test_read_failed_writes_feeds_the_sink_the_bytes_as_they_were(tmp_path):
    long_key = 'k' * 300  # over Kinesis's limit: the sink hashes it, as the first time
    letters = [
        write_dead_letter('e', 'p-1', b'{"a":1}'),
        write_dead_letter('e', long_key, b'\xff\x00'),
        {'stage': 'read', 'error': 'e', 'source': 'f:1', 'record': 'x'},
    ]
    write_letters(tmp_path / 'dead' / 'dead_letters-00000-of-00001.jsonl', letters)
    plan = plan_retries(str(tmp_path / 'dead'))
    from beam_kinesis.kinesis import KinesisConfig, partition_key_for

    _RecordingClient.sent = []
    with TestPipeline() as pipeline:
        retried = pipeline | ReadFailedWrites(plan)
        assert_that(
            retried, equal_to([('p-1', b'{"a":1}'), (long_key, b'\xff\x00')]), label='records'
        )
        failed = retried | WriteToKinesis(
            KinesisConfig('s', region=REGION), client_factory=_RecordingClient
        )
        assert_that(
            failed | beam.Map(lambda entry: entry['source']), equal_to([]), label='none failed'
        )
    assert sorted(_RecordingClient.sent) == sorted(
        [('p-1', b'{"a":1}'), (partition_key_for(long_key), b'\xff\x00')]
    )


# Against kinesalite: a first run whose writes fail for some keys, a second that lands them


def job_argv(tmp_path, name, endpoint, stream, *extra, previous=True):
    argv = [
        *INPUT,
        '--dead_letter',
        str(tmp_path / name / 'dead'),
        '--output',
        str(tmp_path / name / 'out'),
        *target_args(endpoint, stream, 'not-a-secret'),
        '--max_retries',
        '0',
        '--max_batch_records',
        '5',
        *extra,
    ]
    if previous:
        argv += ['--previous', data('previous.jsonl')]
    return argv


def retry_argv(tmp_path, name, endpoint, stream, earlier):
    """A run of testdata's current snapshot against itself, so nothing of its own to export,
    that sends again the write dead letters of the run `earlier`."""
    return job_argv(
        tmp_path,
        name,
        endpoint,
        stream,
        '--retry_failed',
        str(tmp_path / earlier / 'dead'),
        '--previous',
        data('current.jsonl'),
        previous=False,
    )


def first_run_failing(fault_proxy, tmp_path, stream, capsys):
    """The first run, through the proxy, with every write of FAILING's keys failing."""
    fault_proxy.schedule = FaultSchedule(
        entry_fault_rate=1.0,
        entry_fault_codes=(INTERNAL_FAILURE,),
        entry_fault_keys=FAILING.__contains__,
    )
    return run(job_argv(tmp_path, 'first', fault_proxy.endpoint_url, stream), capsys)


def run(argv, capsys):
    result = export_profiles.run_job(argv)
    out = capsys.readouterr().out
    return result, parse_summary(out), out


def test_a_second_run_lands_what_the_first_could_not_write(
    kinesalite,
    fault_proxy,  # noqa: F811
    tmp_path,
    capsys,
):
    stream = kinesalite.create_stream(2)
    first, summary, _ = first_run_failing(fault_proxy, tmp_path, stream, capsys)
    assert first.status == export_profiles.EXIT_DEAD_LETTERS and first.dead_letters == 3
    letters = [
        json.loads(line)
        for path in (tmp_path / 'first' / 'dead').glob('dead_letters*')
        for line in path.read_text().splitlines()
    ]
    assert sorted(letter['key'] for letter in letters) == sorted(FAILING)
    monitoring = summary['Monitoring (this run)']
    assert (
        monitoring['profiles received'],
        monitoring['profiles activated'],
        monitoring['profiles failed'],
    ) == (19, 16, 3)
    assert monitoring['identities failed'] == 5  # p-01 2, p-08 1, p-26 (deleted) 2
    records, shards = read_back(kinesalite, stream)
    landed = {key: value for shard in records.values() for key, value in shard}
    assert len(landed) == 16 and not FAILING & set(landed)
    # What the stream owes: what landed, and the bytes the dead letters hold.
    expected = {**landed, **{letter['key']: letter['record'].encode() for letter in letters}}
    assert sorted(expected.values()) == golden()

    # The next run: nothing changed since (current against itself), the failed writes retried.
    second, summary, out = run(
        retry_argv(tmp_path, 'second', kinesalite.endpoint_url, stream, 'first'),
        capsys,
    )
    print(out)  # the summary of a retry run, for whoever reads the test's output
    assert (second.status, second.exported, second.dead_letters) == (0, 0, 0)
    assert summary['Retried from an earlier run'] == {
        'write dead letters retried': 3,
        'landed': 3,
        'failed again (dead letters)': 0,
    }
    assert 'write dead letters in 1 file to send again' in out
    assert '; 3 of 3 retried records of an earlier run landed; 0 dead letters.' in out
    records, shards = read_back(kinesalite, stream)
    assert_landed_once(shards, records, expected)  # every record once, on its key's shard


def test_a_retry_that_fails_again_is_a_dead_letter_of_that_run(
    kinesalite,
    fault_proxy,  # noqa: F811
    tmp_path,
    capsys,
):
    stream = kinesalite.create_stream(1)
    first, _, _ = first_run_failing(fault_proxy, tmp_path, stream, capsys)
    assert first.dead_letters == 3
    # Still failing: retried, failed again, dead-lettered by this run, with the same bytes.
    again, summary, _ = run(
        retry_argv(tmp_path, 'again', fault_proxy.endpoint_url, stream, 'first'),
        capsys,
    )
    assert (again.status, again.exported, again.dead_letters) == (3, 0, 3)
    assert summary['Retried from an earlier run'] == {
        'write dead letters retried': 3,
        'landed': 0,
        'failed again (dead letters)': 3,
    }
    assert summary['Monitoring (this run)']['profiles failed'] == 0  # not this run's records

    def letters(name):
        return sorted(
            (entry['key'], entry['record'])
            for path in (tmp_path / name / 'dead').glob('dead_letters*')
            for entry in map(json.loads, path.read_text().splitlines())
        )

    assert letters('again') == letters('first')
    # The third run, the fault gone, lands them; on one shard they follow the first 16.
    fault_proxy.schedule = FaultSchedule()
    third, summary, _ = run(
        job_argv(
            tmp_path,
            'third',
            fault_proxy.endpoint_url,
            stream,
            '--retry_failed',
            str(tmp_path / 'again' / 'dead'),
        ),
        capsys,
    )
    assert (third.status, third.exported) == (0, 19)
    assert summary['Retried from an earlier run']['landed'] == 3
    records, _ = read_back(kinesalite, stream)
    (shard,) = records.values()
    keys = [key for key, _ in shard]
    # The third run re-exports the same pair: its 19 records come after the 3 retries.
    assert len(keys) == 16 + 3 + 19
    assert set(keys[16:19]) == FAILING, "the retries went out before this run's records"
    assert sorted(keys[19:]) == sorted(set(keys))
