"""Flink and Spark for the portable-runner tests: job server jars, and clusters of separate
processes (a Flink JobManager and TaskManager, a Spark standalone master and worker).

`tools/fetch_runner_jars.sh` puts the job server jars in Beam's jar cache and installs the
Flink and Spark distributions, each in its own venv; a test that finds one missing fails and
names that command. Every process binds 127.0.0.1 on free ports, logs into a temporary
directory, and is stopped at the end of the session.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from apache_beam.utils.subprocess_server import JavaJarServer

from pipelines.portable import FETCH_COMMAND, RUNNER_JARS
from tests.kinesis_servers import free_port

__all__ = ['Cluster', 'FlinkCluster', 'SparkCluster', 'require_jar', 'distribution_home']

CLUSTERS = Path(
    os.environ.get('RUNNER_CLUSTERS', os.path.expanduser('~/.cache/beam-kinesis/clusters'))
)
_START_SECONDS = 120.0
LOCAL = '127.0.0.1'


def require_jar(runner: str) -> str:
    """The fetched job server jar of `runner` ('FlinkRunner' or 'SparkRunner'), or a failure
    saying how to get it."""
    jar = os.path.join(JavaJarServer.JAR_CACHE, RUNNER_JARS[runner]['jar'])
    lib = jar[: -len('.jar')] + '-lib'
    if not (os.path.isfile(jar) and os.path.isfile(os.path.join(lib, '.complete'))):
        pytest.fail(
            f'The {runner} job server {jar} is not there: run `{FETCH_COMMAND}` '
            'from the repository root (it needs Maven and Java 17).'
        )
    if shutil.which('java') is None:
        pytest.fail(f'Java is not installed: the {runner} job server needs Java 17.')
    return jar


def distribution_home(package: str, version: str) -> Path:
    """The directory of a distribution PyPI ships inside a Python package (pyflink,
    pyspark), from the venv the fetch script made for it."""
    venv = CLUSTERS / f'{ {"pyflink": "flink", "pyspark": "spark"}[package] }-{version}'
    found = sorted(glob.glob(str(venv / 'lib' / 'python*' / 'site-packages' / package)))
    if not found or not (venv / '.complete').is_file():
        pytest.fail(
            f'The {package} {version} distribution is not installed under {venv}: '
            f'run `{FETCH_COMMAND} clusters` from the repository root.'
        )
    return Path(found[0])


def _http_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


class Cluster:
    """Processes started for a session, with their logs in one temporary directory."""

    name = 'cluster'

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=f'beam-kinesis-{self.name}-'))
        self._processes: list[tuple[str, subprocess.Popen, Path]] = []

    def _spawn(self, label: str, args: list[str], env: dict[str, str]) -> None:
        log = self.workdir / f'{label}.out'
        with open(log, 'wb') as out:
            process = subprocess.Popen(
                args,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                start_new_session=True,
            )
        self._processes.append((label, process, log))

    def logs(self) -> str:
        """The tail of every log the cluster wrote."""
        parts = []
        for path in sorted(self.workdir.rglob('*')):
            if path.is_file() and path.suffix in ('.out', '.log'):
                text = path.read_bytes()[-3000:].decode('utf-8', errors='replace')
                parts.append(f'--- {path.name}\n{text}')
        return '\n'.join(parts)

    def _ready(self) -> bool:
        raise NotImplementedError

    def wait_ready(self) -> None:
        deadline = time.monotonic() + _START_SECONDS
        while time.monotonic() < deadline:
            dead = [label for label, process, _ in self._processes if process.poll() is not None]
            if dead:
                pytest.fail(
                    f'The {self.name} {", ".join(dead)} exited while starting:\n{self.logs()}'
                )
            try:
                if self._ready():
                    return
            except OSError:
                pass  # not listening yet
            time.sleep(0.5)
        pytest.fail(f'The {self.name} was not ready within {_START_SECONDS:g} s:\n{self.logs()}')

    def stop(self) -> None:
        for _, process, _ in reversed(self._processes):
            if process.poll() is None:
                process.terminate()
        for _, process, _ in self._processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)


class FlinkCluster(Cluster):
    """A Flink session cluster: one JobManager and one TaskManager, each its own JVM, started
    with the distribution's bin/jobmanager.sh and bin/taskmanager.sh in the foreground."""

    name = 'flink'

    def __init__(self, slots: int = 2) -> None:
        super().__init__()
        version = RUNNER_JARS['FlinkRunner']['distribution']
        self.home = distribution_home('pyflink', version)
        self.rest_port = free_port()
        self.slots = slots
        conf_dir = self.workdir / 'conf'
        shutil.copytree(self.home / 'conf', conf_dir)
        config = yaml.safe_load((self.home / 'conf' / 'config.yaml').read_text())
        config['jobmanager'].update(
            {
                'bind-host': LOCAL,
                'rpc': {'address': LOCAL, 'port': free_port()},
                'memory': {'process': {'size': '1024m'}},
            }
        )
        # Flink's batch shuffle takes 512 network buffers (16 MiB) per result partition,
        # and a task of the job's plan writes several at once: Flink's default network
        # memory (10% of the process) fails the job with "Insufficient number of network
        # buffers".
        config['taskmanager'].update(
            {
                'bind-host': LOCAL,
                'host': LOCAL,
                'numberOfTaskSlots': slots,
                'memory': {'process': {'size': '2560m'}, 'network': {'min': '512m', 'max': '512m'}},
            }
        )
        config['parallelism'] = {'default': slots}
        config['rest'] = {'address': LOCAL, 'bind-address': LOCAL, 'port': self.rest_port}
        config['blob'] = {'server': {'port': str(free_port())}}
        (conf_dir / 'config.yaml').write_text(yaml.safe_dump(config))
        env = dict(
            os.environ,
            FLINK_CONF_DIR=str(conf_dir),
            FLINK_LOG_DIR=str(self.workdir),
            FLINK_HOME=str(self.home),
        )
        bin_dir = self.home / 'bin'
        self._spawn('jobmanager', ['bash', str(bin_dir / 'jobmanager.sh'), 'start-foreground'], env)
        self._spawn(
            'taskmanager', ['bash', str(bin_dir / 'taskmanager.sh'), 'start-foreground'], env
        )

    @property
    def master(self) -> str:
        """What --flink_master takes."""
        return f'{LOCAL}:{self.rest_port}'

    def _ready(self) -> bool:
        overview = _http_json(f'http://{self.master}/overview')
        return overview.get('taskmanagers', 0) >= 1 and overview.get('slots-total', 0) >= 1

    def finished_jobs(self) -> list[dict]:
        """The cluster's jobs that finished, as its REST API lists them."""
        return [
            job
            for job in _http_json(f'http://{self.master}/jobs/overview')['jobs']
            if job['state'] == 'FINISHED'
        ]


class SparkCluster(Cluster):
    """A Spark standalone cluster: one master and one worker, each its own JVM, started with
    the distribution's bin/spark-class in the foreground."""

    name = 'spark'

    def __init__(self, cores: int = 2, memory: str = '2g') -> None:
        super().__init__()
        version = RUNNER_JARS['SparkRunner']['distribution']
        self.home = distribution_home('pyspark', version)
        self.port = free_port()
        self.ui_port = free_port()
        env = dict(
            os.environ,
            SPARK_HOME=str(self.home),
            SPARK_LOCAL_IP=LOCAL,
            SPARK_LOG_DIR=str(self.workdir),
            SPARK_NO_DAEMONIZE='1',
        )
        spark_class = str(self.home / 'bin' / 'spark-class')
        self._spawn(
            'master',
            [
                'bash',
                spark_class,
                'org.apache.spark.deploy.master.Master',
                '--host',
                LOCAL,
                '--port',
                str(self.port),
                '--webui-port',
                str(self.ui_port),
            ],
            env,
        )
        self._spawn(
            'worker',
            [
                'bash',
                spark_class,
                'org.apache.spark.deploy.worker.Worker',
                '--host',
                LOCAL,
                '--webui-port',
                str(free_port()),
                '--cores',
                str(cores),
                '--memory',
                memory,
                '--work-dir',
                str(self.workdir / 'work'),
                self.master,
            ],
            env,
        )

    @property
    def master(self) -> str:
        """What --spark_master_url takes."""
        return f'spark://{LOCAL}:{self.port}'

    def _ready(self) -> bool:
        state = _http_json(f'http://{LOCAL}:{self.ui_port}/json/')
        return any(worker['state'] == 'ALIVE' for worker in state.get('workers', []))

    def applications(self) -> list[dict]:
        """The applications the master runs or has seen finish."""
        state = _http_json(f'http://{LOCAL}:{self.ui_port}/json/')
        return state.get('activeapps', []) + state.get('completedapps', [])
