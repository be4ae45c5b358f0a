"""The configuration reference (docs/configuration.md), generated from the msgspec
config types in `jukisync.config`, so it cannot drift from what the loader accepts.

Keys, types, constraints and defaults come from the types themselves (via
`msgspec.inspect`); what each key means comes from a field's
`msgspec.Meta(description=...)` when it has one, else from `DESCRIPTIONS` below.
`undocumented()` lists keys with neither; a test keeps it empty, and another that the
shipped file equals `render()` (regenerate with `jukisync config reference --out
docs/configuration.md`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import msgspec
import msgspec.inspect as mi

from jukisync import config

__all__ = ["DESCRIPTIONS", "Key", "keys", "render", "undocumented"]

# "<Struct>.<field>" -> meaning. Structs shared by several roles are described once.
DESCRIPTIONS: dict[str, str] = {
    # --- aggregator / national -------------------------------------------------------
    "AggregatorConfig.role": "`aggregator`: an aggregation centre (都道府県サーバ, consolidated).",
    "AggregatorConfig.id": "The centre's id: its queue name, its attestations' `centre`, "
    "and the owner of its key in the registry.",
    "AggregatorConfig.prefectures": "Prefecture codes (2 digits) this centre serves; "
    "bundles of other prefectures are refused.",
    "AggregatorConfig.store": "Directory of the LMDB tier store (created on first start; "
    "`registry.bin` and `root.pub` are written beside it).",
    "AggregatorConfig.signing_key": "The centre's secret key file (`keys generate`), used "
    "to attest forwarded bundles; mode 0600.",
    "AggregatorConfig.trust": "The root key and the signed key registry (keys below).",
    "AggregatorConfig.broker": "RabbitMQ connection and topology (keys below).",
    "AggregatorConfig.http": "`/healthz` and `/metrics` (keys below).",
    "AggregatorConfig.limits": "Store and batching limits (keys below).",
    "AggregatorConfig.query": "Answer agencies' queries from this node's store "
    "(keys below); absent: no query service.",
    "NationalConfig.role": "`national`: the national centre (全国サーバ).",
    "NationalConfig.id": "The node's id (its queue and query routing key).",
    "NationalConfig.store": "Directory of the LMDB tier store.",
    "NationalConfig.trust": "The root key and the signed key registry.",
    "NationalConfig.broker": "RabbitMQ connection and topology.",
    "NationalConfig.http": "`/healthz` and `/metrics`.",
    "NationalConfig.limits": "Store and batching limits.",
    "NationalConfig.query": "Answer agencies' queries from this node's store; absent: "
    "no query service.",
    # --- municipality ----------------------------------------------------------------
    "MunicipalityConfig.role": "`municipality`: a municipal system's publisher "
    "(`jukisync publish`).",
    "MunicipalityConfig.origin": "The municipality's local government code (6 digits with "
    "check digit): the origin of its bundles.",
    "MunicipalityConfig.signing_key": "The origin's secret key file (`keys generate "
    "--owner ORIGIN`); mode 0600.",
    "MunicipalityConfig.outbox": "Directory of the durable outbox (LMDB): the origin's "
    "chain; back it up (`jukisync backup --outbox`).",
    "MunicipalityConfig.broker": "RabbitMQ connection.",
    "MunicipalityConfig.max_updates": "Updates per bundle at most.",
    "MunicipalityConfig.linger_s": "A bundle is cut this long after its first update "
    "(or when full).",
    "MunicipalityConfig.max_bundle_bytes": "Largest signed envelope; keep it at or below "
    "the centres' `limits.max_bundle_bytes` and `broker.max_message_bytes`.",
    "MunicipalityConfig.retain_confirmed": "Confirmed bundles kept in the outbox to "
    "serve resend requests.",
    # --- sections --------------------------------------------------------------------
    "AggregatorConfig.retention": "Change-log retention: checkpoint, archive, prune (keys below).",
    "NationalConfig.retention": "Change-log retention: checkpoint, archive, prune.",
    "RetentionConfig.archive_dir": "Where the daemon writes the archives of pruned "
    "change-log entries (keep them: resends and repairs before the retained range read "
    "them, `bootstrap` of a pruned snapshot needs them). Unset: never prune.",
    "RetentionConfig.keep_bundles": "Change-log entries (bundles) of each origin always "
    "kept, newest first (an origin's head entry is kept whatever this says).",
    "RetentionConfig.keep_days": "Entries created within this many days are kept.",
    "RetentionConfig.interval_s": "How often the daemon checkpoints and prunes.",
    "RetentionConfig.signing_key": "The secret key file signing the checkpoints "
    "(default: an aggregator's `signing_key`; national must set it).",
    "TrustConfig.root_public_key": "The root public key (64 hex digits, or a `keys` "
    "`.pub.json` file) that signs the registry.",
    "TrustConfig.registry": "The signed key registry (`keys registry`).",
    "BrokerConfig.url": "`amqp://user:pass@host:port/vhost` (`amqps://` for TLS); one "
    "user per node, so the broker-validated `user_id` names it. Unset: "
    "`amqp://guest:guest@127.0.0.1:5672/`. A list is the same as `urls`.",
    "BrokerConfig.urls": "The nodes of a RabbitMQ cluster, tried in order: a lost or "
    "refused connection fails over to the next (same scheme and user in each). Set "
    "`url` or `urls`, not both.",
    "BrokerConfig.quorum_replicas": "Quorum queues: replicas of each new queue "
    "(`x-quorum-initial-group-size`); unset, the broker's default (RabbitMQ 3.x: every "
    "node). Fixed once a queue exists.",
    "BrokerConfig.prefetch": "Unacknowledged deliveries in flight at most.",
    "BrokerConfig.namespace": "Prefix of every exchange and queue name (tests, staging).",
    "BrokerConfig.queue_type": "`quorum` (replicated, default) or `classic` (a single-node "
    "broker).",
    "BrokerConfig.delivery_limit": "Quorum queues: dead-letter a message after this many "
    "deliveries.",
    "BrokerConfig.max_message_bytes": "Largest message accepted or published.",
    "BrokerConfig.confirm_timeout_s": "A publish not confirmed by then counts as the broker "
    "unavailable.",
    "BrokerConfig.connect_timeout_s": "Give up connecting after this long (`run --wait` "
    "waits for ever).",
    "BrokerConfig.reconnect_min_s": "First delay before reconnecting after a loss.",
    "BrokerConfig.reconnect_max_s": "Longest delay between reconnection attempts "
    "(exponential backoff).",
    "BrokerConfig.ca_file": "TLS: a private CA's certificate file.",
    "BrokerConfig.cert_file": "TLS: the client certificate, if the broker requires one.",
    "BrokerConfig.key_file": "TLS: the client certificate's key (needs `cert_file`).",
    "BrokerConfig.user_id": "The `user_id` stamped on messages; default the URL's user "
    "(what the broker validates).",
    "HttpConfig.listen": "Address of the HTTP endpoint.",
    "HttpConfig.port": "Port of `/healthz` and Prometheus `/metrics`; 0 disables it.",
    "TierLimits.max_bundle_bytes": "Largest envelope accepted; bigger ones are "
    "quarantined (a security rejection).",
    "TierLimits.pending_limit": "Bundles kept per origin in pending (waiting for a "
    "gap to fill); beyond it they are resent later.",
    "TierLimits.map_size": "LMDB map size in bytes: the store's largest size.",
    "TierLimits.max_batch": "Deliveries applied in one write transaction at most.",
    "TierLimits.max_batch_updates": "Updates applied in one write transaction at most "
    "(a bundle holding more is applied alone): bounds the work, and the wait for acks "
    "and forwards, of one transaction. Not much lower: each commit rewrites every page "
    "it touched, so small transactions of random codes write more (10,000 measured "
    "~35% slower than 50,000 end to end).",
    "AggregatorConfig.replication": "Head announcements and repair of divergence (keys below).",
    "NationalConfig.replication": "Head announcements and repair of divergence.",
    "AggregatorConfig.health": "When `/healthz` says degraded (keys below).",
    "NationalConfig.health": "When `/healthz` says degraded.",
    "MunicipalityConfig.announce_interval_s": "The publisher announces its signed "
    "confirmed head at start, after each confirmed batch and this often.",
    "ReplicationConfig.announce_interval_s": "An aggregator relays the heads it holds this often.",
    "ReplicationConfig.resend_interval_s": "How often the node compares its heads with "
    "the announced ones and asks for what it lacks.",
    "ReplicationConfig.answer_wait_s": "Without an answer from the origin by then, ask "
    "the twin centre (national: the centres).",
    "ReplicationConfig.repair_max_bundles": "Bundles asked for per repair request at most.",
    "ReplicationConfig.max_requests_per_s": "Repair requests per second at most, overall.",
    "HealthConfig.max_lag_seqs": "Degraded when an origin is more than this many "
    "sequence numbers behind its announced head.",
    "HealthConfig.max_lag_s": "Degraded when an origin is more than this many seconds "
    "behind its announced head.",
    "HealthConfig.pending_stuck_s": "Degraded when bundles wait in pending while the "
    "origin's head has not moved for this long.",
    "HealthConfig.settle_s": "Not degraded for lag during this long after the node "
    "began hearing heads (default: two `replication.announce_interval_s`).",
    "TierLimits.forward_batch": "Applied bundles an aggregator forwards to national "
    "per round at most.",
    "QueryServiceConfig.policy": "The query policy file (who may use which task; audit "
    "retention; anomaly thresholds).",
    "QueryServiceConfig.out_dir": "Where large batch confirmations are written; absent: "
    "answered inline only.",
}

_ROLES: tuple[type[msgspec.Struct], ...] = (
    config.AggregatorConfig,
    config.NationalConfig,
    config.MunicipalityConfig,
)


@dataclasses.dataclass(frozen=True)
class Key:
    path: str  # dotted, as written in TOML (`broker.url`)
    owner: str  # "<Struct>.<field>"
    type: str
    default: str  # "required" when it has none
    meaning: str | None


def _describe_type(t: mi.Type) -> str:
    """A short type with its constraints, as an operator writes the value."""
    match t:
        case mi.IntType():
            return "integer" + _bounds(t)
        case mi.FloatType():
            return "number" + _bounds(t)
        case mi.StrType(pattern=str(pattern)):
            return f"string matching `{pattern}`"
        case mi.StrType():
            return "string"
        case mi.BoolType():
            return "boolean"
        case mi.LiteralType():
            return " or ".join(f'`"{v}"`' for v in t.values)
        case mi.ListType():
            return f"list of {_describe_type(t.item_type)}"
        case mi.StructType():
            return "table"
        case mi.UnionType():
            kinds = [_describe_type(x) for x in t.types if not isinstance(x, mi.NoneType)]
            return " or ".join(kinds) + (" (optional)" if len(kinds) < len(t.types) else "")
        case _:
            return type(t).__name__.removesuffix("Type").lower()


def _bounds(t: mi.IntType | mi.FloatType) -> str:
    parts = [
        f"{sign} {value}"
        for sign, value in ((">", t.gt), ("≥", t.ge), ("<", t.lt), ("≤", t.le))
        if value is not None
    ]
    return f" ({', '.join(parts)})" if parts else ""


def _default(field: msgspec.structs.FieldInfo) -> str:
    if field.required:
        return "required"
    value = field.default
    if isinstance(value, msgspec.Struct):
        return "(table)"
    if value is None:
        return "(none)"
    return f"`{msgspec.json.encode(value).decode()}`"


def _struct_of(t: mi.Type) -> mi.StructType | None:
    if isinstance(t, mi.StructType):
        return t
    if isinstance(t, mi.UnionType):
        structs = [x for x in t.types if isinstance(x, mi.StructType)]
        return structs[0] if len(structs) == 1 else None
    return None


def _walk(cls: type[msgspec.Struct], prefix: str) -> Iterator[Key]:
    info = {f.name: f for f in msgspec.structs.fields(cls)}
    for field in mi.type_info(cls).fields:  # type: ignore[attr-defined]
        struct_info = info[field.name]
        described = _described(cls, field.name)
        if (nested := _struct_of(field.type)) is not None:
            yield Key(
                f"{prefix}{field.encode_name}",
                f"{cls.__name__}.{field.name}",
                "table" + (" (optional)" if isinstance(field.type, mi.UnionType) else ""),
                "required"
                if field.required
                else "(defaults below)"
                if struct_info.default is not None
                else "(none)",
                described,
            )
            yield from _walk(nested.cls, f"{prefix}{field.encode_name}.")
            continue
        yield Key(
            f"{prefix}{field.encode_name}",
            f"{cls.__name__}.{field.name}",
            _describe_type(field.type),
            _default(struct_info),
            described,
        )


def _described(cls: type[msgspec.Struct], name: str) -> str | None:
    annotation = cls.__annotations__.get(name) if hasattr(cls, "__annotations__") else None
    for meta in getattr(annotation, "__metadata__", ()):
        if isinstance(meta, msgspec.Meta) and meta.description:
            return meta.description
    for klass in cls.__mro__:
        text = DESCRIPTIONS.get(f"{klass.__name__}.{name}")
        if text is not None:
            return text
    return None


def keys() -> dict[str, list[Key]]:
    """Every key of every role's config file, by role (the `role` tag first)."""
    out: dict[str, list[Key]] = {}
    for cls in _ROLES:
        role = str(cls.__struct_config__.tag)
        tag_key = Key("role", f"{cls.__name__}.role", f'`"{role}"`', "required", None)
        tag_key = dataclasses.replace(tag_key, meaning=_described(cls, "role"))
        out[role] = [tag_key, *_walk(cls, "")]
    return out


def undocumented() -> list[str]:
    return sorted({k.owner for ks in keys().values() for k in ks if not k.meaning})


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    """docs/configuration.md."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `jukisync config reference --out docs/configuration.md` from the",
        "     msgspec types in python/jukisync/config/__init__.py; do not edit by hand (a test",
        "     compares this file with the generated one). -->",
        "",
        "One TOML file per node; `role` says which kind it is. Unknown keys are refused,",
        "and a bad value is reported with the file, the key and the value. Relative paths",
        "are resolved against the directory of the config file. Examples for each role are",
        "in `config/`; the systemd units in `deploy/systemd/` read them from",
        "`/etc/jukisync/`.",
        "",
    ]
    titles = {
        "aggregator": "Aggregation centre (`jukisync run`)",
        "national": "National centre (`jukisync run`)",
        "municipality": "Municipality publisher (`jukisync publish`)",
    }
    for role, role_keys in keys().items():
        lines += [
            f'## `role = "{role}"`: {titles.get(role, role)}',
            "",
            "| key | type | default | meaning |",
            "|---|---|---|---|",
        ]
        for k in role_keys:
            lines.append(
                f"| `{k.path}` | {_cell(k.type)} | {_cell(k.default)} | "
                f"{_cell(k.meaning or '(undocumented)')} |"
            )
        lines.append("")
    return "\n".join(lines)
