"""The sink writing as an assumed role: STS from moto's server, Kinesis from kinesalite.

botocore resolves STS's endpoint from `AWS_ENDPOINT_URL_STS` (its standard per-service
endpoint setting), here moto's server on 127.0.0.1; Kinesis requests go through the fault
proxy, which notes the access key id that signed each one.
"""

from __future__ import annotations

import datetime

import apache_beam as beam
import botocore.credentials
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from botocore.credentials import RefreshableCredentials
from dateutil.tz import tzlocal
from moto.server import ThreadedMotoServer
from moto.sts.models import sts_backends

from beam_kinesis import kinesis
from beam_kinesis.kinesis import KinesisConfig, KinesisStreamError, WriteToKinesis, check_stream
from pipelines import export_profiles
from tests.fault_proxy import fault_proxy  # noqa: F401 - fixture
from tests.kinesis_servers import REGION, free_port, read_back, target_args
from tests.test_job_kinesis import golden
from tests.testdata import TESTDATA_PAIR

ACCOUNT = '123456789012'
ROLE = f'arn:aws:iam::{ACCOUNT}:role/profile-exporter'
SOURCE_KEY_ID = 'AKIASOURCEROLETEST01'
SOURCE_SECRET = 'source-secret-never-print'
EXTERNAL_ID = 'external-id-0042'


@pytest.fixture(scope='module')
def sts_server():
    port = free_port()
    server = ThreadedMotoServer(ip_address='127.0.0.1', port=port, verbose=False)
    server.start()
    yield f'http://127.0.0.1:{port}'
    server.stop()


@pytest.fixture
def sts(sts_server, monkeypatch):
    monkeypatch.setenv('AWS_ENDPOINT_URL_STS', sts_server)
    kinesis._SESSIONS.clear()  # role sessions are cached per process
    yield sts_server
    kinesis._SESSIONS.clear()


def assumed_roles() -> list:
    return list(sts_backends[ACCOUNT]['aws'].assumed_roles)


def role_config(endpoint: str, stream: str, **options) -> KinesisConfig:
    return KinesisConfig(
        stream,
        region=REGION,
        endpoint_url=endpoint,
        aws_access_key_id=SOURCE_KEY_ID,
        aws_secret_access_key=SOURCE_SECRET,
        aws_role_arn=ROLE,
        aws_external_id=EXTERNAL_ID,
        aws_role_session_name='beam-test',
        **options,
    )


def test_the_sink_and_the_stream_check_write_as_the_assumed_role(
    sts, kinesalite, fault_proxy, tmp_path
):  # noqa: F811
    stream = kinesalite.create_stream(2)
    before = len(assumed_roles())
    cfg = role_config(fault_proxy.endpoint_url, stream)
    elements = [(f'p-{i}', f'{{"n":{i}}}'.encode()) for i in range(40)]

    check_stream(cfg)
    pipeline = TestPipeline(runner='FnApiRunner')
    letters = pipeline | beam.Create(elements) | WriteToKinesis(cfg)
    assert_that(letters, equal_to([]))
    pipeline.run().wait_until_finish()

    records, _ = read_back(kinesalite, stream)
    assert sorted(record for shard in records.values() for record in shard) == sorted(elements)
    new = assumed_roles()[before:]
    assert new, 'no AssumeRole reached STS'
    assert {(role.role_arn, role.session_name, role.external_id) for role in new} == {
        (ROLE, 'beam-test', EXTERNAL_ID)
    }
    # Every Kinesis request was signed with the role's temporary key, never the source key.
    signed = set(fault_proxy.key_ids)
    assert signed and signed <= {role.access_key_id for role in new}
    assert all(key_id.startswith('ASIA') for key_id in signed)


def test_role_credentials_are_refreshed_before_they_expire(sts, monkeypatch):
    cfg = role_config('http://127.0.0.1:1', 'profiles')
    credentials = kinesis._session_for(cfg).get_credentials()
    assert isinstance(credentials, RefreshableCredentials)
    first = credentials.get_frozen_credentials().access_key
    assert credentials.get_frozen_credentials().access_key == first  # cached while fresh

    # 46 minutes on, moto's one-hour credentials are inside botocore's 15-minute refresh
    # window. Only botocore's clock moves: the one its credentials and its assume-role cache
    # read.
    def later():
        return datetime.datetime.now(tzlocal()) + datetime.timedelta(minutes=46)

    monkeypatch.setattr(botocore.credentials, '_local_now', later)
    credentials._time_fetcher = later
    second = credentials.get_frozen_credentials().access_key
    assert second != first
    assert {role.access_key_id for role in assumed_roles()} >= {first, second}
    # Clients of one worker share the role session: a second client assumes nothing new.
    assert kinesis._session_for(cfg) is kinesis._session_for(cfg)


def test_a_role_that_cannot_be_assumed_stops_the_job_at_start_in_one_sentence(monkeypatch):
    kinesis._SESSIONS.clear()
    monkeypatch.setenv('AWS_ENDPOINT_URL_STS', f'http://127.0.0.1:{free_port()}')  # no STS
    cfg = role_config(
        'http://127.0.0.1:1', 'profiles', request_attempts=1, connect_timeout_seconds=1
    )
    with pytest.raises(KinesisStreamError) as raised:
        check_stream(cfg)
    kinesis._SESSIONS.clear()
    assert str(raised.value).startswith(
        f'The role {ROLE} could not be assumed through STS (EndpointConnectionError'
    )
    assert SOURCE_SECRET not in str(raised.value) and SOURCE_KEY_ID not in str(raised.value)


def test_the_job_writes_as_the_role_and_never_shows_the_external_id(
    sts, kinesalite, fault_proxy, tmp_path, capsys, caplog
):  # noqa: F811
    stream = kinesalite.create_stream(2)
    argv = [
        *TESTDATA_PAIR,
        '--dead_letter',
        str(tmp_path / 'dead'),
        *target_args(fault_proxy.endpoint_url, stream, SOURCE_SECRET, access_key_id=SOURCE_KEY_ID),
        '--aws_role_arn',
        ROLE,
        '--aws_external_id',
        EXTERNAL_ID,
        '--aws_role_session_name',
        'beam-job',
    ]

    assert export_profiles.run(argv) == export_profiles.EXIT_OK

    records, _ = read_back(kinesalite, stream)
    assert sorted(data for shard in records.values() for _, data in shard) == golden()
    assert all(key_id.startswith('ASIA') for key_id in fault_proxy.key_ids)
    assert assumed_roles()[-1].session_name == 'beam-job'
    shown = capsys.readouterr()
    for value in (EXTERNAL_ID, SOURCE_SECRET, SOURCE_KEY_ID):
        assert value not in shown.out + shown.err + caplog.text
    _, beam_argv = export_profiles._split_credentials(argv)
    assert EXTERNAL_ID not in ' '.join(beam_argv)
