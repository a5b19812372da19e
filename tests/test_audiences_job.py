"""Audience metadata and newly mapped segments through the engine (TestPipeline) and the job,
against the hand-derived goldens of testdata/audiences (see its CASES.md)."""

import glob
import json
import os

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_kinesis import DetectChanges, FormatExport, ReadSnapshot, load_destination_config
from beam_kinesis.snapshot_files import convert_snapshot
from pipelines import export_profiles
from tests.ledger import parse_summary

TESTDATA = os.path.normpath(os.path.join(os.path.dirname(__file__), os.pardir, 'testdata'))
AS_OF = '2024-06-01T00:00:00Z'
PREVIOUS_AS_OF = '2024-05-31T00:00:00Z'
METADATA = ('name', 'createdAt', 'updatedAt', 'mappingCreatedAt', 'mappingUpdatedAt')
REASONS = [
    ('a-01', 'segment_change'),
    ('a-02', 'newly_mapped'),
    ('a-03', 'newly_mapped'),
    ('a-05', 'segment_change'),
    ('a-06', 'deletion'),
    ('a-08', 'segment_change'),
    ('a-09', 'newly_mapped'),
    ('a-10', 'segment_change'),
    ('a-11', 'attribute_change'),
]


def data(*parts):
    return os.path.join(TESTDATA, *parts)


def golden(name='expected_export.jsonl'):
    with open(data('audiences', name), 'rb') as handle:
        return handle.read().splitlines()


def without_metadata(line: bytes) -> dict:
    record = json.loads(line)
    for entries in record['segmentMembership'].values():
        for entry in entries.values():
            for field in METADATA:
                entry.pop(field, None)
    return record


def run_job(tmp_path, *extra, config='destination.yaml', current=None, previous=None):
    out = tmp_path / 'out'
    argv = [
        '--current',
        current or data('audiences', 'current.jsonl'),
        '--previous',
        previous or data('audiences', 'previous.jsonl'),
        '--destination_config',
        config if os.path.isabs(config) else data('audiences', config),
        '--output',
        str(out),
        '--dead_letter',
        str(out / 'dead'),
        '--as_of',
        AS_OF,
        *extra,
    ]
    status = export_profiles.run(argv)
    exports = sorted(
        line
        for path in glob.glob(str(out / 'exports*'))
        for line in open(path, 'rb').read().splitlines()
    )
    return status, exports


# Through the engine


def read_pair(pipeline, detect: DetectChanges) -> dict:
    """testdata/audiences' previous and current snapshots read into `pipeline` with what
    `detect` projects, as DetectChanges takes them."""
    return {
        name: (
            pipeline
            | name.title()
            >> ReadSnapshot(
                data('audiences', f'{name}.jsonl'), label=name, projection=detect.projection
            )
        ).records
        for name in ('previous', 'current')
    }


@pytest.mark.parametrize(
    'previous_as_of,expected',
    [
        (PREVIOUS_AS_OF, REASONS),
        # Without the previous time nothing is newly mapped: a-02 (unchanged) is not exported,
        # a-03 and a-09 are exported for their changes, as before SPEC 8.
        (
            None,
            [
                ('a-01', 'segment_change'),
                ('a-03', 'segment_change'),
                ('a-05', 'segment_change'),
                ('a-06', 'deletion'),
                ('a-08', 'segment_change'),
                ('a-09', 'identity_change'),
                ('a-10', 'segment_change'),
                ('a-11', 'attribute_change'),
            ],
        ),
    ],
    ids=['newly mapped', 'no previous time'],
)
def test_detect_changes_with_a_newly_mapped_segment(previous_as_of, expected):
    config = load_destination_config(data('audiences', 'destination.yaml')).for_run(
        AS_OF, previous_as_of
    )
    detect = DetectChanges(config)
    with TestPipeline() as pipeline:
        snapshots = read_pair(pipeline, detect)
        changes = snapshots | detect
        assert_that(
            changes.changes | beam.MapTuple(lambda key, change: (key, change.reason)),
            equal_to(expected),
            label='reasons',
        )


@pytest.mark.parametrize(
    'config_name,golden_name',
    [
        ('destination.yaml', 'expected_export.jsonl'),
        ('destination_mapped.yaml', 'expected_export_mapped.jsonl'),
    ],
)
def test_engine_and_format_export_give_the_golden_records(config_name, golden_name):
    config = load_destination_config(data('audiences', config_name)).for_run(AS_OF, PREVIOUS_AS_OF)
    detect = DetectChanges(config)
    with TestPipeline() as pipeline:
        snapshots = read_pair(pipeline, detect)
        export = (snapshots | detect).changes | FormatExport(config, AS_OF)
        assert_that(export.records | beam.Values(), equal_to(golden(golden_name)), label='records')
        assert_that(
            export.stats
            | beam.Map(lambda stats: stats.get('identities_exported', 0))
            | beam.CombineGlobally(sum),
            equal_to([11]),
            label='identities',
        )


# The job


@pytest.fixture(scope='module', params=['jsonl', 'avro', 'parquet'])
def snapshots(request, tmp_path_factory):
    """testdata/audiences' pair in one format, converted from the JSON Lines."""
    if request.param == 'jsonl':
        return data('audiences', 'previous.jsonl'), data('audiences', 'current.jsonl')
    folder = tmp_path_factory.mktemp(request.param)
    paths = []
    for name in ('previous', 'current'):
        path = str(folder / f'{name}.{request.param}')
        convert_snapshot(data('audiences', f'{name}.jsonl'), path)
        paths.append(path)
    return tuple(paths)


def test_job_equals_golden_in_every_format(tmp_path, snapshots, capsys):
    previous, current = snapshots
    status, exports = run_job(
        tmp_path, '--previous_as_of', PREVIOUS_AS_OF, previous=previous, current=current
    )
    assert status == 0 and exports == golden()
    summary = parse_summary(capsys.readouterr().out)
    assert summary['Exported']['by newly mapped'] == 3
    assert summary['Exported']['by segment change'] == 4
    monitoring = summary['Monitoring (this run)']
    assert (
        monitoring['profiles received'],
        monitoring['profiles activated'],
        monitoring['profiles excluded'],
        monitoring['profiles failed'],
    ) == (9, 9, 0, 0)
    assert (monitoring['identities received'], monitoring['identities activated']) == (11, 11)


def test_job_with_segment_scope_mapped_equals_golden(tmp_path):
    status, exports = run_job(
        tmp_path, '--previous_as_of', PREVIOUS_AS_OF, config='destination_mapped.yaml'
    )
    assert status == 0 and exports == golden('expected_export_mapped.jsonl')


def test_toggles_off_give_the_same_records_without_metadata(tmp_path):
    text = open(data('audiences', 'destination.yaml'), encoding='utf-8').read()
    config = tmp_path / 'off.yaml'
    config.write_text(
        text.replace('include_segment_names: true', 'include_segment_names: false').replace(
            'include_segment_timestamps: true', 'include_segment_timestamps: false'
        ),
        encoding='utf-8',
    )
    status, exports = run_job(tmp_path, '--previous_as_of', PREVIOUS_AS_OF, config=str(config))
    assert status == 0
    assert [json.loads(line) for line in exports] == [without_metadata(line) for line in golden()]
    # ("name" alone is also person.name, an object: a segment's name would be a string)
    assert not any(
        f'"{field}":{"" if field != "name" else chr(34)}'.encode() in line
        for line in exports
        for field in METADATA
    )


def test_the_seed_still_matches_key_for_key_with_described_segments_and_toggles_off(tmp_path):
    """The seed's config with its segments written as objects (names and times) exports the
    seed's example byte for byte while the toggles are off, and adds only the metadata
    fields when they are on."""
    text = open(data('seed', 'destination.yaml'), encoding='utf-8').read()
    described = text.replace(
        '  - 5114d758-ce71-43ba-b53e-e2a91d67b67f\n',
        '  - id: 5114d758-ce71-43ba-b53e-e2a91d67b67f\n'
        '    name: High propensity to convert\n'
        '    created_at: 2022-03-29T11:28:45Z\n'
        '    updated_at: 2022-03-29T11:28:50Z\n'
        '    mapped_at: 2022-01-01T00:00:00Z\n'
        'audiences:\n'
        '  - id: 59bd2fkd-3c48-4b18-bf56-4f5c5e6967ae\n'
        '    created_at: 1648553325000\n',
    )
    assert described != text
    with open(data('seed', 'expected_export.json'), encoding='utf-8') as handle:
        expected = json.load(handle)
    seed = (data('seed', 'current.jsonl'), data('seed', 'previous.jsonl'))
    for toggles in ('', 'include_segment_names: true\ninclude_segment_timestamps: true\n'):
        config = tmp_path / 'seed.yaml'
        config.write_text(toggles + described, encoding='utf-8')
        status, exports = run_job(
            tmp_path / f'run{len(toggles)}',
            '--previous_as_of',
            '2022-01-10T00:00:00Z',
            config=str(config),
            current=seed[0],
            previous=seed[1],
        )
        assert status == 0 and len(exports) == 1
        if not toggles:
            assert exports[0] == json.dumps(expected, sort_keys=True, separators=(',', ':')).encode(
                'utf-8'
            )
            continue
        record = json.loads(exports[0])
        assert without_metadata(exports[0]) == expected
        entries = record['segmentMembership']['ups']
        assert entries['5114d758-ce71-43ba-b53e-e2a91d67b67f'] == {
            'lastQualificationTime': '2022-01-11T23:37:33Z',
            'status': 'realized',
            'name': 'High propensity to convert',
            'createdAt': 1648553325000,
            'updatedAt': 1648553330000,
            'mappingCreatedAt': 1640995200000,
            'mappingUpdatedAt': 1640995200000,
        }
        # An unmapped audience: its timestamp, never a name.
        assert entries['59bd2fkd-3c48-4b18-bf56-4f5c5e6967ae'] == {
            'lastQualificationTime': '2022-01-02T23:37:33Z',
            'status': 'existing',
            'createdAt': 1648553325000,
        }


@pytest.mark.parametrize(
    'extra,message',
    [
        ((), 'has a mapped_at, so a run with --previous needs --previous_as_of'),
        (('--previous_as_of', '2024-05-31'), '--previous_as_of '),
        (('--previous_as_of', AS_OF), 'is not before --as_of'),
        (('--previous_as_of', '2024-06-02T00:00:00Z'), 'is not before --as_of'),
    ],
)
def test_previous_time_errors_stop_the_job_at_start(tmp_path, capsys, extra, message):
    status, exports = run_job(tmp_path, *extra)
    err = capsys.readouterr().err.strip()
    assert status == export_profiles.EXIT_START_FAILED and exports == []
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / 'out').exists()


def test_previous_time_without_a_previous_snapshot_stops_the_job(tmp_path, capsys):
    status = export_profiles.run(
        [
            '--current',
            data('audiences', 'current.jsonl'),
            '--previous_as_of',
            PREVIOUS_AS_OF,
            '--destination_config',
            data('audiences', 'destination.yaml'),
            '--as_of',
            AS_OF,
            '--output',
            str(tmp_path / 'out'),
        ]
    )
    assert status == export_profiles.EXIT_START_FAILED
    assert 'needs --previous' in capsys.readouterr().err


def test_first_run_needs_no_previous_time_and_skips_segments_not_mapped_yet(tmp_path):
    out = tmp_path / 'out'
    status = export_profiles.run(
        [
            '--current',
            data('audiences', 'current.jsonl'),
            '--destination_config',
            data('audiences', 'destination.yaml'),
            '--as_of',
            AS_OF,
            '--output',
            str(out),
            '--dead_letter',
            str(out / 'dead'),
        ]
    )
    exported = {
        json.loads(line)['identityMap']['ecid'][0]['id']
        for path in glob.glob(str(out / 'exports*'))
        for line in open(path, 'rb')
    }
    # a-04 is only in seg-l (mapped on 2024-06-15): not exported; a-07 only in seg-b.
    assert status == 0
    assert exported == {'E-01', 'E-02', 'E-03', 'E-07', 'E-09', 'E-10', 'E-11'}
