"""Keying and validation of profiles (SPEC section 6's per-record errors)."""

import copy

import pytest

from beam_kinesis.engine.view import (
    InvalidProfile,
    ProfileProjection,
    decode_view,
    encode_view,
    fields_needed,
    project_profile,
)

PATHS = (('person', 'name', 'firstName'), ('homeAddress', 'city'))


def project(profile, key_path=('_id',)):
    return project_profile(profile, 'f.jsonl:7', key_path, PATHS)


def test_projection_keeps_only_what_the_destination_looks_at():
    key, view = project(
        {
            '_id': 'p-1',
            'person': {'name': {'firstName': 'A', 'lastName': 'B'}},
            'homeAddress': None,
            'mobilePhone': {'number': '1'},
            'segmentMembership': {'ups': {'s': {'status': 'realized', 'version': 2}}},
            'identityMap': {'ecid': [{'id': 'x', 'primary': True}]},
        }
    )
    assert key == 'p-1'
    assert view.source == 'f.jsonl:7'
    assert view.segments == {'ups': {'s': ('realized', None)}}
    assert view.identities == {'ecid': ('x',)}
    assert view.attributes == {'person.name.firstName': 'A'}


def test_nested_and_numeric_keys():
    assert project({'ids': {'crm': 'c-9'}}, ('ids', 'crm'))[0] == 'c-9'
    assert project({'_id': 42})[0] == '42'


@pytest.mark.parametrize(
    'profile,message',
    [
        ({}, 'has no key'),
        ({'_id': None}, 'has no key'),
        ({'_id': ''}, 'is empty'),
        ({'_id': '  '}, 'is empty'),
        ({'_id': True}, 'not a string'),
        ({'_id': {'a': 1}}, 'not a string'),
        ({'_id': 'p', 'segmentMembership': 'ups'}, 'segmentMembership is a str'),
        ({'_id': 'p', 'segmentMembership': {'ups': ['s']}}, 'segmentMembership.ups is a list'),
        ({'_id': 'p', 'segmentMembership': {'ups': {'s': 'realized'}}}, 'ups:s is a str'),
        (
            {'_id': 'p', 'segmentMembership': {'ups': {'s': {'status': 'qualified'}}}},
            "status 'qualified'",
        ),
        ({'_id': 'p', 'segmentMembership': {'ups': {'s': {}}}}, 'status None'),
        # An unhashable status is an invalid profile, not a TypeError out of a worker.
        (
            {'_id': 'p', 'segmentMembership': {'ups': {'s': {'status': ['realized']}}}},
            r"status \['realized'\]",
        ),
        (
            {'_id': 'p', 'segmentMembership': {'ups': {'s': {'status': {'a': 1}}}}},
            "status {'a': 1}",
        ),
        (
            {
                '_id': 'p',
                'segmentMembership': {
                    'ups': {'s': {'status': 'realized', 'lastQualificationTime': 5}}
                },
            },
            'not a string',
        ),
        ({'_id': 'p', 'identityMap': [{'id': 'x'}]}, 'identityMap is a list'),
        ({'_id': 'p', 'identityMap': {'ecid': {'id': 'x'}}}, 'identityMap.ecid is a dict'),
        ({'_id': 'p', 'identityMap': {'ecid': [{'primary': True}]}}, 'without an "id"'),
        ({'_id': 'p', 'identityMap': {'ecid': [{'id': ['x']}]}}, 'id that is a list'),
        ({'_id': 'p', 'person': 'John'}, "expected an object at 'person'"),
        ({'_id': 'p', 'person': {'name': ['J']}}, "expected an object at 'person.name'"),
    ],
)
def test_invalid_profiles(profile, message):
    with pytest.raises(InvalidProfile, match=message.replace('(', r'\(')):
        project(profile)


BASE = {
    '_id': 'p-1',
    'person': {'name': {'firstName': 'A'}, 'gender': 'f'},
    'homeAddress': {'city': 'Paris'},
    'segmentMembership': {
        'ups': {'s': {'status': 'realized', 'lastQualificationTime': '2024-01-02T03:04:05Z'}}
    },
    'identityMap': {'ecid': [{'id': 'x', 'primary': True}]},
}


def _changed(path, value):
    profile = copy.deepcopy(BASE)
    *parents, last = path
    holder = profile
    for part in parents:
        holder = holder[part]
    holder[last] = value
    return profile


@pytest.mark.parametrize(
    'label,profile',
    [
        ('mapped attribute', _changed(('person', 'name', 'firstName'), 'B')),
        ('mapped attribute gone', _changed(('homeAddress', 'city'), None)),
        ('status', _changed(('segmentMembership', 'ups', 's', 'status'), 'existing')),
        (
            'time',
            _changed(
                ('segmentMembership', 'ups', 's', 'lastQualificationTime'), '2024-01-02T03:04:06Z'
            ),
        ),
        ('segment id', _changed(('segmentMembership', 'ups'), {'t': {'status': 'realized'}})),
        ('identity', _changed(('identityMap', 'ecid'), [{'id': 'y', 'primary': True}])),
        ('int for str', _changed(('person', 'name', 'firstName'), 1)),
        (
            'time not canonical',
            _changed(
                ('segmentMembership', 'ups', 's', 'lastQualificationTime'),
                '2024-01-02T03:04:05+00:00',
            ),
        ),
    ],
)
def test_encoded_views_differ_when_what_the_destination_looks_at_differs(label, profile):
    projection = ProfileProjection(('_id',), PATHS)
    assert encode_view(projection.project(profile, 'a')[1]) != encode_view(
        projection.project(BASE, 'a')[1]
    ), label


def test_encoded_view_ignores_what_the_destination_does_not_look_at():
    projection = ProfileProjection(('_id',), PATHS)
    key, view = projection.project(BASE, 'a')
    assert key == 'p-1'
    for profile in (
        _changed(('person', 'gender'), 'm'),
        _changed(('mobilePhone',), {'number': '1'}),
        _changed(('identityMap', 'ecid'), [{'id': 'x', 'primary': False}]),
        copy.deepcopy(BASE),
    ):
        assert encode_view(projection.project(profile, 'b')[1]) == encode_view(view)


def test_decode_view_gives_back_the_view_project_made():
    projection = ProfileProjection(('_id',), PATHS)
    big = _changed(('person', 'name', 'firstName'), 2**70)
    for profile in (BASE, big, {'_id': 'q'}):
        view = projection.project(profile, 'f:1')[1]
        assert decode_view(encode_view(view), 'f:1') == view


def test_fields_needed_are_the_top_level_roots():
    assert fields_needed(('ids', 'crm'), PATHS) == (
        'homeAddress',
        'identityMap',
        'ids',
        'person',
        'segmentMembership',
    )
