"""The job on other runners gives the DirectRunner's files byte for byte, dead letters included.

multi_processing and PortableRunner (embedded job service, LOOPBACK workers) pickle every DoFn
and run it away from the launcher's globals, as Dataflow and Flink do; Beam's DaskRunner on a
two-worker LocalCluster is a real distributed engine with hazards of its own (it computes only
the last leaf of the graph, mixes tagged outputs and drops what finish_bundle emits).
"""

import glob
import json
import os

import pytest

from pipelines import export_profiles
from tests.generated import (
    AS_OF,
    MULTI_PROCESSING,
    PORTABLE_EMBEDDED,
    TOP,
    dask_cluster,
    generate_pair_with_bad_lines,
    run_into_files,
)


@pytest.fixture(scope='module')
def generated(tmp_path_factory):
    """A 20,000-profile pair over 4 files per snapshot, plus bad lines in one more file."""
    return generate_pair_with_bad_lines(tmp_path_factory.mktemp('generated'), 20000, 4)


def run_job(generated, out, *runner_args):
    """The job on the pair into 3 export shards and dead letters, on the given runner."""
    return run_into_files(generated, out, '--output_shards', '3', *runner_args)


@pytest.fixture(scope='module')
def direct(generated, tmp_path_factory):
    status, files = run_job(generated, tmp_path_factory.mktemp('direct'))
    assert status == export_profiles.EXIT_DEAD_LETTERS  # the bad file, withheld deletions
    exports = [
        line
        for name, data in files.items()
        if name.startswith('exports')
        for line in data.splitlines()
    ]
    # The bad lines withhold the deletions (their profiles may be among them): dead letters.
    assert len(exports) > 500 and len(files) == 4  # 3 export shards + dead letters
    return files


def test_multi_processing_equals_direct(generated, direct, tmp_path):
    status, files = run_job(generated, tmp_path, *MULTI_PROCESSING)
    assert status == export_profiles.EXIT_DEAD_LETTERS
    assert files == direct


def test_portable_runner_equals_direct(generated, direct, tmp_path):
    status, files = run_job(generated, tmp_path, *PORTABLE_EMBEDDED)
    assert status == export_profiles.EXIT_DEAD_LETTERS
    assert files == direct


def test_dask_runner_on_a_two_worker_cluster_equals_direct(generated, direct, tmp_path, capsys):
    with dask_cluster() as dask:
        status, files = run_job(generated, tmp_path, *dask)
    assert status == export_profiles.EXIT_DEAD_LETTERS
    assert files == direct
    out = capsys.readouterr().out
    assert any(line.split() == ['input', 'ledger', 'balanced', 'yes'] for line in out.splitlines())
    assert ' dead letters in ' in out


def test_dask_runner_into_kinesalite_keeps_the_sinks_last_dead_letters(
    kinesalite, tmp_path, capsys
):
    """A record the sink sends but Kinesis rejects is dead-lettered when the sink flushes its
    last requests; on Dask that must come from process, or it would be lost."""
    from beam_kinesis.local_kinesis import read_stream

    lines = open(os.path.join(TOP, 'testdata', 'current.jsonl'), encoding='utf-8').readlines()
    big = {
        '_id': 'p-big',
        'person': {'name': {'firstName': 'x' * 1_500_000}},
        'segmentMembership': {'ups': {'seg-a': {'status': 'realized'}}},
    }
    current = tmp_path / 'current.jsonl'
    current.write_text(''.join(lines) + json.dumps(big) + '\n', encoding='utf-8')
    stream = kinesalite.create_stream(2)
    with dask_cluster() as dask:
        result = export_profiles.run_job(
            [
                '--current',
                str(current),
                '--destination_config',
                os.path.join(TOP, 'testdata', 'destination.yaml'),
                '--as_of',
                AS_OF,
                '--dead_letter',
                str(tmp_path / 'dead'),
                *kinesalite.target_args(stream, 'x'),
                '--max_record_bytes',
                str(3_000_000),
                *dask,
            ]
        )
    assert (result.status, result.dead_letters) == (export_profiles.EXIT_DEAD_LETTERS, 1)
    dead = [
        json.loads(line)
        for path in glob.glob(str(tmp_path / 'dead' / '*.jsonl'))
        for line in open(path, encoding='utf-8')
    ]
    assert [(d['stage'], d['source']) for d in dead] == [('write', 'profile p-big')]
    client = kinesalite.client()
    landed = [key for records in read_stream(client, stream).values() for key, _ in records]
    client.close()
    assert len(landed) == len(set(landed)) == result.exported - 1 == 24
