"""The shard-limited endpoint (tests/shard_limited_proxy.py) in front of kinesalite: per-shard
records and bytes quotas by the MD5 of the partition key, throttled entries answered per
record, only admitted records stored."""

from __future__ import annotations

import itertools

import pytest

from beam_kinesis.shards import ShardMap
from tests.kinesis_servers import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, client_for, shard_of
from tests.shard_limited_proxy import ShardLimitedProxy, shard_limited_proxy  # noqa: F401

THROTTLED = 'ProvisionedThroughputExceededException'


class _Clock:
    """A clock the test steps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def stepped(kinesalite):
    """A proxy limited to 100 records/s and 10,000 bytes/s per shard on a stepped clock."""
    clock = _Clock()
    proxy = ShardLimitedProxy(
        kinesalite.endpoint_url,
        kinesalite.client,
        records_per_second=100,
        bytes_per_second=10_000,
        clock=clock,
    ).start()
    yield proxy, clock
    proxy.stop()


@pytest.fixture
def kinesis_limits(kinesalite):
    """A proxy with Kinesis's own limits (1,000 records/s, 1 MiB/s) on a stopped clock."""
    proxy = ShardLimitedProxy(kinesalite.endpoint_url, kinesalite.client, clock=_Clock()).start()
    yield proxy
    proxy.stop()


def _keys_on(shards: list[dict], shard_id: str, count: int) -> list[str]:
    """`count` partition keys that Kinesis routes to `shard_id` (chosen with the test's own
    MD5 routing of kinesis_servers, not the library's)."""
    keys = (f'profile-{n}' for n in itertools.count())
    return list(itertools.islice((key for key in keys if shard_of(shards, key) == shard_id), count))


def _put(client, stream: str, records: list[tuple[str, bytes]]) -> list[dict]:
    return client.put_records(
        StreamName=stream, Records=[{'PartitionKey': key, 'Data': data} for key, data in records]
    )['Records']


def _stored(kinesalite, stream: str) -> dict[str, list[str]]:
    from tests.kinesis_servers import read_back

    landed, _ = read_back(kinesalite, stream)
    return {shard: sorted(key for key, _ in records) for shard, records in landed.items()}


def test_a_shard_over_its_records_quota_fails_those_entries_and_stores_the_rest(
    kinesalite, kinesis_limits
):
    stream = kinesalite.create_stream(2)
    client = client_for(kinesis_limits.endpoint_url)
    shards = kinesalite.client().list_shards(StreamName=stream)['Shards']
    hot, cold = shards[0]['ShardId'], shards[1]['ShardId']
    # 1,200 records for the hot shard (a quiet shard takes 1,000 at once), 100 for the
    # other, interleaved in one request each of at most 500.
    hot_keys, cold_keys = _keys_on(shards, hot, 1200), _keys_on(shards, cold, 100)
    records = [(key, b'x') for key in hot_keys] + [(key, b'y') for key in cold_keys]
    records = sorted(records, key=lambda record: hash(record[0]) % 97)
    results = []
    for start in range(0, len(records), 500):
        results += _put(client, stream, records[start : start + 500])
    client.close()
    failed = [key for (key, _), result in zip(records, results) if result.get('ErrorCode')]
    assert all(result['ErrorCode'] == THROTTLED for result in results if 'ErrorCode' in result)
    assert all(hot in result['ErrorMessage'] for result in results if 'ErrorCode' in result)
    # The clock stands still: exactly the hot shard's last 200 records are over.
    assert len(failed) == 200 and set(failed) <= set(hot_keys)
    assert failed == [key for key, _ in records if key in set(hot_keys)][1000:]
    stored = _stored(kinesalite, stream)
    assert stored.get(cold) == sorted(cold_keys)
    assert stored.get(hot) == sorted(set(hot_keys) - set(failed))
    assert kinesis_limits.totals() == {'requests': 3, 'entries': 1300, 'admitted': 1100}


def test_bytes_quota_counts_data_and_partition_key(kinesalite, stepped):
    proxy, _ = stepped
    stream = kinesalite.create_stream(1)
    client = client_for(proxy.endpoint_url)
    key = 'k' * 10
    # 10,000 bytes of quota: four records of 2,490 + 10 bytes fit (10,000), the fifth not.
    results = _put(client, stream, [(key, b'a' * 2490)] * 5)
    client.close()
    assert [result.get('ErrorCode') for result in results] == [None] * 4 + [THROTTLED]


def test_quota_refills_at_the_rate_and_holds_at_most_one_second(kinesalite, stepped):
    proxy, clock = stepped
    stream = kinesalite.create_stream(1)
    client = client_for(proxy.endpoint_url)

    def admitted(count: int) -> int:
        results = []
        for start in range(0, count, 500):
            results += _put(
                client, stream, [(f'p{n}', b'z') for n in range(start, min(count, start + 500))]
            )
        return sum(1 for result in results if not result.get('ErrorCode'))

    assert admitted(150) == 100  # a quiet shard: one second of quota (100 records)
    clock.now += 0.25
    assert admitted(50) == 25  # a quarter of a second refills 25
    clock.now += 10
    assert admitted(500) == 100  # ten quiet seconds still save only one
    client.close()


def test_single_put_record_over_the_quota_is_a_throttling_error(kinesalite, stepped):
    import boto3
    from botocore.config import Config

    proxy, _ = stepped
    stream = kinesalite.create_stream(1)
    client = boto3.session.Session().client(
        'kinesis',
        endpoint_url=proxy.endpoint_url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        config=Config(retries={'total_max_attempts': 1}),
    )
    client.put_record(StreamName=stream, PartitionKey='one', Data=b'q' * 9990)
    with pytest.raises(client.exceptions.ProvisionedThroughputExceededException):
        client.put_record(StreamName=stream, PartitionKey='two', Data=b'q' * 100)
    client.close()


def test_shard_map_is_the_streams_own(kinesalite, shard_limited_proxy):  # noqa: F811
    stream = kinesalite.create_stream(3)
    shards = kinesalite.client().list_shards(StreamName=stream)['Shards']
    # A new stream of kinesalite has the even split the plan assumes without a stream.
    assert ShardMap(shards) == ShardMap.even(3)
    client = client_for(shard_limited_proxy.endpoint_url)
    _put(client, stream, [(f'key-{n}', b'v') for n in range(30)])
    client.close()
    limits = shard_limited_proxy._limits_of(stream, shard_limited_proxy.schedule)
    assert all(limits.shard_of(f'key-{n}') == shard_of(shards, f'key-{n}') for n in range(30))
    assert shard_limited_proxy.send_seconds() > 0
