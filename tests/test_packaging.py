"""Packaging: what `--setup_file ./setup.py` ships to Dataflow or Flink workers.

The wheel and the sdist hold `beam_kinesis` and `pipelines` and nothing of `tests/`; the wheel,
installed in a fresh virtual environment, runs the export job outside the source tree. The
fresh environment borrows the dependencies (Beam, boto3, ...) of the one running the tests
through a `.pth` file instead of downloading them again, and everything is built offline
(`--no-index`, no build isolation).
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from importlib import metadata
from importlib.util import find_spec

import pytest

TOP = os.path.normpath(os.path.join(os.path.dirname(__file__), os.pardir))
AS_OF = '2024-06-01T00:00:00Z'
_TIMEOUT = 180

# Not copied from the working tree: VCS data, environments, caches and build outputs.
_NOT_SOURCE = {
    '.git',
    '.venv',
    'venv',
    'node_modules',
    'build',
    'dist',
    '__pycache__',
    '.pytest_cache',
    '.ruff_cache',
}


def _setuptools_builds_wheels():
    """setuptools has bdist_wheel itself from 70.1 on; before, it needs the wheel package."""
    version = tuple(int(part) for part in metadata.version('setuptools').split('.')[:2])
    return version >= (70, 1) or find_spec('wheel') is not None


pytestmark = pytest.mark.skipif(
    not _setuptools_builds_wheels(),
    reason='no offline wheel build: setuptools < 70.1 without the wheel package '
    '(pip install -e ".[test]" installs it)',
)


def _ignore(folder, names):
    return {
        name
        for name in names
        if name in _NOT_SOURCE
        or name.endswith('.egg-info')
        or (os.path.normpath(folder) == TOP and name in ('out', 'dead_letters'))
        or (os.path.basename(folder) == 'benchmarks' and name == 'data')
    }


def _clean_env():
    """The environment without anything that would put the source tree on sys.path."""
    return {
        name: value
        for name, value in os.environ.items()
        if name not in ('PYTHONPATH', 'PYTHONHOME', 'VIRTUAL_ENV', 'PYTHONSTARTUP')
    }


def _run(args, cwd):
    done = subprocess.run(
        args,
        cwd=cwd,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f'{args[:4]} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}'
    return done.stdout


@pytest.fixture(scope='module')
def package(tmp_path_factory):
    """Builds the sdist and the wheel from a copy of the working tree (the build writes into
    the tree it builds), installs the wheel into a fresh virtual environment."""
    tmp = tmp_path_factory.mktemp('packaging')
    source = tmp / 'source'
    shutil.copytree(TOP, source, ignore=_ignore, symlinks=True)
    # The sdist, as Beam's stager builds it from --setup_file when `build` is not installed.
    _run([sys.executable, 'setup.py', '-q', 'sdist', '--dist-dir', str(tmp / 'sdist')], source)
    _run(
        [
            sys.executable,
            '-m',
            'pip',
            'wheel',
            '-q',
            '--no-deps',
            '--no-build-isolation',
            '--no-index',
            '-w',
            str(tmp / 'wheels'),
            '.',
        ],
        source,
    )
    [sdist] = glob.glob(str(tmp / 'sdist' / '*.tar.gz'))
    [wheel] = glob.glob(str(tmp / 'wheels' / '*.whl'))
    venv = tmp / 'venv'
    _run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], tmp)
    python = str(venv / 'bin' / 'python')
    _run(
        [
            sys.executable,
            '-m',
            'pip',
            '--python',
            python,
            'install',
            '-q',
            '--no-deps',
            '--no-index',
            wheel,
        ],
        tmp,
    )
    # Only now, so that pip did not take the running environment's (editable) beam-kinesis
    # for an installed one. Plain path lines: the .pth files in those directories (such as
    # an editable install's finder, which imports from the source tree) are not run.
    site_packages = _run(
        [python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'], tmp
    ).strip()
    outer = sorted({sysconfig.get_paths()['purelib'], sysconfig.get_paths()['platlib']})
    with open(os.path.join(site_packages, 'outer_environment.pth'), 'w') as handle:
        handle.write(''.join(f'{path}\n' for path in outer))
    return {
        'tmp': tmp,
        'sdist': sdist,
        'wheel': wheel,
        'venv': venv,
        'python': python,
        'site_packages': site_packages,
        'outer': outer,
    }


def test_the_wheel_holds_the_library_and_the_jobs_only(package):
    with zipfile.ZipFile(package['wheel']) as archive:
        names = archive.namelist()
        entry_points = next(
            archive.read(name).decode()
            for name in names
            if name.endswith('.dist-info/entry_points.txt')
        )
    tops = {name.split('/')[0] for name in names}
    assert tops == {'beam_kinesis', 'pipelines', 'beam_kinesis-0.1.0.dist-info'}
    for module in (
        'beam_kinesis/__init__.py',
        'beam_kinesis/kinesis.py',
        'pipelines/__init__.py',
        'pipelines/export_profiles.py',
        'pipelines/backfill.py',
    ):
        assert module in names
    # Every module of the source packages is in the wheel.
    for package_dir in ('beam_kinesis', 'pipelines'):
        for path in glob.glob(os.path.join(TOP, package_dir, '*.py')):
            assert f'{package_dir}/{os.path.basename(path)}' in names
    assert 'beam-kinesis = beam_kinesis.cli:main' in entry_points
    assert 'beam-kinesis-export = pipelines.export_profiles:main' in entry_points
    assert 'beam-kinesis-backfill = pipelines.backfill:main' in entry_points


def test_moto_is_an_extra_not_a_core_dependency(package):
    with zipfile.ZipFile(package['wheel']) as archive:
        metadata_text = next(
            archive.read(name).decode()
            for name in archive.namelist()
            if name.endswith('.dist-info/METADATA')
        )
    requires = [
        line.split(':', 1)[1].strip()
        for line in metadata_text.splitlines()
        if line.startswith('Requires-Dist:')
    ]
    core = [line for line in requires if 'extra ==' not in line]
    assert not [
        line for line in core if line.startswith(('moto', 'duckdb', 'hypothesis', 'pytest'))
    ], core
    assert any(line.startswith('moto') and 'extra == "local"' in line for line in requires)


def test_the_sdist_that_setup_file_stages_builds_the_same_packages(package):
    with tarfile.open(package['sdist']) as archive:
        names = {name.split('/', 1)[1] for name in archive.getnames() if '/' in name}
    assert {
        'setup.py',
        'README.md',
        'beam_kinesis/__init__.py',
        'pipelines/export_profiles.py',
        'pipelines/backfill.py',
    } <= names
    assert not [name for name in names if name.startswith(('tests/', 'testdata/'))]


def test_the_installed_job_runs_outside_the_source_tree(package, tmp_path):
    work = tmp_path / 'work'
    work.mkdir()
    for name in ('current.jsonl', 'previous.jsonl', 'destination.yaml'):
        shutil.copy(os.path.join(TOP, 'testdata', name), work / name)
    venv = str(package['venv'])
    # Where the modules come from, as the installed interpreter sees them from `work`.
    files = json.loads(
        _run(
            [
                package['python'],
                '-c',
                (
                    'import json, apache_beam, beam_kinesis, pipelines.backfill, '
                    'pipelines.export_profiles\n'
                    'print(json.dumps({m.__name__: m.__file__ for m in (apache_beam, beam_kinesis, '
                    'pipelines.backfill, pipelines.export_profiles)}))'
                ),
            ],
            work,
        )
    )
    for name in ('beam_kinesis', 'pipelines.backfill', 'pipelines.export_profiles'):
        assert files[name].startswith(package['site_packages'] + os.sep), files[name]
        assert not files[name].startswith(TOP + os.sep)
    assert any(files['apache_beam'].startswith(path) for path in package['outer'])
    _run(
        [
            os.path.join(venv, 'bin', 'beam-kinesis-export'),
            '--current',
            'current.jsonl',
            '--previous',
            'previous.jsonl',
            '--destination_config',
            'destination.yaml',
            '--as_of',
            AS_OF,
            '--output',
            'out',
            '--dead_letter',
            'dead',
        ],
        work,
    )
    exported = sorted(
        line
        for path in glob.glob(str(work / 'out' / 'exports*'))
        for line in open(path, 'rb').read().splitlines()
    )
    with open(os.path.join(TOP, 'testdata', 'expected_export.jsonl'), 'rb') as handle:
        assert exported == sorted(handle.read().splitlines())
    usage = _run([os.path.join(venv, 'bin', 'beam-kinesis-backfill'), '--help'], work)
    assert usage.startswith('usage: beam-kinesis-backfill')
    usage = _run([os.path.join(venv, 'bin', 'beam-kinesis'), 'export', '--help'], work)
    assert usage.startswith('usage: beam-kinesis export')


def test_ci_runs_the_readmes_test_command_as_it_stands():
    """The README's second command (the tests) is a line of `.ci/run`, letter for letter, and
    its last one: CI runs what a user is told to run."""
    with open(os.path.join(TOP, 'README.md'), encoding='utf-8') as handle:
        readme = handle.read()
    blocks = [block.split('```', 1)[0].strip() for block in readme.split('```bash\n')[1:]]
    command = blocks[1]  # the first block installs and runs the job, the second tests
    assert 'pytest' in command and '\n' not in command
    with open(os.path.join(TOP, '.ci', 'run'), encoding='utf-8') as handle:
        lines = [line for line in handle.read().splitlines() if line and not line.startswith('#')]
    assert lines[-1] == command
