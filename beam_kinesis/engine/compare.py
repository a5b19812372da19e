"""Compare and classify: one bucket's rows of both snapshots -> the profiles to export.

`CoGroupByKey` hands each bucket's batches of both snapshots to `CompareBucketFn`. A profile
whose two rows carry equal materials is unchanged and costs a comparison of bytes; every
other profile's views are decoded and classified by the rules (`rules.classify_change`).
Duplicate keys, tombstones and absences that cannot be trusted are settled here too.
"""

from __future__ import annotations

import bisect
import collections
from typing import NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_kinesis import counts, progress
from beam_kinesis.counts import Counts, FileStats
from beam_kinesis.deadletter import DEAD_LETTER, STAGE_JOIN, STAGE_VALIDATE, dead_letter
from beam_kinesis.engine.rows import TOMBSTONE, KeyedRows, view_of
from beam_kinesis.engine.rules import Change, MappedSegments, classify_change
from beam_kinesis.engine.view import InvalidProfile, ProfileProjection, ProfileView

__all__ = [
    'CompareBucketFn',
    'Rules',
    'UnkeyedTotals',
    'classified',
    'duplicate_dead_letters',
    'source_order',
    'unkeyed_records',
    'unkeyed_totals',
    'view_record',
    'withheld_dead_letter',
]


class _Side:
    """One snapshot's rows of a bucket, indexed by key."""

    def __init__(self, batches):
        self._batches = [KeyedRows.decode(data) for data in batches]
        self._starts = []
        self.keys: list = []
        self.kinds: list = []
        self.materials: list = []
        for batch in self._batches:
            self._starts.append(len(self.keys))
            self.keys.extend(batch.keys)
            self.kinds.extend(batch.kinds)
            self.materials.extend(batch.materials)
        self.index = dict(zip(self.keys, range(len(self.keys))))
        # Keys with more than one row: {key: [row, ...]}; the index holds their last row.
        self.duplicated: dict = {}
        if len(self.index) < len(self.keys):
            occurrences = collections.Counter(self.keys)
            for row, key in enumerate(self.keys):
                if occurrences[key] > 1:
                    self.duplicated.setdefault(key, []).append(row)

    def source(self, row: int) -> str:
        index = bisect.bisect_right(self._starts, row) - 1
        return self._batches[index].source(row - self._starts[index])

    def view(self, row: int, projection: ProfileProjection) -> ProfileView:
        return view_of(self.kinds[row], self.materials[row], self.source(row), projection)


class CompareBucketFn(beam.DoFn):
    """One bucket's `{'previous': [batch...], 'current': [batch...]}` -> `(tag, value)`
    pairs: `changes` (`(key, Change)`), `dead_letters`, and the bucket's `stats`."""

    def __init__(
        self,
        projection: ProfileProjection,
        mapped,
        first_run: bool,
        on_delete: str,
        newly_mapped=(),
    ):
        self._projection = projection
        self._rules = Rules.of(mapped, first_run, on_delete, newly_mapped)
        # An unchanged member of a newly mapped segment is exported too: in such a run
        # every profile is classified, as on a first run.
        self._newly_mapped = self._rules.newly_mapped
        self._profiles = Metrics.counter('beam_kinesis', counts.PROFILES_COMPARED)

    def process(self, element, unkeyed):
        _, sides = element
        previous = _Side(sides.get('previous', ()))
        current = _Side(sides.get('current', ()))
        stats = Counts(
            {counts.rows('previous'): len(previous.keys), counts.rows('current'): len(current.keys)}
        )
        duplicated = previous.duplicated.keys() | current.duplicated.keys()
        # The common case first, on bytes alone: a profile in both snapshots, once each,
        # whose material did not change.
        before_index, after_index = previous.index, current.index
        before_materials, after_materials = previous.materials, current.materials
        before_kinds, after_kinds = previous.kinds, current.kinds
        candidates = []
        for key, after in after_index.items():
            before = before_index.get(key)
            if (
                before is None
                or after_materials[after] != before_materials[before]
                or after_kinds[after] != before_kinds[before]
                or after_kinds[after] == TOMBSTONE
                or key in duplicated
                or self._newly_mapped
            ):
                candidates.append(key)
        unchanged = len(after_index) - len(candidates)
        candidates.extend(key for key in before_index if key not in after_index)
        stats.add(counts.PROFILES_COMPARED, unchanged + len(candidates))
        projection = self._projection
        for key in candidates:
            if key in duplicated:
                stats.add(counts.PROFILES_WITH_DUPLICATE_KEYS)
                for name, side in (('previous', previous), ('current', current)):
                    rows = side.duplicated.get(key, ())
                    yield from duplicate_dead_letters(
                        key,
                        name,
                        [
                            side.source(row)
                            if side.kinds[row] == TOMBSTONE
                            else side.view(row, projection)
                            for row in rows
                        ],
                    )
                continue
            rows = (before_index.get(key), after_index.get(key))
            if any(
                row is not None and side.kinds[row] == TOMBSTONE
                for row, side in zip(rows, (previous, current))
            ):
                stats.add(counts.PROFILES_INVALID)  # dead-lettered at the read; not exported
                continue
            try:
                views = [
                    None if row is None else side.view(row, projection)
                    for row, side in zip(rows, (previous, current))
                ]
            except InvalidProfile as err:  # a ROW the projection refuses (see view_of)
                stats.add(counts.PROFILES_INVALID)
                row, side = next(
                    (row, side) for row, side in zip(rows, (previous, current)) if row is not None
                )
                yield (
                    DEAD_LETTER,
                    dead_letter(STAGE_VALIDATE, str(err), side.source(row), side.materials[row]),
                )
                continue
            yield from classified(key, *views, self._rules, unkeyed, stats)
        self._profiles.inc(stats[counts.PROFILES_COMPARED])
        progress.count(profiles_compared=stats[counts.PROFILES_COMPARED])
        yield 'stats', stats


class Rules(NamedTuple):
    """How a run classifies: its mapped and newly mapped segments (`MappedSegments`),
    whether it is a first run, and the on_delete policy."""

    mapped: MappedSegments
    first_run: bool
    on_delete: str
    newly_mapped: MappedSegments

    @classmethod
    def of(cls, mapped, first_run: bool, on_delete: str, newly_mapped=()) -> Rules:
        """Rules from segments given as pairs or `MappedSegments`."""
        return cls(MappedSegments.of(mapped), first_run, on_delete, MappedSegments.of(newly_mapped))


def classified(
    key: str,
    before: ProfileView | None,
    after: ProfileView | None,
    rules: Rules,
    unkeyed: dict,
    stats: Counts,
):
    """`(tag, value)` for one profile with one row in each snapshot it is in: its change
    (`changes`), or the dead letter of an export withheld or of a profile that cannot be
    classified; counted in `stats`."""
    try:
        reason = classify_change(
            before,
            after,
            rules.mapped,
            first_run=rules.first_run,
            on_delete=rules.on_delete,
            newly_mapped=rules.newly_mapped,
        )
    except InvalidProfile as err:
        view = after or before
        stats.add(counts.PROFILES_INVALID)
        yield (
            DEAD_LETTER,
            dead_letter(STAGE_VALIDATE, str(err), view.source, view_record(key, view)),
        )
        return
    if reason is None:
        return
    withheld = withheld_dead_letter(key, before, after, unkeyed, rules.first_run)
    if withheld is not None:
        stats.add(counts.EXPORTS_WITHHELD)
        yield DEAD_LETTER, withheld
        return
    stats.add(counts.classified(reason))
    yield 'changes', (key, Change(reason, before, after))


class UnkeyedTotals(beam.PTransform):
    """`FileStats` -> one `{snapshot: records without a readable key}` dict: an absence
    from a snapshot with such records proves nothing (see `withheld_dead_letter`)."""

    def expand(self, stats):
        return (
            stats
            | 'UnkeyedRecords' >> beam.combiners.ToList().without_defaults()
            | 'Totals' >> beam.Map(unkeyed_totals)
        )


def unkeyed_records(own_stats: list, snapshots: dict):
    """`UnkeyedTotals` of an engine's own keying steps' stats (`own_stats`, PCollections of
    `FileStats`) and of the `ReadSnapshot` stats in its input dict (`<snapshot>_stats`)."""
    read_stats = [
        snapshots[f'{name}_stats'] for name in counts.SNAPSHOTS if f'{name}_stats' in snapshots
    ]
    return (
        [*own_stats, *read_stats]
        | 'AllReadStats' >> beam.Flatten()
        | 'UnkeyedTotals' >> UnkeyedTotals()
    )


def withheld_dead_letter(
    key: str, before: ProfileView | None, after: ProfileView | None, unkeyed: dict, first_run: bool
) -> dict | None:
    """A dead letter for an export that rests on the profile's absence from a snapshot
    that has records whose key could not be read (the profile may be one of them)."""
    for absent, present, name in ((after, before, 'current'), (before, after, 'previous')):
        if absent is None and not (name == 'previous' and first_run):
            count = unkeyed.get(name, 0)
            if count:
                return dead_letter(
                    STAGE_JOIN,
                    f'profile key {key!r} is absent from the {name} snapshot, which has '
                    f'{count} records whose key could not be read; it may be one of them, '
                    'so its export is withheld',
                    present.source,
                    view_record(key, present),
                )
    return None


def duplicate_dead_letters(key: str, name: str, views: list):
    """Dead letters for the rows of a key that occurs more than once in a snapshot (views,
    or sources of rows already dead-lettered as invalid)."""
    if len(views) < 2:
        return
    sources = ', '.join(
        sorted((view if isinstance(view, str) else view.source for view in views), key=source_order)
    )
    for view in views:
        if isinstance(view, str):
            continue  # already dead-lettered as invalid
        yield (
            DEAD_LETTER,
            dead_letter(
                STAGE_JOIN,
                f'profile key {key!r} occurs {len(views)} times in the {name} snapshot '
                f'({sources}); the profile is not exported in this run',
                view.source,
                view_record(key, view),
            ),
        )


def unkeyed_totals(stats: list[FileStats]) -> dict:
    """Records per snapshot whose key could not be read."""
    totals: dict = {}
    for entry in stats:
        if entry.unkeyed:
            totals[entry.snapshot] = totals.get(entry.snapshot, 0) + entry.unkeyed
    return totals


def source_order(source: str) -> tuple:
    path, _, position = source.rpartition(':')
    return (path, int(position)) if position.isdigit() else (source, 0)


def view_record(key: str, view: ProfileView) -> dict:
    """What a dead letter shows of a keyed profile: the parts that were kept of it."""
    return {
        'key': key,
        'segments': view.segments,
        'identities': view.identities,
        'attributes': view.attributes,
    }
