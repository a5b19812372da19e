"""beam-kinesis: snapshot diffs of profiles, exported like AEP's Amazon Kinesis destination.

The transforms a pipeline composes, in the order of the data: `ReadSnapshot` ->
`DetectChanges` -> `FormatExport` -> `WriteToKinesis` (configured by a `KinesisConfig`;
`check_stream` before the run), with `WriteDeadLetters` for what could not be exported.
The testing kit is `beam_kinesis.testing`. Nothing here imports moto.
"""

from beam_kinesis.config import ConfigError, DestinationConfig, load_destination_config
from beam_kinesis.deadletter import WriteDeadLetters, dead_letter
from beam_kinesis.engine import Change, DetectChanges, ProfileView, classify_change
from beam_kinesis.export import FormatExport, encode_record, to_export_record
from beam_kinesis.kinesis import (
    KinesisConfig,
    KinesisStreamError,
    KinesisWriteError,
    WriteToKinesis,
    check_stream,
    partition_key_for,
)
from beam_kinesis.snapshot import ReadSnapshot, SnapshotError, SnapshotRecord

__all__ = [
    'Change',
    'ConfigError',
    'DestinationConfig',
    'DetectChanges',
    'FormatExport',
    'KinesisConfig',
    'KinesisStreamError',
    'KinesisWriteError',
    'ProfileView',
    'ReadSnapshot',
    'SnapshotError',
    'SnapshotRecord',
    'WriteDeadLetters',
    'WriteToKinesis',
    'check_stream',
    'classify_change',
    'dead_letter',
    'encode_record',
    'load_destination_config',
    'partition_key_for',
    'to_export_record',
]
