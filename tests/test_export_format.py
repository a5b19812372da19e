"""The export record: SPEC section 4, byte for byte."""

import json

from beam_kinesis.engine.rules import Change
from beam_kinesis.engine.view import ProfileView, project_profile
from beam_kinesis.export import encode_record, to_export_record

MAPPED = (('ups', 'seg-a'), ('ups', 'seg-b'))
AS_OF = '2024-06-01T00:00:00Z'
PATHS = (('person', 'name', 'firstName'), ('person', 'birthDate'), ('personalEmail', 'address'))


def project(profile):
    return project_profile(profile, 'test:1', ('_id',), PATHS)[1]


CURRENT = {
    '_id': 'p-1',
    'person': {'name': {'firstName': 'Zoë', 'lastName': 'Ünmapped'}, 'gender': 'f'},
    'loyalty': {'points': 10},
    'segmentMembership': {
        'ups': {
            'seg-a': {
                'status': 'realized',
                'lastQualificationTime': '2024-05-01T00:00:00Z',
                'version': 3,
            },
            'seg-u': {'status': 'existing'},
        }
    },
    'identityMap': {
        'ecid': [{'id': 'e2', 'primary': True, 'authenticatedState': 'ambiguous'}, {'id': 'e1'}],
        'email_lc_sha256': [{'id': 'h1'}],
    },
}


def test_only_mapped_attributes_all_segments_all_identities():
    previous = project(
        {
            '_id': 'p-1',
            'segmentMembership': {
                'ups': {
                    'seg-b': {'status': 'existing', 'lastQualificationTime': '2023-01-01T00:00:00Z'}
                }
            },
        }
    )
    record = to_export_record(Change('segment_change', previous, project(CURRENT)), MAPPED, AS_OF)
    assert record == {
        'person': {'name': {'firstName': 'Zoë'}},
        'segmentMembership': {
            'ups': {
                'seg-a': {'lastQualificationTime': '2024-05-01T00:00:00Z', 'status': 'realized'},
                'seg-u': {'status': 'existing'},
                # a mapped member in previous, absent from current: exited at the as-of time
                'seg-b': {'lastQualificationTime': AS_OF, 'status': 'exited'},
            }
        },
        'identityMap': {'ecid': [{'id': 'e2'}, {'id': 'e1'}], 'email_lc_sha256': [{'id': 'h1'}]},
    }
    assert '_id' not in record and 'loyalty' not in record


def test_deleted_profile_exits_its_memberships_without_attributes():
    previous = project(
        {
            **CURRENT,
            'segmentMembership': {
                'ups': {
                    'seg-a': {
                        'status': 'realized',
                        'lastQualificationTime': '2024-05-01T00:00:00Z',
                    },
                    'seg-x': {'status': 'exited', 'lastQualificationTime': '2023-05-01T00:00:00Z'},
                }
            },
        }
    )
    record = to_export_record(Change('deletion', previous, None), MAPPED, AS_OF)
    assert record == {
        'segmentMembership': {
            'ups': {
                'seg-a': {'lastQualificationTime': AS_OF, 'status': 'exited'},
                'seg-x': {'lastQualificationTime': '2023-05-01T00:00:00Z', 'status': 'exited'},
            }
        },
        'identityMap': {'ecid': [{'id': 'e2'}, {'id': 'e1'}], 'email_lc_sha256': [{'id': 'h1'}]},
    }


def test_bytes_are_sorted_compact_utf8_and_deterministic():
    change = Change('first_run', None, project(CURRENT))
    data = encode_record(to_export_record(change, MAPPED, AS_OF))
    again = encode_record(
        to_export_record(
            Change('first_run', None, project(dict(reversed(list(CURRENT.items()))))), MAPPED, AS_OF
        )
    )
    assert data == again
    assert data == json.dumps(
        json.loads(data), sort_keys=True, separators=(',', ':'), ensure_ascii=False
    ).encode('utf-8')
    assert 'Zoë'.encode() in data and not data.endswith(b'\n')


def test_profile_without_segments_or_identities_still_has_both_objects():
    record = to_export_record(
        Change('first_run', None, ProfileView('t', {}, {}, {})), MAPPED, AS_OF
    )
    assert encode_record(record) == b'{"identityMap":{},"segmentMembership":{}}'


def test_integers_beyond_64_bits_are_written_exactly():
    record = {'loyalty': {'points': 2**70}, 'identityMap': {}, 'segmentMembership': {}}
    assert encode_record(record) == (
        b'{"identityMap":{},"loyalty":{"points":1180591620717411303424},"segmentMembership":{}}'
    )
