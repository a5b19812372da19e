"""Value normalisation and the column-wise Arrow conversion used for Parquet."""

import datetime
import decimal

import pyarrow as pa
import pytest

from beam_kinesis.values import arrow_to_pylist, normalize_value

SEGMENTS = pa.map_(
    pa.string(),
    pa.map_(
        pa.string(), pa.struct([('status', pa.string()), ('lastQualificationTime', pa.string())])
    ),
)
IDENTITIES = pa.map_(
    pa.string(), pa.list_(pa.struct([('id', pa.string()), ('primary', pa.bool_())]))
)
VALUES = {
    'segments': (
        SEGMENTS,
        [
            [
                (
                    'ups',
                    [
                        ('a', {'status': 'realized', 'lastQualificationTime': 't'}),
                        ('b', {'status': 'exited', 'lastQualificationTime': None}),
                    ],
                )
            ],
            [],
            None,
            [('ups', []), ('partner', [('p', None)])],
        ],
    ),
    'identities': (
        IDENTITIES,
        [
            [('ecid', [{'id': '1', 'primary': True}, None]), ('crm', [])],
            None,
            [('email', None)],
            [],
        ],
    ),
    'person': (
        pa.struct(
            [
                ('name', pa.struct([('first', pa.string())])),
                ('tags', pa.list_(pa.int64())),
                ('born', pa.date32()),
            ]
        ),
        [
            {'name': {'first': 'Zoë'}, 'tags': [1, 2], 'born': datetime.date(1990, 1, 2)},
            None,
            {'name': None, 'tags': None, 'born': None},
            {'name': {'first': None}, 'tags': [], 'born': None},
        ],
    ),
}


@pytest.mark.parametrize('name', sorted(VALUES))
@pytest.mark.parametrize('window', [(0, 4), (1, 3), (2, 2), (3, 1)])
def test_arrow_conversion_matches_arrow_own(name, window):
    kind, rows = VALUES[name]
    array = pa.array(rows, type=kind).slice(*window)
    assert arrow_to_pylist(array) == array.to_pylist(maps_as_pydicts='strict')


@pytest.mark.parametrize(
    'value,expected',
    [
        ({'a': None, 'b': {'c': None, 'd': 1}}, {'b': {'d': 1}}),
        ([('k', 1), ('j', None)], {'k': 1}),
        (
            datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
            '2024-01-02T03:04:05Z',
        ),
        (
            datetime.datetime(
                2024, 1, 2, 4, 4, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=1))
            ),
            '2024-01-02T03:04:05Z',
        ),
        (datetime.date(2024, 1, 2), '2024-01-02'),
        (decimal.Decimal('12.50'), 12.5),
        (decimal.Decimal('7'), 7),
        (b'text', 'text'),
        ((1, 2), [1, 2]),
    ],
)
def test_normalize_value(value, expected):
    assert normalize_value(value) == expected


@pytest.mark.parametrize(
    'value', [float('nan'), float('inf'), b'\xff\xfe', decimal.Decimal('NaN'), object()]
)
def test_values_json_cannot_carry_are_refused(value):
    with pytest.raises(ValueError):
        normalize_value(value)
