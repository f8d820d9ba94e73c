"""Write docs/configuration.md from the settings classes, so the reference cannot drift.

    .venv/bin/python docs/gen_config.py > docs/configuration.md

Every field of every section is listed with its default, its environment variable and its
description (from the pydantic ``Field`` of the settings class, the one place it is written). The
YAML examples at the end are validated against the settings classes before anything is
printed, so a renamed setting breaks this script instead of the docs.
"""

from __future__ import annotations

import inspect
import ipaddress
import sys
import types
import typing
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import annotated_types as at
import yaml
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pictguard.settings import Settings
from pipeline.settings import ENV_PREFIX

# Defaults that are computed per process.
DYNAMIC_DEFAULTS = {"api.replica_id": "`<hostname>-<6 hex>`"}

# Extra words about how a field is written in the environment.
ENV_HINTS = {
    "classify.classifiers": "comma-separated or a JSON list",
}

EXAMPLE_SINGLE = """\
# /etc/pictguard/config.yaml: `pictguard --config /etc/pictguard/config.yaml serve`
# on one box beside Lemmy, pict-rs storing in MinIO. Secrets (S3 keys, tokens,
# notification channels with tokens) are better set in the environment, see above.
s3:
  endpoint_url: http://minio:9000
  region: us-east-1
  path_style: true
storage:
  state_dir: /var/lib/pictguard
classify:
  classifiers: [hashlist, nudenet, clip]   # drop clip without the `clip` extra / a GPU
  max_batch: 32
  clip:
    model: ViT-L-14
    pretrained: openai
    device: auto
api:
  port: 8080
  deadline_s: 8
  on_timeout: accept
  on_error: accept
  video: scan                     # videos are sampled like any upload (accept, reject: 415)
  clients:
    - id: lemmy
      cidrs: [172.16.0.0/12]      # the Docker network pict-rs calls from
ingest:
  preset: pictrs
  exclude_prefixes: [quarantine/]
  webhook:
    enabled: true                 # + PICTGUARD_INGEST__WEBHOOK__MINIO_TOKEN in the environment
    port: 8081
  reconcile:
    enabled: true
    locations: ["s3://pictrs"]
    interval_s: 3600
enforce:
  dry_run: true                   # report only until the verdicts look right
  on_flag_csam: quarantine
  on_flag_nsfw: report
  on_error: report
  quarantine: s3://pictguard-quarantine/pictrs/
  quarantine_retention_days: 365  # locked where the bucket has object lock
  guard:
    max_destructive_per_minute: 20
    max_destructive_per_hour: 200
  notify:
    instance: lemmy.example.org
    channels:
      - type: matrix
        homeserver: https://matrix.example.org
        room_id: "!abcdef:example.org"
        access_token: "syt_..."
        min_severity: warning
log:
  level: INFO
  format: console
"""

EXAMPLE_KAFKA = """\
# Distributed mode (`pictguard run ROLE`): the same file plus the broker.
kafka:
  bootstrap_servers: kafka-0.kafka:9093,kafka-1.kafka:9093
  security_protocol: SASL_SSL
  sasl_mechanism: SCRAM-SHA-512
  sasl_username: pictguard          # password: PICTGUARD_KAFKA__SASL_PASSWORD
  ssl_cafile: /etc/pictguard/kafka-ca.crt
  partitions: 12
  replication_factor: 3
storage:
  backend: kafka                    # admin commands use the Kafka tables
metrics:
  port: 9100
log:
  format: json
"""


def validate_example(text: str) -> None:
    """Each section validated by its own class: the environment plays no part here."""
    data = yaml.safe_load(text)
    for name, value in data.items():
        field = Settings.model_fields[name]  # KeyError: an unknown section
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        model.model_validate(value)
        _check_keys(model, value, name)


def _check_keys(model: type[BaseModel], value: Any, path: str) -> None:
    # Several sections ignore unknown keys; the example must not rely on that.
    if not isinstance(value, dict):
        return
    for key, sub in value.items():
        if key not in model.model_fields:
            raise SystemExit(f"example: unknown setting {path}.{key}")
        inner = _model_of(model.model_fields[key].annotation)
        if inner is not None:
            _check_keys(inner, sub, f"{path}.{key}")


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


# -- describing types and defaults ---------------------------------------------------------


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """The annotation without ``Annotated`` and ``| None``; whether None was allowed."""
    if get_origin(annotation) is typing.Annotated:
        annotation = get_args(annotation)[0]
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        optional = len(args) < len(get_args(annotation))
        if len(args) == 1:
            return _unwrap(args[0])[0], optional
        return typing.Union[tuple(args)], optional  # noqa: UP007 - rebuilt at run time
    return annotation, False


def _is_network(annotation: Any) -> bool:
    args = set(get_args(annotation))
    return args == {ipaddress.IPv4Network, ipaddress.IPv6Network}


def type_words(annotation: Any) -> str:
    annotation, _ = _unwrap(annotation)
    origin = get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(f"`{v}`" for v in get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "one of " + ", ".join(f"`{m.value}`" for m in annotation)
    if _is_network(annotation):
        return "CIDR"
    if origin is list:
        inner = get_args(annotation)[0]
        if _is_network(inner):
            return "list of CIDRs"
        words = type_words(inner)
        return words if words.startswith("objects") else f"list of {words}"
    if origin is dict:
        return "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "objects, see below"
    if origin in (typing.Union, types.UnionType) and all(
        isinstance(a, type) and issubclass(a, BaseModel) for a in get_args(annotation)
    ):
        return "objects, see below"
    simple = {
        bool: "true/false",
        int: "integer",
        float: "number",
        str: "text",
        Path: "path",
        SecretStr: "secret",
        datetime: "date/time",
    }
    if annotation in simple:
        return simple[annotation]
    return getattr(annotation, "__name__", str(annotation))


def constraint_words(info: FieldInfo) -> str:
    words = []
    for m in info.metadata:
        if isinstance(m, at.Ge):
            words.append(f"≥ {m.ge}")
        elif isinstance(m, at.Gt):
            words.append(f"> {m.gt}")
        elif isinstance(m, at.Le):
            words.append(f"≤ {m.le}")
        elif isinstance(m, at.Lt):
            words.append(f"< {m.lt}")
        elif isinstance(m, at.MinLen):
            words.append(f"at least {m.min_length}")
    return ", ".join(words)


def _human_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


def default_words(path: str, info: FieldInfo) -> str:
    if path in DYNAMIC_DEFAULTS:
        return DYNAMIC_DEFAULTS[path]
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    elif info.default is PydanticUndefined:
        return "**required**"
    else:
        value = info.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, Enum):
        return f"`{value.value}`"
    if isinstance(value, list | dict):
        return f"`{yaml.safe_dump(value, default_flow_style=True).strip()}`"
    if isinstance(value, int) and path.endswith(("_bytes", "request_size")):
        return f"`{value}` ({_human_bytes(value)})"
    if isinstance(value, str):
        return f'`"{value}"`' if value == "" or value.strip() != value else f"`{value}`"
    return f"`{value}`"


def env_name(path: str) -> str:
    return ENV_PREFIX + "__".join(p.upper() for p in path.split("."))


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def doc_of(model: type[BaseModel]) -> str:
    doc = model.__dict__.get("__doc__")
    return inspect.cleandoc(doc) if doc else ""


# -- rendering ------------------------------------------------------------------------------


def forbids_extra(model: type[BaseModel]) -> bool:
    return model.model_config.get("extra") == "forbid"


def list_item_models(annotation: Any) -> list[type[BaseModel]]:
    """The models inside ``list[Model]`` or ``list[A | B]`` (channels), else []."""
    annotation, _ = _unwrap(annotation)
    if get_origin(annotation) is not list:
        return []
    inner, _ = _unwrap(get_args(annotation)[0])
    candidates = get_args(inner) if get_origin(inner) in (typing.Union,) else (inner,)
    return [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]


def field_row(path: str, info: FieldInfo, *, with_env: bool = True) -> str:
    what = info.description or ""
    kind = type_words(info.annotation)
    limits = constraint_words(info)
    if limits:
        kind += f" ({limits})"
    what = f"{what.rstrip('.')}. *{kind}*" if what else f"*{kind}*"
    name = path.rsplit(".", 1)[-1]
    env = f"`{env_name(path)}`" if with_env else "—"
    if with_env and path in ENV_HINTS:
        env += f" ({ENV_HINTS[path]})"
    elif with_env and get_origin(_unwrap(info.annotation)[0]) in (list, dict):
        env += " (JSON)"
    return f"| `{name}` | {default_words(path, info)} | {env} | {cell(what)} |"


def render_section(model: type[BaseModel], path: str, out: list[str], level: int) -> None:
    heading = "#" * level
    out.append(f"{heading} `{path}`\n")
    doc = doc_of(model)
    if doc:
        out.append(doc + "\n")
    strict = forbids_extra(model)
    out.append(
        "Unknown keys in this section stop start-up with an error.\n"
        if strict
        else "⚠ Unknown keys in this section are **ignored without a warning**: check spelling.\n"
    )
    rows: list[str] = []
    subsections: list[tuple[type[BaseModel], str]] = []
    item_tables: list[tuple[str, list[type[BaseModel]]]] = []
    for name, info in model.model_fields.items():
        sub_path = f"{path}.{name}"
        sub = _model_of(_unwrap(info.annotation)[0])
        if sub is not None:
            subsections.append((sub, sub_path))
            continue
        rows.append(field_row(sub_path, info))
        items = list_item_models(info.annotation)
        if items:
            item_tables.append((sub_path, items))
    if rows:
        out.append("| setting | default | environment variable | what |")
        out.append("|---|---|---|---|")
        out.extend(rows)
        out.append("")
    for list_path, items in item_tables:
        render_items(list_path, items, out, level + 1)
    for sub, sub_path in subsections:
        render_section(sub, sub_path, out, level + 1)


def render_items(path: str, models: list[type[BaseModel]], out: list[str], level: int) -> None:
    heading = "#" * level
    if len(models) == 1:
        model = models[0]
        out.append(f"{heading} Items of `{path}`\n")
        if doc_of(model):
            out.append(doc_of(model) + "\n")
        out.append(_item_table(model, path, set()))
        return
    # A discriminated union (notification channels): shared keys once, then each type.
    shared = set.intersection(*(set(m.model_fields) for m in models)) - {"type"}
    out.append(f"{heading} Items of `{path}`\n")
    out.append(
        f"Each item has a `type` ({', '.join(f'`{_type_tag(m)}`' for m in models)}). "
        f"In the environment the whole list is one JSON value in `{env_name(path)}`.\n"
    )
    out.append(f"{heading}# Keys of every channel\n")
    out.append(_item_table(models[0], path, set(models[0].model_fields) - shared))
    for model in models:
        out.append(f"{heading}# `type: {_type_tag(model)}`\n")
        if doc_of(model):
            out.append(doc_of(model) + "\n")
        out.append(_item_table(model, path, shared | {"type"}))


def _type_tag(model: type[BaseModel]) -> str:
    return str(model.model_fields["type"].default)


def _item_table(model: type[BaseModel], path: str, skip: set[str]) -> str:
    lines = ["| key | default | what |", "|---|---|---|"]
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        row = field_row(f"{path}[].{name}", info, with_env=False)
        cells = row.split(" | ")
        del cells[2]  # no environment variable of its own
        lines.append(" | ".join(cells))
    return "\n".join(lines) + "\n"


INTRO = """\
# Configuration reference

<!-- Generated by docs/gen_config.py from the settings classes; edit those, then run
     .venv/bin/python docs/gen_config.py > docs/configuration.md -->

pictguard reads its settings once at start-up, from three places; the first one that sets
a value wins:

1. **environment variables** `PICTGUARD_<SECTION>__<FIELD>` (two underscores between
   levels, any case): `PICTGUARD_API__DEADLINE_S=6`,
   `PICTGUARD_ENFORCE__GUARD__MAX_DESTRUCTIVE_PER_MINUTE=50`;
2. the **YAML file** given with `pictguard --config FILE …` (or `PICTGUARD_CONFIG=FILE`);
3. the **defaults** below.

- Lists and mappings in the environment are one JSON value:
  `PICTGUARD_API__CLIENTS='[{"id": "lemmy", "cidrs": ["172.16.0.0/12"]}]'`,
  `PICTGUARD_INGEST__EXCLUDE_PREFIXES='["quarantine/"]'`. A value that is not valid JSON
  stops start-up. An environment variable replaces the whole list from the file.
- Keep secrets (S3 keys, Kafka password, tokens, notification channels with their tokens)
  in the environment, not in the YAML file. Secret values are never logged nor exported
  in traces. Tokens that open something (`api.clients[].token`, `enforce.admin_token`, the
  `ingest.webhook` tokens, a webhook channel's `secret`) must be at least 16 characters
  (generate them with `openssl rand -hex 32`); an empty one means unset, so what it guards
  stays off. See [SECURITY.md](SECURITY.md).
- A value that cannot work (a wrong type, a number out of range, `api.deadline_s` ≥ 10
  without `api.force_deadline`) stops start-up with one line naming the setting and its
  environment variable.
- Some sections reject unknown keys and some ignore them; each section says which.

The event loop is a process option, not a setting: `pictguard --event-loop
auto|asyncio|uvloop` (or `PICTGUARD_EVENT_LOOP`). `auto`, the default, runs on uvloop where
it is installed (a dependency on Linux and macOS). With httptools (also a dependency, picked
up by the HTTP server) it took `bench/validate.py` from 208 to 298 requests/s at concurrency
16 on the same 2 cores. `asyncio` is the escape hatch.

Sections: [`kafka`](#kafka) · [`s3`](#s3) · [`storage`](#storage) ·
[`classify`](#classify) · [`enforce`](#enforce) · [`ingest`](#ingest) · [`api`](#api) ·
[`metrics`](#metrics) · [`log`](#log) · [examples](#examples)

Tracing is configured with the standard OpenTelemetry variables (`OTEL_EXPORTER_OTLP_ENDPOINT`,
`OTEL_TRACES_EXPORTER`, `OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_SERVICE_NAME`, …), not with
`PICTGUARD_*` settings; it is off unless an endpoint or exporter is set.
"""


def main() -> None:
    validate_example(EXAMPLE_SINGLE)
    validate_example(EXAMPLE_KAFKA)
    out = [INTRO]
    for name, info in Settings.model_fields.items():
        model = _model_of(info.annotation)
        assert model is not None, name
        render_section(model, name, out, 2)
    out.append("## Examples\n")
    out.append("A single-process install (`pictguard serve`):\n")
    out.append("```yaml\n" + EXAMPLE_SINGLE + "```\n")
    out.append("Distributed mode adds the broker:\n")
    out.append("```yaml\n" + EXAMPLE_KAFKA + "```\n")
    out.append(
        "The same settings in the environment, e.g. for Docker or a Kubernetes Secret:\n\n"
        "```sh\n"
        "PICTGUARD_S3__ACCESS_KEY_ID=pictguard\n"
        "PICTGUARD_S3__SECRET_ACCESS_KEY=...\n"
        "PICTGUARD_KAFKA__SASL_PASSWORD=...\n"
        'PICTGUARD_API__CLIENTS=\'[{"id": "lemmy", "token": "<openssl rand -hex 32>", '
        '"cidrs": ["172.16.0.0/12"]}]\'\n'
        "PICTGUARD_INGEST__WEBHOOK__MINIO_TOKEN=<openssl rand -hex 32>\n"
        "PICTGUARD_ENFORCE__ADMIN_TOKEN=<openssl rand -hex 32>\n"
        'PICTGUARD_ENFORCE__NOTIFY__CHANNELS=\'[{"type": "matrix", '
        '"homeserver": "https://matrix.example.org", "room_id": "!abcdef:example.org", '
        '"access_token": "syt_..."}]\'\n'
        "```\n"
    )
    sys.stdout.write("\n".join(out))


if __name__ == "__main__":
    main()
