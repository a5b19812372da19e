"""beam-kinesis: snapshot diffs of profiles, exported like AEP's Amazon Kinesis destination."""

from beam_kinesis.config import ConfigError, DestinationConfig, load_destination_config
from beam_kinesis.deadletter import WriteDeadLetters, dead_letter
from beam_kinesis.engine import Change, DetectChanges, ProfileView, classify_change
from beam_kinesis.export import FormatExport, encode_record, to_export_record
from beam_kinesis.snapshot import ReadSnapshot, SnapshotError, SnapshotRecord

__all__ = ['Change', 'ConfigError', 'DestinationConfig', 'DetectChanges', 'FormatExport',
           'ProfileView', 'ReadSnapshot', 'SnapshotError', 'SnapshotRecord',
           'WriteDeadLetters', 'classify_change', 'dead_letter', 'encode_record',
           'load_destination_config', 'to_export_record']
