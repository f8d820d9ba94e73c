"""Write the settings part of helm/pictguard/values.schema.json from the settings model.

    .venv/bin/python docs/gen_helm_schema.py           # rewrite the schema in place
    .venv/bin/python docs/gen_helm_schema.py --check   # exit 1 if the committed file differs

What is generated (everything else in the schema is written by hand and kept as it is):

- ``config``: the combined ``Settings`` model, every section closed
  (``additionalProperties: false`` at every level), with the model's types, enums, minimums,
  maximums and descriptions. A misspelt key (``config.enforce.dryrun``) fails
  ``helm install`` / ``helm template`` instead of crash-looping the pods.
- Settings the chart owns (ports, the state dir, the storage backend, Kafka TLS paths, the
  replica id) and every secret are refused under ``config``: the ConfigMap is not the place
  for secrets. Each refusal's description says where the value goes instead.
- ``secrets.api.clients`` and ``secrets.notifyChannels``: the item schemas of
  ``api.clients`` and ``enforce.notify.channels``, so a secret's keys are checked too.

A secret field added to the model without a home under ``secrets`` stops this script (see
``SECRET_HOMES``); ``tests/helm/test_schema_generated.py`` regenerates the schema and
compares it with the committed file, so the model and the chart cannot drift apart.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The combined settings model: the one line to change if it moves.
from pictguard.settings import Settings  # noqa: E402

SCHEMA_FILE = ROOT / "helm" / "pictguard" / "values.schema.json"
GENERATOR = "docs/gen_helm_schema.py"

# Settings the chart writes itself; a value under `config` would be overwritten or break it.
CHART_OWNED: dict[str, str] = {
    "api.port": "The chart sets api.port from ports.api",
    "api.replica_id": "Left unset so that each API replica names its own reply topic",
    "ingest.webhook.enabled": "The chart turns the webhook receiver on (ingest role, single mode)",
    "ingest.webhook.port": "The chart sets ingest.webhook.port from ports.webhook",
    "metrics.port": "The chart sets metrics.port from ports.metrics",
    "storage.state_dir": "The chart sets storage.state_dir to its volume at /var/lib/pictguard",
    "storage.backend": "The chart picks it from `mode`: kafka (distributed) or sqlite (single)",
    "kafka.ssl_cafile": "Set kafkaTls.caSecret; the chart mounts it and sets ssl_cafile",
    "kafka.ssl_certfile": "Set kafkaTls.clientSecret; the chart mounts it and sets ssl_certfile",
    "kafka.ssl_keyfile": "Set kafkaTls.clientSecret; the chart mounts it and sets ssl_keyfile",
}

# Where each secret setting goes in the chart's values. Keys are the settings that hold a
# secret (SecretStr, repr=False, or a list of models with one); a few non-secret settings
# that belong beside their secret are listed too (the chart hands both to the same pods).
SECRET_HOMES: dict[str, str] = {
    "kafka.sasl_username": "secrets.kafka.saslUsername",
    "kafka.sasl_password": "secrets.kafka.saslPassword",
    "s3.access_key_id": "secrets.s3ReadOnly.accessKeyId / secrets.s3ReadWrite.accessKeyId",
    "s3.secret_access_key": "secrets.s3ReadOnly.secretAccessKey / "
    "secrets.s3ReadWrite.secretAccessKey",
    "s3.session_token": "secrets.s3ReadOnly.sessionToken / secrets.s3ReadWrite.sessionToken",
    "api.clients": "secrets.api.clients",
    "enforce.admin_token": "secrets.adminToken",
    "enforce.notify.channels": "secrets.notifyChannels",
    "enforce.review.reviewers": "secrets.reviewers",
    "ingest.webhook.minio_token": "secrets.webhooks.minioToken",
    "ingest.webhook.ceph_token": "secrets.webhooks.cephToken",
    "ingest.webhook.b2_secret": "secrets.webhooks.b2Secret",
    "ingest.sqs.secret_access_key": "secrets.env.PICTGUARD_INGEST__SQS__SECRET_ACCESS_KEY",
    "ingest.sqs.session_token": "secrets.env.PICTGUARD_INGEST__SQS__SESSION_TOKEN",
    "enforce.platform.pictrs.api_key": "secrets.env.PICTGUARD_ENFORCE__PLATFORM__PICTRS__API_KEY",
    "enforce.platform.lemmy.password": "secrets.env.PICTGUARD_ENFORCE__PLATFORM__LEMMY__PASSWORD",
    "enforce.platform.lemmy.jwt": "secrets.env.PICTGUARD_ENFORCE__PLATFORM__LEMMY__JWT",
    "enforce.platform.mastodon.token": "secrets.env.PICTGUARD_ENFORCE__PLATFORM__MASTODON__TOKEN",
    "classify.remote.workers": "secrets.env.PICTGUARD_CLASSIFY__REMOTE__WORKERS (JSON list)",
    "classify.worker.token": "secrets.env.PICTGUARD_CLASSIFY__WORKER__TOKEN",
    "classify.hma.token": "secrets.env.PICTGUARD_CLASSIFY__HMA__TOKEN",
}
NOT_SECRET_BUT_WITH_ONE = {"kafka.sasl_username", "s3.access_key_id"}

# Where the generated item schemas go among the hand-written `secrets` values.
SECRET_ITEMS: dict[str, tuple[str, ...]] = {
    "api.clients": ("secrets", "api", "clients"),
    "enforce.notify.channels": ("secrets", "notifyChannels"),
}

# Keywords of pydantic's JSON schema that mean nothing to Helm's validator (or that name
# formats it does not know, such as "path" and "ipv4network").
DROPPED = {"title", "format", "writeOnly", "discriminator"}
# Keywords whose value is data, not a schema: copied as they are.
LITERAL = {"default", "const", "enum", "examples", "required"}


class GeneratorError(RuntimeError):
    """The model and the tables above disagree; the message says what to update."""


# --- Which settings hold secrets, read from the model classes ---------------------------


def _holds_secret(annotation: Any) -> bool:
    """True when a value of this type is, or contains, a SecretStr."""
    if annotation is SecretStr:
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return any(_field_is_secret(f) for f in annotation.model_fields.values())
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _holds_secret(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType) or origin is not None:
        return any(_holds_secret(arg) for arg in typing.get_args(annotation))
    return False


def _field_is_secret(info: Any) -> bool:
    return (not info.repr) or _holds_secret(info.annotation)


def secret_settings(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Dotted paths of the outermost settings that hold a secret.

    A section (a single nested model) is walked into; a list of models that hold secrets
    (API clients, notification channels) counts as one secret setting, as the chart keeps
    the whole list in the Secret.
    """
    found: set[str] = set()
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found |= secret_settings(annotation, f"{path}.")
        elif _field_is_secret(info):
            found.add(path)
    return found


# --- Pydantic's schema, made self-contained and strict ----------------------------------


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Inline every ``$ref`` and drop the keywords Helm has no use for."""
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = _resolve(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        return {**target, **_resolve(siblings, defs)}
    if "allOf" in node and len(node["allOf"]) == 1:
        inner = _resolve(node["allOf"][0], defs)
        rest = {k: v for k, v in node.items() if k != "allOf"}
        return {**inner, **_resolve(rest, defs)}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in DROPPED:
            continue
        if key == "properties":
            out[key] = {name: _resolve(sub, defs) for name, sub in value.items()}
        elif key in LITERAL:
            out[key] = copy.deepcopy(value)
        else:
            out[key] = _resolve(value, defs)
    if "discriminator" in node and "oneOf" in out:
        # A tagged union: the tag must be present, or several branches would match.
        tag = node["discriminator"]["propertyName"]
        for branch in out["oneOf"]:
            if tag not in branch.get("required", []):
                branch["required"] = [tag, *branch.get("required", [])]
    for combiner in ("anyOf", "oneOf"):
        if combiner in out:
            # Without their formats IPv4 and IPv6 networks are the same string schema.
            unique: list[Any] = []
            for branch in out[combiner]:
                if branch not in unique:
                    unique.append(branch)
            if len(unique) == 1:
                del out[combiner]
                out = {**unique[0], **out}
            else:
                out[combiner] = unique
    return out


def _order(node: Any) -> Any:
    """Keys in a fixed, readable order: type and description first, then the rest sorted."""
    if isinstance(node, list):
        return [_order(item) for item in node]
    if not isinstance(node, dict):
        return node
    first = [k for k in ("type", "description", "$comment") if k in node]
    rest = sorted(k for k in node if k not in first)
    out: dict[str, Any] = {}
    for key in [*first, *rest]:
        value = node[key]
        if key == "properties":
            out[key] = {name: _order(sub) for name, sub in value.items()}
        elif key in LITERAL:
            out[key] = copy.deepcopy(value)
        else:
            out[key] = _order(value)
    return out


def _check_closed(node: Any, where: str) -> None:
    """Every object with named settings refuses unknown keys."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            _check_closed(item, f"{where}[{i}]")
        return
    if not isinstance(node, dict):
        return
    if "properties" in node and node.get("additionalProperties") is not False:
        raise GeneratorError(
            f"{where} accepts unknown keys: give its model extra='forbid' so a misspelt "
            "setting stops start-up (and helm install)"
        )
    for key, value in node.items():
        if key == "properties":
            for name, sub in value.items():
                _check_closed(sub, f"{where}.{name}")
        elif isinstance(value, (dict, list)):
            _check_closed(value, where)


def _at(schema: dict[str, Any], dotted: str) -> dict[str, Any]:
    node = schema
    for part in dotted.split("."):
        props = node.get("properties", {})
        if part not in props:
            raise GeneratorError(f"{dotted} is not a setting any more: update {GENERATOR}")
        node = props[part]
    return node


def _refuse(schema: dict[str, Any], dotted: str, description: str) -> None:
    """Make ``dotted`` fail validation with ``description`` in Helm's error message.

    Helm prints "'not' failed" for a plain ``not: {}``; an enum of one impossible value
    prints "value must be '<description>'" instead, which tells the admin what to do. The
    ``not`` keeps that one value from passing.
    """
    *parent, leaf = dotted.split(".")
    holder = _at(schema, ".".join(parent)) if parent else schema
    _at(schema, dotted)  # raises when the setting is gone
    message = f"(not here) {description}"
    holder["properties"][leaf] = {
        "description": description,
        "enum": [message],
        "not": {"const": message},
    }


def settings_schema() -> dict[str, Any]:
    """The whole settings model as one closed, self-contained JSON schema."""
    raw = Settings.model_json_schema(mode="validation")
    schema = _resolve({k: v for k, v in raw.items() if k != "$defs"}, raw.get("$defs", {}))
    _check_closed(schema, "config")
    return schema


def generate(current: dict[str, Any]) -> dict[str, Any]:
    """``current`` (the values schema) with its generated parts replaced."""
    found = secret_settings(Settings)
    unmapped = sorted(found - SECRET_HOMES.keys())
    if unmapped:
        raise GeneratorError(
            f"secret settings without a place in the chart: {', '.join(unmapped)}. Add each to "
            f"SECRET_HOMES in {GENERATOR} and hand it to the roles that use it in "
            "helm/pictguard/templates/_helpers.tpl (pictguard.roleSecretData)"
        )
    stale = sorted(SECRET_HOMES.keys() - found - NOT_SECRET_BUT_WITH_ONE)
    if stale:
        raise GeneratorError(f"no longer secret settings: {', '.join(stale)}; update {GENERATOR}")

    full = settings_schema()
    out = copy.deepcopy(current)
    for dotted, path in SECRET_ITEMS.items():
        items = copy.deepcopy(_at(full, dotted)["items"])
        holder: dict[str, Any] = out
        for part in path:
            holder = holder["properties"][part]
        holder["items"] = _order(
            {**items, "$comment": f"generated by {GENERATOR} from {dotted} of the settings"}
        )

    config = copy.deepcopy(full)
    config.pop("description", None)
    for dotted, why in CHART_OWNED.items():
        _refuse(config, dotted, why)
    for dotted, home in SECRET_HOMES.items():
        _refuse(config, dotted, f"A secret does not belong in the ConfigMap: use {home}")
    config["description"] = (
        "pictguard settings, written to /etc/pictguard/config.yaml (no secrets: see `secrets`)"
    )
    config["$comment"] = (
        f"generated by {GENERATOR} from {Settings.__module__}.{Settings.__name__}; do not edit"
    )
    out["properties"]["config"] = _order(config)
    return out


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    committed = SCHEMA_FILE.read_text()
    try:
        wanted = render(generate(json.loads(committed)))
    except GeneratorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if wanted != committed:
            print(f"{SCHEMA_FILE} is out of date: run {GENERATOR}", file=sys.stderr)
            return 1
        return 0
    SCHEMA_FILE.write_text(wanted)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
