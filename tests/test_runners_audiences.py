"""The job with audience metadata on and a newly mapped segment gives the DirectRunner's files
byte for byte on the other runners (as tests/test_runners.py does with the plain config)."""

import contextlib
import json
import os

import pytest

from pipelines import export_profiles
from tests.fault_proxy import fault_proxy  # noqa: F401
from tests.generated import (
    AS_OF,
    MULTI_PROCESSING,
    PORTABLE_EMBEDDED,
    TOP,
    dask_cluster,
    generate_pair_with_bad_lines,
    run_into_files,
)

PREVIOUS_AS_OF = '2024-05-31T00:00:00Z'
DESTINATION = """stream: profile-exports
include_segment_names: true
include_segment_timestamps: true
segment_scope: all
segments:
  - id: seg-0001
    name: Mapped long ago
    created_at: 2022-03-29T11:28:45Z
    updated_at: 1648553330000
    mapped_at: 2024-01-01T00:00:00Z
  - seg-0004
  - id: seg-0009
    name: Newly mapped
    mapped_at: 2024-05-31T12:00:00Z
  - id: seg-0021
    name: Not mapped yet
    created_at: 2024-05-01T00:00:00Z
    mapped_at: 2024-07-01T00:00:00Z
  - id: seg-0024
    name: Mapped, no times
audiences:
  - id: seg-0002
    created_at: 1648553325000
    updated_at: 2024-02-01T00:00:00Z
attributes:
  - person.name.firstName
  - personalEmail.address
"""


@pytest.fixture(scope='module')
def generated(tmp_path_factory):
    """An 8,000-profile pair over 4 files per snapshot, plus bad lines in one more file, and
    a destination with metadata on and a newly mapped segment."""
    out = generate_pair_with_bad_lines(tmp_path_factory.mktemp('generated'), 8000, 4)
    (out / 'metadata.yaml').write_text(DESTINATION, encoding='utf-8')
    return out


def run_job(generated, out, *runner_args):
    """The job on the pair with the metadata destination, a previous run's time and 2 export
    shards, on the given runner."""
    return run_into_files(
        generated,
        out,
        '--previous_as_of',
        PREVIOUS_AS_OF,
        '--output_shards',
        '2',
        *runner_args,
        config='metadata.yaml',
    )


@pytest.fixture(scope='module')
def direct(generated, tmp_path_factory):
    status, files = run_job(generated, tmp_path_factory.mktemp('direct'))
    assert status == export_profiles.EXIT_DEAD_LETTERS  # the bad file
    records = [
        json.loads(line)
        for name, data in files.items()
        if name.startswith('exports')
        for line in data.splitlines()
    ]
    entries = [
        (segment_id, entry)
        for record in records
        for segment_id, entry in record['segmentMembership'].get('ups', {}).items()
    ]
    named = {segment_id: entry.get('name') for segment_id, entry in entries}
    # The metadata is there: names of mapped segments only, times of described ones.
    assert named['seg-0001'] == 'Mapped long ago' and named['seg-0009'] == 'Newly mapped'
    assert named.get('seg-0021') is None and named.get('seg-0002') is None
    assert all(
        entry['createdAt'] == 1648553325000
        for segment_id, entry in entries
        if segment_id in ('seg-0001', 'seg-0002')
    )
    assert all(
        'mappingCreatedAt' not in entry for segment_id, entry in entries if segment_id == 'seg-0021'
    )
    return files


def test_multi_processing_equals_direct(generated, direct, tmp_path):
    status, files = run_job(generated, tmp_path, *MULTI_PROCESSING)
    assert status == export_profiles.EXIT_DEAD_LETTERS
    assert files == direct


def test_portable_runner_equals_direct(generated, direct, tmp_path):
    status, files = run_job(generated, tmp_path, *PORTABLE_EMBEDDED)
    assert status == export_profiles.EXIT_DEAD_LETTERS
    assert files == direct


def test_dask_runner_on_a_two_worker_cluster_equals_direct(generated, direct, tmp_path):
    with dask_cluster() as dask:
        status, files = run_job(generated, tmp_path, *dask)
    assert status == export_profiles.EXIT_DEAD_LETTERS
    assert files == direct


@pytest.mark.parametrize('runner', ['portable', 'dask'])
def test_retry_failed_on_other_runners(kinesalite, fault_proxy, tmp_path, runner):  # noqa: F811
    """A first run (DirectRunner) whose writes fail for three keys; the next run, on another
    runner, sends them again and they land once."""
    from tests.fault_proxy import INTERNAL_FAILURE, FaultSchedule
    from tests.kinesis_servers import read_back, target_args

    stream = kinesalite.create_stream(2)
    failing = {'p-01', 'p-08', 'p-26'}
    fault_proxy.schedule = FaultSchedule(
        entry_fault_rate=1.0,
        entry_fault_codes=(INTERNAL_FAILURE,),
        entry_fault_keys=failing.__contains__,
    )

    def argv(name, endpoint, *extra):
        return [
            '--current',
            os.path.join(TOP, 'testdata', 'current.jsonl'),
            '--destination_config',
            os.path.join(TOP, 'testdata', 'destination.yaml'),
            '--as_of',
            AS_OF,
            '--dead_letter',
            str(tmp_path / name),
            *target_args(endpoint, stream, 'x'),
            '--max_retries',
            '0',
            *extra,
        ]

    first = export_profiles.run_job(
        argv(
            'first',
            fault_proxy.endpoint_url,
            '--previous',
            os.path.join(TOP, 'testdata', 'previous.jsonl'),
        )
    )
    assert (first.status, first.dead_letters) == (export_profiles.EXIT_DEAD_LETTERS, 3)
    on_runner = dask_cluster() if runner == 'dask' else contextlib.nullcontext(PORTABLE_EMBEDDED)
    with on_runner as runner_args:
        second = export_profiles.run_job(
            argv(
                'second',
                kinesalite.endpoint_url,
                '--previous',
                os.path.join(TOP, 'testdata', 'current.jsonl'),
                '--retry_failed',
                str(tmp_path / 'first'),
                *runner_args,
            )
        )
    assert (second.status, second.exported, second.dead_letters) == (0, 0, 0)
    assert (
        second.counters['retried_from_earlier_run'],
        second.counters['retried_landed'],
        second.counters.get('retries_failed_again', 0),
    ) == (3, 3, 0)
    records, _ = read_back(kinesalite, stream)
    keys = sorted(key for shard in records.values() for key, _ in shard)
    assert len(keys) == 19 and len(set(keys)) == 19


@pytest.mark.portable
@pytest.mark.parametrize('runner', ['FlinkRunner', 'SparkRunner'])
def test_flink_and_spark_equal_direct_with_metadata_and_a_newly_mapped_segment(
    generated, direct, tmp_path, runner, monkeypatch
):
    from pipelines.portable import stop_job_servers
    from tests.portable_clusters import require_jar

    require_jar(runner)  # fails with the command that fetches it, never skips
    monkeypatch.setenv('SPARK_LOCAL_IP', '127.0.0.1')  # Spark's UIs on loopback only
    try:
        status, files = run_job(
            generated, tmp_path, '--runner', runner, '--environment_type', 'LOOPBACK'
        )
    finally:
        stop_job_servers()
    assert status == export_profiles.EXIT_DEAD_LETTERS
    assert files == direct
