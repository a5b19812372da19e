"""Moved to `beam_kinesis.runners`; kept so that `pipelines.portable` imports still work."""

from __future__ import annotations

from beam_kinesis.runners import (  # noqa: F401
    FETCH_COMMAND,
    PORTABLE_RUNNERS,
    RUNNER_JARS,
    absolute_local_paths,
    prepare_portable,
    runner_for,
    runner_name,
    stop_job_servers,
)
