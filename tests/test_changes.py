"""Every rule of SPEC section 3, as a table of previous/current/expected cases."""

import pytest

from beam_kinesis.engine.rules import classify_change, same_value, segment_changed
from beam_kinesis.engine.view import InvalidProfile, ProfileView

MAPPED = (('ups', 'seg-a'), ('ups', 'seg-b'), ('partner', 'seg-p'))
T1, T2 = '2024-01-01T00:00:00Z', '2024-02-01T00:00:00Z'


def view(segments=None, identities=None, attributes=None):
    """A ProfileView from `{'ns:id' or 'id': (status, time)}` shorthand."""
    nested = {}
    for name, entry in (segments or {}).items():
        namespace, segment_id = name.split(':', 1) if ':' in name else ('ups', name)
        nested.setdefault(namespace, {})[segment_id] = entry
    return ProfileView('test:1', nested, identities or {'ecid': ('1',)}, attributes or {})


R1 = ('realized', T1)
R2 = ('realized', T2)
E1 = ('existing', T1)
X1 = ('exited', T1)

SEGMENT_CASES = [
    # (previous entry, current entry, changed?, rule)
    (None, R1, True, 'absent -> realized (null to realized)'),
    (None, E1, True, 'absent -> existing'),
    (X1, R2, True, 'exited -> realized'),
    (R1, X1, True, 'realized -> exited'),
    (E1, X1, True, 'existing -> exited'),
    (R1, None, True, 'member -> absent counts as exited'),
    (E1, None, True, 'existing -> absent counts as exited'),
    (R1, R2, True, 're-qualified: realized with a later time'),
    (E1, R2, True, 'existing -> realized with a later time'),
    (R1, R1, False, 'realized, same time'),
    (R2, R1, False, 'realized with an earlier time'),
    (R1, ('existing', T2), False, 'realized -> existing alone'),
    (R1, E1, False, 'realized -> existing, same time'),
    (X1, None, False, 'exited -> absent'),
    (None, X1, False, 'absent -> exited'),
    (X1, ('exited', T2), False, 'exited -> exited'),
    (None, None, False, 'absent both times'),
    (('realized', None), ('realized', T2), False, 'no previous time: not re-qualified'),
]


@pytest.mark.parametrize(
    'previous,current,changed,rule', SEGMENT_CASES, ids=[case[3] for case in SEGMENT_CASES]
)
def test_segment_changed(previous, current, changed, rule):
    assert segment_changed(previous, current) is changed, rule


def test_requalification_compares_times_not_strings():
    # Same instant in another offset is not later; a later instant with an offset is.
    assert not segment_changed(
        ('realized', '2024-01-01T10:00:00Z'), ('realized', '2024-01-01T11:00:00+01:00')
    )
    assert segment_changed(
        ('realized', '2024-01-01T10:00:00Z'), ('realized', '2024-01-01T10:00:00.500+00:00')
    )


def test_unparseable_time_is_invalid():
    with pytest.raises(InvalidProfile, match='not an ISO-8601 time'):
        segment_changed(('realized', 'yesterday'), ('realized', 'today at noon'))


CLASSIFY_CASES = [
    # (previous view, current view, expected reason, rule)
    (view({'seg-a': R1}), view({'seg-a': R1}), None, 'nothing changed'),
    (None, view({'seg-a': R1}), 'segment_change', 'new profile enters a mapped segment'),
    (None, view({'seg-u': R1}), None, 'new profile only in unmapped segments'),
    (view({'seg-a': R1}), view({'seg-a': X1}), 'segment_change', 'exits a mapped segment'),
    (view({'seg-a': R1}), view({}), 'segment_change', 'mapped segment disappears'),
    (view({'seg-a': R1}), view({'seg-a': R2}), 'segment_change', 're-qualified'),
    (view({'seg-a': R1}), view({'seg-a': E1}), None, 'realized -> existing alone'),
    (
        view({'seg-a': R1}),
        view({'seg-a': R1, 'seg-u': R1}),
        None,
        'enters an unmapped segment only',
    ),
    (view({'seg-u': R1}), view({'seg-u': X1}), None, 'exits an unmapped segment only'),
    (
        view({'partner:seg-p': X1}),
        view({'partner:seg-p': R1}),
        'segment_change',
        'mapped segment in another namespace',
    ),
    (
        view({'seg-p': X1}),
        view({'seg-p': R1}),
        None,
        'same id in ups is not the mapped partner:seg-p',
    ),
    (
        view({'seg-a': R1}, {'ecid': ('1',)}),
        view({'seg-a': R1}, {'ecid': ('1', '2')}),
        'identity_change',
        'identity added while a member',
    ),
    (
        view({'seg-a': R1}, {'ecid': ('1',), 'crm': ('c',)}),
        view({'seg-a': R1}, {'ecid': ('1',)}),
        'identity_change',
        'identity removed',
    ),
    (
        view({'seg-a': R1}, {'ecid': ('1',)}),
        view({'seg-a': R1}, {'ecid': ('9',)}),
        'identity_change',
        'identity id changed',
    ),
    (
        view({'seg-a': R1}, {'ecid': ('1',)}),
        view({'seg-a': R1}, {'other': ('1',)}),
        'identity_change',
        'same id in another namespace',
    ),
    (
        view({'seg-a': R1}, {'ecid': ('1', '2')}),
        view({'seg-a': R1}, {'ecid': ('2', '1')}),
        None,
        'identities reordered',
    ),
    (
        view({'seg-u': R1}, {'ecid': ('1',)}),
        view({'seg-u': R1}, {'ecid': ('2',)}),
        None,
        'identity change outside every mapped segment',
    ),
    (
        view({'seg-a': R1}, attributes={'person.name.firstName': 'A'}),
        view({'seg-a': R1}, attributes={'person.name.firstName': 'B'}),
        'attribute_change',
        'mapped attribute changed',
    ),
    (
        view({'seg-a': R1}),
        view({'seg-a': R1}, attributes={'personalEmail.address': 'x@y'}),
        'attribute_change',
        'mapped attribute appears',
    ),
    (
        view({'seg-a': R1}, attributes={'personalEmail.address': 'x@y'}),
        view({'seg-a': R1}),
        'attribute_change',
        'mapped attribute disappears',
    ),
    (
        view({'seg-a': R1}, attributes={'loyalty.vip': True}),
        view({'seg-a': R1}, attributes={'loyalty.vip': 1}),
        'attribute_change',
        'true and 1 are different values',
    ),
    (
        view({'seg-a': R1}, attributes={'loyalty.points': 1}),
        view({'seg-a': R1}, attributes={'loyalty.points': 1.0}),
        None,
        '1 and 1.0 are the same number',
    ),
    (
        view({'seg-u': R1}, attributes={'person.name.firstName': 'A'}),
        view({'seg-u': R1}, attributes={'person.name.firstName': 'B'}),
        None,
        'mapped attribute changed outside every mapped segment',
    ),
    (
        view({'seg-a': X1}, attributes={'person.name.firstName': 'A'}),
        view({'seg-a': X1}, attributes={'person.name.firstName': 'B'}),
        None,
        'mapped attribute changed while exited',
    ),
    (
        view({'seg-a': R1, 'seg-b': R1}),
        view({'seg-a': R1, 'seg-b': X1}, {'ecid': ('2',)}),
        'segment_change',
        'segment change wins over identity change',
    ),
]


@pytest.mark.parametrize(
    'previous,current,reason,rule', CLASSIFY_CASES, ids=[case[3] for case in CLASSIFY_CASES]
)
def test_classify_change(previous, current, reason, rule):
    assert classify_change(previous, current, MAPPED) == reason, rule


def test_deleted_member_is_exported_once_unless_ignored():
    deleted = view({'seg-a': E1, 'seg-u': R1})
    assert classify_change(deleted, None, MAPPED) == 'deletion'
    assert classify_change(deleted, None, MAPPED, on_delete='ignore') is None


@pytest.mark.parametrize(
    'segments',
    [{'seg-u': R1}, {'seg-a': X1}, {}],
    ids=['only unmapped', 'mapped but exited', 'no segments'],
)
def test_deleted_non_member_is_not_exported(segments):
    assert classify_change(view(segments), None, MAPPED) is None


def test_first_run_exports_every_mapped_member_and_nothing_else():
    assert classify_change(None, view({'seg-a': E1}), MAPPED, first_run=True) == 'first_run'
    assert classify_change(None, view({'partner:seg-p': R1}), MAPPED, first_run=True) == 'first_run'
    assert classify_change(None, view({'seg-a': X1}), MAPPED, first_run=True) is None
    assert classify_change(None, view({'seg-u': R1}), MAPPED, first_run=True) is None


def test_incremental_export_counts_only_the_newly_qualified():
    # 100 members, 5 newly qualified -> 5 records (the seed's own example).
    previous = {f'p{i}': view({'seg-a': R1}) for i in range(95)}
    current = {f'p{i}': view({'seg-a': E1 if i < 95 else R2}) for i in range(100)}
    exported = [key for key in current if classify_change(previous.get(key), current[key], MAPPED)]
    assert exported == [f'p{i}' for i in range(95, 100)]


@pytest.mark.parametrize(
    'left,right,same',
    [
        ({'a': [1, {'b': 'x'}]}, {'a': [1, {'b': 'x'}]}, True),
        ({'a': [1, 2]}, {'a': [2, 1]}, False),
        ({'a': 1}, {'a': 1, 'b': None}, False),
        (False, 0, False),
        ('1', 1, False),
    ],
)
def test_same_value(left, right, same):
    assert same_value(left, right) is same


def test_requalification_with_a_space_separated_time_is_compared_as_time():
    # '2022-01-11 22:00:00Z' is a valid ISO time; ' ' sorts before 'T' as text.
    assert segment_changed(
        ('realized', '2022-01-11T21:00:00Z'), ('realized', '2022-01-11 22:00:00Z')
    )
    assert not segment_changed(
        ('realized', '2022-01-11 21:00:00Z'), ('realized', '2022-01-11T21:00:00Z')
    )


def test_the_rules_cost_what_a_profile_has_not_what_the_destination_maps(monkeypatch):
    """10,000 mapped segments once took a diff ten times as long: every profile was checked
    against every mapped segment. Now a profile's rules look at its own memberships only."""
    from beam_kinesis.engine import rules
    from beam_kinesis.engine.rules import MappedSegments

    mapped = MappedSegments([('ups', f'seg-{n}') for n in range(10_000)])
    calls = []
    real = rules.segment_changed
    monkeypatch.setattr(rules, 'segment_changed', lambda *args: calls.append(args) or real(*args))
    before = ProfileView(
        'a', {'ups': {'seg-1': ('realized', None), 'x': ('exited', None)}}, {'ecid': ('1',)}, {}
    )
    after = ProfileView(
        'b', {'ups': {'seg-1': ('realized', None), 'seg-2': ('exited', None)}}, {'ecid': ('1',)}, {}
    )
    assert classify_change(before, after, mapped) is None
    assert len(calls) == 2  # seg-1 and seg-2, the mapped segments the profile is in
