"""The destination's configuration: which stream, which segments and attributes are mapped."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
from typing import Any

import yaml

__all__ = [
    'Audience',
    'ConfigError',
    'DestinationConfig',
    'load_destination_config',
    'parse_as_of',
    'parse_audience_time',
    'DEFAULT_NAMESPACE',
    'SEGMENT_SCOPES',
]

# Segments given without a namespace belong to the profile store's own namespace.
DEFAULT_NAMESPACE = 'ups'

# The two top-level objects every export carries; they cannot also be mapped attributes.
_RESERVED_ROOTS = ('segmentMembership', 'identityMap')

# ASCII digits only: `\d` and `int()` take full-width and other Unicode digits too.
_AS_OF_PATTERN = re.compile(r'^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$')
_KNOWN_KEYS = {
    'name',
    'description',
    'stream',
    'region',
    'segments',
    'attributes',
    'include_segment_names',
    'include_segment_timestamps',
    'segment_scope',
    'audiences',
}

# A destination config is a page of text; a bigger file is a mistake, not a config.
MAX_CONFIG_BYTES = 1024 * 1024
# How much of a bad value an error sentence quotes.
_SHOWN_CHARS = 80


def _shown(value: Any) -> str:
    """`repr(value)` of a scalar (a time YAML read as its ISO form), cut short, or the name
    of a container's type: an error sentence stays one short line."""
    if isinstance(value, (datetime.date, datetime.datetime)):
        value = value.isoformat()
    scalar = (str, int, float, bool, type(None))
    flat = (
        isinstance(value, (list, tuple))
        and len(value) <= 8
        and all(isinstance(item, scalar) for item in value)
    )
    text = (
        repr(value).replace('\n', ' ')
        if isinstance(value, scalar) or flat
        else f'a {type(value).__name__}'
    )
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + '...'


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases: a few hundred bytes of nested aliases expand
    to gigabytes once anything walks the value, and a config has no use for them."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None,
                None,
                f'found the alias *{event.anchor[:_SHOWN_CHARS]}; aliases are not '
                'allowed in a destination config',
                event.start_mark,
            )
        return super().compose_node(parent, index)


class ConfigError(ValueError):
    """A destination configuration or job option that cannot be used, in one sentence."""


# What `segment_scope` may say: every segment of the profile, or only the mapped ones.
SEGMENT_SCOPES = ('all', 'mapped')


@dataclasses.dataclass(frozen=True)
class Audience:
    """An audience (segment) the config describes, its times in epoch milliseconds (SPEC 7).

    Attributes:
      namespace: the segment's namespace (`ups` unless given as `ns:id`).
      segment_id: the segment's id.
      name: its name, exported on a mapped segment's entries with `include_segment_names`.
      created_at: when the audience was created.
      updated_at: when it was last changed.
      mapped_at: when it was mapped to this destination (mapped segments only).
      mapping_updated_at: when its mapping was last changed (default: `mapped_at`).
    """

    namespace: str
    segment_id: str
    name: str | None = None
    created_at: int | None = None
    updated_at: int | None = None
    mapped_at: int | None = None
    mapping_updated_at: int | None = None

    @property
    def pair(self) -> tuple[str, str]:
        return self.namespace, self.segment_id


@dataclasses.dataclass(frozen=True)
class DestinationConfig:
    """What the destination's connection and activation screens collect.

    Attributes:
      stream: name of an existing Kinesis data stream.
      segments: the mapped segments, as `(namespace, segment_id)` pairs.
      attributes: the mapped attributes, as dotted XDM paths (`person.name.firstName`).
      region: AWS region of the stream, or None to take it from the environment.
      name: the connection's name, for people.
      description: the connection's description, for people.
      include_segment_names: add each mapped segment's `name` to its entries (SPEC 7).
      include_segment_timestamps: add `createdAt`, `updatedAt`, `mappingCreatedAt` and
        `mappingUpdatedAt` (epoch milliseconds) to the entries of described segments.
      segment_scope: `all` exports every segment of a profile, `mapped` only mapped ones.
      audiences: the segments the config describes, mapped (object entries of `segments`)
        or not (`audiences`).
      newly_mapped: the mapped segments first mapped in this run (set by `for_run`).
      not_yet_mapped: segments of `segments` whose `mapped_at` is after this run's as-of
        time, which the run treats as unmapped (set by `for_run`).
    """

    stream: str
    segments: tuple[tuple[str, str], ...]
    attributes: tuple[str, ...] = ()
    region: str | None = None
    name: str = ''
    description: str = ''
    include_segment_names: bool = False
    include_segment_timestamps: bool = False
    segment_scope: str = 'all'
    audiences: tuple[Audience, ...] = ()
    newly_mapped: tuple[tuple[str, str], ...] = ()
    not_yet_mapped: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        if not isinstance(self.stream, str) or not self.stream.strip():
            raise ConfigError(
                'The destination needs a non-empty "stream" (the Kinesis stream name).'
            )
        if not self.segments and not self.not_yet_mapped:
            raise ConfigError('The destination maps no segments: give at least one in "segments".')
        if self.segment_scope not in SEGMENT_SCOPES:
            raise ConfigError(
                f'segment_scope {_shown(self.segment_scope)} is not one of {list(SEGMENT_SCOPES)}.'
            )
        if not set(self.newly_mapped) <= set(self.segments):
            raise ConfigError('Newly mapped segments must be mapped segments too.')
        for namespace, segment_id in self.segments:
            if not namespace or not segment_id:
                raise ConfigError(
                    f'Mapped segment {_shown(f"{namespace}:{segment_id}")} '
                    'needs both a namespace and an id.'
                )
        _check_attribute_paths(self.attributes)

    @classmethod
    def from_dict(cls, data: Any, origin: str = 'the destination config') -> DestinationConfig:
        """Builds a config from a parsed YAML/JSON mapping, naming `origin` in errors."""
        if not isinstance(data, dict):
            raise ConfigError(
                f'{origin} must be a mapping with "stream", "segments" and '
                f'"attributes", not {type(data).__name__}.'
            )
        unknown = sorted(_shown(key) for key in set(data) - _KNOWN_KEYS)
        if unknown:
            shown = ', '.join(unknown[:5]) + (
                f' and {len(unknown) - 5} more' if len(unknown) > 5 else ''
            )
            raise ConfigError(
                f'{origin} has unknown keys {shown}; expected some of {sorted(_KNOWN_KEYS)}.'
            )
        for key in ('name', 'description', 'stream', 'region'):
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                shown = (
                    _shown(value)
                    if isinstance(value, (int, float, bool))
                    else f'a {type(value).__name__}'
                )
                raise ConfigError(
                    f'{origin} has a "{key}" that is {shown}, not a '
                    'string (quote it if it looks like a number or a date).'
                )
        audience_settings = _audience_settings(data, origin)
        attributes = data.get('attributes', [])
        if attributes is None:
            attributes = []
        if not isinstance(attributes, list) or not all(isinstance(a, str) for a in attributes):
            raise ConfigError(
                f'{origin} needs "attributes" to be a list of dotted XDM paths, each a string.'
            )
        region = data.get('region')
        stream = data.get('stream')
        if not isinstance(stream, str):
            raise ConfigError(f'{origin} needs "stream": the name of an existing Kinesis stream.')
        return cls(
            stream=stream,
            attributes=tuple(attributes),
            region=region or None,
            name=data.get('name') or '',
            description=data.get('description') or '',
            **audience_settings,
        )

    @property
    def attribute_paths(self) -> tuple[tuple[str, ...], ...]:
        """The mapped attributes split into their path components."""
        return tuple(tuple(path.split('.')) for path in self.attributes)

    def replace(self, **changes) -> DestinationConfig:
        """A copy with some fields changed (for flags that override the file)."""
        return dataclasses.replace(self, **changes)

    @property
    def mapping_times(self) -> bool:
        """Whether some mapped segment has a `mapped_at` (a run then needs its as-of times)."""
        configured = set(self.segments) | set(self.not_yet_mapped)
        return any(
            audience.mapped_at is not None and audience.pair in configured
            for audience in self.audiences
        )

    def for_run(
        self, as_of: str | int, previous_as_of: str | int | None = None
    ) -> DestinationConfig:
        """This config as the run of `as_of` sees it (SPEC 8).

        A segment of `segments` is mapped in the run when it has no `mapped_at` or
        `mapped_at` <= `as_of`; a later one is not mapped yet (`not_yet_mapped`: for the run
        an unmapped segment). A mapped one is newly mapped when `previous_as_of` <
        `mapped_at` <= `as_of`. The engine reads only `segments`, `attribute_paths` and
        `newly_mapped` of the result.

        Args:
          as_of: the run's time: `YYYY-MM-DDTHH:MM:SSZ` (or any ISO-8601 UTC time), or epoch
            milliseconds.
          previous_as_of: the previous snapshot's time, or None (no segment is then newly
            mapped).

        Raises:
          ConfigError: a time that is not one, or `previous_as_of` not before `as_of`.
        """
        now = parse_audience_time(as_of, '--as_of')
        before = (
            None
            if previous_as_of is None
            else parse_audience_time(previous_as_of, '--previous_as_of')
        )
        if before is not None and before >= now:
            raise ConfigError(f'--previous_as_of {previous_as_of} is not before --as_of {as_of}.')
        mapped_at = {
            audience.pair: audience.mapped_at
            for audience in self.audiences
            if audience.mapped_at is not None
        }
        configured = self.segments + tuple(
            pair for pair in self.not_yet_mapped if pair not in self.segments
        )
        segments = tuple(
            pair for pair in configured if mapped_at.get(pair) is None or mapped_at[pair] <= now
        )
        newly = (
            ()
            if before is None
            else tuple(pair for pair in segments if pair in mapped_at and before < mapped_at[pair])
        )
        return dataclasses.replace(
            self,
            segments=segments,
            newly_mapped=newly,
            not_yet_mapped=tuple(pair for pair in configured if pair not in segments),
        )

    def segment_fields(self) -> dict[tuple[str, str], dict]:
        """What SPEC 7 adds to the segmentMembership entry of each described segment, by
        `(namespace, segment_id)`: `name` (mapped segments, with `include_segment_names`),
        `createdAt` and `updatedAt` (with `include_segment_timestamps`), and for mapped
        segments `mappingCreatedAt` and `mappingUpdatedAt`; only the fields given."""
        mapped = set(self.segments)
        fields_by_segment = {}
        for audience in self.audiences:
            is_mapped = audience.pair in mapped
            fields: dict = {}
            if self.include_segment_names and is_mapped and audience.name is not None:
                fields['name'] = audience.name
            if self.include_segment_timestamps:
                times = [('createdAt', audience.created_at), ('updatedAt', audience.updated_at)]
                if is_mapped:
                    times += [
                        ('mappingCreatedAt', audience.mapped_at),
                        ('mappingUpdatedAt', audience.mapping_updated_at),
                    ]
                fields.update((name, value) for name, value in times if value is not None)
            if fields:
                fields_by_segment[audience.pair] = fields
        return fields_by_segment


def parse_segment(text: str) -> tuple[str, str]:
    """`'seg-a'` -> `('ups', 'seg-a')`; `'partner:seg-a'` -> `('partner', 'seg-a')`."""
    text = text.strip()
    if ':' in text:
        namespace, segment_id = text.split(':', 1)
        return namespace.strip(), segment_id.strip()
    return DEFAULT_NAMESPACE, text


# Keys of a segment given as an object, and of an entry of `audiences`.
_SEGMENT_KEYS = ('id', 'name', 'created_at', 'updated_at', 'mapped_at', 'mapping_updated_at')
_AUDIENCE_KEYS = ('id', 'name', 'created_at', 'updated_at')
# Epoch milliseconds below this (1973-03-03) are taken for epoch seconds given by mistake.
_SMALLEST_EPOCH_MS = 100_000_000_000
# Epoch milliseconds of 9999-12-31T23:59:59.999Z, the last time ISO-8601 writes plainly.
_LARGEST_EPOCH_MS = 253_402_300_799_999
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_SHOWN_CHARS = 60
# A date and a time of day (what `fromisoformat` then reads, with its zone if any).
_ISO_TIME = re.compile(r'\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}')


def parse_audience_time(value: Any, what: str) -> int:
    """An audience time as epoch milliseconds: an ISO-8601 time with a zone (`Z` or an
    offset, YAML's own timestamps included) or an integer of epoch milliseconds.

    Raises:
      ConfigError: naming `what`, for anything else.
    """
    expected = (
        'is not an ISO-8601 UTC time (such as 2022-03-29T11:28:45Z) or an integer '
        'of epoch milliseconds'
    )
    if isinstance(value, bool):
        raise ConfigError(f'{what} {_shown(value)} {expected}.')
    if isinstance(value, int):
        if value < _SMALLEST_EPOCH_MS:
            raise ConfigError(
                f'{what} {value} is before 1973 as epoch milliseconds (epoch '
                'seconds given by mistake?).'
            )
        if value > _LARGEST_EPOCH_MS:
            raise ConfigError(f'{what} {value} is after the year 9999 as epoch milliseconds.')
        return value
    moment = value
    if isinstance(value, str):
        moment = None
        if _ISO_TIME.match(value):
            try:
                moment = datetime.datetime.fromisoformat(value)
            except ValueError:
                pass
    if not isinstance(moment, datetime.datetime):
        raise ConfigError(f'{what} {_shown(value)} {expected}.')
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ConfigError(
            f'{what} {_shown(value)} has no time zone; write it in UTC '
            'with a Z (2022-03-29T11:28:45Z) or as epoch milliseconds.'
        )
    milliseconds = (moment - _EPOCH) // datetime.timedelta(milliseconds=1)
    if not _SMALLEST_EPOCH_MS <= milliseconds <= _LARGEST_EPOCH_MS:
        raise ConfigError(f'{what} {_shown(value)} is before 1973.')
    return milliseconds


def _audience_settings(data: dict, origin: str) -> dict:
    """The segments and the audience keys of SPEC 7 in a config mapping, checked: the two
    toggles, `segment_scope`, `segments` (ids or objects) and `audiences`."""
    settings: dict = {}
    for key in ('include_segment_names', 'include_segment_timestamps'):
        value = data.get(key, False)
        if not isinstance(value, bool):
            raise ConfigError(f'{origin} has {key} {_shown(value)}; it must be true or false.')
        settings[key] = value
    scope = data.get('segment_scope', 'all')
    if not isinstance(scope, str) or scope not in SEGMENT_SCOPES:
        raise ConfigError(
            f'{origin} has segment_scope {_shown(scope)}; it must be one of {list(SEGMENT_SCOPES)}.'
        )
    settings['segment_scope'] = scope
    segments = data.get('segments')
    if not isinstance(segments, list):
        raise ConfigError(
            f'{origin} needs "segments": a list of segment ids (namespace '
            '"ups" unless given as "ns:id") or objects with an "id".'
        )
    audiences = data.get('audiences')
    if audiences is None:
        audiences = []
    if not isinstance(audiences, list):
        raise ConfigError(
            f'{origin} has "audiences" {_shown(audiences)}; it must be a list '
            'of objects with an "id".'
        )
    seen: dict[tuple[str, str], str] = {}
    pairs, described = [], []
    for listing, entries, keys in (
        ('segments', segments, _SEGMENT_KEYS),
        ('audiences', audiences, _AUDIENCE_KEYS),
    ):
        for number, entry in enumerate(entries, 1):
            where = f'{origin}: {listing} entry {number}'
            audience = _audience(entry, where, keys, plain=listing == 'segments')
            pair = audience.pair
            if pair in seen:
                raise ConfigError(
                    f'{where} repeats the segment {pair[0]}:{pair[1]}, already {seen[pair]}.'
                )
            seen[pair] = f'{listing} entry {number}'
            if listing == 'segments':
                pairs.append(pair)
            if isinstance(entry, dict):
                described.append(audience)
    settings['segments'] = tuple(pairs)
    settings['audiences'] = tuple(described)
    return settings


def _audience(entry: Any, where: str, keys: tuple[str, ...], plain: bool) -> Audience:
    """One entry of `segments` (a plain id, or an object) or of `audiences` (an object)."""
    if isinstance(entry, str) and plain:
        namespace, segment_id = parse_segment(entry)
        if not namespace or not segment_id:
            raise ConfigError(f'{where} ({_shown(entry)}) needs both a namespace and an id.')
        return Audience(namespace, segment_id)
    if not isinstance(entry, dict):
        kind = 'a segment id or an object' if plain else 'an object'
        raise ConfigError(f'{where} is {_shown(entry)}; it must be {kind} with an "id".')
    identifier = entry.get('id')
    if not isinstance(identifier, str) or not identifier.strip():
        raise ConfigError(
            f'{where} needs an "id" that is a non-empty string, not {_shown(identifier)}.'
        )
    namespace, segment_id = parse_segment(identifier)
    where = f'{where} ({namespace}:{segment_id})'
    if not namespace or not segment_id:
        raise ConfigError(f'{where} needs both a namespace and an id.')
    unknown = sorted(str(key) for key in set(entry) - set(keys))
    if unknown:
        raise ConfigError(
            f'{where} has unknown keys {_shown(unknown)}; expected some of {list(keys)}.'
        )
    name = entry.get('name')
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ConfigError(f'{where} has name {_shown(name)}, which is not a non-empty string.')
    times = {
        key: (None if entry.get(key) is None else parse_audience_time(entry[key], f'{where} {key}'))
        for key in keys
        if key.endswith('_at')
    }
    if times.get('mapping_updated_at') is None:
        times['mapping_updated_at'] = times.get('mapped_at')
    for earlier, later in (('created_at', 'updated_at'), ('mapped_at', 'mapping_updated_at')):
        if None not in (times.get(earlier), times.get(later)) and times[later] < times[earlier]:
            raise ConfigError(f'{where} has {later} before {earlier}.')
    if not plain:
        times.pop('mapping_updated_at')
    return Audience(namespace, segment_id, name=name, **times)


def _check_attribute_paths(paths: tuple[str, ...]) -> None:
    seen = set()
    for path in paths:
        parts = path.split('.')
        if not path or any(not part for part in parts):
            raise ConfigError(
                f'Mapped attribute {_shown(path)} is not a dotted path such as '
                '"person.name.firstName".'
            )
        if parts[0] in _RESERVED_ROOTS:
            raise ConfigError(
                f'Mapped attribute {_shown(path)} is under {parts[0]}, which '
                'every export already carries in full.'
            )
        if path in seen:
            raise ConfigError(f'Mapped attribute {_shown(path)} is listed twice.')
        seen.add(path)
    for path in paths:
        for other in paths:
            if other != path and other.startswith(path + '.'):
                raise ConfigError(
                    f'Mapped attributes {_shown(path)} and {_shown(other)} '
                    'overlap: map one or the other.'
                )


def load_destination_config(path: str) -> DestinationConfig:
    """Reads and validates a destination config file (YAML, or JSON which is YAML too).

    Raises:
      ConfigError: the file is missing, unreadable, not YAML/JSON, or not a valid config.
    """
    if not os.path.exists(path):
        raise ConfigError(f'Destination config {path!r} does not exist.')
    if not os.path.isfile(path):  # a directory, a FIFO (whose read would wait forever)
        raise ConfigError(f'Destination config {path!r} is not a regular file.')
    size = os.path.getsize(path)
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(
            f'Destination config {path!r} is {size:,} bytes; a config is at most '
            f'{MAX_CONFIG_BYTES:,}.'
        )
    try:
        with open(path, encoding='utf-8') as handle:
            text = handle.read(MAX_CONFIG_BYTES + 1)
        if path.endswith('.json'):
            data = json.loads(text)
        else:
            data = yaml.load(text, Loader=_NoAliasLoader)  # a safe loader, without aliases
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError, RecursionError) as err:
        reason = (str(err).splitlines() or [''])[0] or type(err).__name__
        if isinstance(err, RecursionError):
            reason = 'it is nested too deeply'
        raise ConfigError(f'Destination config {path!r} cannot be read: {reason[:200]}.') from err
    return DestinationConfig.from_dict(data, origin=f'Destination config {path!r}')


def parse_as_of(text: str, flag: str = '--as_of') -> str:
    """Validates an as-of time in the form `YYYY-MM-DDTHH:MM:SSZ` and returns it."""
    if not isinstance(text, str) or not _AS_OF_PATTERN.match(text):
        raise ConfigError(
            f'{flag} {_shown(text)} is not a UTC time of the form '
            'YYYY-MM-DDTHH:MM:SSZ (ASCII digits).'
        )
    try:
        datetime.datetime.strptime(text, '%Y-%m-%dT%H:%M:%SZ')
    except ValueError as err:
        raise ConfigError(f'{flag} {_shown(text)} is not a real date and time.') from err
    return text
