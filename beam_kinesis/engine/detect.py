"""DetectChanges: the engine's steps wired, key -> CoGroupByKey by bucket -> compare."""

from __future__ import annotations

import apache_beam as beam

from beam_kinesis.config import DestinationConfig
from beam_kinesis.deadletter import DEAD_LETTER
from beam_kinesis.engine.compare import CompareBucketFn, unkeyed_records
from beam_kinesis.engine.keyed import KeyRecordFn
from beam_kinesis.engine.reference import ReferenceDetectChanges
from beam_kinesis.engine.rules import ON_DELETE_POLICIES, MappedSegments
from beam_kinesis.engine.view import DEFAULT_BUCKETS, ProfileProjection
from beam_kinesis.hints import DeadLetter, ProfileChange, Stats
from beam_kinesis.tagged import Outputs, split_tagged

__all__ = ['DetectChanges', 'ENGINES']

# `fast`: bucket batches compared by material (this module); `reference`: one view per
# record grouped by profile key (`reference`), the oracle the fast engine is tested against.
ENGINES = ('fast', 'reference')


class DetectChanges(beam.PTransform):
    """Keys both snapshots by profile key, joins them and keeps the profiles to export.

    Input: a dict `{'previous': records, 'current': records}` where each is the `records`
    of a `ReadSnapshot` given `projection=this.projection` (keyed and batched at the read:
    the fast way), or a PCollection of `SnapshotRecord`; leave out `previous` for a first
    run. `previous_stats`/`current_stats`, the `ReadSnapshot` stats, tell the engine how many
    records had no readable key (an absence from such a snapshot proves nothing).

    Output: `changes`, `(profile_key, Change)` pairs; `dead_letters`; `stats`, dicts of
    counts per bucket (`profiles_compared`, `classified_<reason>`, `rows_previous`, ...).

    The config's `segments` are the segments mapped in the run, and its `newly_mapped`
    (if any) those first mapped in it (`DestinationConfig.for_run`); in a run with a newly
    mapped segment every profile is classified (an unchanged member of it is exported too).

    Profiles are joined in buckets of their key's hash. Each row carries its material (its
    view, or for checked Parquet rows the fields its view is made of), so a profile whose
    material did not change is done with by a comparison of bytes, and every other one is
    classified where it is, without reading a file again: the cost of a run does not grow
    with how much changed.

    Example:
        detect = DetectChanges(config)
        old = p | 'Old' >> ReadSnapshot(old_glob, projection=detect.projection)
        new = p | 'New' >> ReadSnapshot(new_glob, projection=detect.projection)
        changes = {'previous': old.records, 'current': new.records} | detect
    """

    def __init__(
        self,
        config: DestinationConfig,
        key_field: str = '_id',
        on_delete: str = 'exit',
        buckets: int = DEFAULT_BUCKETS,
        engine: str = 'fast',
    ):
        super().__init__()
        if on_delete not in ON_DELETE_POLICIES:
            raise ValueError(f'on_delete {on_delete!r} is not one of {ON_DELETE_POLICIES}')
        if (
            not isinstance(key_field, str)
            or not key_field
            or any(not part for part in key_field.split('.'))
        ):
            raise ValueError(f'key_field {key_field!r} is not a dotted path')
        if engine not in ENGINES:
            raise ValueError(f'engine {engine!r} is not one of {ENGINES}')
        self._config = config
        self._on_delete = on_delete
        self._engine = engine
        self._mapped = MappedSegments(config.segments)
        # The segments first mapped in this run (SPEC 8; `DestinationConfig.for_run`).
        self._newly_mapped = MappedSegments(getattr(config, 'newly_mapped', ()) or ())
        self._projection = ProfileProjection(
            tuple(key_field.split('.')), config.attribute_paths, buckets
        )

    @property
    def projection(self) -> ProfileProjection:
        """How profiles are keyed, projected and batched (pass to `ReadSnapshot`)."""
        return self._projection

    @property
    def engine(self) -> str:
        """`fast` or `reference`."""
        return self._engine

    @property
    def fields(self) -> tuple[str, ...]:
        """The top-level profile fields this transform reads (pass to `ReadSnapshot`)."""
        return self._projection.fields

    def expand(self, snapshots):
        names = {'previous', 'current'}
        unknown = set(snapshots) - names - {f'{name}_stats' for name in names}
        if unknown or 'current' not in snapshots:
            raise ValueError(
                'DetectChanges takes {"previous": ..., "current": ...} '
                '(previous optional; "previous_stats"/"current_stats" the '
                f'ReadSnapshot stats), not {sorted(snapshots)}'
            )
        if self._engine == 'reference':
            return snapshots | 'Reference' >> ReferenceDetectChanges(
                self._projection, self._mapped, self._on_delete, self._newly_mapped
            )
        batches, dead, read_stats = {}, [], []
        for name in ('previous', 'current'):
            if name not in snapshots:
                continue
            keyed = split_tagged(
                snapshots[name]
                | f'Key{name.title()}' >> beam.ParDo(KeyRecordFn(self._projection, name)),
                ('batches', DEAD_LETTER, 'stats'),
                f'Key{name.title()}',
            )
            batches[name] = keyed.batches
            dead.append(keyed.dead_letters)
            read_stats.append(keyed.stats)
        unkeyed = unkeyed_records(read_stats, snapshots)
        compared = split_tagged(
            batches
            | 'JoinByBucket' >> beam.CoGroupByKey()
            | 'Compare'
            >> beam.ParDo(
                CompareBucketFn(
                    self._projection,
                    self._mapped,
                    'previous' not in snapshots,
                    self._on_delete,
                    self._newly_mapped,
                ),
                unkeyed=beam.pvalue.AsSingleton(unkeyed, default_value={}),
            ),
            ('changes', DEAD_LETTER, 'stats'),
            'Compare',
            {'changes': ProfileChange, DEAD_LETTER: DeadLetter, 'stats': Stats},
        )
        dead.append(compared.dead_letters)
        return Outputs(
            changes=compared.changes,
            dead_letters=dead | 'FlattenDeadLetters' >> beam.Flatten(),
            stats=compared.stats,
        )
