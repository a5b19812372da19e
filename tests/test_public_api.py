"""The public API: the documented names import from `beam_kinesis` (without moto), compose
into a pipeline that runs under TestPipeline, carry Beam type hints, and the README's own
pipeline and its unit test run as shown."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Tuple

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.typehints.decorators import TypeCheckError
from apache_beam.typehints.native_type_compatibility import convert_to_beam_type

import beam_kinesis
from beam_kinesis.testing import InMemoryKinesis

ROOT = Path(__file__).resolve().parent.parent
TESTDATA = ROOT / 'testdata'
AS_OF = '2024-06-01T00:00:00Z'
DOCUMENTED = (
    'WriteToKinesis',
    'KinesisConfig',
    'check_stream',
    'ReadSnapshot',
    'DetectChanges',
    'FormatExport',
    'WriteDeadLetters',
    'load_destination_config',
)


def test_the_documented_names_import_without_moto():
    """In a fresh interpreter where moto cannot be imported at all."""
    script = (
        'import sys\n'
        'class NoMoto:\n'
        '    def find_spec(self, name, path=None, target=None):\n'
        '        if name == "moto" or name.startswith("moto."):\n'
        '            raise ImportError("moto is not installed")\n'
        'sys.meta_path.insert(0, NoMoto())\n'
        'import beam_kinesis\n'
        'from beam_kinesis import *\n'
        f'missing = [n for n in {DOCUMENTED!r} if n not in beam_kinesis.__all__]\n'
        'assert not missing, missing\n'
        'assert all(hasattr(beam_kinesis, n) for n in beam_kinesis.__all__)\n'
        'import beam_kinesis.testing\n'
        'assert not [m for m in sys.modules if m.split(".")[0] == "moto"]\n'
        'print("imported", len(beam_kinesis.__all__))\n'
    )
    done = subprocess.run(
        [sys.executable, '-c', script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f'imported {len(beam_kinesis.__all__)}' in done.stdout


def test_a_pipeline_of_the_public_transforms_sends_the_golden_records():
    from beam_kinesis import (
        DetectChanges,
        FormatExport,
        ReadSnapshot,
        WriteToKinesis,
        check_stream,
        load_destination_config,
    )

    config = load_destination_config(str(TESTDATA / 'destination.yaml')).for_run(AS_OF)
    golden = sorted((TESTDATA / 'expected_export.jsonl').read_bytes().splitlines())
    with InMemoryKinesis(shards=3) as kinesis:
        sink = kinesis.config(config.stream)
        assert check_stream(sink)['StreamStatus'] == 'ACTIVE'
        detect = DetectChanges(config)
        with TestPipeline(runner='FnApiRunner') as pipeline:
            old = pipeline | 'Old' >> ReadSnapshot(
                str(TESTDATA / 'previous.jsonl'), projection=detect.projection
            )
            new = pipeline | 'New' >> ReadSnapshot(
                str(TESTDATA / 'current.jsonl'), projection=detect.projection
            )
            changes = {'previous': old.records, 'current': new.records} | detect
            export = changes.changes | FormatExport(config, as_of=AS_OF)
            failed = export.records | WriteToKinesis(sink)
            assert_that(failed, equal_to([]), label='NoFailedWrites')
        assert sorted(data for _, data in kinesis.records()) == golden


def test_the_public_transforms_carry_beam_type_hints():
    from beam_kinesis import FormatExport, WriteDeadLetters, WriteToKinesis
    from beam_kinesis.hints import KinesisRecord, ProfileChange

    config = beam_kinesis.load_destination_config(str(TESTDATA / 'destination.yaml'))
    with InMemoryKinesis() as kinesis:
        sink = kinesis.config('s')
        hints = WriteToKinesis(sink).get_type_hints()
        assert hints.input_types[0][0] == convert_to_beam_type(Tuple[str, bytes])
        pipeline = beam.Pipeline()
        export = (
            pipeline
            | beam.Create([]).with_output_types(ProfileChange)
            | FormatExport(config, as_of=AS_OF)
        )
        assert export.records.element_type == convert_to_beam_type(KinesisRecord)
        failed = export.records | WriteToKinesis(sink)
        assert failed.element_type == convert_to_beam_type(Dict[str, Any])
        failed | WriteDeadLetters(str(Path('/nonexistent') / 'never-run'))
        # Text where bytes are due, or dead letters into the sink, fail when built.
        texts = pipeline | 'Texts' >> beam.Create([('k', 'not bytes')])
        with pytest.raises(TypeCheckError):
            texts | 'WrongSink' >> WriteToKinesis(sink)
        with pytest.raises(TypeCheckError):
            texts | 'WrongFormat' >> FormatExport(config, as_of=AS_OF)


def _readme_section_code() -> list[str]:
    readme = (ROOT / 'README.md').read_text(encoding='utf-8')
    section = readme.split('\n## Use it in your own pipeline\n', 1)[1].split('\n## ', 1)[0]
    return re.findall(r'```python\n(.*?)```', section, flags=re.DOTALL)


def test_the_readme_pipeline_and_its_unit_test_run_as_shown(tmp_path):
    blocks = _readme_section_code()
    assert len(blocks) == 2, 'the section shows a pipeline and its test'
    pipeline, unit_test = blocks
    assert 'WriteToKinesis(sink)' in pipeline and 'InMemoryKinesis' in unit_test
    (tmp_path / 'my_pipeline.py').write_text(pipeline)
    (tmp_path / 'test_my_pipeline.py').write_text(unit_test)
    # The user's own pytest run, from the repository root (the test reads testdata/), with
    # the user's files on the path and none of this repository's conftest.
    done = subprocess.run(
        [
            sys.executable,
            '-m',
            'pytest',
            '-q',
            '-p',
            'no:cacheprovider',
            '--rootdir',
            str(tmp_path),
            str(tmp_path / 'test_my_pipeline.py'),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert '1 passed' in done.stdout
