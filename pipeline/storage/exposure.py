"""Is a bucket/prefix or a folder readable by the public?

Quarantined images must not stay reachable, so the quarantine location is checked before
pictguard moves anything there (and again while it runs). :func:`exposure` answers for
one location with an :class:`Exposure`:

- ``private``: nothing the store reports lets an anonymous reader get an object;
- ``public``: a bucket policy, ACL or folder mode lets anyone read (the findings say what);
- ``unknown``: the store supports the checks but did not answer them (access denied, an
  unreadable policy): exposure cannot be established, which counts as not private;
- ``unsupported``: the store implements none of the checks (Garage, some MinIO setups):
  nothing can be said; the caller warns and the admin checks by hand.

Bucket policies are evaluated for the prefix itself, the way S3 evaluates them for an
anonymous ``GetObject``: actions and ``NotAction`` matched case-insensitively with ``*``
and ``?`` wildcards; principals ``"*"``, ``{"AWS": "*"}`` and ``{"AWS": ["*", …]}`` (and
``NotPrincipal``); resources and ``NotResource`` with wildcards against the keys under the
prefix; an explicit ``Deny`` that covers every key of the prefix wins. Conditions are read
conservatively: an ``Allow`` with a ``Condition`` still counts as public unless one of its
conditions clearly restricts who the caller is or where it comes from (see
:data:`RESTRICTING_KEYS`); a ``Deny`` counts only if it is unconditional or its condition
denies everyone outside such a restriction. ``aws:Referer`` restricts nothing (any client
sends any Referer).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pipeline.storage.base import ObjectStore, StorageError
from pipeline.storage.s3 import S3Store

# The anonymous read this module looks for; GetObjectVersion reads the same bytes.
READ_ACTIONS = ("s3:GetObject", "s3:GetObjectVersion")
# Condition keys that, under a positive operator and without a "*" value, limit an Allow
# to known callers or networks.
RESTRICTING_KEYS = frozenset(
    {
        "aws:sourceip",
        "aws:sourcevpc",
        "aws:sourcevpce",
        "aws:sourcearn",
        "aws:sourceaccount",
        "aws:sourceowner",
        "aws:sourceorgid",
        "aws:sourceorgpaths",
        "aws:principalarn",
        "aws:principalaccount",
        "aws:principalorgid",
        "aws:principalorgpaths",
        "aws:userid",
        "aws:username",
        "aws:principalservicename",
        "s3:dataaccesspointarn",
        "s3:dataaccesspointaccount",
    }
)
_POSITIVE_OPS = frozenset(
    {"stringequals", "stringequalsignorecase", "stringlike", "arnequals", "arnlike", "ipaddress"}
)
_NEGATIVE_OPS = frozenset(
    {
        "stringnotequals",
        "stringnotequalsignorecase",
        "stringnotlike",
        "arnnotequals",
        "arnnotlike",
        "notipaddress",
    }
)
_ALL_USERS = {
    "http://acs.amazonaws.com/groups/global/AllUsers",
    "http://acs.amazonaws.com/groups/global/AuthenticatedUsers",
}
_UNSUPPORTED = {"NotImplemented", "XNotImplemented", "501", "MethodNotAllowed", "405"}
_NOT_CONFIGURED = {
    "NoSuchBucketPolicy",
    "NoSuchPublicAccessBlockConfiguration",
    "NoSuchPolicy",
    "NoSuchBucketPolicyStatus",
}
_BLOCK_FLAGS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")


class Exposure(StrEnum):
    PRIVATE = "private"
    PUBLIC = "public"
    UNKNOWN = "unknown"
    UNSUPPORTED = "unsupported"


@dataclass(frozen=True, slots=True)
class ExposureReport:
    """What :func:`exposure` found for one location."""

    location: str
    exposure: Exposure
    findings: tuple[str, ...] = ()
    fix: str = ""

    @property
    def private(self) -> bool:
        return self.exposure is Exposure.PRIVATE

    @property
    def refuses(self) -> bool:
        """Whether nothing may be put there: public, or not established on a store that
        supports the checks."""
        return self.exposure in (Exposure.PUBLIC, Exposure.UNKNOWN)

    def message(self) -> str:
        """One line for the admin: where, what was found, what to do."""
        what = "; ".join(self.findings)
        if self.exposure is Exposure.PUBLIC:
            head = f"{self.location} is publicly readable ({what})"
        elif self.exposure is Exposure.UNKNOWN:
            head = f"cannot tell whether {self.location} is publicly readable ({what})"
        elif self.exposure is Exposure.UNSUPPORTED:
            head = f"{self.location}: the store cannot report public access ({what})"
        else:
            return f"{self.location} is private"
        return f"{head} — {self.fix}" if self.fix else head


async def exposure(store: ObjectStore, prefix: str) -> ExposureReport:
    """Whether objects under ``prefix`` of ``store`` are readable by the public.

    Raises :class:`StorageError` when the store cannot be reached at all.
    """
    if isinstance(store, S3Store):
        return await s3_exposure(store, prefix)
    return await asyncio.to_thread(folder_exposure, Path(store.location), prefix)


# -- folders -------------------------------------------------------------------------------


def folder_exposure(root: Path, prefix: str, *, create: bool = True) -> ExposureReport:
    """Whether other local users (a web server among them) can read the folder
    ``root/prefix``; with ``create`` a missing folder is made, private (mode 0700).

    Other users can read a file if they may enter the folder (``o+x``) and guess a name
    (quarantined keys are the original paths), or list it (``o+r``).
    """
    folder = root / prefix if prefix else root
    where = f"folder {folder}"
    if not folder.exists():
        if not create:
            return ExposureReport(where, Exposure.PRIVATE)
        folder.mkdir(parents=True, mode=0o700, exist_ok=True)
        folder.chmod(0o700)  # mkdir's mode is filtered by the umask
        return ExposureReport(where, Exposure.PRIVATE)
    try:
        mode = folder.stat().st_mode
    except OSError as exc:
        return ExposureReport(
            where, Exposure.UNKNOWN, (f"cannot stat it: {exc}",), f"check {folder} exists"
        )
    if not stat.S_ISDIR(mode):
        raise StorageError(f"{folder} is not a folder")
    if mode & (stat.S_IROTH | stat.S_IXOTH):
        return ExposureReport(
            where,
            Exposure.PUBLIC,
            (f"mode {stat.filemode(mode)}: other users may enter or list it",),
            f"run chmod o-rwx {folder}",
        )
    return ExposureReport(where, Exposure.PRIVATE)


# -- S3 --------------------------------------------------------------------------------


@dataclass
class _Answers:
    supported: int = 0
    unsupported: int = 0
    unknown: list[str] = field(default_factory=list)


async def s3_exposure(store: S3Store, prefix: str) -> ExposureReport:
    """Public access block, bucket policy (evaluated for ``prefix``) and bucket ACL."""
    client = await store.connection.client()
    bucket = store.location
    where = f"s3://{bucket}/{prefix}"
    answers = _Answers()

    async def call(name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await getattr(client, name)(Bucket=bucket)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _NOT_CONFIGURED:
                answers.supported += 1
            elif code in _UNSUPPORTED:
                answers.unsupported += 1
            elif code == "NoSuchBucket":
                raise store.connection.translate(exc, bucket) from None
            else:
                answers.unknown.append(f"{name}: {code or exc}")
            return None
        except (BotoCoreError, OSError) as exc:
            raise store.connection.translate(exc, bucket) from None
        answers.supported += 1
        return result

    block_answer = await call("get_public_access_block")
    flags = (block_answer or {}).get("PublicAccessBlockConfiguration", {})
    if all(flags.get(f) for f in _BLOCK_FLAGS):
        return ExposureReport(where, Exposure.PRIVATE)
    findings: list[str] = []
    policy_answer = await call("get_bucket_policy")
    if policy_answer is not None and not flags.get("RestrictPublicBuckets"):
        try:
            public = policy_allows_public_read(policy_answer.get("Policy", ""), bucket, prefix)
        except ValueError as exc:
            answers.unknown.append(f"bucket policy unreadable: {exc}")
        else:
            if public:
                findings.append("its bucket policy lets anyone read objects there")
    elif policy_answer is None and any(u.startswith("get_bucket_policy") for u in answers.unknown):
        # The policy text is not ours to read; S3's own verdict is the next best thing.
        status = await call("get_bucket_policy_status")
        if status is not None and status.get("PolicyStatus", {}).get("IsPublic"):
            findings.append("S3 reports its bucket policy as public")
    acl = await call("get_bucket_acl")
    if acl is not None and not flags.get("IgnorePublicAcls"):
        for grant in acl.get("Grants", []):
            grantee = grant.get("Grantee", {})
            permission = grant.get("Permission")
            if grantee.get("URI") in _ALL_USERS and permission in ("READ", "FULL_CONTROL"):
                group = str(grantee["URI"]).rsplit("/", 1)[-1]
                findings.append(f"its bucket ACL grants {permission} to {group}")
    fix = (
        f"make bucket '{bucket}' private: turn on its public access block (all four "
        "settings), or remove the public statements of its bucket policy and public ACL "
        "grants"
    )
    if findings:
        return ExposureReport(where, Exposure.PUBLIC, tuple(findings), fix)
    if answers.unknown:
        return ExposureReport(
            where,
            Exposure.UNKNOWN,
            tuple(answers.unknown),
            "let pictguard's credentials read the bucket's public access block, policy and "
            "ACL (s3:GetBucketPublicAccessBlock, s3:GetBucketPolicy, s3:GetBucketAcl), or "
            "use a bucket they can check",
        )
    if answers.supported == 0:
        return ExposureReport(
            where,
            Exposure.UNSUPPORTED,
            ("no public access block, bucket policy or ACL API",),
            "make sure the bucket is not served anonymously",
        )
    return ExposureReport(where, Exposure.PRIVATE)


# -- bucket policies -------------------------------------------------------------------


def policy_allows_public_read(text: str | Mapping[str, Any], bucket: str, prefix: str) -> bool:
    """Whether ``text`` (a bucket policy) lets an anonymous caller read some object under
    ``prefix`` of ``bucket``. Raises ``ValueError`` for a policy that is not JSON."""
    policy = json.loads(text) if isinstance(text, str) else text
    if not isinstance(policy, Mapping):
        raise ValueError("a policy is a JSON object")
    statements = policy.get("Statement", [])
    if isinstance(statements, Mapping):
        statements = [statements]
    target = f"arn:aws:s3:::{bucket}/{prefix}"
    allowed = denied = False
    for st in statements:
        if not isinstance(st, Mapping):
            continue
        effect = str(st.get("Effect", "")).lower()
        if not _anyone(st) or not _reads(st):
            continue
        if effect == "allow":
            if _resources_touch(st, target) and not _restricted(st.get("Condition")):
                allowed = True
        elif effect == "deny" and _resources_cover(st, target) and _denies_all(st.get("Condition")):
            denied = True
    return allowed and not denied


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _anyone(st: Mapping[str, Any]) -> bool:
    """Whether the statement applies to an anonymous caller."""
    if "NotPrincipal" in st:
        # "everyone except these": anonymous callers are among everyone.
        return True
    principal = st.get("Principal")
    if principal == "*":
        return True
    if isinstance(principal, Mapping):
        for name, value in principal.items():
            if str(name).lower() == "aws" and "*" in [str(v) for v in _as_list(value)]:
                return True
    return False


def _reads(st: Mapping[str, Any]) -> bool:
    """Whether the statement's actions include an object read."""
    if "NotAction" in st:
        excluded = [str(a) for a in _as_list(st["NotAction"])]
        return any(not any(_glob(p, a, fold=True) for p in excluded) for a in READ_ACTIONS)
    actions = [str(a) for a in _as_list(st.get("Action"))]
    return any(_glob(p, a, fold=True) for p in actions for a in READ_ACTIONS)


def _resources_touch(st: Mapping[str, Any], target: str) -> bool:
    """Whether the statement applies to at least one key under ``target``."""
    if "NotResource" in st:
        return not any(_covers(str(r), target) for r in _as_list(st["NotResource"]))
    return any(_touches(str(r), target) for r in _as_list(st.get("Resource")))


def _resources_cover(st: Mapping[str, Any], target: str) -> bool:
    """Whether the statement applies to every key under ``target``."""
    if "NotResource" in st:
        return not any(_touches(str(r), target) for r in _as_list(st["NotResource"]))
    return any(_covers(str(r), target) for r in _as_list(st.get("Resource")))


def _conditions(condition: Any) -> Iterable[tuple[str, str, list[str]]]:
    if not isinstance(condition, Mapping):
        return
    for op, body in condition.items():
        if not isinstance(body, Mapping):
            continue
        for key, value in body.items():
            yield str(op).lower(), str(key).lower(), [str(v) for v in _as_list(value)]


def _restricting(op: str, key: str, values: list[str], *, positive: bool) -> bool:
    """One condition that limits callers to known principals or networks."""
    if op.startswith("forallvalues:") or op.startswith("foranyvalue:"):
        op = op.split(":", 1)[1]
    if op.endswith("ifexists") or key not in RESTRICTING_KEYS or not values:
        return False  # IfExists passes when the key is absent, as it is for anonymous calls
    if op not in (_POSITIVE_OPS if positive else _NEGATIVE_OPS):
        return False
    if key == "aws:sourceip":
        return not any(_whole_internet(v) for v in values)
    return not any(v.strip() in ("*", "") for v in values)


def _restricted(condition: Any) -> bool:
    """Whether an Allow's conditions clearly narrow who may call (all must hold)."""
    return any(
        _restricting(op, key, values, positive=True) for op, key, values in _conditions(condition)
    )


def _denies_all(condition: Any) -> bool:
    """Whether a Deny applies to anonymous callers: unconditional, or "deny everyone who is
    not one of these" (a negative operator on a restricting key)."""
    found = list(_conditions(condition))
    if not found:
        return True
    return all(_restricting(op, key, values, positive=False) for op, key, values in found)


def _whole_internet(cidr: str) -> bool:
    try:
        net = ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError:
        return True  # unreadable: assume it opens everything
    return net.prefixlen == 0


@lru_cache(maxsize=256)
def _compile(pattern: str, fold: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(body, re.IGNORECASE | re.DOTALL if fold else re.DOTALL)


def _glob(pattern: str, text: str, *, fold: bool = False) -> bool:
    """IAM wildcard match: ``*`` any run, ``?`` one character."""
    return _compile(pattern, fold).fullmatch(text) is not None


def _states(pattern: str, text: str) -> set[int]:
    """Positions in ``pattern`` reachable after it consumed all of ``text``."""

    def close(states: set[int]) -> set[int]:
        out = set(states)
        todo = list(states)
        while todo:
            i = todo.pop()
            if i < len(pattern) and pattern[i] == "*" and i + 1 not in out:
                out.add(i + 1)
                todo.append(i + 1)
        return out

    states = close({0})
    for ch in text:
        nxt: set[int] = set()
        for i in states:
            if i < len(pattern):
                c = pattern[i]
                if c == "*":
                    nxt.add(i)
                elif c == "?" or c == ch:
                    nxt.add(i + 1)
        states = close(nxt)
        if not states:
            break
    return states


def _touches(pattern: str, target: str) -> bool:
    """Whether ``pattern`` matches some ARN that starts with ``target``."""
    return bool(_states(pattern, target))


def _covers(pattern: str, target: str) -> bool:
    """Whether ``pattern`` matches every ARN that starts with ``target``."""
    # Only a run of "*" left to match: any continuation of the target matches too.
    return any(i < len(pattern) and set(pattern[i:]) == {"*"} for i in _states(pattern, target))
