"""The job on Beam's FlinkRunner and SparkRunner gives the DirectRunner's files byte for byte,
writes into kinesalite with every record landed once, and runs the backfill series.

Each runner runs two ways: on the embedded cluster of its job server (Flink's `[auto]`
MiniCluster, Spark's `local[4]`), and on a cluster of separate processes started here (a
Flink JobManager and TaskManager; a Spark standalone master and worker). Python code runs in
LOOPBACK SDK workers. The job server jars and the cluster distributions come from
`tools/fetch_runner_jars.sh` (run by .ci/run); without them these tests fail and say so.
"""

import glob
import os

import pytest

from pipelines import backfill, export_profiles
from pipelines.portable import stop_job_servers
from tests.ledger import read_dead_letters, read_exports, reconcile
from tests.portable_clusters import FlinkCluster, SparkCluster, require_jar
from tests.test_backfill import DAYS, check_stream, kinesis_argv
from tests.test_runners import direct, generated, run_job  # noqa: F401 - fixtures

pytestmark = pytest.mark.portable

LOOPBACK = ('--environment_type', 'LOOPBACK')


@pytest.fixture(scope='module', autouse=True)
def _local_only():
    """Spark binds its driver, executors and web UIs to SPARK_LOCAL_IP (else every
    interface); the job server JVMs inherit it from this process. They are stopped after
    the module, not when the test session exits."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv('SPARK_LOCAL_IP', '127.0.0.1')
        try:
            yield
        finally:
            stop_job_servers()


@pytest.fixture(scope='module')
def flink_jar():
    return require_jar('FlinkRunner')


@pytest.fixture(scope='module')
def spark_jar():
    return require_jar('SparkRunner')


@pytest.fixture(scope='module')
def flink_cluster(flink_jar):
    cluster = FlinkCluster(slots=2)
    try:
        cluster.wait_ready()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope='module')
def spark_cluster(spark_jar):
    cluster = SparkCluster(cores=2)
    try:
        cluster.wait_ready()
        yield cluster
    finally:
        cluster.stop()


def job_servers(jar):
    """The job server JVMs of this process that run `jar`."""
    found = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/stat', 'rb') as handle:
                parent = int(handle.read().rsplit(b')', 1)[1].split()[1])
            with open(f'/proc/{entry}/cmdline', 'rb') as handle:
                args = handle.read().split(b'\0')
        except OSError:
            continue  # gone meanwhile
        if parent == os.getpid() and jar.encode() in args:
            found.append(int(entry))
    return found


def run_both(generated, direct, kinesalite, tmp_path, capsys, *runner_args):  # noqa: F811
    """Runs the 20,000-profile pair into kinesalite and into files at once; the files equal
    the DirectRunner's, and every export record landed once on its key's shard."""
    stream = kinesalite.create_stream(4)
    status, files = run_job(
        generated,
        tmp_path,
        *runner_args,
        *LOOPBACK,
        *kinesalite.target_args(stream, 'not-a-real-secret'),
    )
    out = capsys.readouterr().out
    assert status == export_profiles.EXIT_DEAD_LETTERS, out[-3000:]
    assert files.keys() == direct.keys()
    for name, data in direct.items():
        assert files[name] == data, f"{name} differs from the DirectRunner's"
    assert any(line.split() == ['input', 'ledger', 'balanced', 'yes'] for line in out.splitlines())
    assert 'not-a-real-secret' not in out
    client = kinesalite.client()
    try:
        ledger = reconcile(
            ' '.join(runner_args),
            client,
            stream,
            read_exports(str(tmp_path)),
            read_dead_letters(str(tmp_path / 'dead')),
        )
    finally:
        client.close()
    ledger.assert_complete()
    assert (ledger.duplicated, ledger.dead_lettered) == (0, 0), ledger.row()
    assert ledger.landed == ledger.expected > 500


def test_flink_embedded_equals_direct_and_lands_in_kinesalite(
    generated,
    direct,
    kinesalite,  # noqa: F811
    flink_jar,
    tmp_path,
    capsys,
):
    # No jar flag: the job finds the fetched job server in Beam's jar cache by itself.
    run_both(generated, direct, kinesalite, tmp_path, capsys, '--runner', 'FlinkRunner')


def test_spark_embedded_equals_direct_and_lands_in_kinesalite(
    generated,
    direct,
    kinesalite,  # noqa: F811
    spark_jar,
    tmp_path,
    capsys,
):
    run_both(generated, direct, kinesalite, tmp_path, capsys, '--runner', 'SparkRunner')


def test_flink_cluster_equals_direct_and_lands_in_kinesalite(
    generated,
    direct,
    kinesalite,  # noqa: F811
    flink_cluster,
    tmp_path,
    capsys,
):
    before = len(flink_cluster.finished_jobs())
    run_both(
        generated,
        direct,
        kinesalite,
        tmp_path,
        capsys,
        '--runner',
        'FlinkRunner',
        '--flink_master',
        flink_cluster.master,
        '--parallelism',
        '2',
    )
    assert len(flink_cluster.finished_jobs()) == before + 1  # it ran there, not embedded


def test_spark_cluster_equals_direct_and_lands_in_kinesalite(
    generated,
    direct,
    kinesalite,  # noqa: F811
    spark_cluster,
    tmp_path,
    capsys,
):
    before = len(spark_cluster.applications())
    run_both(
        generated,
        direct,
        kinesalite,
        tmp_path,
        capsys,
        '--runner',
        'SparkRunner',
        '--spark_master_url',
        spark_cluster.master,
    )
    assert len(spark_cluster.applications()) == before + 1  # it ran there, not in local[4]


@pytest.mark.parametrize('runner', ['FlinkRunner', 'SparkRunner'])
def test_backfill_series_into_kinesalite(runner, kinesalite, request, tmp_path, capsys):
    jar = request.getfixturevalue({'FlinkRunner': 'flink_jar', 'SparkRunner': 'spark_jar'}[runner])
    before = set(job_servers(jar))
    stream = kinesalite.create_stream(2)
    argv = kinesis_argv(tmp_path, kinesalite.endpoint_url, stream, '--runner', runner, *LOOPBACK)
    assert backfill.run(argv) == backfill.EXIT_OK, capsys.readouterr().err[-3000:]
    check_stream(kinesalite, stream, dict.fromkeys(DAYS, 1))
    out = capsys.readouterr().out
    assert out.count('Exported ') == 4 and 'Backfill done: 4 pairs into kinesis:' in out
    # Beam's FlinkRunner would start a job server JVM per pair and keep each until exit;
    # the job runs every pair on one (the one of the embedded test before, if it ran).
    assert len(set(job_servers(jar)) - before) <= 1


def test_fetch_script_and_job_agree_on_the_jars():
    """tools/fetch_runner_jars.sh assembles the jars pipelines/portable.py looks for."""
    from pipelines.portable import RUNNER_JARS

    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = open(os.path.join(top, 'tools', 'fetch_runner_jars.sh'), encoding='utf-8').read()
    values = dict(
        line.split('=', 1)[0:2]
        for line in script.splitlines()
        if line[:1].isupper() and '=' in line and ' ' not in line.split('=')[0]
    )
    values = {name: value.split()[0] for name, value in values.items()}
    flink, spark = RUNNER_JARS['FlinkRunner'], RUNNER_JARS['SparkRunner']
    assert values['BEAM_RUNNER_VERSION'] == flink['beam_version'] == spark['beam_version']
    assert values['FLINK_MINOR'] == flink['flink_version']
    assert values['FLINK_VERSION'] == flink['distribution']
    assert values['SPARK_VERSION'] == spark['distribution']
    assert flink['jar'] == (
        f'beam-runners-flink-{values["FLINK_MINOR"]}-job-server-{values["BEAM_RUNNER_VERSION"]}.jar'
    )
    assert spark['jar'] == f'beam-runners-spark-3-job-server-{values["BEAM_RUNNER_VERSION"]}.jar'
    assert glob.glob(os.path.join(top, 'tools', 'fetch_runner_jars.sh'))


def _prepared(*argv):
    from apache_beam.options.pipeline_options import PipelineOptions

    options = PipelineOptions(list(argv)).view_as(export_profiles.ExportOptions)
    export_profiles.prepare_runner(options)
    return options


def test_the_job_picks_the_fetched_jar_only_when_beams_own_is_absent(tmp_path):
    from apache_beam.options.pipeline_options import FlinkRunnerOptions, SparkRunnerOptions

    from pipelines.portable import RUNNER_JARS

    cache = ('--jar_cache_dir', str(tmp_path))
    flink = _prepared('--runner', 'FlinkRunner', *cache).view_as(FlinkRunnerOptions)
    assert flink.flink_job_server_jar is None  # nothing fetched: Beam's own download
    for runner in RUNNER_JARS.values():
        (tmp_path / runner['jar']).write_bytes(b'')
    flink = _prepared('--runner', 'FlinkRunner', *cache).view_as(FlinkRunnerOptions)
    assert flink.flink_job_server_jar == str(tmp_path / RUNNER_JARS['FlinkRunner']['jar'])
    assert flink.flink_version == '1.19'
    spark = _prepared('--runner', 'SparkRunner', *cache).view_as(SparkRunnerOptions)
    assert spark.spark_job_server_jar == str(tmp_path / RUNNER_JARS['SparkRunner']['jar'])
    # A jar or Flink version the user chose, or a job endpoint, is left alone.
    assert (
        _prepared('--runner', 'FlinkRunner', '--flink_job_server_jar', '/x.jar', *cache)
        .view_as(FlinkRunnerOptions)
        .flink_job_server_jar
        == '/x.jar'
    )
    assert (
        _prepared('--runner', 'FlinkRunner', '--flink_version', '1.20', *cache)
        .view_as(FlinkRunnerOptions)
        .flink_job_server_jar
        is None
    )
    assert (
        _prepared('--runner', 'SparkRunner', '--job_endpoint', 'localhost:1', *cache)
        .view_as(SparkRunnerOptions)
        .spark_job_server_jar
        is None
    )
    # Beam's own jar of the installed version, when cached, wins.
    from apache_beam.utils.subprocess_server import JavaJarServer

    own = os.path.basename(JavaJarServer.path_to_beam_jar(':runners:spark:3:job-server:shadowJar'))
    (tmp_path / own).write_bytes(b'')
    assert (
        _prepared('--runner', 'SparkRunner', *cache)
        .view_as(SparkRunnerOptions)
        .spark_job_server_jar
        is None
    )


def test_portable_runners_get_absolute_local_paths(tmp_path, monkeypatch):
    """SDK workers (EXTERNAL, PROCESS, DOCKER) may run in another working directory: a
    relative snapshot path made every file a read dead letter there."""
    monkeypatch.chdir(tmp_path)
    argv = (
        '--current',
        'snap/current/*.jsonl',
        '--previous',
        'snap/previous.jsonl',
        '--output',
        'out',
        '--dead_letter',
        'dead',
        '--report',
        's3://bucket/report.json',
    )
    options = _prepared('--runner', 'FlinkRunner', *argv)
    assert (
        options.current,
        options.previous,
        options.output,
        options.dead_letter,
        options.report,
    ) == (
        str(tmp_path / 'snap' / 'current' / '*.jsonl'),
        str(tmp_path / 'snap' / 'previous.jsonl'),
        str(tmp_path / 'out'),
        str(tmp_path / 'dead'),
        's3://bucket/report.json',
    )
    assert _prepared(*argv).current == 'snap/current/*.jsonl'  # the DirectRunner: as given
