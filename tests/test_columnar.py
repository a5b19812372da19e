"""The columnar path: Parquet rows checked, keyed and digested in Arrow (`columnar`).

A row is fast only when the Python projection would accept it; equal digests mean equal
views, and a change the destination looks at changes the digest; a Parquet snapshot diffs
exactly like its JSON Lines twin; a file changed between the read and the re-read stops the
job with one clear sentence; a field the destination ignores, of a type polars cannot hash
or JSON cannot hold, does not stop the read.
"""

from __future__ import annotations

import contextlib
import decimal
import glob
import json
import math
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_kinesis.config import load_destination_config
from beam_kinesis.engine.columnar import CheckedRows, ColumnarPlan
from beam_kinesis.engine.rows import ROW, view_of
from beam_kinesis.engine.view import InvalidProfile, ProfileProjection, dumps
from beam_kinesis.snapshot import read_records
from beam_kinesis.snapshot_files import profile_schema_arrow, write_snapshot
from beam_kinesis.values import arrow_to_pylist, normalize_value
from pipelines import export_profiles

DESTINATION = os.path.normpath(
    os.path.join(os.path.dirname(__file__), os.pardir, 'testdata', 'destination.yaml')
)
AS_OF = '2024-06-01T00:00:00Z'
T1, T2 = '2024-01-01T10:00:00Z', '2024-03-01T10:00:00Z'
PROJECTION = ProfileProjection(
    ('_id',), (('person', 'name', 'firstName'), ('loyalty', 'points')), buckets=16
)


def profile(
    key='p-1',
    status='realized',
    time=T1,
    segment='seg-a',
    ecid='E-1',
    first='Ann',
    middle='M',
    points=1.5,
) -> dict:
    """A member of ups:seg-a; firstName and points are mapped, middleName is not."""
    return {
        '_id': key,
        'person': {'name': {'firstName': first, 'middleName': middle}},
        'loyalty': {'points': points},
        'segmentMembership': {'ups': {segment: {'status': status, 'lastQualificationTime': time}}},
        'identityMap': {'ecid': [{'id': ecid, 'primary': True}]},
    }


SCHEMA = profile_schema_arrow([profile()])


def parquet_batch(path, profiles, schema=SCHEMA) -> pa.RecordBatch:
    """The profiles written to Parquet and read back as the job reads them."""
    pq.write_table(pa.Table.from_pylist(profiles, schema=schema), str(path))
    return read_batch(path)


def read_batch(path, projection=PROJECTION) -> pa.RecordBatch:
    """A Parquet file's columns that the projection needs, as one batch."""
    names = [name for name in pq.read_schema(str(path)).names if name in projection.fields]
    return pq.read_table(str(path), columns=names).combine_chunks().to_batches()[0]


def check(batch: pa.RecordBatch, projection=PROJECTION):
    plan = ColumnarPlan.for_schema(batch.schema, projection)
    assert plan is not None, batch.schema
    return plan.check(batch, np.arange(1, batch.num_rows + 1))


def row_dict(batch: pa.RecordBatch, row: int) -> dict:
    """One row as the Python path sees it."""
    columns = [arrow_to_pylist(column) for column in batch.slice(row, 1).columns]
    return {name: values[0] for name, values in zip(batch.schema.names, columns)}


def with_segments(entries) -> dict:
    return {**profile(), 'segmentMembership': entries}


def with_identities(entries) -> dict:
    return {**profile(), 'identityMap': entries}


VALID = {
    'canonical': profile(),
    'leap day': profile(time='2024-02-29T23:59:59Z'),
    'no lastQualificationTime': profile(time=None),
    'null namespace': with_segments({'ups': None}),
    'no identities': with_identities({}),
    'null attribute': profile(points=None, first=None),
    'padded non-ASCII key': profile(key=' Łukasz '),
}

# (profile, whether the Python projection refuses it too: some are valid, only unusual)
NOT_FAST = {
    'blank key': (profile(key='   '), True),
    'empty key': (profile(key=''), True),
    'no-break space key': (profile(key='\u00a0'), True),
    'null key': (profile(key=None), True),
    'unknown status': (profile(status='pending'), True),
    'null status': (profile(status=None), True),
    'null segment entry': (with_segments({'ups': {'seg-a': None}}), False),
    'Feb 30': (profile(time='2023-02-30T10:00:00Z'), True),
    'Feb 29 of a common year': (profile(time='2023-02-29T10:00:00Z'), True),
    'hour 24': (profile(time='2024-01-01T24:00:00Z'), True),
    'not a time': (profile(time='yesterday'), True),
    'time with an offset': (profile(time='2024-01-01T10:00:00+00:00'), False),
    'null identity entry': (with_identities({'ecid': [None]}), True),
    'null identity id': (with_identities({'ecid': [{'id': None}]}), True),
    'NaN attribute': (profile(points=math.nan), True),
    'infinite attribute': (profile(points=-math.inf), True),
}


@pytest.mark.parametrize('name', VALID)
def test_a_valid_row_is_fast(tmp_path, name):
    checked = check(parquet_batch(tmp_path / 'v.parquet', [VALID[name]]))
    assert checked.rows.tolist() == [0] and checked.positions.tolist() == [1]
    assert checked.keys == [VALID[name]['_id']]


@pytest.mark.parametrize('name', NOT_FAST)
def test_a_row_the_checks_do_not_vouch_for_is_not_fast(tmp_path, name):
    row, python_refuses = NOT_FAST[name]
    batch = parquet_batch(tmp_path / 'n.parquet', [profile('ok'), row, profile('ok-2')])
    checked = check(batch)
    assert checked.rows.tolist() == [0, 2] and checked.keys == ['ok', 'ok-2']
    assert checked.positions.tolist() == [1, 3]
    # Refused rows are dead-lettered by the Python path; the others are valid, only unusual.
    with pytest.raises(InvalidProfile) if python_refuses else contextlib.nullcontext():
        PROJECTION.project(row_dict(batch, 1), 'n.parquet:2')


def test_every_fast_row_is_valid_for_the_python_projection(tmp_path):
    rows = list(VALID.values()) + [row for row, _ in NOT_FAST.values()]
    batch = parquet_batch(tmp_path / 'all.parquet', rows)
    checked = check(batch)
    assert len(checked.rows) == len(VALID)
    for row, position, key, material in zip(
        checked.rows.tolist(), checked.positions.tolist(), checked.keys, checked.materials
    ):
        source = f'all.parquet:{position}'
        assert PROJECTION.project(row_dict(batch, row), source) == (
            key,
            view_of(ROW, material, source, PROJECTION),
        )


def materials(path, profiles, schema=SCHEMA) -> list[bytes]:
    checked = check(parquet_batch(path, profiles, schema))
    assert len(checked.rows) == len(profiles)
    return checked.materials


def test_rows_equal_in_what_the_projection_reads_share_a_material(tmp_path):
    base, other = materials(tmp_path / 'd.parquet', [profile('a'), profile('a', middle='X')])
    assert base == other
    # The same row in a batch of its own, or of another size, has the same material.
    assert materials(tmp_path / 'alone.parquet', [profile('a', middle='Y')]) == [base]


@pytest.mark.parametrize(
    'change',
    [
        {'status': 'existing'},
        {'status': 'exited'},
        {'time': T2},
        {'time': None},
        {'segment': 'seg-b'},
        {'ecid': 'E-2'},
        {'first': 'Bob'},
        {'first': None},
        {'points': 2.5},
        {'points': None},
        {'key': 'b'},
    ],
    ids=repr,
)
def test_a_change_the_projection_reads_changes_the_material(tmp_path, change):
    base, changed = materials(
        tmp_path / 'd.parquet', [profile('a'), profile(**{'key': 'a', **change})]
    )
    assert base != changed


def replaced(field: str, kind: pa.DataType) -> pa.Schema:
    """SCHEMA with one top-level field of another type."""
    return SCHEMA.set(SCHEMA.get_field_index(field), pa.field(field, kind))


def name_of(kind: pa.DataType) -> pa.DataType:
    return pa.struct([('name', pa.struct([('firstName', kind), ('middleName', pa.string())]))])


@pytest.mark.parametrize(
    'field,kind',
    [
        ('loyalty', pa.struct([('points', pa.int32())])),
        ('loyalty', pa.struct([('points', pa.float32())])),
        ('loyalty', pa.struct([('points', pa.uint64())])),
        ('person', name_of(pa.large_string())),
        ('loyalty', pa.struct([('points', pa.date32())])),
    ],
    ids=lambda value: str(value)[:40],
)
def test_a_material_stands_for_the_view_the_python_path_makes(tmp_path, field, kind):
    rows = [profile(points=1, first='Zoë "Z"'), profile('b', points=None, first=None)]
    if pa.types.is_date32(kind.field(0).type):
        rows[0]['loyalty']['points'] = __import__('datetime').date(2024, 2, 29)
    batch = parquet_batch(tmp_path / 't.parquet', rows, replaced(field, kind))
    checked = check(batch)
    assert len(checked.rows) == 2
    for row, material in zip(checked.rows.tolist(), checked.materials):
        assert (
            view_of(ROW, material, 's', PROJECTION)
            == PROJECTION.project(row_dict(batch, row), 's')[1]
        )


def entries(**fields) -> pa.DataType:
    return pa.map_(pa.string(), pa.map_(pa.string(), pa.struct(list(fields.items()))))


@pytest.mark.parametrize(
    'field,kind',
    [
        ('_id', pa.int64()),
        ('segmentMembership', pa.map_(pa.string(), pa.struct([('status', pa.string())]))),
        ('segmentMembership', entries(lastQualificationTime=pa.string())),
        ('segmentMembership', entries(status=pa.string(), lastQualificationTime=pa.timestamp('s'))),
        ('identityMap', pa.map_(pa.string(), pa.struct([('id', pa.string())]))),
        ('identityMap', pa.map_(pa.string(), pa.list_(pa.struct([('id', pa.int64())])))),
        ('loyalty', pa.struct([('points', pa.timestamp('ms'))])),
        ('loyalty', pa.struct([('points', pa.list_(pa.int64()))])),
        ('person', pa.string()),
    ],
    ids=lambda value: str(value)[:40],
)
def test_a_schema_the_checks_do_not_cover_has_no_plan(field, kind):
    assert ColumnarPlan.for_schema(SCHEMA, PROJECTION) is not None
    assert ColumnarPlan.for_schema(replaced(field, kind), PROJECTION) is None


def identities_with(name: str, kind: pa.DataType) -> pa.Schema:
    """SCHEMA with identity entries holding one more field, one the destination ignores."""
    entry = pa.struct([('id', pa.string()), (name, kind)])
    return replaced('identityMap', pa.map_(pa.string(), pa.list_(entry)))


def test_a_field_polars_cannot_take_does_not_stop_the_read(tmp_path):
    row = with_identities({'ecid': [{'id': 'E-1', 'score': decimal.Decimal('1.50')}]})
    batch = parquet_batch(
        tmp_path / 'wide.parquet', [row], identities_with('score', pa.decimal256(40, 2))
    )
    PROJECTION.project(row_dict(batch, 0), 'wide.parquet:1')  # valid for the Python path
    plan = ColumnarPlan.for_schema(batch.schema, PROJECTION)
    assert plan is None or plan.check(batch, np.arange(1, 2)).keys == ['p-1']


def test_a_row_left_to_the_python_path_is_read_whatever_its_ignored_fields_hold(tmp_path):
    row = {
        **profile(time='2024-01-01T10:00:00+00:00', points=None),
        'identityMap': {'ecid': [{'id': 'E-1', 'token': b'\x01'}]},
    }
    path = tmp_path / 'wide.parquet'
    batch = parquet_batch(path, [row], identities_with('token', pa.binary()))
    assert len(check(batch).rows) == 0  # a time with an offset: the Python path's row
    [(position, row)] = [
        (position, item)
        for position, item in read_records(
            str(path), 'parquet', PROJECTION.fields, normalize=False, columnar=PROJECTION
        )
        if not isinstance(item, CheckedRows)
    ]
    key, view = PROJECTION.project(row, f'{path}:{position}')
    assert (position, key, view.identities) == (1, 'p-1', {'ecid': ('E-1',)})


# End to end: one snapshot pair, as JSON Lines and as Parquet, through the job.


def member(
    key, *, time=T1, status='realized', ids=None, first='Ann', middle='M', tier='gold', extra=None
) -> dict:
    """A profile of the golden destination (seg-a mapped, seg-u1 not)."""
    segments = {'seg-a': {'status': status, 'lastQualificationTime': time}, **(extra or {})}
    return {
        '_id': key,
        'person': {'name': {'firstName': first, 'middleName': middle}},
        'personalEmail': {'address': f'{key}@example.com'},
        'loyalty': {'tier': tier},
        'segmentMembership': {'ups': segments},
        'identityMap': {'ecid': [{'id': i} for i in (ids or [f'ECID-{key}'])]},
    }


PREVIOUS = [
    member('same'),
    member('unmapped'),
    member('requal'),
    member('exit'),
    member('ident'),
    member('attr'),
    member('deleted'),
    member('dup'),
    member('bad-status'),
    member('feb-30'),
    member('null-id'),
    member('null-seg'),
    member('null-seg-exit'),
    member('offset', time='2024-01-01T10:00:00Z'),
]
CURRENT = [
    member('same'),
    member('unmapped', middle='Q', tier='silver'),
    member('requal', time=T2),
    member('exit', status='exited'),
    member('ident', ids=['ECID-ident', 'ECID-more']),
    member('attr', first='Bo'),
    member('dup'),
    member('new'),
    member('bad-status', status='pending'),
    member('feb-30', time='2023-02-30T10:00:00Z'),
    {**member('null-id'), 'identityMap': {'ecid': [{'id': None}]}},
    member('null-seg', extra={'seg-u1': None}),
    member('null-seg-exit', status='exited', extra={'seg-u1': None}),
    member('offset', time='2024-01-01T11:00:00+00:00'),
    member('dup', first='Di'),
]
EXPORTED = {'requal', 'exit', 'ident', 'attr', 'deleted', 'new', 'null-seg-exit', 'offset'}
# Current rows the Python path must see: invalid, or valid but unusual.
NOT_FAST_CURRENT = {'bad-status', 'feb-30', 'null-id', 'null-seg', 'null-seg-exit', 'offset'}


def write_parquet(path, profiles):
    """Parquet with null map values, which `write_snapshot` refuses to write."""
    schema = profile_schema_arrow([normalize_value(p) for p in PREVIOUS + CURRENT])
    pq.write_table(pa.Table.from_pylist(profiles, schema=schema), str(path))


def run_job(directory, fmt) -> dict:
    for name, profiles in (('previous', PREVIOUS), ('current', CURRENT)):
        path = directory / f'{name}.{fmt}'
        write_snapshot(profiles, str(path)) if fmt == 'jsonl' else write_parquet(path, profiles)
    out = directory / 'out'
    status = export_profiles.run(
        [
            '--previous',
            str(directory / f'previous.{fmt}'),
            '--current',
            str(directory / f'current.{fmt}'),
            '--destination_config',
            DESTINATION,
            '--output',
            str(out),
            '--dead_letter',
            str(out / 'dead'),
            '--as_of',
            AS_OF,
        ]
    )
    exports = {
        os.path.basename(path): open(path, 'rb').read() for path in glob.glob(str(out / 'exports*'))
    }
    dead = [
        json.loads(line)
        for path in glob.glob(str(out / 'dead' / 'dead_letters*'))
        for line in open(path, encoding='utf-8')
    ]
    return {
        'status': status,
        'exports': exports,
        'directory': directory,
        'dead': sorted(comparable(entry, str(directory)) for entry in dead),
    }


def comparable(entry: dict, directory: str) -> tuple:
    """A dead letter with its snapshot's path and format left out."""

    def strip(text):
        return re.sub(r'\S*(previous|current)\.(jsonl|parquet)', r'\1', text.replace(directory, ''))

    return (
        entry['stage'],
        strip(entry['error']),
        strip(entry['source']),
        dumps(normalize_value(entry['record'])),
    )


@pytest.fixture(scope='module')
def runs(tmp_path_factory) -> dict:
    return {fmt: run_job(tmp_path_factory.mktemp(fmt), fmt) for fmt in ('jsonl', 'parquet')}


def test_parquet_and_json_lines_give_byte_identical_exports(runs):
    parquet = runs['parquet']
    assert parquet['status'] == export_profiles.EXIT_DEAD_LETTERS
    assert parquet['exports'] == runs['jsonl']['exports'] and len(parquet['exports']) == 1
    [text] = parquet['exports'].values()
    ids = {json.loads(line)['identityMap']['ecid'][0]['id'][5:] for line in text.splitlines()}
    assert ids == EXPORTED


def test_parquet_and_json_lines_give_the_same_dead_letters(runs):
    dead = runs['parquet']['dead']
    assert dead == runs['jsonl']['dead']
    where = sorted((stage, source) for stage, _, source, _ in dead)
    assert where == [
        ('join', 'current:15'),
        ('join', 'current:7'),
        ('validate', 'current:10'),
        ('validate', 'current:11'),
        ('validate', 'current:9'),
    ]


def test_the_parquet_run_checks_its_valid_rows_in_arrow(runs):
    projection = ProfileProjection(('_id',), load_destination_config(DESTINATION).attribute_paths)
    directory = runs['parquet']['directory']
    checked = {
        name: check(read_batch(directory / f'{name}.parquet', projection), projection)
        for name in ('previous', 'current')
    }  # check asserts that a plan was made
    assert checked['previous'].keys == [p['_id'] for p in PREVIOUS]
    assert checked['current'].keys == [
        p['_id'] for p in CURRENT if p['_id'] not in NOT_FAST_CURRENT
    ]
    material = {name: dict(zip(rows.keys, rows.materials)) for name, rows in checked.items()}
    assert material['previous']['same'] == material['current']['same']  # bytes compared only
    assert material['previous']['attr'] != material['current']['attr']
