"""The reference engine: one view per record, one `GroupByKey` per profile, the rules.

Small and plain on purpose, so that it is obviously right: every record of every format is
read and projected in Python (no columnar checks, no materials, no buckets), both snapshots'
rows are grouped by profile key, and each profile is classified by `classify_change`. The
fast engine (`detect.DetectChanges`) must give the same exports and dead letters; the
property tests hold it to that. Select it with `--engine reference`.
"""

from __future__ import annotations

import collections

import apache_beam as beam

from beam_kinesis import counts, progress
from beam_kinesis.counts import Counts, FileStats
from beam_kinesis.deadletter import DEAD_LETTER, STAGE_VALIDATE, dead_letter
from beam_kinesis.engine.compare import Rules, classified, duplicate_dead_letters, unkeyed_records
from beam_kinesis.engine.rules import MappedSegments
from beam_kinesis.engine.view import InvalidProfile, ProfileProjection
from beam_kinesis.hints import DeadLetter, ProfileChange, Stats
from beam_kinesis.tagged import Outputs, split_tagged

__all__ = ['ReferenceDetectChanges']


class _ProjectFn(beam.DoFn):
    """`SnapshotRecord` -> `(key, (snapshot, source, view or None))`; None marks a record
    dead-lettered as invalid (a tombstone)."""

    def __init__(self, projection: ProfileProjection, label: str):
        self._projection = projection
        self._label = label

    def process(self, record):
        try:
            key, view = self._projection.project(record.profile, record.source)
        except InvalidProfile as err:
            yield DEAD_LETTER, dead_letter(STAGE_VALIDATE, str(err), record.source, record.profile)
            key = self._projection.key_of(record.profile)
            if key is None:
                yield 'stats', FileStats(self._label, unkeyed=1)
                return
            view = None
        yield 'rows', (key, (self._label, record.source, view))


class _ClassifyProfileFn(beam.DoFn):
    """`(key, rows)` -> `(tag, value)`: `changes`, `dead_letters`, `stats`."""

    def __init__(self, rules: Rules):
        self._rules = rules

    def process(self, element, unkeyed):
        key, rows = element
        sides = collections.defaultdict(list)
        for label, source, view in rows:
            sides[label].append(source if view is None else view)
        stats = Counts({counts.PROFILES_COMPARED: 1})
        progress.count(profiles_compared=1)
        if any(len(found) > 1 for found in sides.values()):
            stats.add(counts.PROFILES_WITH_DUPLICATE_KEYS)
            for label in ('previous', 'current'):
                yield from duplicate_dead_letters(key, label, sides.get(label, []))
        elif any(isinstance(view, str) for found in sides.values() for view in found):
            stats.add(counts.PROFILES_INVALID)  # dead-lettered at the read; not exported
        else:
            before = sides['previous'][0] if sides['previous'] else None
            after = sides['current'][0] if sides['current'] else None
            yield from classified(key, before, after, self._rules, unkeyed, stats)
        yield 'stats', stats


class ReferenceDetectChanges(beam.PTransform):
    """`{'previous': records, 'current': records}` (`SnapshotRecord`s of a `ReadSnapshot`
    with `normalize=False`; previous optional) -> `changes`, `dead_letters`, `stats`, like
    `DetectChanges`."""

    def __init__(self, projection: ProfileProjection, mapped, on_delete: str, newly_mapped=()):
        super().__init__()
        self._projection = projection
        self._mapped = MappedSegments.of(mapped)
        self._on_delete = on_delete
        self._newly_mapped = MappedSegments.of(newly_mapped)

    def expand(self, snapshots):
        rows, dead, stats = [], [], []
        for name in ('previous', 'current'):
            if name not in snapshots:
                continue
            projected = split_tagged(
                snapshots[name]
                | f'Project{name.title()}' >> beam.ParDo(_ProjectFn(self._projection, name)),
                ('rows', DEAD_LETTER, 'stats'),
                f'Project{name.title()}',
            )
            rows.append(projected.rows)
            dead.append(projected.dead_letters)
            stats.append(projected.stats)
        unkeyed = unkeyed_records(stats, snapshots)
        classified = split_tagged(
            rows
            | 'AllRows' >> beam.Flatten()
            | 'GroupByProfile' >> beam.GroupByKey()
            | 'Classify'
            >> beam.ParDo(
                _ClassifyProfileFn(
                    Rules.of(
                        self._mapped,
                        'previous' not in snapshots,
                        self._on_delete,
                        self._newly_mapped,
                    )
                ),
                unkeyed=beam.pvalue.AsSingleton(unkeyed, default_value={}),
            ),
            ('changes', DEAD_LETTER, 'stats'),
            'Classify',
            {'changes': ProfileChange, DEAD_LETTER: DeadLetter, 'stats': Stats},
        )
        dead.append(classified.dead_letters)
        return Outputs(
            changes=classified.changes,
            dead_letters=dead | 'FlattenDeadLetters' >> beam.Flatten(),
            stats=classified.stats,
        )
