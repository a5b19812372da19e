"""Keying and validation of profiles (SPEC section 6's per-record errors)."""

import copy

import pytest

from beam_kinesis.profile import (
    InvalidProfile,
    ProfileProjection,
    fields_needed,
    project_profile,
)

PATHS = (('person', 'name', 'firstName'), ('homeAddress', 'city'))


def project(profile, key_path=('_id',)):
    return project_profile(profile, 'f.jsonl:7', key_path, PATHS)


def test_projection_keeps_only_what_the_destination_looks_at():
    key, view = project({
        '_id': 'p-1', 'person': {'name': {'firstName': 'A', 'lastName': 'B'}},
        'homeAddress': None, 'mobilePhone': {'number': '1'},
        'segmentMembership': {'ups': {'s': {'status': 'realized', 'version': 2}}},
        'identityMap': {'ecid': [{'id': 'x', 'primary': True}]}})
    assert key == 'p-1'
    assert view.source == 'f.jsonl:7'
    assert view.segments == {'ups': {'s': ('realized', None)}}
    assert view.identities == {'ecid': ('x',)}
    assert view.attributes == {'person.name.firstName': 'A'}


def test_nested_and_numeric_keys():
    assert project({'ids': {'crm': 'c-9'}}, ('ids', 'crm'))[0] == 'c-9'
    assert project({'_id': 42})[0] == '42'


@pytest.mark.parametrize('profile,message', [
    ({}, 'has no key'),
    ({'_id': None}, 'has no key'),
    ({'_id': ''}, 'is empty'),
    ({'_id': '  '}, 'is empty'),
    ({'_id': True}, 'not a string'),
    ({'_id': {'a': 1}}, 'not a string'),
    ({'_id': 'p', 'segmentMembership': 'ups'}, 'segmentMembership is a str'),
    ({'_id': 'p', 'segmentMembership': {'ups': ['s']}}, 'segmentMembership.ups is a list'),
    ({'_id': 'p', 'segmentMembership': {'ups': {'s': 'realized'}}}, 'ups:s is a str'),
    ({'_id': 'p', 'segmentMembership': {'ups': {'s': {'status': 'qualified'}}}},
     "status 'qualified'"),
    ({'_id': 'p', 'segmentMembership': {'ups': {'s': {}}}}, 'status None'),
    ({'_id': 'p', 'segmentMembership': {'ups': {'s': {'status': 'realized',
                                                      'lastQualificationTime': 5}}}},
     'not a string'),
    ({'_id': 'p', 'identityMap': [{'id': 'x'}]}, 'identityMap is a list'),
    ({'_id': 'p', 'identityMap': {'ecid': {'id': 'x'}}}, 'identityMap.ecid is a dict'),
    ({'_id': 'p', 'identityMap': {'ecid': [{'primary': True}]}}, 'without an "id"'),
    ({'_id': 'p', 'identityMap': {'ecid': [{'id': ['x']}]}}, 'id that is a list'),
    ({'_id': 'p', 'person': 'John'}, "expected an object at 'person'"),
    ({'_id': 'p', 'person': {'name': ['J']}}, "expected an object at 'person.name'"),
])
def test_invalid_profiles(profile, message):
    with pytest.raises(InvalidProfile, match=message.replace('(', r'\(')):
        project(profile)
    # The digest of the join refuses a profile exactly as the projection does.
    with pytest.raises(InvalidProfile, match=message.replace('(', r'\(')):
        ProfileProjection(('_id',), PATHS).fingerprint(profile)


BASE = {'_id': 'p-1', 'person': {'name': {'firstName': 'A'}, 'gender': 'f'},
        'homeAddress': {'city': 'Paris'},
        'segmentMembership': {'ups': {'s': {'status': 'realized',
                                            'lastQualificationTime': '2024-01-02T03:04:05Z'}}},
        'identityMap': {'ecid': [{'id': 'x', 'primary': True}]}}


def _changed(path, value):
    profile = copy.deepcopy(BASE)
    *parents, last = path
    holder = profile
    for part in parents:
        holder = holder[part]
    holder[last] = value
    return profile


@pytest.mark.parametrize('label,profile', [
    ('mapped attribute', _changed(('person', 'name', 'firstName'), 'B')),
    ('mapped attribute gone', _changed(('homeAddress', 'city'), None)),
    ('status', _changed(('segmentMembership', 'ups', 's', 'status'), 'existing')),
    ('time', _changed(('segmentMembership', 'ups', 's', 'lastQualificationTime'),
                      '2024-01-02T03:04:06Z')),
    ('segment id', _changed(('segmentMembership', 'ups'), {'t': {'status': 'realized'}})),
    ('identity', _changed(('identityMap', 'ecid'), [{'id': 'y', 'primary': True}])),
    ('int for str', _changed(('person', 'name', 'firstName'), 1)),
    ('time not canonical', _changed(('segmentMembership', 'ups', 's', 'lastQualificationTime'),
                                    '2024-01-02T03:04:05+00:00')),
])
def test_fingerprint_differs_when_what_the_destination_looks_at_differs(label, profile):
    projection = ProfileProjection(('_id',), PATHS)
    assert projection.fingerprint(profile)[1] != projection.fingerprint(BASE)[1], label


def test_fingerprint_ignores_what_the_destination_does_not_look_at():
    projection = ProfileProjection(('_id',), PATHS)
    key, digest = projection.fingerprint(BASE)
    assert key == 'p-1'
    assert projection.fingerprint(_changed(('person', 'gender'), 'm')) == (key, digest)
    assert projection.fingerprint(_changed(('mobilePhone',), {'number': '1'})) == (key, digest)
    assert projection.fingerprint(copy.deepcopy(BASE)) == (key, digest)


def test_fields_needed_are_the_top_level_roots():
    assert fields_needed(('ids', 'crm'), PATHS) == (
        'homeAddress', 'identityMap', 'ids', 'person', 'segmentMembership')
