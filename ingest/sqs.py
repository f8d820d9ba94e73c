"""AWS SQS poller: S3 notifications delivered directly, through SNS, or through EventBridge.

Long-polls the queue, hands each batch of message bodies to one
:class:`~ingest.intake.Intake` call (scan requests and dead letters produced together), and
deletes the messages only after the bus acknowledged that. A message whose produce failed is
left alone: SQS shows it again after its visibility timeout (give the queue a redrive policy
so a message that keeps failing ends in a dead-letter queue there too).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from ingest.dedupe import DedupeWindow
from ingest.intake import Intake, Payload
from ingest.settings import IngestConfig
from ingest.sources import AwsNormalizer
from pipeline.bus.base import Bus, BusError
from pipeline.events import Source
from pipeline.retry import Stopped, retrying
from pipeline.settings import SettingsError
from pipeline.storage.locations import Scope

log = logging.getLogger(__name__)

# Back-off after a failed poll: 1 s, doubling up to 30 s.
_RETRY_FIRST_S = 1.0
_RETRY_MAX_S = 30.0


class SqsConfigError(SettingsError):
    """The queue cannot be used as configured; the message says what to fix."""


def _queue_name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


class SqsPoller:
    """Receives, normalises and deletes messages of one queue."""

    def __init__(
        self,
        settings: IngestConfig,
        bus: Bus,
        client: Any,
        *,
        dedupe: DedupeWindow | None = None,
        scope: Scope | None = None,
    ) -> None:
        sqs = settings.ingest.sqs
        if not sqs.queue_url:
            raise SqsConfigError(
                "ingest.sqs.queue_url is not set (PICTGUARD_INGEST__SQS__QUEUE_URL, e.g. "
                "https://sqs.eu-west-1.amazonaws.com/123456789012/pictguard)"
            )
        self.settings = settings
        self.queue_url = sqs.queue_url
        self.origin = f"sqs:{_queue_name(sqs.queue_url)}"
        self.client = client
        self.intake = Intake(
            settings,
            bus,
            normalizer=AwsNormalizer(),
            source=Source.EVENT,
            dedupe=dedupe,
            scope=scope,
        )

    async def check(self) -> None:
        """Fail early, with what to fix, if the queue is missing or not readable."""
        try:
            await self.client.get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=["VisibilityTimeout"]
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            raise SqsConfigError(
                f"SQS queue {self.queue_url} cannot be read ({code}) — check "
                "ingest.sqs.queue_url, the region and that the credentials may "
                "sqs:ReceiveMessage, sqs:DeleteMessage and sqs:GetQueueAttributes"
            ) from exc
        except (BotoCoreError, OSError) as exc:
            raise SqsConfigError(
                f"cannot reach SQS for {self.queue_url}: {exc} — check the network and "
                "ingest.sqs.region / endpoint_url"
            ) from exc

    async def poll_once(self) -> int:
        """One receive–produce–delete round; the number of messages handled."""
        sqs = self.settings.ingest.sqs
        kwargs: dict[str, Any] = {
            "QueueUrl": self.queue_url,
            "MaxNumberOfMessages": sqs.max_messages,
            "WaitTimeSeconds": sqs.wait_time_s,
        }
        if sqs.visibility_timeout_s is not None:
            kwargs["VisibilityTimeout"] = sqs.visibility_timeout_s
        response = await self.client.receive_message(**kwargs)
        messages = response.get("Messages") or []
        if not messages:
            return 0
        payloads = [
            Payload(
                body=str(m.get("Body", "")).encode("utf-8", errors="replace"),
                origin=self.origin,
                message_key=str(m.get("MessageId", "")).encode() or None,
            )
            for m in messages
        ]
        await self.intake.submit(payloads)  # raises BusError: keep the messages
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
        ]
        result = await self.client.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        for failed in result.get("Failed") or []:
            # The message comes back after its visibility timeout; dedupe makes it a no-op.
            log.warning(
                "could not delete SQS message %s: %s",
                failed.get("Id"),
                failed.get("Message") or failed.get("Code"),
            )
        return len(messages)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop``; transient SQS or bus failures back off and retry."""

        def failed(exc: BaseException, attempt: int, delay: float) -> None:
            log.error("SQS poll of %s failed (%s); retrying in %.0fs", self.queue_url, exc, delay)

        def transient(exc: BaseException) -> bool:
            return isinstance(exc, (BusError, ClientError, BotoCoreError, OSError))

        while not stop.is_set():
            try:
                async for attempt in retrying(
                    transient,
                    first_s=_RETRY_FIRST_S,
                    max_s=_RETRY_MAX_S,
                    stop=stop,
                    on_retry=failed,
                ):
                    with attempt:
                        await self._poll_unless_stopped(stop)
            except Stopped:
                return

    async def _poll_unless_stopped(self, stop: asyncio.Event) -> None:
        """One poll, abandoned when ``stop`` comes first: messages received but not handled
        reappear after their visibility timeout."""
        polling = asyncio.ensure_future(self.poll_once())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({polling, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not polling.done():
            polling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await polling
            return
        polling.result()


def sqs_client_kwargs(settings: IngestConfig) -> dict[str, Any]:
    """aiobotocore ``create_client`` arguments; unset credentials fall back to ``s3``'s."""
    sqs, s3 = settings.ingest.sqs, settings.s3
    secret = sqs.secret_access_key.get_secret_value() if sqs.secret_access_key else None
    token = sqs.session_token.get_secret_value() if sqs.session_token else None
    if sqs.access_key_id is None:
        key_id, secret, token = s3.access_key_id, s3.secret_access_key, s3.session_token
    else:
        key_id = sqs.access_key_id
    return {
        "service_name": "sqs",
        "region_name": sqs.region or s3.region,
        "endpoint_url": sqs.endpoint_url,
        "aws_access_key_id": key_id,
        "aws_secret_access_key": secret,
        "aws_session_token": token,
        # Long polls hold the connection up to wait_time_s; the read timeout must exceed it.
        "config": AioConfig(
            read_timeout=sqs.wait_time_s + 15,
            connect_timeout=s3.connect_timeout_s,
            retries={"total_max_attempts": s3.max_attempts, "mode": "standard"},
        ),
    }


async def run_sqs(
    settings: IngestConfig,
    bus: Bus,
    stop: asyncio.Event,
    *,
    dedupe: DedupeWindow | None = None,
    started: asyncio.Event | None = None,
    scope: Scope | None = None,
) -> None:
    """Poll ``ingest.sqs.queue_url`` until ``stop``; raises :class:`SqsConfigError` early."""
    session = get_session()
    async with session.create_client(**sqs_client_kwargs(settings)) as client:
        poller = SqsPoller(settings, bus, client, dedupe=dedupe, scope=scope)
        await poller.check()
        log.info("polling SQS queue %s", poller.queue_url, extra={"queue": poller.queue_url})
        if started is not None:
            started.set()
        await poller.run(stop)
