"""The runners as the jobs use them: the DirectRunner without Prism, Dask by name, and
Flink and Spark with fetched job server jars and one job server each.

Policy the launchers share (the export, the backfill, `plan`), kept here where it is tested
and reused rather than in `pipelines/`.

Beam's Python FlinkRunner and SparkRunner start a Java job server from a jar that they look
up in Beam's jar cache (`~/.apache_beam/cache/jars/`) under the installed Beam's version, and
download from Maven Central if it is not there. Where Maven Central serves no job server of
that version, `tools/fetch_runner_jars.sh` assembles one of the nearest version it serves
(`RUNNER_JARS`); the jobs then use that jar when Beam's own is not cached, so that
`--runner FlinkRunner` and `--runner SparkRunner` need no jar flag.

Beam's FlinkRunner also starts a new job server JVM for every pipeline it runs and stops
them only when the process exits, so a backfill of many pairs would keep one idle JVM per
pair. `runner_for` gives the jobs a FlinkRunner that starts one job server per set of
Flink and job-server options and runs every pipeline of the process on it, as Beam's
SparkRunner already does.
"""

from __future__ import annotations

import logging
import os

from apache_beam.options.pipeline_options import (
    FlinkRunnerOptions,
    JobServerOptions,
    PipelineOptions,
    PortableOptions,
    SparkRunnerOptions,
    StandardOptions,
)
from apache_beam.runners.portability.flink_runner import FlinkRunner
from apache_beam.utils.subprocess_server import JavaJarServer

from beam_kinesis.config import ConfigError

__all__ = [
    'RUNNER_JARS',
    'FETCH_COMMAND',
    'PORTABLE_RUNNERS',
    'DASK_RUNNER',
    'absolute_local_paths',
    'dask_options',
    'is_dask',
    'prepare_portable',
    'prepare_runner',
    'runner_for',
    'runner_name',
    'stop_job_servers',
]

_LOGGER = logging.getLogger(__name__)

FETCH_COMMAND = 'tools/fetch_runner_jars.sh'

# What tools/fetch_runner_jars.sh assembles (keep the two in step): the newest Beam runner
# libraries whose dependencies Maven Central serves here, and the Flink minor they are for.
# Beam's Python SDK talks to an older job server through the portable Job and Fn APIs.
# `distribution` is the Flink or Spark the job server is assembled with: a cluster it submits
# to must run the same.
RUNNER_JARS = {
    'FlinkRunner': {
        'beam_version': '2.62.0',
        'flink_version': '1.19',
        'distribution': '1.19.0',
        'jar': 'beam-runners-flink-1.19-job-server-2.62.0.jar',
    },
    'SparkRunner': {
        'beam_version': '2.62.0',
        'distribution': '3.5.7',
        'jar': 'beam-runners-spark-3-job-server-2.62.0.jar',
    },
}


def runner_name(options: PipelineOptions) -> str:
    """The runner's class name, whether given by name or by class path."""
    return (options.view_as(StandardOptions).runner or '').rsplit('.', 1)[-1]


# Runners whose SDK workers may run in another working directory than the launcher's.
PORTABLE_RUNNERS = ('FlinkRunner', 'SparkRunner', 'PortableRunner')


def absolute_local_paths(options: PipelineOptions, names: tuple[str, ...]) -> None:
    """Makes the local paths of options `names` absolute, as the launcher sees them.

    The launcher matches the snapshot files, but the SDK workers of a portable runner read
    and write them; a worker started by a worker pool (EXTERNAL), `boot` (PROCESS) or Docker
    resolves a relative path in its own working directory, where the files are not (every
    file then became a read dead letter). Paths with a scheme (`s3://...`) are left as they are.
    """
    for name in names:
        value = getattr(options, name, None)
        if value and '://' not in value and not os.path.isabs(value):
            setattr(options, name, os.path.abspath(value))


def _cache_dir(options: PipelineOptions) -> str:
    return options.view_as(JobServerOptions).jar_cache_dir or JavaJarServer.JAR_CACHE


def _beams_own_jar(gradle_target: str) -> str:
    """The file name Beam looks for in its jar cache for `gradle_target`."""
    return os.path.basename(JavaJarServer.path_to_beam_jar(gradle_target))


def prepare_portable(options: PipelineOptions) -> None:
    """Points `--runner FlinkRunner` / `SparkRunner` at the fetched job server jar when no
    jar or job endpoint is given and Beam's own jar for this Beam version is not cached;
    starts no expansion service unless `--expansion_port` asks for one."""
    name = runner_name(options)
    if name not in RUNNER_JARS or options.view_as(PortableOptions).job_endpoint:
        return
    job_server = options.view_as(JobServerOptions)
    if job_server.expansion_port == 0:
        # The job expands no cross-language transform: no Java expansion service (the job
        # server would open one on every interface).
        job_server.expansion_port = -1
    fallback = RUNNER_JARS[name]
    cache = _cache_dir(options)
    if name == 'FlinkRunner':
        flink = options.view_as(FlinkRunnerOptions)
        default_version = FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS[-1]
        if flink.flink_job_server_jar or flink.flink_version not in (
            default_version,
            fallback['flink_version'],
        ):
            return  # the user chose a jar, or a Flink version the fallback is not for
        own = _beams_own_jar(f':runners:flink:{flink.flink_version}:job-server:shadowJar')
    else:
        spark = options.view_as(SparkRunnerOptions)
        if spark.spark_job_server_jar:
            return
        own = _beams_own_jar(':runners:spark:3:job-server:shadowJar')
    if os.path.exists(os.path.join(cache, own)):
        return  # Beam finds its own jar
    jar = os.path.join(cache, fallback['jar'])
    if not os.path.exists(jar):
        _LOGGER.warning(
            'Neither %s nor %s is in %s: Beam will try to download its own; offline, run %s first.',
            own,
            fallback['jar'],
            cache,
            FETCH_COMMAND,
        )
        return
    _LOGGER.info(
        'Using the job server %s (Beam %s) for %s: %s is not cached.',
        jar,
        fallback['beam_version'],
        name,
        own,
    )
    if name == 'FlinkRunner':
        flink.flink_job_server_jar = jar
        flink.flink_version = fallback['flink_version']
    else:
        spark.spark_job_server_jar = jar


# Job servers started by _OneJobServerFlinkRunner, by options; each stops when the process
# exits (Beam's StopOnExitJobServer).
_FLINK_JOB_SERVERS: dict = {}


class _OneJobServerFlinkRunner(FlinkRunner):
    """Beam's FlinkRunner, but every pipeline with the same Flink and job-server options runs
    on the same job server instead of a new JVM each."""

    def default_job_server(self, options):
        flink = options.view_as(FlinkRunnerOptions)
        if flink.flink_submit_uber_jar:
            return super().default_job_server(options)
        key = str(flink) + str(options.view_as(JobServerOptions))
        if key not in _FLINK_JOB_SERVERS:
            _FLINK_JOB_SERVERS[key] = super().default_job_server(options)
        else:
            flink.flink_master = self.add_http_scheme(flink.flink_master)
        return _FLINK_JOB_SERVERS[key]


def runner_for(options: PipelineOptions):
    """The runner object the jobs run `options` with, or None for the one the options name."""
    if runner_name(options) == 'FlinkRunner':
        return _OneJobServerFlinkRunner()
    return None


def stop_job_servers() -> None:
    """Stops the Flink and Spark job servers this process started (else they stop when it
    exits): for a process that goes on after its jobs."""
    from apache_beam.runners.portability import spark_runner

    for cache in (_FLINK_JOB_SERVERS, spark_runner.JOB_SERVER_CACHE):
        for server in cache.values():
            server.stop()
        cache.clear()


DASK_RUNNER = 'apache_beam.runners.dask.dask_runner.DaskRunner'


def dask_options() -> type[PipelineOptions]:
    """Beam's `DaskOptions` (imported late: dask is the `dask` extra)."""
    from apache_beam.runners.dask.dask_runner import DaskOptions

    return DaskOptions


def is_dask(options: PipelineOptions) -> bool:
    """Whether the job runs on Beam's DaskRunner."""
    return (options.view_as(StandardOptions).runner or '').rsplit('.', 1)[-1] == 'DaskRunner'


# The DirectRunner first tries to download the Prism runner from the internet; the job runs
# its Python engine directly instead, the same on every machine, with or without a network.
_LOCAL_RUNNERS = ('', 'DirectRunner', 'SwitchingDirectRunner')


def prepare_runner(options: PipelineOptions, path_options: tuple[str, ...] = ()) -> None:
    """Runs the DirectRunner on Beam's Python engine (FnApiRunner) without the attempt to
    download Prism; lets `--runner DaskRunner` name Beam's DaskRunner (Beam knows it only by
    class path) and gives it one partition per core unless `--dask_npartitions` says
    otherwise (without `--dask_client_address` Dask starts a local cluster); points
    `--runner FlinkRunner` / `SparkRunner` at a fetched job server jar.

    Args:
      options: the job's options, as the view that has `path_options`.
      path_options: options naming local paths, made absolute for portable runners (their
        SDK workers may run in another working directory than the launcher's).

    Raises:
      ConfigError: the DaskRunner is asked for but dask is not installed.
    """
    standard = options.view_as(StandardOptions)
    if (standard.runner or '') in _LOCAL_RUNNERS:
        standard.runner = 'FnApiRunner'
    prepare_portable(options)  # Flink and Spark: the fetched job server jar if Beam's is absent
    if runner_name(options) in PORTABLE_RUNNERS:
        absolute_local_paths(options, path_options)
    if not is_dask(options):
        return
    try:
        dask_options()
    except ImportError as err:
        raise ConfigError(
            'The DaskRunner needs dask and distributed: pip install "beam-kinesis[dask]".'
        ) from err
    options.view_as(StandardOptions).runner = DASK_RUNNER
    dask = options.view_as(dask_options())
    if not dask.npartitions:
        dask.npartitions = os.cpu_count() or 2
