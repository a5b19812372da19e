"""Shared pytest fixtures: the local Kinesis servers of the integration tests."""

import pytest

from beam_kinesis.testing.pytest_plugin import (  # noqa: F401 - the testing kit's fixtures
    in_memory_kinesis,
    local_kinesis,
    local_stream,
)
from tests.kinesis_servers import kinesalite, kinesis_local  # noqa: F401 - fixtures


@pytest.fixture(autouse=True, scope='session')
def _no_prism_download():
    """TestPipeline's DirectRunner first tries to download the Prism runner from the
    internet; the tests send traffic to 127.0.0.1 only, so that attempt fails at once and
    Beam falls back to its Python runner, as it does offline."""
    from apache_beam.runners.portability import prism_runner

    def refuse(*args, **kwargs):
        raise RuntimeError('Prism is not downloaded in tests')

    original = prism_runner.PrismRunner.run_pipeline
    prism_runner.PrismRunner.run_pipeline = refuse
    yield
    prism_runner.PrismRunner.run_pipeline = original
