"""Shared pytest fixtures: the local Kinesis servers of the integration tests."""

from tests.kinesis_servers import kinesalite, kinesis_local  # noqa: F401 - fixtures
