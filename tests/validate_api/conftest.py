"""Real API processes for the validate tests: `pictguard serve`, or `run api` over Kafka."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from tests.enforce.receivers import HttpReceiver, http_receiver
from tests.servers import Broker, free_port
from tests.validate_api.helpers import (
    Stack,
    base_config,
    kafka_config,
    start,
    wait_ready,
    warm_up,
)


@pytest.fixture(scope="module")
def notifications() -> Iterator[HttpReceiver]:
    """The webhook enforce notifies in the module's stacks."""
    with http_receiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def single(
    tmp_path_factory: pytest.TempPathFactory, notifications: HttpReceiver
) -> Iterator[Stack]:
    """`pictguard serve`: API, classify and enforce in one process."""
    tmp = tmp_path_factory.mktemp("serve")
    port = free_port()
    config = base_config(tmp, notifications.url, port=port)
    stack = Stack([f"http://127.0.0.1:{port}"], config, enforce_config=config)
    start(stack, ["serve"], config, tmp, "serve")
    wait_ready(stack)
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def kafka_stack(
    broker: Broker, tmp_path_factory: pytest.TempPathFactory, notifications: HttpReceiver
) -> Iterator[Stack]:
    """Two API replicas, one classify and one enforce, each its own process on Kafka."""
    tmp = tmp_path_factory.mktemp("kafka")
    prefix = f"v{os.getpid()}{int(time.time() * 1000) % 100000}."
    ports = [free_port(), free_port()]
    stack = Stack([f"http://127.0.0.1:{p}" for p in ports], {})
    for role in ("classify", "enforce"):
        cfg = kafka_config(tmp / role, broker, prefix, notifications.url)
        if role == "enforce":
            # Inline uploads only, no bucket; enforce on Kafka wants a quarantine location
            # named (not the per-pod default) before it starts a live run.
            cfg["enforce"]["quarantine"] = str(tmp / "quarantine")
        start(stack, ["run", role], cfg, tmp, role)
        if role == "enforce":
            stack.enforce_config = cfg
    for i, port in enumerate(ports):
        # Correctness over Kafka is what these tests check, not latency: a deadline far above
        # what a busy 2-core machine needs, so no answer becomes "timeout" under load.
        cfg = kafka_config(
            tmp / f"api{i}",
            broker,
            prefix,
            port=port,
            replica_id=f"replica-{i}",
            deadline_s=60,
            force_deadline=True,
        )
        start(stack, ["run", "api"], cfg, tmp, f"api{i}")
    stack.config = kafka_config(tmp, broker, prefix)
    wait_ready(stack)
    warm_up(stack)
    yield stack
    stack.stop()
