"""Kafka bus on aiokafka: any Kafka-protocol broker (Apache Kafka, Redpanda, MSK, Tansu)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
)
from aiokafka.helpers import create_ssl_context

from pipeline.bus.base import Bus, BusError, BusUnavailable, Consumer, Message, Outgoing
from pipeline.retry import retrying
from pipeline.settings import KafkaSettings
from pipeline.topics import REPLY_TOPIC, TOPICS, TopicSpec, spec_for
from pipeline.tracing import producing

log = logging.getLogger(__name__)
T = TypeVar("T")

# Backoff between start-up attempts while ``kafka.wait_for_broker_s`` lasts.
_FIRST_RETRY_S = 0.5
_MAX_RETRY_S = 10.0


def client_config(settings: KafkaSettings) -> dict[str, Any]:
    """aiokafka keyword arguments for the connection and security settings."""
    config: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers.split(","),
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol.value,
    }
    if settings.security_protocol.value.startswith("SASL"):
        if not settings.sasl_mechanism:
            raise BusError(
                "kafka.security_protocol is SASL but kafka.sasl_mechanism is not set "
                "(PICTGUARD_KAFKA__SASL_MECHANISM: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"
            )
        config["sasl_mechanism"] = settings.sasl_mechanism
        config["sasl_plain_username"] = settings.sasl_username
        config["sasl_plain_password"] = settings.sasl_password
    if settings.security_protocol.value.endswith("SSL"):
        context: ssl.SSLContext = create_ssl_context(
            cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None,
            certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
            keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
        )
        context.check_hostname = settings.ssl_check_hostname
        config["ssl_context"] = context
    return config


def _transient(exc: KafkaError) -> bool:
    # Timeouts and lost connections pass with the outage; a refused record does not.
    return bool(exc.retriable) or isinstance(exc, KafkaTimeoutError)


def _unreachable(settings: KafkaSettings, exc: BaseException) -> BusError:
    return BusError(
        f"cannot reach Kafka at {settings.bootstrap_servers} ({exc.__class__.__name__}) — "
        "check PICTGUARD_KAFKA__BOOTSTRAP_SERVERS and that the broker is running"
    )


async def _start_when_reachable(
    settings: KafkaSettings, what: str, attempt: Callable[[], Awaitable[T]]
) -> T:
    """``attempt()`` (which starts one client), retried for ``kafka.wait_for_broker_s``.

    Each failed attempt is logged once, saying what waits for which broker; once the time
    is up (at the first failure with the default 0) the error says what to check.
    """

    def waiting(exc: BaseException, tries: int, pause: float) -> None:
        log.warning(
            "waiting for Kafka at %s to start the %s (attempt %d: %s); next try in %.1f s, "
            "giving up after %.0f s in all (kafka.wait_for_broker_s)",
            settings.bootstrap_servers,
            what,
            tries,
            exc.__class__.__name__,
            pause,
            settings.wait_for_broker_s,
        )

    try:
        async for tried in retrying(
            lambda exc: isinstance(exc, (KafkaError, OSError, TimeoutError)),
            first_s=_FIRST_RETRY_S,
            max_s=_MAX_RETRY_S,
            give_up_after_s=settings.wait_for_broker_s,
            on_retry=waiting,
        ):
            with tried:
                return await attempt()
    except (KafkaError, OSError, TimeoutError) as exc:
        raise _unreachable(settings, exc) from exc
    raise AssertionError("unreachable: retrying either returns or raises")


class KafkaBus(Bus):
    """Produces with ``acks=all`` and waits for every acknowledgement before returning."""

    system = "kafka"

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self._producer = await _start_when_reachable(
            self.settings, "producer", self._start_producer
        )

    async def _start_producer(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            **client_config(self.settings),
            acks="all",
            linger_ms=self.settings.linger_ms,
            max_request_size=self.settings.max_request_size,
            request_timeout_ms=int(self.settings.connect_timeout_s * 1000) + 20000,
        )
        try:
            await asyncio.wait_for(producer.start(), self.settings.connect_timeout_s)
        except BaseException:
            await _quiet_stop(producer)
            raise
        return producer

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def produce_many(self, records: Sequence[Outgoing]) -> None:
        if self._producer is None:
            raise BusError("KafkaBus used before start()")
        # PRODUCER spans (when tracing is on) last until the broker acknowledged.
        with producing(records, self.system) as traced:
            # send() itself raises when the broker has been gone for a while (no metadata).
            try:
                futures = [
                    await self._producer.send(
                        r.topic,
                        value=r.value,
                        key=r.key,
                        headers=[(k, v.encode()) for k, v in r.headers.items()],
                    )
                    for r in traced
                ]
                await asyncio.gather(*futures)
            except KafkaError as exc:
                error = BusUnavailable if _transient(exc) else BusError
                raise error(f"Kafka did not acknowledge a record: {exc!r}") from exc

    def consumer(
        self,
        topics: Sequence[str],
        group_id: str | None,
        *,
        from_beginning: bool = False,
        low_latency: bool = False,
    ) -> Consumer:
        return KafkaConsumer(self.settings, list(topics), group_id, low_latency=low_latency)

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        await create_topics(self.settings, topics)

    async def drop_topics(self, topics: Sequence[str]) -> None:
        admin = AIOKafkaAdminClient(
            **client_config(self.settings),
            request_timeout_ms=int(self.settings.connect_timeout_s * 1000),
        )
        try:
            await asyncio.wait_for(admin.start(), self.settings.connect_timeout_s)
            await admin.delete_topics(list(topics))
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("could not delete topics %s: %s", ", ".join(topics), exc)
        finally:
            await _quiet_close(admin)


async def create_topics(settings: KafkaSettings, names: Sequence[str] | None = None) -> list[str]:
    """Create pictguard's topics (all of them by default); return those newly created."""
    prefix = settings.topic_prefix
    wanted = list(names) if names is not None else [prefix + t.name for t in TOPICS]

    async def start_admin() -> AIOKafkaAdminClient:
        admin = AIOKafkaAdminClient(
            **client_config(settings), request_timeout_ms=int(settings.connect_timeout_s * 1000)
        )
        try:
            await asyncio.wait_for(admin.start(), settings.connect_timeout_s)
        except BaseException:
            await _quiet_close(admin)
            raise
        return admin

    def spec_of(name: str) -> TopicSpec | None:
        return spec_for(name[len(prefix) :]) if name.startswith(prefix) else None

    admin = await _start_when_reachable(settings, "admin client", start_admin)
    try:
        existing = set(await admin.list_topics())
        new = []
        for name in wanted:
            if name in existing:
                continue
            spec = spec_of(name)
            new.append(
                NewTopic(
                    name=name,
                    num_partitions=1 if spec is REPLY_TOPIC else settings.partitions,
                    replication_factor=settings.replication_factor,
                    topic_configs=topic_configs(settings, spec),
                )
            )
        if new:
            # Another process may have created one meanwhile.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
        specs = {name: spec_of(name) for name in wanted if name in existing}
        older = {name: spec for name, spec in specs.items() if spec and spec.short_lived}
        if older:
            await _warn_long_lived(admin, settings, older)
        return [t.name for t in new]
    finally:
        await _quiet_close(admin)


def topic_configs(settings: KafkaSettings, spec: TopicSpec | None) -> dict[str, str]:
    """The configs a new topic is created with."""
    if spec is not None and spec.compacted:
        return {"cleanup.policy": "compact"}
    configs = {"retention.ms": str(settings.retention_ms)}
    if spec is not None:
        configs.update(spec.configs)
    return configs


async def long_lived_configs(
    admin: AIOKafkaAdminClient, wanted: dict[str, TopicSpec]
) -> dict[str, dict[str, tuple[str | None, str]]]:
    """Existing short-lived topics that keep records longer than pictguard asks for.

    Topics made before pictguard set ``segment.ms`` (or by hand) keep uploads until the
    broker's default 7-day roll; creation skips existing topics, so only a look at their
    configs tells. Returns topic -> config -> (value on the broker or None, wanted value)
    for each time limit (retention.ms, segment.ms) that is missing or longer than wanted.
    A topic whose configs cannot be read (no permission) is left out.
    """
    names = list(wanted)
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
    responses = await admin.describe_configs(resources)
    have: dict[str, dict[str, str]] = {}
    for response in responses:
        for resource in response.resources:
            code, _message, _type, name, entries = resource[:5]
            if code == 0:
                have[name] = {entry[0]: entry[1] for entry in entries if entry[1] is not None}
    found: dict[str, dict[str, tuple[str | None, str]]] = {}
    for name in names:
        if name not in have:
            continue
        spec = wanted[name]
        for key in ("retention.ms", "segment.ms"):
            want = spec.configs.get(key)
            value = have.get(name, {}).get(key)
            if want is not None and (value is None or _longer(value, want)):
                found.setdefault(name, {})[key] = (value, want)
    return found


def _longer(value: str, want: str) -> bool:
    try:
        number = int(value)
    except ValueError:
        return True
    return number < 0 or number > int(want)  # -1: forever


async def _warn_long_lived(
    admin: AIOKafkaAdminClient, settings: KafkaSettings, wanted: dict[str, TopicSpec]
) -> None:
    """Log, per existing short-lived topic, how to make the broker drop its records in time."""
    try:
        found = await long_lived_configs(admin, wanted)
    except (KafkaError, OSError, TimeoutError) as exc:
        # e.g. no DescribeConfigs permission: the topics work, only this check is skipped.
        log.info("could not read the configs of %s: %s", ", ".join(wanted), exc)
        return
    for name, configs in found.items():
        limits = ("retention.ms", "segment.ms", "segment.bytes")
        fix = ",".join(f"{key}={wanted[name].configs[key]}" for key in limits)
        now = ", ".join(f"{key}={value or 'broker default'}" for key, (value, _) in configs.items())
        log.warning(
            "topic %s keeps its records longer than pictguard asks (%s): uploads may stay on "
            "the broker for days. Set the configs with: kafka-configs.sh --bootstrap-server %s "
            "--alter --entity-type topics --entity-name %s --add-config %s",
            name,
            now,
            settings.bootstrap_servers,
            name,
            fix,
            extra={"topic": name},
        )


class KafkaConsumer(Consumer):
    """Manual commits only: offsets move after the handler's output is acknowledged."""

    def __init__(
        self,
        settings: KafkaSettings,
        topics: list[str],
        group_id: str | None,
        *,
        low_latency: bool = False,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.group_id = group_id
        self.low_latency = low_latency
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        what = f"consumer of {', '.join(self.topics)}"
        self._consumer = await _start_when_reachable(self.settings, what, self._start_consumer)

    async def _start_consumer(self) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(
            **client_config(self.settings),
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.settings.max_poll_records,
            max_partition_fetch_bytes=self.settings.max_request_size,
            fetch_max_bytes=max(self.settings.max_request_size, 52428800),
            fetch_max_wait_ms=(
                self.settings.low_latency_fetch_wait_ms if self.low_latency else 500
            ),
            **self.settings.consumer_overrides,
        )
        try:
            await asyncio.wait_for(consumer.start(), self.settings.connect_timeout_s)
            # A topic created a moment ago (a reply topic) must be in the metadata before the
            # group assigns partitions, or the assignment leaves it out until the next refresh.
            partitions = await self._partitions(consumer)
            if self.group_id is None:
                # Tables read every partition from the start, without a group.
                consumer.assign(partitions)
                await consumer.seek_to_beginning(*partitions)
            else:
                consumer.subscribe(self.topics)
        except BaseException:
            await _quiet_stop(consumer)
            raise
        return consumer

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        partitions: list[TopicPartition] = []
        for topic in self.topics:
            parts = consumer.partitions_for_topic(topic)
            for _ in range(50):
                if parts:
                    break
                await consumer._client.force_metadata_update()
                parts = consumer.partitions_for_topic(topic)
                if not parts:
                    await asyncio.sleep(0.1)
            partitions += [TopicPartition(topic, p) for p in sorted(parts or ())]
        return partitions

    async def stop(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()

    async def getmany(self, timeout_ms: int, max_records: int) -> list[Message]:
        if self._consumer is None:
            raise BusError("consumer used before start()")
        try:
            data = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        except KafkaError as exc:
            if not _transient(exc):
                raise
            topics = ", ".join(self.topics)
            raise BusUnavailable(f"reading {topics} from Kafka failed: {exc!r}") from exc
        out: list[Message] = []
        for tp, records in data.items():
            for r in records:
                out.append(
                    Message(
                        topic=tp.topic,
                        value=r.value if r.value is not None else b"",
                        key=r.key,
                        headers={k: v.decode(errors="replace") for k, v in (r.headers or ())},
                        partition=tp.partition,
                        offset=r.offset,
                        timestamp_ms=r.timestamp,
                    )
                )
        return out

    async def commit(self, messages: Sequence[Message]) -> None:
        if self._consumer is None or self.group_id is None or not messages:
            return
        offsets: dict[TopicPartition, int] = {}
        for m in messages:
            tp = TopicPartition(m.topic, m.partition)
            offsets[tp] = max(offsets.get(tp, 0), m.offset + 1)
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The partition moved to another member during a rebalance; it will redeliver
            # these messages, and every consumer downstream is idempotent.
            log.warning("commit skipped after rebalance: %s", exc)
        except KafkaError as exc:
            # The broker is unreachable: the next commit covers these offsets, or they are
            # redelivered after a restart, again to idempotent consumers.
            log.warning("commit of group %s failed, continuing: %r", self.group_id, exc)

    async def end_offsets(self) -> dict[tuple[str, int], int]:
        """Current end offset per assigned partition (tables use it to know when loaded)."""
        if self._consumer is None:
            raise BusError("consumer used before start()")
        assigned = list(self._consumer.assignment())
        ends = await self._consumer.end_offsets(assigned)
        return {(tp.topic, tp.partition): off for tp, off in ends.items()}

    async def lag(self) -> dict[tuple[str, int], int]:
        """Messages behind the end per assigned partition (for metrics)."""
        if self._consumer is None:
            return {}
        ends = await self.end_offsets()
        out = {}
        for (topic, part), end in ends.items():
            pos = await self._consumer.position(TopicPartition(topic, part))
            out[(topic, part)] = max(0, end - pos)
        return out


async def _quiet_stop(client: AIOKafkaProducer | AIOKafkaConsumer) -> None:
    # Already failing: the first error is the useful one.
    with contextlib.suppress(Exception):
        await client.stop()


async def _quiet_close(admin: AIOKafkaAdminClient) -> None:
    with contextlib.suppress(Exception):
        await admin.close()
