"""Destination config loading and validation: clear, one-sentence errors."""

import json

import pytest

from beam_kinesis.config import ConfigError, DestinationConfig, load_destination_config, parse_as_of


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding='utf-8')
    return str(path)


def test_yaml_config_with_namespaced_segments(tmp_path):
    config = load_destination_config(
        write(
            tmp_path,
            'd.yaml',
            (
                'name: n\ndescription: d\nstream: s\nregion: eu-west-1\n'
                'segments: [seg-a, "partner:seg-p"]\nattributes: [person.name.firstName]\n'
            ),
        )
    )
    assert config.segments == (('ups', 'seg-a'), ('partner', 'seg-p'))
    assert config.attribute_paths == (('person', 'name', 'firstName'),)
    assert (config.stream, config.region, config.name) == ('s', 'eu-west-1', 'n')


def test_json_config(tmp_path):
    path = write(tmp_path, 'd.json', json.dumps({'stream': 's', 'segments': ['a']}))
    config = load_destination_config(path)
    assert config.attributes == () and config.region is None


@pytest.mark.parametrize(
    'text,message',
    [
        ('segments: [a]\n', 'needs "stream"'),
        ('stream: s\n', 'needs "segments"'),
        ('stream: s\nsegments: []\n', 'maps no segments'),
        ('stream: ""\nsegments: [a]\n', 'non-empty "stream"'),
        ('stream: s\nsegments: [a]\nattributes: [segmentMembership.ups]\n', 'already carries'),
        ('stream: s\nsegments: [a]\nattributes: [person..name]\n', 'not a dotted path'),
        ('stream: s\nsegments: [a]\nattributes: [person.name, person.name.firstName]\n', 'overlap'),
        ('stream: s\nsegments: [a]\nattributes: [a.b, a.b]\n', 'listed twice'),
        ('stream: s\nsegments: [a]\nstreams: x\n', 'unknown keys'),
        ('stream: s\nsegments: [":x"]\n', 'needs both a namespace and an id'),
        ('- just\n- a list\n', 'must be a mapping'),
        ('stream: [unclosed\n', 'cannot be read'),
    ],
)
def test_invalid_configs_fail_with_one_sentence(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_destination_config(write(tmp_path, 'd.yaml', text))
    assert '\n' not in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match='does not exist'):
        load_destination_config(str(tmp_path / 'nope.yaml'))


def test_as_of_must_be_utc_seconds():
    assert parse_as_of('2024-06-01T00:00:00Z') == '2024-06-01T00:00:00Z'
    for bad in ('2024-06-01', '2024-06-01T00:00:00+00:00', '2024-13-01T00:00:00Z'):
        with pytest.raises(ConfigError, match='--as_of'):
            parse_as_of(bad)


def test_direct_construction_is_validated():
    with pytest.raises(ConfigError):
        DestinationConfig(stream='s', segments=())
