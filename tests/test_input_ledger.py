"""The input ledger: records read are reconciled against the files before anything is written."""

import gzip
import os

import fastavro
import pytest

from beam_kinesis import snapshot
from beam_kinesis.ledger import InputLedgerError, count_file_records, reconcile
from beam_kinesis.snapshot_files import convert_snapshot
from pipelines import export_profiles
from tests.testdata import TESTDATA_PAIR

TESTDATA = os.path.join(os.path.dirname(__file__), os.pardir, 'testdata')


def data(name):
    return os.path.normpath(os.path.join(TESTDATA, name))


def test_independent_counts_in_every_format(tmp_path):
    lines = open(data('current.jsonl'), encoding='utf-8').read().splitlines()
    (tmp_path / 'c.jsonl').write_text('\n'.join(lines[:5]) + '\n\n  \n', encoding='utf-8')
    with gzip.open(tmp_path / 'c.jsonl.gz', 'wt', encoding='utf-8') as handle:
        handle.write('\n'.join(lines) + '\n')
    assert count_file_records(str(tmp_path / 'c.jsonl'), 'jsonl') == 5  # blank lines skipped
    assert count_file_records(str(tmp_path / 'c.jsonl.gz'), 'jsonl') == len(lines)
    for fmt in ('avro', 'parquet'):
        path = str(tmp_path / f'c.{fmt}')
        convert_snapshot(data('current.jsonl'), path)
        assert count_file_records(path, fmt) == len(lines)
    with open(tmp_path / 'c.avro', 'rb') as handle:  # counted from block headers
        assert sum(block.num_records for block in fastavro.block_reader(handle)) == len(lines)


def ledger(**slot):
    entry = {
        'snapshot': 'current',
        'records': 10,
        'unreadable': 0,
        'invalid': 0,
        'keyed': 10,
        'broken': False,
        'reads': 1,
        'expected': 10,
        'count_error': None,
    }
    entry.update(slot)
    return {'files': {('current', 'f.jsonl'): entry}, 'joined': {'current': entry['keyed']}}


def test_reconcile_balances_and_totals():
    assert reconcile(ledger(), ('current',)) == {
        'current': {'files': 1, 'records': 10, 'keyed': 10}
    }
    assert (
        reconcile(ledger(records=8, unreadable=2, keyed=8), ('current',))['current']['keyed'] == 8
    )


@pytest.mark.parametrize(
    'slot,joined,message',
    [
        (
            {'records': 9, 'keyed': 9},
            None,
            'the job read 9 records (including unreadable ones) but the file holds 10',
        ),
        ({'reads': 2}, None, 'was read 2 times'),
        ({'reads': 0}, None, 'was read 0 times'),
        ({'count_error': 'EOFError: cut', 'expected': None}, None, 'could not be counted'),
        ({}, 7, '10 profiles were keyed at the read but 7 reached the join'),
    ],
)
def test_reconcile_refuses_with_both_counts(slot, joined, message):
    merged = ledger(**slot)
    if joined is not None:
        merged['joined']['current'] = joined
    with pytest.raises(InputLedgerError, match=message.replace('(', r'\(').replace(')', r'\)')):
        reconcile(merged, ('current',))


def test_reconcile_refuses_changes_lost_between_the_classification_and_the_formatting():
    merged = ledger()
    merged['cases'] = {
        'classified_segment_change': 10,
        'classified_deletion': 2,
        'exported_segment_change': 9,
        'exported_deletion': 2,
    }
    with pytest.raises(
        InputLedgerError,
        match='12 profiles were classified for export but 11 reached the formatting',
    ):
        reconcile(merged, ('current',))
    merged['cases']['dead_letters_format'] = 1  # a change whose record could not be made
    assert reconcile(merged, ('current',))['current']['keyed'] == 10


def test_a_broken_file_is_left_to_its_dead_letter():
    assert reconcile(
        ledger(
            records=4, keyed=4, unreadable=1, broken=True, expected=None, count_error='EOFError'
        ),
        ('current',),
    )


def test_job_refuses_to_write_when_records_go_missing(tmp_path, monkeypatch, capsys):
    """A reader that silently loses the last record of a file (as Beam's multi_processing
    mode was seen to) makes the job stop before writing anything."""
    real = snapshot._read_jsonl

    def lossy(path, wanted, **options):
        records = list(real(path, wanted, **options))
        # The first read loses the file's last record; the read again of some lines does not.
        yield from records[:-1] if options.get('positions') is None else records

    monkeypatch.setattr(snapshot, '_read_jsonl', lossy)
    out = tmp_path / 'out'
    status = export_profiles.run(
        [
            *TESTDATA_PAIR,
            '--output',
            str(out),
            '--dead_letter',
            str(out / 'dead'),
        ]
    )
    err = capsys.readouterr().err
    assert status == export_profiles.EXIT_INPUT_MISMATCH
    assert 'input ledger does not balance' in err
    assert 'current.jsonl: the job read 33 records' in err and 'the file holds 34' in err
    assert 'previous.jsonl: the job read 34 records' in err and 'the file holds 35' in err
    written = [name for _, _, names in os.walk(out) for name in names]
    assert written == []


def test_a_ledger_failure_buried_in_a_worker_traceback_still_says_why():
    """multi_processing wraps the worker's error in its traceback; measured here at 1M
    profiles, where Beam lost 21% of the previous snapshot between read and join."""
    wrapped = RuntimeError(
        'Traceback (most recent call last):\\n  File "ledger.py", line 139, in reconcile\\n'
        'beam_kinesis.ledger.InputLedgerError: The input ledger does not balance, so nothing '
        'was written: the previous snapshot: 1000000 profiles were keyed at the read but '
        "790209 reached the join [while running 'InputLedger/Reconcile']\\n\\n\" instruction"
    )
    assert export_profiles._failure_sentence(wrapped) == (
        'The input ledger does not balance, so nothing was written: the previous snapshot: '
        '1000000 profiles were keyed at the read but 790209 reached the join'
    )
    assert export_profiles._LEDGER_MESSAGE in str(wrapped)


def test_a_snapshot_diffed_against_itself_balances(tmp_path, capsys):
    current = data('current.jsonl')
    out = tmp_path / 'out'
    status = export_profiles.run(
        [
            '--current',
            current,
            '--previous',
            current,
            '--destination_config',
            data('destination.yaml'),
            '--output',
            str(out),
            '--dead_letter',
            str(out / 'dead'),
            '--as_of',
            '2024-06-01T00:00:00Z',
        ]
    )
    assert status == export_profiles.EXIT_OK, capsys.readouterr().err
    assert 'Exported 0 profiles' in capsys.readouterr().out
