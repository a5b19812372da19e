"""Tests of writing profile snapshots as JSON Lines, Avro and Parquet, and of converting them."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import fastavro
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_kinesis import snapshot_files
from beam_kinesis.snapshot_files import (
    convert_snapshot,
    profile_schema_arrow,
    profile_schema_avro,
    write_snapshot,
)

REPO = Path(__file__).resolve().parents[1]
TESTDATA = REPO / 'testdata'

PROFILES = [
    {
        '_id': 'p-1',
        'person': {'name': {'firstName': 'John', 'lastName': 'Doe'}, 'birthDate': '1980-02-01'},
        'personalEmail': {'address': 'john.doe@acme.com'},
        'loyalty': {'points': 120, 'ratio': 0.5, 'member': True},
        'tags': ['vip', 'newsletter'],
        'segmentMembership': {
            'ups': {
                'seg-a': {'status': 'realized', 'lastQualificationTime': '2022-01-11T21:24:39Z'},
                'seg-b': {
                    'status': 'exited',
                    'lastQualificationTime': '2022-01-12T08:00:00Z',
                    'version': 3,
                },
            }
        },
        'identityMap': {
            'ecid': [{'id': '1457', 'authenticatedState': 'ambiguous', 'primary': True}],
            'email_lc_sha256': [{'id': '6553'}],
        },
    },
    # Missing attributes, an empty map, another namespace, several identities.
    {
        '_id': 'p-2',
        'person': {'name': {'firstName': 'Zoë'}},
        'segmentMembership': {},
        'identityMap': {
            'ecid': [{'id': 'a', 'primary': False}, {'id': 'b', 'primary': True}],
            'crmid': [{'id': 'CRM-2', 'authenticatedState': 'authenticated'}],
        },
    },
    {
        '_id': 'p-3',
        'addresses': [{'city': 'Paris', 'lines': ['12 Rue de Rivoli']}, {'city': 'Lyon'}],
        'loyalty': {'points': 7, 'ratio': 2},
        'segmentMembership': {
            'ups': {
                'seg-a': {'status': 'existing', 'lastQualificationTime': '2022-02-01T00:00:00Z'}
            },
            'partner': {'seg-p1': {'status': 'realized'}},
        },
    },
    # No segments, no identities at all.
    {'_id': 'p-4', 'tags': []},
]

UNICODE_PROFILES = [
    {
        '_id': 'p-ü-1',
        'person': {'name': {'firstName': '李', 'lastName': 'Ødegaard 🚀'}},
        'segmentMembership': {
            'ups': {
                'ség-✓': {'status': 'realized', 'lastQualificationTime': '2024-01-01T00:00:00Z'}
            }
        },
        'identityMap': {'émail': [{'id': 'zoë@exämple.com', 'primary': True}]},
    },
]


def _from_arrow(value, arrow_type: pa.DataType):
    """A value read with pyarrow, maps turned back into dicts and null members dropped."""
    if value is None:
        return None
    if pa.types.is_map(arrow_type):
        return {key: _from_arrow(item, arrow_type.item_type) for key, item in value}
    if pa.types.is_struct(arrow_type):
        out = {}
        for index in range(arrow_type.num_fields):
            field = arrow_type.field(index)
            item = _from_arrow(value[field.name], field.type)
            if item is not None:
                out[field.name] = item
        return out
    if pa.types.is_list(arrow_type):
        return [_from_arrow(item, arrow_type.value_type) for item in value]
    return value


def _without_nulls(value):
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


def read_parquet(path) -> list[dict]:
    table = pq.read_table(path)
    row_type = pa.struct(list(table.schema))
    return [_from_arrow(row, row_type) for row in table.to_pylist()]


def read_avro(path) -> list[dict]:
    with open(path, 'rb') as stream:
        return [_without_nulls(record) for record in fastavro.reader(stream)]


def read_jsonl(path) -> list[dict]:
    opener = gzip.open if str(path).endswith('.gz') else open
    with opener(path, 'rb') as lines:
        return [orjson.loads(line) for line in lines]


READERS = {
    '.parquet': read_parquet,
    '.avro': read_avro,
    '.jsonl': read_jsonl,
    '.jsonl.gz': read_jsonl,
    '.json': read_jsonl,
}


def _testdata_profiles() -> list[list[dict]]:
    files = [TESTDATA / 'previous.jsonl', TESTDATA / 'current.jsonl']
    return [read_jsonl(path) for path in files if path.exists()]


@pytest.mark.parametrize('suffix', sorted(READERS))
@pytest.mark.parametrize('profiles', [PROFILES, UNICODE_PROFILES], ids=['mixed', 'unicode'])
def test_round_trip(tmp_path, suffix, profiles):
    path = tmp_path / f'snapshot{suffix}'
    assert write_snapshot(profiles, str(path)) == len(profiles)
    assert READERS[suffix](path) == profiles


@pytest.mark.parametrize('suffix', ['.parquet', '.avro'])
def test_round_trip_of_the_golden_snapshots(tmp_path, suffix):
    snapshots = _testdata_profiles()
    if not snapshots:
        pytest.skip('no testdata snapshots')
    for number, profiles in enumerate(snapshots):
        path = tmp_path / f'snapshot{number}{suffix}'
        write_snapshot(profiles, str(path))
        assert READERS[suffix](path) == profiles


def test_jsonl_lines_are_compact_with_keys_as_given(tmp_path):
    path = tmp_path / 'snapshot.jsonl'
    profile = {'z': 1, 'a': {'y': 'é', 'b': [1, 2]}}
    write_snapshot([profile], str(path))
    assert path.read_bytes() == '{"z":1,"a":{"y":"é","b":[1,2]}}\n'.encode()


def test_gzip_jsonl_is_gzip(tmp_path):
    path = tmp_path / 'snapshot.jsonl.gz'
    write_snapshot(PROFILES, str(path))
    assert path.read_bytes()[:2] == b'\x1f\x8b'
    assert read_jsonl(path) == PROFILES


@pytest.mark.parametrize('suffix', ['.parquet', '.avro', '.jsonl', '.jsonl.gz'])
def test_output_is_deterministic(tmp_path, suffix):
    first, second = tmp_path / f'a{suffix}', tmp_path / f'b{suffix}'
    write_snapshot(PROFILES, str(first))
    write_snapshot(iter(PROFILES), str(second))
    assert first.read_bytes() == second.read_bytes()


def test_format_overrides_the_extension(tmp_path):
    path = tmp_path / 'snapshot.data'
    write_snapshot(PROFILES, str(path), 'parquet')
    assert read_parquet(path) == PROFILES
    write_snapshot(PROFILES, str(path), fmt='avro')
    assert read_avro(path) == PROFILES


def test_unknown_format_or_extension_is_refused(tmp_path):
    with pytest.raises(ValueError, match='extension'):
        write_snapshot(PROFILES, str(tmp_path / 'snapshot.csv'))
    with pytest.raises(ValueError, match="'orc'"):
        write_snapshot(PROFILES, str(tmp_path / 'snapshot.parquet'), 'orc')
    with pytest.raises(ValueError, match='row_group_size'):
        write_snapshot(PROFILES, str(tmp_path / 'snapshot.parquet'), row_group_size=0)


def test_arrow_schema_has_map_types():
    schema = profile_schema_arrow(PROFILES)
    membership = schema.field('segmentMembership').type
    assert pa.types.is_map(membership)
    assert pa.types.is_map(membership.item_type)
    segment = membership.item_type.item_type
    assert pa.types.is_struct(segment)
    assert segment.field('status').type == pa.string()
    assert segment.field('lastQualificationTime').type == pa.string()
    assert segment.field('version').type == pa.int64()

    identities = schema.field('identityMap').type
    assert pa.types.is_map(identities)
    assert pa.types.is_list(identities.item_type)
    identity = identities.item_type.value_type
    assert {identity.field(i).name: identity.field(i).type for i in range(identity.num_fields)} == {
        'id': pa.string(),
        'authenticatedState': pa.string(),
        'primary': pa.bool_(),
    }

    person = schema.field('person').type
    assert pa.types.is_struct(person) and pa.types.is_struct(person.field('name').type)
    assert schema.field('tags').type == pa.list_(pa.string())
    assert schema.field('loyalty').type.field('member').type == pa.bool_()
    assert all(field.nullable for field in schema)


def test_parquet_file_has_map_types(tmp_path):
    path = tmp_path / 'snapshot.parquet'
    write_snapshot(PROFILES, str(path))
    schema = pq.read_schema(path)
    assert pa.types.is_map(schema.field('segmentMembership').type)
    assert pa.types.is_map(schema.field('identityMap').type)


def _avro_field(record: dict, name: str):
    field = next(field for field in record['fields'] if field['name'] == name)
    assert field['type'][0] == 'null' and field['default'] is None
    return field['type'][1]


def test_avro_schema_has_map_types(tmp_path):
    schema = profile_schema_avro(PROFILES)
    assert schema['type'] == 'record'
    membership = _avro_field(schema, 'segmentMembership')
    assert membership['type'] == 'map'
    assert membership['values']['type'] == 'map'
    segment = membership['values']['values']
    assert segment['type'] == 'record'
    assert _avro_field(segment, 'status') == 'string'
    assert _avro_field(segment, 'version') == 'long'

    identities = _avro_field(schema, 'identityMap')
    assert identities['type'] == 'map'
    assert identities['values']['type'] == 'array'
    identity = identities['values']['items']
    assert [field['name'] for field in identity['fields']] == [
        'id',
        'authenticatedState',
        'primary',
    ]
    assert _avro_field(identity, 'primary') == 'boolean'

    assert _avro_field(schema, 'tags') == {'type': 'array', 'items': 'string'}
    assert all(field['type'][0] == 'null' for field in schema['fields'])

    path = tmp_path / 'snapshot.avro'
    write_snapshot(PROFILES, str(path))
    with open(path, 'rb') as stream:
        written = fastavro.reader(stream).writer_schema
    assert _avro_field(written, 'segmentMembership')['type'] == 'map'


def test_maps_are_in_the_schema_even_when_absent():
    schema = profile_schema_arrow([{'_id': 'p-1'}])
    assert pa.types.is_map(schema.field('segmentMembership').type)
    assert pa.types.is_map(schema.field('identityMap').type)


def test_mixed_ints_and_floats_become_double(tmp_path):
    profiles = [
        {'_id': 'p-1', 'score': {'value': 1}},
        {'_id': 'p-2', 'score': {'value': 2.5}},
        {'_id': 'p-3', 'score': {'value': 3}},
    ]
    assert profile_schema_arrow(profiles).field('score').type.field('value').type == pa.float64()
    assert _avro_field(_avro_field(profile_schema_avro(profiles), 'score'), 'value') == 'double'
    for suffix in ('.parquet', '.avro'):
        path = tmp_path / f'scores{suffix}'
        write_snapshot(profiles, str(path))
        values = [profile['score']['value'] for profile in READERS[suffix](path)]
        assert values == [1.0, 2.5, 3.0]
        assert all(isinstance(value, float) for value in values)


def test_a_field_never_set_is_a_string(tmp_path):
    profiles = [{'_id': 'p-1', 'note': None}, {'_id': 'p-2'}]
    assert profile_schema_arrow(profiles).field('note').type == pa.string()
    path = tmp_path / 'notes.parquet'
    write_snapshot(profiles, str(path))
    assert read_parquet(path) == [{'_id': 'p-1'}, {'_id': 'p-2'}]


@pytest.mark.parametrize(
    'profiles, field',
    [
        ([{'a': 'x'}, {'a': 1}], "'a'"),
        ([{'a': 1}, {'a': True}], "'a'"),
        (
            [
                {'person': {'name': {'firstName': 'Jo'}}},
                {'person': {'name': {'firstName': ['Jo']}}},
            ],
            "'person.name.firstName'",
        ),
        ([{'person': {'name': 'Jo'}}, {'person': {'name': {'firstName': 'Jo'}}}], "'person.name'"),
        (
            [{'segmentMembership': {'ups': {'s': {'status': 1}}}}],
            "'segmentMembership.ups.s.status'",
        ),
        ([{'segmentMembership': ['s']}], "'segmentMembership'"),
        (
            [{'identityMap': {'ecid': [{'id': 'a', 'primary': 'yes'}]}}],
            "'identityMap.ecid[0].primary'",
        ),
    ],
)
def test_a_type_conflict_names_the_field(tmp_path, profiles, field):
    with pytest.raises(ValueError, match=field.replace('[', r'\[').replace(']', r'\]')):
        profile_schema_arrow(profiles)
    with pytest.raises(ValueError, match=field.replace('[', r'\[').replace(']', r'\]')):
        profile_schema_avro(profiles)
    for suffix in ('.parquet', '.avro'):
        path = tmp_path / f'conflict{suffix}'
        with pytest.raises(ValueError, match='record'):
            write_snapshot(profiles, str(path))
        assert not path.exists()


def test_a_profile_must_be_an_object(tmp_path):
    for suffix in ('.parquet', '.avro', '.jsonl'):
        with pytest.raises(ValueError, match='record 2: a profile must be a JSON object'):
            write_snapshot(iter([{'_id': 'p-1'}, ['p-2']]), str(tmp_path / f'x{suffix}'))


def test_a_record_after_the_sample_that_does_not_fit_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(snapshot_files, 'SAMPLE_SIZE', 3)
    profiles = [{'_id': f'p-{n}', 'loyalty': {'points': n}} for n in range(5)]
    profiles.append({'_id': 'p-5', 'loyalty': {'points': 1, 'tier': 'gold'}})
    for suffix in ('.parquet', '.avro'):
        path = tmp_path / f'late{suffix}'
        with pytest.raises(
            ValueError,
            match=r"record 6: field 'loyalty.tier' is not in the "
            r'schema \(the schema was inferred from the first 3',
        ):
            write_snapshot(iter(profiles), str(path))
        assert not path.exists()
        # Given as a list, every profile is in the sample.
        write_snapshot(profiles, str(path))
        assert READERS[suffix](path) == profiles


def test_a_generator_is_written_in_row_groups(tmp_path):
    count = 200_000

    def profiles():
        for number in range(count):
            yield {'_id': f'p-{number:06d}', 'n': {'value': number, 'even': number % 2 == 0}}

    path = tmp_path / 'big.parquet'
    assert write_snapshot(profiles(), str(path), row_group_size=50_000) == count
    parquet = pq.ParquetFile(path)
    assert parquet.metadata.num_row_groups == 4
    assert parquet.metadata.num_rows == count
    assert read_parquet(path) == list(profiles())


def test_a_generator_is_written_to_avro(tmp_path):
    path = tmp_path / 'big.avro'
    profiles = ({'_id': f'p-{number}', 'n': {'value': number}} for number in range(25_000))
    assert write_snapshot(profiles, str(path)) == 25_000
    assert read_avro(path) == [
        {'_id': f'p-{number}', 'n': {'value': number}} for number in range(25_000)
    ]


def test_empty_snapshots(tmp_path):
    for suffix in ('.parquet', '.avro', '.jsonl'):
        path = tmp_path / f'empty{suffix}'
        assert write_snapshot(iter([]), str(path)) == 0
        assert READERS[suffix](path) == []


@pytest.mark.parametrize('source', ['snapshot.jsonl', 'snapshot.jsonl.gz'])
@pytest.mark.parametrize('target', ['out.parquet', 'out.avro', 'out.jsonl', 'out.jsonl.gz'])
def test_convert_snapshot(tmp_path, source, target):
    src, dst = tmp_path / source, tmp_path / target
    write_snapshot(PROFILES + UNICODE_PROFILES, str(src))
    assert convert_snapshot(str(src), str(dst)) == len(PROFILES) + 1
    suffix = '.jsonl.gz' if target.endswith('.gz') else dst.suffix
    assert READERS[suffix](dst) == PROFILES + UNICODE_PROFILES


def test_convert_snapshot_widens_the_schema_past_the_sample(tmp_path, monkeypatch):
    monkeypatch.setattr(snapshot_files, 'SAMPLE_SIZE', 3)
    profiles = [{'_id': f'p-{n}', 'loyalty': {'points': n}} for n in range(5)]
    profiles += [{'_id': 'p-5', 'loyalty': {'points': 1.5, 'tier': 'gold'}}]
    src = tmp_path / 'snapshot.jsonl'
    write_snapshot(profiles, str(src))
    for suffix in ('.parquet', '.avro'):
        dst = tmp_path / f'out{suffix}'
        assert convert_snapshot(str(src), str(dst)) == 6
        assert READERS[suffix](dst) == profiles


def test_convert_snapshot_reports_bad_lines_and_conflicts(tmp_path):
    src = tmp_path / 'bad.jsonl'
    src.write_text('{"_id": "p-1"}\n{"_id": \n', encoding='utf-8')
    with pytest.raises(ValueError, match=r'bad.jsonl:2: not valid JSON'):
        convert_snapshot(str(src), str(tmp_path / 'out.parquet'))
    src.write_text('{"_id": "p-1", "a": "x"}\n{"_id": "p-2", "a": 2}\n', encoding='utf-8')
    with pytest.raises(ValueError, match="record 2: field 'a'"):
        convert_snapshot(str(src), str(tmp_path / 'out.avro'))


def test_command_line(tmp_path):
    src, dst = tmp_path / 'snapshot.jsonl.gz', tmp_path / 'snapshot.parquet'
    write_snapshot(PROFILES, str(src))
    done = subprocess.run(
        [sys.executable, '-m', 'beam_kinesis.snapshot_files', str(src), str(dst)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f'wrote {len(PROFILES)} profiles' in done.stdout
    assert read_parquet(dst) == PROFILES

    assert snapshot_files.main([str(src), str(tmp_path / 'x.data'), '--format', 'avro']) == 0
    assert read_avro(tmp_path / 'x.data') == PROFILES
    assert snapshot_files.main([str(tmp_path / 'missing.jsonl'), str(dst)]) == 1
