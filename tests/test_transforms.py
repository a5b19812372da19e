"""The composite transforms in TestPipelines: ReadSnapshot, DetectChanges, FormatExport."""

import gzip
import json

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_kinesis import DestinationConfig, DetectChanges, FormatExport, ReadSnapshot
from beam_kinesis.snapshot import SnapshotError

CONFIG = DestinationConfig(
    stream='s', segments=(('ups', 'seg-a'),), attributes=('person.name.firstName',)
)
AS_OF = '2024-06-01T00:00:00Z'


def profile(key, status=None, first_name=None, ids=('1',)):
    record = {'_id': key, 'identityMap': {'ecid': [{'id': i} for i in ids]}}
    if status:
        record['segmentMembership'] = {
            'ups': {'seg-a': {'status': status, 'lastQualificationTime': '2024-01-01T00:00:00Z'}}
        }
    if first_name:
        record['person'] = {'name': {'firstName': first_name}}
    return record


def write_jsonl(path, rows, *, compress=False):
    text = ''.join((row if isinstance(row, str) else json.dumps(row)) + '\n' for row in rows)
    if compress:
        with gzip.open(path, 'wt', encoding='utf-8') as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding='utf-8')
    return str(path)


def test_read_snapshot_glob_of_plain_and_gzip_files(tmp_path):
    write_jsonl(tmp_path / 'part-1.jsonl', [profile('a'), profile('b')])
    write_jsonl(tmp_path / 'part-2.jsonl.gz', [profile('c')], compress=True)
    with TestPipeline() as pipeline:
        read = pipeline | ReadSnapshot(str(tmp_path / 'part-*'))
        assert_that(
            read.records | beam.Map(lambda r: r.profile['_id']),
            equal_to(['a', 'b', 'c']),
            label='ids',
        )
        assert_that(
            read.records | beam.Map(lambda r: r.source.rsplit('/', 1)[1]),
            equal_to(['part-1.jsonl:1', 'part-1.jsonl:2', 'part-2.jsonl.gz:1']),
            label='sources',
        )
        assert_that(read.dead_letters, equal_to([]), label='no dead letters')


def test_read_snapshot_keeps_only_the_fields_asked_for(tmp_path):
    path = write_jsonl(tmp_path / 's.jsonl', [{**profile('a'), 'big': {'x': None, 'y': 1}}])
    with TestPipeline() as pipeline:
        read = pipeline | ReadSnapshot(path, fields=['_id', 'big'])
        assert_that(
            read.records | beam.Map(lambda r: r.profile), equal_to([{'_id': 'a', 'big': {'y': 1}}])
        )


def test_read_snapshot_fails_at_construction_for_missing_or_unknown_files(tmp_path):
    with pytest.raises(SnapshotError, match='No snapshot file matches'):
        ReadSnapshot(str(tmp_path / 'nothing-*.jsonl'))
    (tmp_path / 'data.csv').write_text('x')
    with pytest.raises(SnapshotError, match='Cannot tell the format'):
        ReadSnapshot(str(tmp_path / 'data.csv'))


def test_detect_and_format_changes(tmp_path):
    previous = write_jsonl(
        tmp_path / 'p.jsonl',
        [
            profile('same', 'realized', 'A'),
            profile('renamed', 'realized', 'A'),
            profile('left', 'realized'),
            profile('deleted', 'existing'),
            profile('outsider', None, 'A'),
        ],
    )
    current = write_jsonl(
        tmp_path / 'c.jsonl',
        [
            profile('same', 'existing', 'A'),
            profile('renamed', 'realized', 'B'),
            profile('left', 'exited'),
            profile('outsider', None, 'B'),
            profile('joined', 'realized', ids=('9',)),
        ],
    )
    detect = DetectChanges(CONFIG)
    with TestPipeline() as pipeline:
        changes = {
            'previous': (pipeline | 'P' >> ReadSnapshot(previous, fields=detect.fields)).records,
            'current': (pipeline | 'C' >> ReadSnapshot(current, fields=detect.fields)).records,
        } | detect
        assert_that(
            changes['changes'] | beam.MapTuple(lambda key, change: (key, change.reason)),
            equal_to(
                [
                    ('renamed', 'attribute_change'),
                    ('left', 'segment_change'),
                    ('deleted', 'deletion'),
                    ('joined', 'segment_change'),
                ]
            ),
            label='reasons',
        )
        records = changes['changes'] | FormatExport(CONFIG.segments, AS_OF)
        assert_that(
            records.records | beam.MapTuple(lambda key, data: (key, json.loads(data))),
            equal_to(
                [
                    (
                        'renamed',
                        {
                            'person': {'name': {'firstName': 'B'}},
                            'segmentMembership': {
                                'ups': {
                                    'seg-a': {
                                        'lastQualificationTime': '2024-01-01T00:00:00Z',
                                        'status': 'realized',
                                    }
                                }
                            },
                            'identityMap': {'ecid': [{'id': '1'}]},
                        },
                    ),
                    (
                        'left',
                        {
                            'segmentMembership': {
                                'ups': {
                                    'seg-a': {
                                        'lastQualificationTime': '2024-01-01T00:00:00Z',
                                        'status': 'exited',
                                    }
                                }
                            },
                            'identityMap': {'ecid': [{'id': '1'}]},
                        },
                    ),
                    (
                        'deleted',
                        {
                            'segmentMembership': {
                                'ups': {
                                    'seg-a': {'lastQualificationTime': AS_OF, 'status': 'exited'}
                                }
                            },
                            'identityMap': {'ecid': [{'id': '1'}]},
                        },
                    ),
                    (
                        'joined',
                        {
                            'segmentMembership': {
                                'ups': {
                                    'seg-a': {
                                        'lastQualificationTime': '2024-01-01T00:00:00Z',
                                        'status': 'realized',
                                    }
                                }
                            },
                            'identityMap': {'ecid': [{'id': '9'}]},
                        },
                    ),
                ]
            ),
            label='records',
        )
        assert_that(changes['dead_letters'], equal_to([]), label='no dead letters')


def test_first_run_without_previous(tmp_path):
    current = write_jsonl(
        tmp_path / 'c.jsonl', [profile('in', 'existing'), profile('out', 'exited'), profile('none')]
    )
    with TestPipeline() as pipeline:
        changes = {'current': (pipeline | ReadSnapshot(current)).records} | DetectChanges(CONFIG)
        assert_that(
            changes['changes'] | beam.MapTuple(lambda key, change: (key, change.reason)),
            equal_to([('in', 'first_run')]),
        )


def test_dead_letters_for_each_kind_of_bad_record(tmp_path):
    current = write_jsonl(
        tmp_path / 'c.jsonl',
        [
            profile('good', 'realized'),
            '{"_id": "cut", "segmentMembership":',
            '[1, 2]',
            json.dumps({'segmentMembership': {}}),
            json.dumps(profile('')),
            profile('twice', 'realized'),
            profile('twice', 'existing'),
            json.dumps(
                {
                    '_id': 'bad-status',
                    'segmentMembership': {'ups': {'seg-a': {'status': 'qualified'}}},
                }
            ),
        ],
    )
    with TestPipeline() as pipeline:
        read = pipeline | ReadSnapshot(current)
        changes = {'current': read.records} | DetectChanges(CONFIG)
        dead = (read.dead_letters, changes['dead_letters']) | beam.Flatten()
        assert_that(
            dead | beam.Map(lambda d: (d['stage'], d['source'].rsplit(':', 1)[1])),
            equal_to(
                [
                    ('read', '2'),
                    ('read', '3'),
                    ('validate', '4'),
                    ('validate', '5'),
                    ('join', '6'),
                    ('join', '7'),
                    ('validate', '8'),
                ]
            ),
            label='dead letters',
        )
        assert_that(changes['changes'] | beam.Keys(), equal_to(['good']), label='exported')


def test_detect_changes_rejects_bad_arguments():
    with pytest.raises(ValueError, match='on_delete'):
        DetectChanges(CONFIG, on_delete='keep')
    with pytest.raises(ValueError, match='key_field'):
        DetectChanges(CONFIG, key_field='a..b')


def detect_with_stats(pipeline, previous, current):
    detect = DetectChanges(CONFIG)
    reads = {
        name: pipeline
        | f'Read{name}' >> ReadSnapshot(path, label=name, projection=detect.projection)
        for name, path in (('previous', previous), ('current', current))
    }
    snapshots = {name: read.records for name, read in reads.items()}
    snapshots.update({f'{name}_stats': read.stats for name, read in reads.items()})
    changes = snapshots | detect
    dead = [read.dead_letters for read in reads.values()] + [
        changes.dead_letters
    ] | 'AllDead' >> beam.Flatten()
    return changes, dead


def test_an_invalid_record_is_not_taken_for_an_absent_profile(tmp_path):
    # p-bad is a member before and invalid now (bad status): not a deletion, just a dead
    # letter; p-new is invalid before and a member now: not a new member either.
    previous = write_jsonl(
        tmp_path / 'p.jsonl',
        [
            profile('p-bad', 'realized'),
            profile('p-ok', 'realized'),
            {'_id': 'p-new', 'segmentMembership': {'ups': {'seg-a': {'status': '?'}}}},
        ],
    )
    current = write_jsonl(
        tmp_path / 'c.jsonl',
        [
            {'_id': 'p-bad', 'segmentMembership': {'ups': {'seg-a': {'status': 'qualified'}}}},
            profile('p-ok', 'exited'),
            profile('p-new', 'realized'),
        ],
    )
    with TestPipeline() as pipeline:
        changes, dead = detect_with_stats(pipeline, previous, current)
        assert_that(
            changes.changes | beam.MapTuple(lambda key, change: (key, change.reason)),
            equal_to([('p-ok', 'segment_change')]),
            label='exports',
        )
        assert_that(
            dead | beam.Map(lambda d: (d['stage'], d['source'].rsplit('/', 1)[1])),
            equal_to([('validate', 'p.jsonl:3'), ('validate', 'c.jsonl:1')]),
            label='dead letters',
        )


def test_an_absence_from_a_snapshot_with_unreadable_records_is_withheld(tmp_path):
    # The current snapshot has a line whose key cannot be read: p-gone's absence may be that
    # line, so its deletion is dead-lettered, not exported. Likewise p-new's absence from a
    # previous snapshot with an unreadable line.
    previous = write_jsonl(
        tmp_path / 'p.jsonl',
        [profile('p-gone', 'realized'), profile('p-stay', 'realized'), '{"_id": "p-new", "segm'],
    )
    current = write_jsonl(
        tmp_path / 'c.jsonl',
        [profile('p-stay', 'exited'), profile('p-new', 'realized'), '{"_id": "p-gone", "segm'],
    )
    with TestPipeline() as pipeline:
        changes, dead = detect_with_stats(pipeline, previous, current)
        assert_that(
            changes.changes | beam.MapTuple(lambda key, change: (key, change.reason)),
            equal_to([('p-stay', 'segment_change')]),
            label='exports',
        )
        assert_that(
            dead
            | beam.Map(
                lambda d: (d['stage'], d['source'].rsplit('/', 1)[1], 'withheld' in d['error'])
            ),
            equal_to(
                [
                    ('read', 'p.jsonl:3', False),
                    ('read', 'c.jsonl:3', False),
                    ('join', 'p.jsonl:1', True),
                    ('join', 'c.jsonl:2', True),
                ]
            ),
            label='dead letters',
        )


def test_integers_beyond_64_bits_survive_read_join_and_format(tmp_path):
    # orjson turns such integers into floats without a word; the job must not.
    big = 2**70
    previous = write_jsonl(
        tmp_path / 'p.jsonl',
        [
            {**profile('p-1', 'realized', ids=(str(big),)), 'person': {'name': {'firstName': big}}},
            {**profile(str(big), 'realized'), 'person': {'name': {'firstName': 'A'}}},
        ],
    )
    current = write_jsonl(
        tmp_path / 'c.jsonl',
        [
            {
                **profile('p-1', 'realized', ids=(str(big),)),
                'person': {'name': {'firstName': big + 1}},
            },
            {**profile(str(big), 'realized'), 'person': {'name': {'firstName': 'B'}}},
        ],
    )
    text = (tmp_path / 'c.jsonl').read_text().replace(f'"_id": "{big}"', f'"_id": {big}')
    (tmp_path / 'c.jsonl').write_text(text)
    text = (tmp_path / 'p.jsonl').read_text().replace(f'"_id": "{big}"', f'"_id": {big}')
    (tmp_path / 'p.jsonl').write_text(text)
    with TestPipeline() as pipeline:
        changes, dead = detect_with_stats(pipeline, previous, current)
        records = changes.changes | FormatExport(CONFIG.segments, AS_OF)
        assert_that(
            records.records
            | beam.MapTuple(lambda key, data: (key, data.split(b'"firstName":')[1].split(b'}')[0])),
            equal_to([('p-1', str(big + 1).encode()), (str(big), b'"B"')]),
            label='records',
        )
        assert_that(dead, equal_to([]), label='no dead letters')


def test_null_namespaces_and_entries_are_absences_on_the_projecting_read(tmp_path):
    previous = write_jsonl(tmp_path / 'p.jsonl', [profile('p-1')])
    current = write_jsonl(
        tmp_path / 'c.jsonl',
        [
            {
                '_id': 'p-1',
                'identityMap': {'ecid': [{'id': '1'}], 'email': None},
                'segmentMembership': {
                    'ups': {'seg-a': {'status': 'realized'}, 'seg-x': None},
                    'other': None,
                },
            }
        ],
    )
    with TestPipeline() as pipeline:
        changes, dead = detect_with_stats(pipeline, previous, current)
        assert_that(
            changes.changes
            | beam.MapTuple(
                lambda key, change: (
                    key,
                    change.reason,
                    change.current.segments,
                    change.current.identities,
                )
            ),
            equal_to(
                [
                    (
                        'p-1',
                        'segment_change',
                        {'ups': {'seg-a': ('realized', None)}},
                        {'ecid': ('1',)},
                    )
                ]
            ),
            label='exports',
        )
        assert_that(dead, equal_to([]), label='no dead letters')
