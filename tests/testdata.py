"""testdata/'s previous and current snapshots as the job's input flags, for the tests that run
the whole job on that small pair and look at something else (a report, progress, a sink)."""

from __future__ import annotations

import os

TESTDATA = os.path.normpath(os.path.join(os.path.dirname(__file__), os.pardir, 'testdata'))
AS_OF = '2024-06-01T00:00:00Z'
TESTDATA_PAIR = (
    '--current',
    os.path.join(TESTDATA, 'current.jsonl'),
    '--previous',
    os.path.join(TESTDATA, 'previous.jsonl'),
    '--destination_config',
    os.path.join(TESTDATA, 'destination.yaml'),
    '--as_of',
    AS_OF,
)
