"""The diff engine: what changed between two snapshots, in the order of its steps.

- `view`: what the destination looks at, defined once (`ProfileProjection.project`).
- `keyed`: key by profile id; every file read once into bucket batches of keyed rows
  (`rows`), Parquet rows checked and encoded in Arrow (`columnar`).
- `detect`: `DetectChanges`, `CoGroupByKey` of both snapshots' batches by bucket.
- `compare`: per bucket, unchanged materials skipped, the rest classified (`rules`).
- `reference`: the plain one-pass engine the fast one is tested against.
"""

from beam_kinesis.engine.detect import ENGINES, DetectChanges
from beam_kinesis.engine.rules import (
    ON_DELETE_POLICIES,
    REASONS,
    Change,
    MappedSegments,
    classify_change,
    same_value,
    segment_changed,
)
from beam_kinesis.engine.view import (
    DEFAULT_BUCKETS,
    InvalidProfile,
    ProfileProjection,
    ProfileView,
    project_profile,
)

__all__ = [
    'Change',
    'DEFAULT_BUCKETS',
    'DetectChanges',
    'ENGINES',
    'InvalidProfile',
    'MappedSegments',
    'ON_DELETE_POLICIES',
    'ProfileProjection',
    'ProfileView',
    'REASONS',
    'classify_change',
    'project_profile',
    'same_value',
    'segment_changed',
]
