"""The destination's configuration: which stream, which segments and attributes are mapped."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any

import yaml

__all__ = ['ConfigError', 'DestinationConfig', 'load_destination_config', 'parse_as_of',
           'DEFAULT_NAMESPACE']

# Segments given without a namespace belong to the profile store's own namespace.
DEFAULT_NAMESPACE = 'ups'

# The two top-level objects every export carries; they cannot also be mapped attributes.
_RESERVED_ROOTS = ('segmentMembership', 'identityMap')

# ASCII digits only: `\d` and `int()` take full-width and other Unicode digits too.
_AS_OF_PATTERN = re.compile(r'^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$')
_KNOWN_KEYS = {'name', 'description', 'stream', 'region', 'segments', 'attributes'}

# A destination config is a page of text; a bigger file is a mistake, not a config.
MAX_CONFIG_BYTES = 1024 * 1024
# How much of a bad value an error sentence quotes.
_SHOWN_CHARS = 80


def _shown(value: Any) -> str:
    """`repr(value)` of a scalar, cut short, or the name of a container's type: an error
    sentence stays one short line."""
    text = repr(value) if isinstance(value, (str, int, float, bool)) or value is None else (
        f'a {type(value).__name__}')
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + '...'


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases: a few hundred bytes of nested aliases expand
    to gigabytes once anything walks the value, and a config has no use for them."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f'found the alias *{event.anchor[:_SHOWN_CHARS]}; aliases are not '
                'allowed in a destination config', event.start_mark)
        return super().compose_node(parent, index)


class ConfigError(ValueError):
    """A destination configuration or job option that cannot be used, in one sentence."""


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
    """
    stream: str
    segments: tuple[tuple[str, str], ...]
    attributes: tuple[str, ...] = ()
    region: str | None = None
    name: str = ''
    description: str = ''

    def __post_init__(self):
        if not isinstance(self.stream, str) or not self.stream.strip():
            raise ConfigError('The destination needs a non-empty "stream" (the Kinesis stream '
                              'name).')
        if not self.segments:
            raise ConfigError('The destination maps no segments: give at least one in '
                              '"segments".')
        for namespace, segment_id in self.segments:
            if not namespace or not segment_id:
                raise ConfigError(f'Mapped segment {_shown(f"{namespace}:{segment_id}")} '
                                  'needs both a namespace and an id.')
        _check_attribute_paths(self.attributes)

    @classmethod
    def from_dict(cls, data: Any, origin: str = 'the destination config') -> DestinationConfig:
        """Builds a config from a parsed YAML/JSON mapping, naming `origin` in errors."""
        if not isinstance(data, dict):
            raise ConfigError(f'{origin} must be a mapping with "stream", "segments" and '
                              f'"attributes", not {type(data).__name__}.')
        unknown = sorted(_shown(key) for key in set(data) - _KNOWN_KEYS)
        if unknown:
            shown = ', '.join(unknown[:5]) + (f' and {len(unknown) - 5} more'
                                              if len(unknown) > 5 else '')
            raise ConfigError(f'{origin} has unknown keys {shown}; expected some of '
                              f'{sorted(_KNOWN_KEYS)}.')
        for key in ('name', 'description', 'stream', 'region'):
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f'{origin} has a "{key}" that is {_shown(value)}, not a '
                                  'string (quote it if it looks like a number or a date).')
        segments = data.get('segments')
        if not isinstance(segments, list) or not all(isinstance(s, str) for s in segments):
            raise ConfigError(f'{origin} needs "segments": a list of segment ids '
                              '(namespace "ups" unless given as "ns:id"), each a string.')
        attributes = data.get('attributes', [])
        if attributes is None:
            attributes = []
        if not isinstance(attributes, list) or not all(isinstance(a, str) for a in attributes):
            raise ConfigError(f'{origin} needs "attributes" to be a list of dotted XDM paths, '
                              'each a string.')
        region = data.get('region')
        stream = data.get('stream')
        if not isinstance(stream, str):
            raise ConfigError(f'{origin} needs "stream": the name of an existing Kinesis '
                              'stream.')
        return cls(stream=stream,
                   segments=tuple(parse_segment(s) for s in segments),
                   attributes=tuple(attributes),
                   region=region or None,
                   name=data.get('name') or '',
                   description=data.get('description') or '')

    @property
    def attribute_paths(self) -> tuple[tuple[str, ...], ...]:
        """The mapped attributes split into their path components."""
        return tuple(tuple(path.split('.')) for path in self.attributes)

    def replace(self, **changes) -> DestinationConfig:
        """A copy with some fields changed (for flags that override the file)."""
        return dataclasses.replace(self, **changes)


def parse_segment(text: str) -> tuple[str, str]:
    """`'seg-a'` -> `('ups', 'seg-a')`; `'partner:seg-a'` -> `('partner', 'seg-a')`."""
    text = text.strip()
    if ':' in text:
        namespace, segment_id = text.split(':', 1)
        return namespace.strip(), segment_id.strip()
    return DEFAULT_NAMESPACE, text


def _check_attribute_paths(paths: tuple[str, ...]) -> None:
    seen = set()
    for path in paths:
        parts = path.split('.')
        if not path or any(not part for part in parts):
            raise ConfigError(f'Mapped attribute {_shown(path)} is not a dotted path such as '
                              '"person.name.firstName".')
        if parts[0] in _RESERVED_ROOTS:
            raise ConfigError(f'Mapped attribute {_shown(path)} is under {parts[0]}, which '
                              'every export already carries in full.')
        if path in seen:
            raise ConfigError(f'Mapped attribute {_shown(path)} is listed twice.')
        seen.add(path)
    for path in paths:
        for other in paths:
            if other != path and other.startswith(path + '.'):
                raise ConfigError(f'Mapped attributes {_shown(path)} and {_shown(other)} '
                                  'overlap: map one or the other.')


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
        raise ConfigError(f'Destination config {path!r} is {size:,} bytes; a config is at most '
                          f'{MAX_CONFIG_BYTES:,}.')
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
        raise ConfigError(f'Destination config {path!r} cannot be read: '
                          f'{reason[:200]}.') from err
    return DestinationConfig.from_dict(data, origin=f'Destination config {path!r}')


def parse_as_of(text: str) -> str:
    """Validates an as-of time in the form `YYYY-MM-DDTHH:MM:SSZ` and returns it."""
    import datetime
    if not isinstance(text, str) or not _AS_OF_PATTERN.match(text):
        raise ConfigError(f'--as_of {_shown(text)} is not a UTC time of the form '
                          'YYYY-MM-DDTHH:MM:SSZ (ASCII digits).')
    try:
        datetime.datetime.strptime(text, '%Y-%m-%dT%H:%M:%SZ')
    except ValueError as err:
        raise ConfigError(f'--as_of {_shown(text)} is not a real date and time.') from err
    return text
