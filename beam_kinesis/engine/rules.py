"""Classify change: SPEC section 3's rules, as pure functions of a profile's two views."""

from __future__ import annotations

import datetime
import re
from typing import Iterable, NamedTuple

from beam_kinesis.engine.view import MEMBER_STATUSES, InvalidProfile, ProfileView

__all__ = [
    'Change',
    'MappedSegments',
    'ON_DELETE_POLICIES',
    'REASONS',
    'classify_change',
    'same_value',
    'segment_changed',
]

# Why a profile is exported, in the order a profile's reason is chosen.
REASON_DELETION = 'deletion'
REASON_FIRST_RUN = 'first_run'
REASON_SEGMENT = 'segment_change'
REASON_IDENTITY = 'identity_change'
REASON_ATTRIBUTE = 'attribute_change'
REASON_NEWLY_MAPPED = 'newly_mapped'
REASONS = (
    REASON_SEGMENT,
    REASON_NEWLY_MAPPED,
    REASON_IDENTITY,
    REASON_ATTRIBUTE,
    REASON_DELETION,
    REASON_FIRST_RUN,
)

ON_DELETE_POLICIES = ('exit', 'ignore')

_EMPTY = ProfileView('', {}, {}, {})
# lastQualificationTime as profile stores write it (ASCII digits only); such strings order
# as the instants they name. Any other ISO-8601 form is compared as an instant.
_CANONICAL_TIME = re.compile(r'[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z')


class Change(NamedTuple):
    """A profile to export: why, and its previous and current views (either may be None)."""

    reason: str
    previous: ProfileView | None
    current: ProfileView | None


class MappedSegments:
    """The mapped segments, indexed by namespace, so that a profile's rules cost what its own
    memberships number, not what the destination maps (ten thousand mapped segments cost a
    profile with twelve memberships twelve look-ups)."""

    def __init__(self, pairs: Iterable[tuple[str, str]]):
        self.pairs = tuple((namespace, segment_id) for namespace, segment_id in pairs)
        self._by_namespace: dict[str, frozenset] = {}
        for namespace, segment_id in self.pairs:
            self._by_namespace[namespace] = self._by_namespace.get(namespace, frozenset()) | {
                segment_id
            }

    @classmethod
    def of(cls, mapped) -> MappedSegments:
        """`mapped` as a `MappedSegments` (it may be one, or `(namespace, id)` pairs)."""
        return mapped if isinstance(mapped, cls) else cls(mapped)

    def __contains__(self, pair) -> bool:
        namespace, segment_id = pair
        return segment_id in self._by_namespace.get(namespace, ())

    def __iter__(self):
        return iter(self.pairs)

    def __len__(self):
        return len(self.pairs)

    def without(self, other: MappedSegments) -> MappedSegments:
        """These segments less those of `other`."""
        return MappedSegments(pair for pair in self.pairs if pair not in other)

    def __reduce__(self):
        return MappedSegments, (self.pairs,)

    def entries(self, view: ProfileView):
        """`(namespace, segment_id, entry)` of each mapped segment the view has an entry in."""
        for namespace, entries in view.segments.items():
            wanted = self._by_namespace.get(namespace)
            if not wanted:
                continue
            if len(entries) <= len(wanted):
                for segment_id, entry in entries.items():
                    if segment_id in wanted:
                        yield namespace, segment_id, entry
            else:
                for segment_id in wanted:
                    entry = entries.get(segment_id)
                    if entry is not None:
                        yield namespace, segment_id, entry

    def is_member(self, view: ProfileView) -> bool:
        """Whether the view is a member of some mapped segment."""
        return any(entry[0] in MEMBER_STATUSES for _, _, entry in self.entries(view))


def _parse_time(text: str) -> datetime.datetime:
    parsed = datetime.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed


def _later(current: str | None, previous: str | None) -> bool:
    if not current or not previous:
        return False  # without both times there is no re-qualification to see
    if _CANONICAL_TIME.fullmatch(current) and _CANONICAL_TIME.fullmatch(previous):
        return current > previous
    try:
        return _parse_time(current) > _parse_time(previous)
    except ValueError as err:
        raise InvalidProfile(
            f'lastQualificationTime {current!r} or {previous!r} is not an ISO-8601 time'
        ) from err


def segment_changed(previous: tuple | None, current: tuple | None) -> bool:
    """Whether one mapped segment changed state, given `(status, lastQualificationTime)`
    entries (None where the profile is not in the segment at all).

    Entered (not a member, then a member), exited (a member, then `exited` or gone), and
    re-qualified (`realized` with a later time) are changes; `realized` -> `existing` is not.
    """
    was_member = previous is not None and previous[0] in MEMBER_STATUSES
    is_member = current is not None and current[0] in MEMBER_STATUSES
    if was_member != is_member:
        return True
    return (
        is_member
        and current[0] == 'realized'
        and previous is not None
        and _later(current[1], previous[1])
    )


def same_value(left, right) -> bool:
    """Equality of JSON values in which `true` is not `1` (Python says it is)."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    if isinstance(left, dict):
        return (
            isinstance(right, dict)
            and left.keys() == right.keys()
            and all(same_value(left[key], right[key]) for key in left)
        )
    if isinstance(left, list):
        return (
            isinstance(right, list)
            and len(left) == len(right)
            and all(same_value(a, b) for a, b in zip(left, right, strict=True))
        )
    return left == right


def _identity_pairs(view: ProfileView) -> frozenset:
    return frozenset(
        (namespace, identity) for namespace, ids in view.identities.items() for identity in ids
    )


def _some_segment_changed(
    previous: ProfileView, current: ProfileView, mapped: MappedSegments
) -> bool:
    before = {
        (namespace, segment_id): entry for namespace, segment_id, entry in mapped.entries(previous)
    }
    for namespace, segment_id, entry in mapped.entries(current):
        if segment_changed(before.pop((namespace, segment_id), None), entry):
            return True
    # Mapped segments the current view has no entry in: left, if the profile was a member.
    return any(segment_changed(entry, None) for entry in before.values())


def classify_change(
    previous: ProfileView | None,
    current: ProfileView | None,
    mapped,
    *,
    first_run: bool = False,
    on_delete: str = 'exit',
    newly_mapped=(),
) -> str | None:
    """Decides whether a profile is exported, and why (SPEC section 3).

    Args:
      previous: the profile in the previous snapshot, None if absent there.
      current: the profile in the current snapshot, None if absent (deleted).
      mapped: the mapped segments, `(namespace, segment_id)` pairs or `MappedSegments`.
      first_run: there is no previous snapshot at all.
      on_delete: `exit` exports a deleted member once with its memberships exited;
        `ignore` exports nothing for it.
      newly_mapped: the mapped segments first mapped in this run (SPEC 8), pairs or
        `MappedSegments`. A current member of one is exported as `newly_mapped` unless a
        segment mapped before this run changed state (`segment_change` comes first); a
        change of a newly mapped segment itself is a `segment_change` only for a profile
        that is not a member of one in C (it left it, say).

    Returns:
      One of `REASONS`, or None when the profile is not exported.

    Raises:
      InvalidProfile: a lastQualificationTime that is not a time had to be compared.
    """
    mapped = MappedSegments.of(mapped)
    if current is None:
        if previous is not None and on_delete == 'exit' and mapped.is_member(previous):
            return REASON_DELETION
        return None
    if first_run:
        return REASON_FIRST_RUN if mapped.is_member(current) else None
    previous = previous or _EMPTY
    if newly_mapped:
        newly_mapped = MappedSegments.of(newly_mapped)
        if _some_segment_changed(previous, current, mapped.without(newly_mapped)):
            return REASON_SEGMENT
        if newly_mapped.is_member(current):
            return REASON_NEWLY_MAPPED
    if _some_segment_changed(previous, current, mapped):
        return REASON_SEGMENT
    if not mapped.is_member(current):
        return None
    if _identity_pairs(previous) != _identity_pairs(current):
        return REASON_IDENTITY
    if not same_value(previous.attributes, current.attributes):
        return REASON_ATTRIBUTE
    return None
