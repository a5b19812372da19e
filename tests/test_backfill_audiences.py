"""The backfill and SPEC 8/9: a series across the day a segment is mapped, and each pair
retrying the previous pair's write dead letters."""

import glob
import json
import os
import threading

from pipelines import backfill
from tests.fault_proxy import INTERNAL_FAILURE, FaultSchedule, fault_proxy  # noqa: F401
from tests.kinesis_servers import read_back, shard_of
from tests.test_backfill import CONFIG, DAYS, EXPECTED, GLOB, kinesis_argv, profile_key

T0 = '2024-05-20T00:00:00Z'
PROFILES = [
    # m-1: in seg-a (mapped from the start) and seg-n (mapped on 2024-06-01 at 08:00).
    {
        '_id': 'm-1',
        'segmentMembership': {
            'ups': {
                'seg-a': {'status': 'realized', 'lastQualificationTime': T0},
                'seg-n': {'status': 'existing', 'lastQualificationTime': T0},
            }
        },
        'identityMap': {'ecid': [{'id': 'E-1'}]},
    },
    # m-2: only in seg-n.
    {
        '_id': 'm-2',
        'segmentMembership': {
            'ups': {'seg-n': {'status': 'existing', 'lastQualificationTime': T0}}
        },
        'identityMap': {'ecid': [{'id': 'E-2'}]},
    },
    # m-3: only in an unmapped segment.
    {
        '_id': 'm-3',
        'segmentMembership': {
            'ups': {'seg-u': {'status': 'existing', 'lastQualificationTime': T0}}
        },
        'identityMap': {'ecid': [{'id': 'E-3'}]},
    },
]
DESTINATION = """stream: profile-exports
include_segment_names: true
include_segment_timestamps: true
segments:
  - seg-a
  - id: seg-n
    name: Newly mapped
    created_at: 2024-05-01T00:00:00Z
    mapped_at: 2024-06-01T08:00:00Z
"""
SEG_N_UNMAPPED = {'lastQualificationTime': T0, 'status': 'existing', 'createdAt': 1714521600000}
SEG_N_MAPPED = {
    **SEG_N_UNMAPPED,
    'name': 'Newly mapped',
    'mappingCreatedAt': 1717228800000,
    'mappingUpdatedAt': 1717228800000,
}
SEG_A = {'lastQualificationTime': T0, 'status': 'realized'}


def exports_of(out, label):
    return sorted(
        (
            json.loads(line)
            for path in glob.glob(str(out / label / 'exports*'))
            for line in open(path, encoding='utf-8')
        ),
        key=lambda record: record['identityMap']['ecid'][0]['id'],
    )


def test_a_series_across_the_mapping_day_exports_the_members_on_that_day(tmp_path, capsys):
    for day in ('2024-06-01', '2024-06-02', '2024-06-03'):  # the same profiles every day
        (tmp_path / 'series').mkdir(exist_ok=True)
        (tmp_path / 'series' / f'profiles-{day}.jsonl').write_text(
            ''.join(json.dumps(profile) + '\n' for profile in PROFILES), encoding='utf-8'
        )
    config = tmp_path / 'destination.yaml'
    config.write_text(DESTINATION, encoding='utf-8')
    out = tmp_path / 'out'
    status = backfill.run(
        [
            '--snapshots',
            str(tmp_path / 'series' / 'profiles-*.jsonl'),
            '--destination_config',
            str(config),
            '--output',
            str(out),
            '--dead_letter',
            str(tmp_path / 'dead'),
        ]
    )
    assert status == backfill.EXIT_OK
    # Pair 1, the first run as of 06-01: seg-n is not mapped yet (no name, no mapping times).
    assert exports_of(out, '001-20240601T000000Z') == [
        {
            'identityMap': {'ecid': [{'id': 'E-1'}]},
            'segmentMembership': {'ups': {'seg-a': SEG_A, 'seg-n': SEG_N_UNMAPPED}},
        }
    ]
    # Pair 2 (06-01 -> 06-02): seg-n was mapped in between (at 08:00 on 06-01, after the
    # previous snapshot's midnight); all its members are exported, though none changed.
    assert exports_of(out, '002-20240602T000000Z') == [
        {
            'identityMap': {'ecid': [{'id': 'E-1'}]},
            'segmentMembership': {'ups': {'seg-a': SEG_A, 'seg-n': SEG_N_MAPPED}},
        },
        {
            'identityMap': {'ecid': [{'id': 'E-2'}]},
            'segmentMembership': {'ups': {'seg-n': SEG_N_MAPPED}},
        },
    ]
    # Pair 3: nothing changed and nothing newly mapped.
    assert exports_of(out, '003-20240603T000000Z') == []
    printed = capsys.readouterr().out
    newly = [
        line.split()[-1]
        for line in printed.splitlines()
        if line.strip().startswith('by newly mapped')
    ]
    assert newly == ['0', '2', '0']


class _FirstAttemptOf:
    """Fails the first attempt of each record of some keys (the proxy's entry filter)."""

    def __init__(self, keys):
        self._keys = set(keys)
        self._lock = threading.Lock()

    def __call__(self, key: str) -> bool:
        with self._lock:
            if key in self._keys:
                self._keys.discard(key)
                return True
            return False


def test_each_pair_retries_the_previous_pairs_write_dead_letters(
    kinesalite,
    fault_proxy,  # noqa: F811
    tmp_path,
    capsys,
):
    stream = kinesalite.create_stream(2)
    failing = sorted({profile_key(record) for record in EXPECTED[DAYS[0]]})[:2]
    fault_proxy.schedule = FaultSchedule(
        entry_fault_rate=1.0,
        entry_fault_codes=(INTERNAL_FAILURE,),
        entry_fault_keys=_FirstAttemptOf(failing),
    )
    argv = kinesis_argv(
        tmp_path,
        fault_proxy.endpoint_url,
        stream,
        '--max_retries',
        '0',
        series=('--snapshots', GLOB),
    )
    assert argv[argv.index('--destination_config') + 1] == CONFIG
    assert backfill.run(argv) == backfill.EXIT_DEAD_LETTERS  # pair 1 had dead letters
    out = capsys.readouterr().out
    state = json.loads((tmp_path / 'state.json').read_text())
    assert [entry['dead_letters'] for entry in state['completed']] == [2, 0, 0, 0]
    letters = [
        json.loads(line)
        for path in glob.glob(str(tmp_path / 'dead' / '001-*' / 'dead*'))
        for line in open(path, encoding='utf-8')
    ]
    assert sorted(letter['key'] for letter in letters) == failing
    # Pair 2 sent them again and they landed; pairs 3 and 4 had nothing to retry.
    assert '2 of 2 retried records of an earlier run landed' in out
    assert out.count('no dead-letter file there, nothing to retry') == 2
    records, shards = read_back(kinesalite, stream)
    by_record = {data: key for shard in records.values() for key, data in shard}
    expected = {data: profile_key(data) for day in DAYS for data in EXPECTED[day]}
    assert by_record == expected
    # Every record landed once, on its key's shard, and each profile's in day order.
    for shard, shard_records in records.items():
        days = {}
        for key, data in shard_records:
            assert shard_of(shards, key) == shard
            days.setdefault(key, []).append(next(day for day in DAYS if data in EXPECTED[day]))
        assert all(seen == sorted(seen) for seen in days.values()), days
    assert sum(len(shard) for shard in records.values()) == len(expected)
    assert os.path.isdir(tmp_path / 'dead' / '002-20240602T000000Z')
