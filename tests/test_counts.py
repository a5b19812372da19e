"""The run's counts: declared once, refused when misspelt, summed, and all a run reports."""

from __future__ import annotations

import json
import os

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_kinesis import counts
from beam_kinesis.counts import Counts, FileStats, SumCounts
from beam_kinesis.engine.rules import REASONS
from pipelines import export_profiles

TESTDATA = os.path.join(os.path.dirname(__file__), '..', 'testdata')
AS_OF = '2024-06-01T00:00:00Z'


@pytest.mark.parametrize(
    'name',
    [
        'exported_segment_chnage',
        'classified_',
        'rows_both',
        'dead_letters_',
        'previous_record_read',
        'profile_compared',
    ],
)
def test_a_name_that_is_not_declared_is_refused(name):
    with pytest.raises(KeyError, match='not a count declared'):
        Counts({name: 1})
    with pytest.raises(KeyError, match='not a count declared'):
        Counts().add(name)


def test_names_are_made_by_the_module():
    assert [counts.exported(reason) for reason in REASONS] == [
        f'exported_{reason}' for reason in REASONS
    ]
    assert counts.classified('deletion') == 'classified_deletion'
    assert counts.dead_letters('write') == 'dead_letters_write'
    assert counts.snapshot_count('previous', 'records_read') == 'previous_records_read'
    with pytest.raises(KeyError):
        counts.exported('no_such_reason')
    with pytest.raises(KeyError):
        counts.snapshot_count('yesterday', 'files')


def test_counts_add_and_total():
    run = Counts({counts.exported('deletion'): 2}).add(counts.exported('first_run'), 3)
    run.add(counts.PROFILES_COMPARED, 7)
    assert run.total(counts.EXPORTED) == 5
    assert run[counts.PROFILES_COMPARED] == 7


def test_file_stats_become_the_snapshot_counts():
    stats = FileStats(
        'current', 'a.jsonl', 'jsonl', records=5, unreadable=2, invalid=1, keyed=4, unkeyed=2
    )
    assert stats.counts() == {
        'current_files': 1,
        'current_records_read': 5,
        'current_records_unreadable': 2,
        'current_profiles_invalid': 1,
    }


def test_sum_counts_in_a_pipeline():
    with TestPipeline() as pipeline:
        summed = (
            pipeline
            | beam.Create(
                [
                    Counts({counts.exported('deletion'): 1}),
                    {counts.exported('deletion'): 2, counts.PROFILES_COMPARED: 4},
                    Counts({counts.rows('current'): 3}),
                ]
            )
            | beam.CombineGlobally(SumCounts())
        )
        assert_that(
            summed, equal_to([{'exported_deletion': 3, 'profiles_compared': 4, 'rows_current': 3}])
        )


def test_sum_counts_refuses_an_undeclared_name_in_a_pipeline():
    with pytest.raises(Exception, match='not a count declared'):
        with TestPipeline() as pipeline:
            _ = (
                pipeline
                | beam.Create([{'exported_segmentchange': 1}])
                | beam.CombineGlobally(SumCounts())
            )


def test_every_count_a_run_reports_is_declared(tmp_path):
    report = tmp_path / 'report.json'
    out = tmp_path / 'out'
    status = export_profiles.run(
        [
            '--current',
            os.path.join(TESTDATA, 'bad', 'current_bad.jsonl'),
            '--previous',
            os.path.join(TESTDATA, 'previous.jsonl'),
            '--destination_config',
            os.path.join(TESTDATA, 'destination.yaml'),
            '--output',
            str(out),
            '--dead_letter',
            str(out / 'dead'),
            '--as_of',
            AS_OF,
            '--report',
            str(report),
        ]
    )
    assert status == export_profiles.EXIT_DEAD_LETTERS
    reported = json.loads(report.read_text(encoding='utf-8'))
    assert reported['current_records_read'] > 0 and reported['dead_letters_validate'] > 0
    assert [name for name in reported if not counts.declared(name)] == []
