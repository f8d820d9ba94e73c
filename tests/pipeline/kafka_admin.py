"""Reading topic configs back from the broker (DescribeConfigs), for the topic tests."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType


async def topic_configs(bootstrap: str, topics: list[str]) -> dict[str, dict[str, str]]:
    """topic -> config name -> value, as the broker describes them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in topics]
        )
    finally:
        await admin.close()
    out: dict[str, dict[str, str]] = {}
    for response in responses:
        for code, message, _type, name, entries, *_ in response.resources:
            assert code == 0, f"describing {name}: {message}"
            out[name] = {entry[0]: entry[1] for entry in entries}
    return out


async def partition_count(bootstrap: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return len(described["partitions"])


async def create_topic(bootstrap: str, name: str, configs: dict[str, str]) -> None:
    """One topic with exactly these configs (as an older pictguard or an admin made it)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1, topic_configs=configs)])
    finally:
        await admin.close()
