"""Audience metadata (SPEC 7) and newly mapped segments (SPEC 8): the config and the rules,
as pure functions."""

import json

import pytest

from beam_kinesis.config import (
    ConfigError,
    DestinationConfig,
    load_destination_config,
    parse_audience_time,
)
from beam_kinesis.engine.rules import Change, classify_change
from beam_kinesis.engine.view import ProfileView
from beam_kinesis.export import encode_record, to_export_record

AS_OF = '2024-06-01T00:00:00Z'
PREVIOUS_AS_OF = '2024-05-31T00:00:00Z'
T0 = '2024-05-01T00:00:00Z'
# 2022-03-29T11:28:45Z and 11:28:50Z as epoch milliseconds.
CREATED, UPDATED = 1648553325000, 1648553330000


def write(tmp_path, text, name='d.yaml'):
    path = tmp_path / name
    path.write_text(text, encoding='utf-8')
    return str(path)


def config_of(tmp_path, body, head='stream: s\n'):
    return load_destination_config(write(tmp_path, head + body))


def view(segments, identities=None, attributes=None):
    nested = {}
    for name, entry in segments.items():
        namespace, segment_id = name.split(':', 1) if ':' in name else ('ups', name)
        nested.setdefault(namespace, {})[segment_id] = entry
    return ProfileView('test:1', nested, identities or {'ecid': ('1',)}, attributes or {})


# The config


def test_segments_as_ids_and_objects_and_unmapped_audiences(tmp_path):
    config = config_of(
        tmp_path,
        (
            'include_segment_names: true\ninclude_segment_timestamps: true\n'
            'segments:\n'
            '  - seg-a\n'
            '  - id: seg-b\n'
            '    name: High propensity to convert\n'
            '    created_at: 2022-03-29T11:28:45Z\n'
            '    updated_at: "2022-03-29T11:28:50Z"\n'
            '    mapped_at: 1649856570000\n'
            '  - id: partner:seg-p\n'
            'audiences:\n'
            '  - id: seg-u1\n'
            '    created_at: 1648553325000\n'
            '    updated_at: 2022-03-29T13:28:50+02:00\n'
        ),
    )
    assert config.segments == (('ups', 'seg-a'), ('ups', 'seg-b'), ('partner', 'seg-p'))
    assert (
        config.include_segment_names,
        config.include_segment_timestamps,
        config.segment_scope,
    ) == (True, True, 'all')
    described = {audience.pair: audience for audience in config.audiences}
    assert set(described) == {('ups', 'seg-b'), ('partner', 'seg-p'), ('ups', 'seg-u1')}
    seg_b = described['ups', 'seg-b']
    # YAML's own timestamp, a quoted ISO string and epoch milliseconds all read alike.
    assert (seg_b.name, seg_b.created_at, seg_b.updated_at) == (
        'High propensity to convert',
        CREATED,
        UPDATED,
    )
    assert seg_b.mapped_at == seg_b.mapping_updated_at == 1649856570000  # default: mapped_at
    assert (described['ups', 'seg-u1'].created_at, described['ups', 'seg-u1'].updated_at) == (
        CREATED,
        UPDATED,
    )


def test_toggles_are_off_and_scope_all_by_default(tmp_path):
    config = config_of(tmp_path, 'segments: [{id: seg-a, name: A, created_at: 1648553325000}]\n')
    assert (
        config.include_segment_names,
        config.include_segment_timestamps,
        config.segment_scope,
    ) == (False, False, 'all')
    assert config.segment_fields() == {}


@pytest.mark.parametrize(
    'value,expected',
    [
        ('2022-03-29T11:28:45Z', CREATED),
        ('2022-03-29T11:28:45.000Z', CREATED),
        ('2022-03-29T13:28:45+02:00', CREATED),
        ('2022-03-29T11:28:45.1239Z', CREATED + 123),  # below a millisecond: cut
        (CREATED, CREATED),
    ],
)
def test_times_are_iso_8601_or_epoch_milliseconds(value, expected):
    assert parse_audience_time(value, 'created_at') == expected


@pytest.mark.parametrize(
    'value,message',
    [
        ('2022-03-29', 'is not an ISO-8601 UTC time'),
        ('2022-03-29T11:28:45', 'has no time zone'),
        ('yesterday', 'is not an ISO-8601 UTC time'),
        ('2022-02-30T00:00:00Z', 'is not an ISO-8601 UTC time'),
        (1648553325, 'epoch seconds given by mistake'),
        (10**15, 'after the year 9999'),
        (1648553325000.0, 'is not an ISO-8601 UTC time'),
        (True, 'is not an ISO-8601 UTC time'),
        ('1648553325000', 'is not an ISO-8601 UTC time'),
    ],
)
def test_bad_times(value, message):
    with pytest.raises(ConfigError, match=message):
        parse_audience_time(value, 'created_at')


@pytest.mark.parametrize(
    'body,message',
    [
        (
            'segments: [{id: seg-a, color: red}]\n',
            r"segments entry 1 \(ups:seg-a\) has unknown keys \['color'\]",
        ),
        (
            'segments: [a, {id: seg-b, created_at: 2022-03-29T11:28:45}]\n',
            r'segments entry 2 \(ups:seg-b\) created_at .* has no time zone',
        ),
        (
            'segments: [a, {id: seg-b, updated_at: soon}]\n',
            r"segments entry 2 \(ups:seg-b\) updated_at 'soon' is not an ISO-8601 UTC time",
        ),
        (
            'segments: [a, {id: seg-b, mapped_at: "2024-06-31T00:00:00Z"}]\n',
            r'segments entry 2 \(ups:seg-b\) mapped_at .* is not an ISO-8601',
        ),
        (
            'segments: [seg-a, {id: seg-a, name: A}]\n',
            r'segments entry 2 repeats the segment ups:seg-a, already segments entry 1',
        ),
        ('segments: [seg-a, seg-a]\n', r'segments entry 2 repeats the segment ups:seg-a'),
        (
            'segments: [seg-a]\naudiences: [{id: "ups:seg-a"}]\n',
            r'audiences entry 1 repeats the segment ups:seg-a, already segments entry 1',
        ),
        (
            'segments: [seg-a]\naudiences: [{id: u}, {id: u}]\n',
            r'audiences entry 2 repeats the segment ups:u, already audiences entry 1',
        ),
        (
            'segments: [{id: seg-a, name: 42}]\n',
            r'segments entry 1 \(ups:seg-a\) has name 42, which is not a non-empty string',
        ),
        ('segments: [{id: seg-a, name: [x]}]\n', r"has name \['x'\], which is not"),
        ('segments: [{id: seg-a, name: ""}]\n', r"has name '', which is not"),
        ('segments: [{name: A}]\n', r'segments entry 1 needs an "id" that is a non-empty string'),
        ('segments: [{id: 7}]\n', r'segments entry 1 needs an "id"'),
        ('segments: [7]\n', r'segments entry 1 is 7; it must be a segment id or an object'),
        ('segments: [a]\naudiences: [u]\n', r"audiences entry 1 is 'u'; it must be an object"),
        ('segments: [a]\naudiences: {id: u}\n', r'"audiences" .* must be a list'),
        (
            'segments: [a]\naudiences: [{id: u, mapped_at: 1648553325000}]\n',
            r"audiences entry 1 \(ups:u\) has unknown keys \['mapped_at'\]",
        ),
        (
            'segments: [{id: a, created_at: 1648553330000, updated_at: 1648553325000}]\n',
            r'\(ups:a\) has updated_at before created_at',
        ),
        (
            'segments: [{id: a, mapped_at: 1648553330000, mapping_updated_at: 1648553325000}]\n',
            r'\(ups:a\) has mapping_updated_at before mapped_at',
        ),
        (
            'segments: [a]\ninclude_segment_names: "yes"\n',
            r"include_segment_names 'yes'; it must be true or false",
        ),
        (
            'segments: [a]\ninclude_segment_timestamps: 1\n',
            r'include_segment_timestamps 1; it must be true or false',
        ),
        ('segments: [a]\nsegment_scope: some\n', r"segment_scope 'some'; it must be one of"),
        ('segments: [a]\nsegments_scope: all\n', r'unknown keys'),
        ('segments: [{id: ":x"}]\n', r'needs both a namespace and an id'),
        ('segments: {a: 1}\n', r'needs "segments"'),
    ],
)
def test_config_errors_stop_with_one_sentence_naming_the_entry(tmp_path, body, message):
    with pytest.raises(ConfigError, match=message) as info:
        config_of(tmp_path, body)
    text = str(info.value)
    assert '\n' not in text and text.endswith('.') and "Destination config '" in text
    assert len(text) - len(str(tmp_path)) < 300


def test_a_long_bad_value_is_cut_short_in_the_message(tmp_path):
    with pytest.raises(ConfigError) as info:
        config_of(tmp_path, f'segments: [{{id: a, created_at: "{"x" * 5000}"}}]\n')
    assert len(str(info.value)) < 300 and '...' in str(info.value)


def test_json_config_with_objects(tmp_path):
    path = write(
        tmp_path,
        json.dumps(
            {
                'stream': 's',
                'include_segment_timestamps': True,
                'segments': [{'id': 'seg-a', 'created_at': '2022-03-29T11:28:45Z'}],
                'audiences': [{'id': 'seg-u', 'updated_at': UPDATED}],
            }
        ),
        'd.json',
    )
    config = load_destination_config(path)
    assert config.segment_fields() == {
        ('ups', 'seg-a'): {'createdAt': CREATED},
        ('ups', 'seg-u'): {'updatedAt': UPDATED},
    }


# Mapped before, between and after the two times (SPEC 8)

MAPPING = (
    'segments:\n'
    '  - always\n'
    '  - {id: before, mapped_at: 2024-05-01T00:00:00Z}\n'
    '  - {id: at-previous, mapped_at: 2024-05-31T00:00:00Z}\n'
    '  - {id: between, mapped_at: 2024-05-31T12:00:00Z}\n'
    '  - {id: at-as-of, mapped_at: 1717200000000}\n'  # 2024-06-01T00:00:00Z
    '  - {id: after, mapped_at: 2024-06-01T00:00:01Z}\n'
)


def test_mapped_before_between_and_after_the_two_times(tmp_path):
    run = config_of(tmp_path, MAPPING).for_run(AS_OF, PREVIOUS_AS_OF)
    assert [segment_id for _, segment_id in run.segments] == [
        'always',
        'before',
        'at-previous',
        'between',
        'at-as-of',
    ]
    assert run.newly_mapped == (('ups', 'between'), ('ups', 'at-as-of'))
    assert run.not_yet_mapped == (('ups', 'after'),)


def test_without_a_previous_time_nothing_is_newly_mapped(tmp_path):
    run = config_of(tmp_path, MAPPING).for_run(AS_OF)
    assert run.newly_mapped == () and ('ups', 'after') not in run.segments


def test_a_run_before_every_mapping_maps_nothing_yet(tmp_path):
    config = config_of(tmp_path, 'segments: [{id: a, mapped_at: 2024-06-15T00:00:00Z}]\n')
    run = config.for_run(AS_OF, PREVIOUS_AS_OF)
    assert (run.segments, run.newly_mapped, run.not_yet_mapped) == ((), (), (('ups', 'a'),))
    # The run's config is a config of its own: it can be taken for a later run again.
    later = run.for_run('2024-06-15T00:00:00Z', '2024-06-14T00:00:00Z')
    assert later.segments == later.newly_mapped == (('ups', 'a'),)
    assert classify_change(None, view({'a': ('realized', T0)}), run.segments) is None


def test_previous_time_must_come_before_the_run(tmp_path):
    config = config_of(tmp_path, MAPPING)
    with pytest.raises(ConfigError, match='--previous_as_of .* is not before --as_of'):
        config.for_run(AS_OF, AS_OF)


def test_mapping_times_tell_whether_a_run_needs_the_previous_time(tmp_path):
    assert config_of(tmp_path, MAPPING).mapping_times
    assert not config_of(
        tmp_path, 'segments: [a, {id: b, created_at: 1648553325000}]\n'
    ).mapping_times


# Metadata on the entries (SPEC 7)

DESCRIBED = (
    'segments:\n'
    '  - id: seg-a\n'
    '    name: Audience A\n'
    '    created_at: 2022-03-29T11:28:45Z\n'
    '    updated_at: 2022-03-29T11:28:50Z\n'
    '    mapped_at: 2024-04-13T13:29:30Z\n'
    '  - seg-b\n'
    '  - {id: seg-l, name: Later, created_at: 1648553325000, '
    'mapped_at: 2024-06-15T00:00:00Z}\n'
    'audiences:\n'
    '  - {id: seg-u, name: Unmapped, created_at: 1648553325000}\n'
)
SEG_A_NAME = {'name': 'Audience A'}
SEG_A_TIMES = {
    'createdAt': CREATED,
    'updatedAt': UPDATED,
    'mappingCreatedAt': 1713014970000,
    'mappingUpdatedAt': 1713014970000,
}


@pytest.mark.parametrize(
    'names,timestamps', [(False, False), (True, False), (False, True), (True, True)]
)
def test_names_and_timestamps_on_and_off(tmp_path, names, timestamps):
    toggles = (
        f'include_segment_names: {str(names).lower()}\n'
        f'include_segment_timestamps: {str(timestamps).lower()}\n'
    )
    run = config_of(tmp_path, toggles + DESCRIBED).for_run(AS_OF)
    fields = run.segment_fields()
    expected_a = {**(SEG_A_NAME if names else {}), **(SEG_A_TIMES if timestamps else {})}
    assert fields.get(('ups', 'seg-a'), {}) == expected_a
    assert ('ups', 'seg-b') not in fields  # a plain id describes nothing
    # Unmapped segments never carry a name; their timestamps are shown when described.
    assert fields.get(('ups', 'seg-u'), {}) == ({'createdAt': CREATED} if timestamps else {})
    # Not mapped yet (mapped_at after as-of): an unmapped segment for this run.
    assert fields.get(('ups', 'seg-l'), {}) == ({'createdAt': CREATED} if timestamps else {})


def test_metadata_on_every_entry_synthesised_exits_and_deletions_included(tmp_path):
    run = config_of(
        tmp_path, 'include_segment_names: true\ninclude_segment_timestamps: true\n' + DESCRIBED
    ).for_run(AS_OF)
    fields = run.segment_fields()
    previous = view(
        {'seg-a': ('realized', T0), 'seg-u': ('existing', T0), 'seg-x': ('existing', T0)}
    )
    left = to_export_record(
        Change('segment_change', previous, view({'seg-u': ('existing', T0)})),
        run.segments,
        AS_OF,
        segment_fields=fields,
    )
    assert left['segmentMembership'] == {
        'ups': {
            'seg-a': {
                'lastQualificationTime': AS_OF,
                'status': 'exited',
                **SEG_A_NAME,
                **SEG_A_TIMES,
            },
            'seg-u': {'lastQualificationTime': T0, 'status': 'existing', 'createdAt': CREATED},
        }
    }
    deleted = to_export_record(
        Change('deletion', previous, None), run.segments, AS_OF, segment_fields=fields
    )
    assert deleted['segmentMembership'] == {
        'ups': {
            'seg-a': {
                'lastQualificationTime': AS_OF,
                'status': 'exited',
                **SEG_A_NAME,
                **SEG_A_TIMES,
            },
            'seg-u': {'lastQualificationTime': AS_OF, 'status': 'exited', 'createdAt': CREATED},
            'seg-x': {'lastQualificationTime': AS_OF, 'status': 'exited'},
        }
    }


def test_segment_scope_mapped_keeps_only_the_mapped_segments(tmp_path):
    run = config_of(tmp_path, 'segment_scope: mapped\n' + DESCRIBED).for_run(AS_OF)
    current = view(
        {
            'seg-a': ('realized', T0),
            'seg-u': ('existing', T0),
            'seg-l': ('existing', T0),
            'other:seg-a': ('realized', T0),
        }
    )
    record = to_export_record(
        Change('first_run', None, current),
        run.segments,
        AS_OF,
        segment_fields=run.segment_fields(),
        segment_scope=run.segment_scope,
    )
    # seg-l is not mapped yet; the namespace "other" holds no mapped segment and goes too.
    assert record['segmentMembership'] == {
        'ups': {'seg-a': {'lastQualificationTime': T0, 'status': 'realized'}}
    }
    everything = to_export_record(Change('first_run', None, current), run.segments, AS_OF)
    assert set(everything['segmentMembership']['ups']) == {'seg-a', 'seg-u', 'seg-l'}


def test_metadata_bytes_are_sorted_and_deterministic(tmp_path):
    run = config_of(
        tmp_path, 'include_segment_names: true\ninclude_segment_timestamps: true\n' + DESCRIBED
    ).for_run(AS_OF)
    change = Change('first_run', None, view({'seg-a': ('realized', T0)}))
    data = encode_record(
        to_export_record(change, run.segments, AS_OF, segment_fields=run.segment_fields())
    )
    assert data == (
        b'{"identityMap":{"ecid":[{"id":"1"}]},"segmentMembership":{"ups":{"seg-a":{'
        b'"createdAt":1648553325000,"lastQualificationTime":"2024-05-01T00:00:00Z",'
        b'"mappingCreatedAt":1713014970000,"mappingUpdatedAt":1713014970000,'
        b'"name":"Audience A","status":"realized","updatedAt":1648553330000}}}}'
    )


def test_the_config_records_the_run_and_leaves_the_rule_to_it():
    config = DestinationConfig(stream='s', segments=(('ups', 'a'),))
    assert config.for_run(AS_OF, PREVIOUS_AS_OF) == config  # nothing to say without times
    with pytest.raises(ConfigError, match='Newly mapped segments must be mapped'):
        DestinationConfig(stream='s', segments=(('ups', 'a'),), newly_mapped=(('ups', 'b'),))


# Why a profile is exported when a segment is newly mapped

MAPPED = (('ups', 'old'), ('ups', 'new'))
NEW = (('ups', 'new'),)
R0, R1, E0, X1 = ('realized', T0), ('realized', AS_OF), ('existing', T0), ('exited', AS_OF)

NEWLY_CASES = [
    (
        view({'new': E0}),
        view({'new': E0}),
        'newly_mapped',
        'member of the newly mapped segment, nothing changed',
    ),
    (None, view({'new': R1}), 'newly_mapped', 'new profile entering the newly mapped segment'),
    (view({}), view({'new': R1}), 'newly_mapped', 'entered the newly mapped segment'),
    (
        view({'new': E0}),
        view({'new': X1}),
        'segment_change',
        'left the newly mapped segment: not a member in C',
    ),
    (view({'new': E0}), view({}), 'segment_change', 'gone from the newly mapped segment'),
    (view({'new': X1}), view({'new': X1}), None, 'exited both times'),
    (
        view({'old': X1, 'new': E0}),
        view({'old': R1, 'new': E0}),
        'segment_change',
        'a segment mapped before changed: segment change first',
    ),
    (
        view({'old': R0, 'new': E0}, {'ecid': ('1',)}),
        view({'old': R0, 'new': E0}, {'ecid': ('1', '2')}),
        'newly_mapped',
        'newly mapped wins over an identity change',
    ),
    (
        view({'old': R0}, attributes={'a': 1}),
        view({'old': R0}, attributes={'a': 2}),
        'attribute_change',
        'not in the newly mapped segment: the other rules as before',
    ),
    (view({'old': R0}), view({'old': R0}), None, 'unchanged, not in the newly mapped segment'),
    (
        view({'unmapped': R0}),
        view({'unmapped': R0, 'new': E0}),
        'newly_mapped',
        'a member only of the newly mapped segment',
    ),
]


@pytest.mark.parametrize(
    'previous,current,reason,rule', NEWLY_CASES, ids=[case[3] for case in NEWLY_CASES]
)
def test_classify_with_a_newly_mapped_segment(previous, current, reason, rule):
    assert classify_change(previous, current, MAPPED, newly_mapped=NEW) == reason, rule


def test_without_newly_mapped_segments_the_rules_are_unchanged():
    assert classify_change(view({'new': E0}), view({'new': E0}), MAPPED) is None
    assert classify_change(view({}), view({'new': R1}), MAPPED) == 'segment_change'


def test_deletion_and_first_run_come_before_newly_mapped():
    assert classify_change(view({'new': E0}), None, MAPPED, newly_mapped=NEW) == 'deletion'
    assert (
        classify_change(None, view({'new': E0}), MAPPED, first_run=True, newly_mapped=NEW)
        == 'first_run'
    )
