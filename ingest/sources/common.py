"""What every event source shares: the parse result, the record helpers, the error type.

Parsing is pure and synchronous: bytes in, a :class:`ParseResult` out, no I/O. A source
module (``minio.py``, ``aws.py``, ``ceph.py``, ``b2.py``) only knows its own wire shape and
key encoding (see PROTOCOLS.md, "S3 event notifications"); turning results into scan
requests, filtering and dedupe happen in :mod:`ingest.intake`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote_plus

from pipeline.errors import PictguardError
from pipeline.events import ObjectRef, StoreKind

log = logging.getLogger(__name__)

# Dead-letter reason for a payload a parser failed on (a bug, never the sender's fault).
INTERNAL_ERROR = "internal_error"


class ShapeError(PictguardError, ValueError):
    """A payload (or one record in it) is not in any shape this source sends.

    ``reason`` is a short machine-readable tag for the dead-letter record; the message says
    what was wrong, without the payload bytes.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class EventError:
    """Why (part of) a payload could not be turned into scan requests."""

    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class ObjectEvent:
    """One object-created notification, decoded: the object and how to recognise repeats.

    ``sequencer`` is set only where it orders writes to one key (AWS, MinIO); ``event_id``
    only where it names one event across redeliveries (Ceph, B2).
    """

    bucket: str
    key: str
    size: int | None = None
    etag: str | None = None
    version_id: str | None = None
    sequencer: str | None = None
    event_id: str | None = None
    content_type: str | None = None
    event_name: str = ""
    store: StoreKind = StoreKind.S3

    def ref(self) -> ObjectRef:
        """The object as the rest of the pipeline names it."""
        return ObjectRef(
            store=self.store,
            bucket=self.bucket,
            key=self.key,
            version_id=self.version_id,
            etag=self.etag,
            size=self.size,
        )


@dataclass(frozen=True, slots=True)
class Removal:
    """An object-removed notification: never scanned, but it ends the key's dedupe entries."""

    bucket: str
    key: str


@dataclass(slots=True)
class ParseResult:
    """Everything one payload said.

    A payload may carry good records next to a bad one: ``events`` holds the good ones and
    ``error`` the first problem, so the good ones are still scanned and the payload is
    dead-lettered for the rest.
    """

    events: list[ObjectEvent] = field(default_factory=list)
    removals: list[Removal] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    error: EventError | None = None

    def fail(self, exc: ShapeError) -> None:
        if self.error is None:
            self.error = EventError(exc.reason, exc.detail)

    def merge(self, other: ParseResult) -> None:
        self.events.extend(other.events)
        self.removals.extend(other.removals)
        self.ignored.extend(other.ignored)
        if other.error is not None and self.error is None:
            self.error = other.error


class Normalizer(Protocol):
    """Turns one payload of one source into a :class:`ParseResult`; never raises."""

    name: str

    def parse(self, body: bytes, *, message_key: bytes | None = None) -> ParseResult: ...


# ---------------------------------------------------------------------------------------
# helpers shared by the S3-style (``Records[]``) sources


def load_json(body: bytes) -> Any:
    """The payload as JSON, or :class:`ShapeError` ``not_json``."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ShapeError("not_json", f"payload is not JSON ({exc.__class__.__name__})") from None


def require_dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ShapeError("unknown_shape", f"{where} is {type(value).__name__}, expected an object")
    return value


def shown(value: object, limit: int = 64) -> str:
    """A sender-controlled value as it may appear in a log line or dead-letter reason."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _encodable(event: ObjectEvent) -> bool:
    try:
        fields = (event.bucket, event.key, event.etag, event.version_id, event.event_id)
        for value in (*fields, event.sequencer, event.content_type):
            if value is not None:
                value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def drop_lone_surrogates(result: ParseResult) -> None:
    """Turn events with lone surrogates into an error.

    JSON can spell them (``"\\ud800"``) but no topic, key or URL can hold them. Only a
    ``\\u`` escape in the payload can produce one, so callers check just those payloads.
    """
    bad = [e for e in result.events if not _encodable(e)]
    if bad:
        result.events = [e for e in result.events if _encodable(e)]
        result.fail(ShapeError("invalid_record", "a name or tag is not valid Unicode"))


def require_str(mapping: Mapping[str, Any], name: str, where: str) -> str:
    value = mapping.get(name)
    if not isinstance(value, str) or not value:
        raise ShapeError("invalid_record", f"{where}.{name} is missing or not a non-empty string")
    return value


def optional_str(mapping: Mapping[str, Any], *names: str) -> str | None:
    """The first of ``names`` holding a non-empty string (Ceph spells ``etag`` two ways)."""
    for name in names:
        value = mapping.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def parse_size(value: Any, where: str) -> int | None:
    """An object size sent as a number or (Ceph) a decimal string."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ShapeError("invalid_record", f"{where} is a boolean, expected a size")
    if isinstance(value, int):
        size = value
    elif isinstance(value, float) and value.is_integer():
        size = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        size = int(value.strip())
    else:
        raise ShapeError("invalid_record", f"{where} is not a whole number of bytes")
    if size < 0:
        raise ShapeError("invalid_record", f"{where} is negative")
    return size


def clean_etag(value: str | None) -> str | None:
    """ETags arrive with and without quotes; the pipeline keeps them bare."""
    if value is None:
        return None
    value = value.strip().strip('"')
    return value or None


def decode_form_key(raw: str, where: str) -> str:
    """Keys escaped as form values (AWS, MinIO): ``+`` is a space, ``%XX`` a byte."""
    if "%" not in raw:
        return raw.replace("+", " ")
    try:
        return unquote_plus(raw, errors="strict")
    except UnicodeDecodeError:
        raise ShapeError("invalid_record", f"{where} is not UTF-8 once decoded") from None


def raw_key(raw: str, where: str) -> str:
    """Keys sent as they are (Ceph, B2)."""
    return raw


KeyDecoder = Callable[[str, str], str]


def event_kind(name: str) -> str:
    """``ObjectCreated:Put`` from ``s3:ObjectCreated:Put``, ``ObjectCreated:Put`` alike."""
    return name[3:] if name.startswith("s3:") else name


# ObjectCreated events that change metadata only (MinIO): the bytes were scanned when written.
METADATA_ONLY = frozenset(
    {
        "ObjectCreated:PutRetention",
        "ObjectCreated:PutLegalHold",
        "ObjectCreated:PutTagging",
        "ObjectCreated:DeleteTagging",
    }
)


def parse_s3_record(
    record: Any,
    where: str,
    *,
    decode_key: KeyDecoder,
    ordered_sequencer: bool,
    use_event_id: bool,
    result: ParseResult,
) -> None:
    """Add one AWS-format record (``eventName``, ``s3.bucket.name``, ``s3.object``) to ``result``.

    Raises :class:`ShapeError` if the record is not one; the caller decides whether the rest of
    the payload still counts.
    """
    rec = require_dict(record, where)
    name = require_str(rec, "eventName", where)
    kind = event_kind(name)
    s3 = require_dict(rec.get("s3"), f"{where}.s3")
    bucket = require_str(require_dict(s3.get("bucket"), f"{where}.s3.bucket"), "name", where)
    obj = require_dict(s3.get("object"), f"{where}.s3.object")
    key = decode_key(require_str(obj, "key", f"{where}.s3.object"), f"{where}.s3.object.key")
    if kind.startswith("ObjectRemoved:"):
        result.removals.append(Removal(bucket, key))
        return
    if not kind.startswith("ObjectCreated:"):
        result.ignored.append(f"event {shown(name)} does not create an object")
        return
    if kind in METADATA_ONLY:
        result.ignored.append(f"event {name} changes metadata only")
        return
    if key.endswith("/"):
        result.ignored.append("folder marker")
        return
    content_type = optional_str(obj, "contentType")
    if content_type is None:
        user_meta = obj.get("userMetadata")
        if isinstance(user_meta, dict):
            content_type = optional_str(user_meta, "content-type", "Content-Type")
    event_id = optional_str(rec, "eventId") if use_event_id else None
    result.events.append(
        ObjectEvent(
            bucket=bucket,
            key=key,
            size=parse_size(obj.get("size"), f"{where}.s3.object.size"),
            etag=clean_etag(optional_str(obj, "eTag", "etag")),
            version_id=optional_str(obj, "versionId"),
            sequencer=optional_str(obj, "sequencer") if ordered_sequencer else None,
            event_id=event_id,
            content_type=content_type,
            event_name=name,
        )
    )


def parse_records(
    records: Any,
    where: str,
    *,
    decode_key: KeyDecoder,
    ordered_sequencer: bool,
    use_event_id: bool,
) -> ParseResult:
    """Every record of a ``Records`` list; a bad record spoils only itself."""
    result = ParseResult()
    if not isinstance(records, list):
        result.fail(ShapeError("unknown_shape", f"{where} is not a list"))
        return result
    if not records:
        result.fail(ShapeError("unknown_shape", f"{where} is empty"))
        return result
    for i, record in enumerate(records):
        try:
            parse_s3_record(
                record,
                f"{where}[{i}]",
                decode_key=decode_key,
                ordered_sequencer=ordered_sequencer,
                use_event_id=use_event_id,
                result=result,
            )
        except ShapeError as exc:
            result.fail(exc)
    return result


def guarded(parse: Callable[[bytes], ParseResult], body: bytes) -> ParseResult:
    """Run ``parse`` and turn a :class:`ShapeError` into an error result."""
    try:
        result = parse(body)
    except ShapeError as exc:
        result = ParseResult()
        result.fail(exc)
        return result
    except RecursionError:
        # json.loads of deeply nested input: hostile or broken, either way not an event.
        result = ParseResult()
        result.fail(ShapeError("not_json", "payload nests too deeply"))
        return result
    except Exception as exc:
        # A parser bug must cost one dead letter, not the stage; the traceback is for us.
        log.exception("parser failed on a payload (a pictguard bug; payload dead-lettered)")
        result = ParseResult()
        result.fail(ShapeError(INTERNAL_ERROR, f"parser failed: {exc.__class__.__name__}"))
        return result
    if b"\\u" in body:
        drop_lone_surrogates(result)
    return result
