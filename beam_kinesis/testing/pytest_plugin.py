"""pytest fixtures of the testing kit: an in-memory Kinesis, and the embedded local Kinesis.

Enable them in a `conftest.py`::

    pytest_plugins = ['beam_kinesis.testing.pytest_plugin']

- `in_memory_kinesis`: an open `InMemoryKinesis` (one shard; `create_stream(name, shards)`
  for more) for a test's TestPipeline on the DirectRunner, closed after the test.
- `local_kinesis`: the job's embedded local Kinesis (`EmbeddedKinesis`, moto's server on a
  free port of 127.0.0.1), started once per session: a real Kinesis API over HTTP, for what
  the in-memory one cannot do (a runner with worker processes, a CLI run in a subprocess).
  Needs moto: `pip install "beam-kinesis[local]"`.
- `local_stream`: a fresh stream on `local_kinesis` (two shards, a name of its own), as a
  `LocalStream` with its `name`, the sink's `config` and `read()` (records per shard).
"""

from __future__ import annotations

import uuid
from typing import Any, Iterator, NamedTuple

import pytest

from beam_kinesis.kinesis import KinesisConfig
from beam_kinesis.testing import InMemoryKinesis

__all__ = ['LocalStream', 'in_memory_kinesis', 'local_kinesis', 'local_stream']

_LOCAL_STREAM_SHARDS = 2


class LocalStream(NamedTuple):
    """A stream on the embedded local Kinesis: its name, the sink's config and a reader."""

    name: str
    config: KinesisConfig
    server: Any  # the EmbeddedKinesis

    def read(self) -> dict[str, list[tuple[str, bytes]]]:
        """Every record of the stream by shard id, as `(partition_key, data)`."""
        return self.server.read_stream(self.name)


@pytest.fixture
def in_memory_kinesis() -> Iterator[InMemoryKinesis]:
    """An open in-memory Kinesis for one test (see `beam_kinesis.testing`)."""
    with InMemoryKinesis() as kinesis:
        yield kinesis


@pytest.fixture(scope='session')
def local_kinesis() -> Iterator[Any]:
    """The embedded local Kinesis (moto's server on 127.0.0.1), for the session."""
    try:
        import moto  # noqa: F401 - only to say what is missing before the server starts

        from beam_kinesis.local_kinesis import EmbeddedKinesis
    except ImportError as err:
        pytest.fail(
            f'the local_kinesis fixture needs moto ({err}): pip install "beam-kinesis[local]"',
            pytrace=False,
        )
    with EmbeddedKinesis() as server:
        yield server


@pytest.fixture
def local_stream(local_kinesis: Any) -> LocalStream:
    """A new stream of two shards on the embedded local Kinesis."""
    name = f'test-{uuid.uuid4().hex[:12]}'
    local_kinesis.create_stream(name, shard_count=_LOCAL_STREAM_SHARDS)
    return LocalStream(name, local_kinesis.config(name), local_kinesis)
