"""The store's schema as SQLAlchemy Core tables (the migrations create exactly these).

Times are integer milliseconds since the epoch (the wire format), money integer
micro-dollars. JSON columns are text: SQLite and PostgreSQL then behave the same.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

accounts = Table(
    "accounts",
    metadata,
    Column("name", String(128), primary_key=True),
    # Spendable money, and money held for accepted tasks until they settle or refund.
    Column("balance_micros", BigInteger, nullable=False, default=0),
    Column("reserved_micros", BigInteger, nullable=False, default=0),
    # Standard Webhooks secret ("whsec_..."); NULL means unsigned callbacks (the contract).
    Column("webhook_secret", String(128), nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    # Engine of the account's new tasks (config.ENGINES); NULL = LIPDUB_DEFAULT_ENGINE.
    Column("engine", String(16), nullable=True),
)

api_keys = Table(
    "api_keys",
    metadata,
    # sha256 hex of the key: the key itself is shown once and never stored.
    Column("key_hash", String(64), primary_key=True),
    Column("account", String(128), ForeignKey("accounts.name"), nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    # Set by `lipdub keys revoke`: the key answers 401 from then on.
    Column("revoked_ms", BigInteger, nullable=True),
)

# Kling-style access key / secret key pairs (Kling's API, /v1). The secret key is never
# stored: it is derived from the service's signing key and the access key (see
# store/kling.py), so a copy of the database alone yields no secret. ``secret_check``
# (sha256 of the derived secret) tells a changed signing key apart from a forged token.
kling_keys = Table(
    "kling_keys",
    metadata,
    Column("access_key", String(64), primary_key=True),
    Column("account", String(128), ForeignKey("accounts.name"), nullable=False),
    Column("secret_check", String(64), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("revoked_ms", BigInteger, nullable=True),
    Index("ix_kling_keys_account", "account"),
)

ledger = Table(
    "ledger",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account", String(128), ForeignKey("accounts.name"), nullable=False),
    Column("task_id", String(64), nullable=True),
    # credit | reserve | settle | refund
    Column("kind", String(16), nullable=False),
    # Size of the movement (always positive); the kind says which way it went:
    # credit: -> balance; reserve: balance -> reserved; settle: reserved -> spent;
    # refund: reserved -> balance.
    Column("amount_micros", BigInteger, nullable=False),
    Column("balance_after", BigInteger, nullable=False),
    Column("reserved_after", BigInteger, nullable=False),
    Column("note", String(256), nullable=False, default=""),
    Column("created_ms", BigInteger, nullable=False),
    Index("ix_ledger_account", "account", "id"),
)

tasks = Table(
    "tasks",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("account", String(128), ForeignKey("accounts.name"), nullable=False),
    Column("model", String(64), nullable=False),
    # pending | processing | completed | failed
    Column("state", String(16), nullable=False),
    Column("external_task_id", String(256), nullable=True),
    Column("param_json", Text, nullable=False),  # the request as the client sent it
    Column("job_json", Text, nullable=False),  # what the worker needs (storage keys, etc.)
    Column("result_json", Text, nullable=True),
    Column("fail_code", String(64), nullable=True),
    Column("fail_msg", Text, nullable=True),
    Column("price_micros", BigInteger, nullable=False),
    Column("progress", Float, nullable=False, default=0.0),
    Column("attempts", Integer, nullable=False, default=0),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until_ms", BigInteger, nullable=True),
    Column("callback_url", Text, nullable=True),
    Column("create_ms", BigInteger, nullable=False),
    Column("start_ms", BigInteger, nullable=True),
    Column("complete_ms", BigInteger, nullable=True),
    Column("purged", Integer, nullable=False, default=0),
    # The API the task was submitted through: NULL for the reseller contract (/api/v1),
    # "kling" for Kling's own API (/v1): it decides the shape of the task's callback.
    Column("via", String(16), nullable=True),
    # Engine the task runs on, fixed at submission; NULL = local (older rows).
    Column("engine", String(16), nullable=True),
    UniqueConstraint("account", "external_task_id", name="uq_tasks_account_external"),
    Index("ix_tasks_claim", "state", "create_ms"),
    Index("ix_tasks_complete", "complete_ms"),
    Index("ix_tasks_account_state", "account", "state"),
)

sessions = Table(
    "sessions",
    metadata,
    Column("session_id", String(64), primary_key=True),
    Column("account", String(128), ForeignKey("accounts.name"), nullable=False),
    Column("task_id", String(64), nullable=False),
    Column("video_key", String(256), nullable=False),  # storage key of the source video
    Column("dir_key", String(256), nullable=False),  # storage key of the session directory
    Column("duration_ms", BigInteger, nullable=False),
    Column("faces_json", Text, nullable=False),  # [{face_id, start_time, end_time, segments}]
    Column("create_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    # Engine that identified the video (its sync must run there); NULL = local.
    Column("engine", String(16), nullable=True),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", String(64), primary_key=True),  # also the webhook-id header
    Column("task_id", String(64), nullable=False, unique=True),
    Column("account", String(128), nullable=False),
    Column("url", Text, nullable=False),
    # scheme://host:port of url: per-destination limits keep one slow receiver from
    # holding the senders that every other account's callbacks need.
    Column("dest", String(300), nullable=True),
    Column("body", Text, nullable=False),  # exact bytes sent on every attempt
    # pending | delivered | failed
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("first_ms", BigInteger, nullable=True),
    Column("next_ms", BigInteger, nullable=False),
    Column("lease_until_ms", BigInteger, nullable=True),
    Column("last_status", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("delivered_ms", BigInteger, nullable=True),
    Column("create_ms", BigInteger, nullable=False),
    Index("ix_deliveries_due", "state", "next_ms"),
)

uploads = Table(
    "uploads",
    metadata,
    # Storage key, made by the server (uploads/<random hex>): never the client's name.
    Column("key", String(128), primary_key=True),
    Column("account", String(128), ForeignKey("accounts.name"), nullable=False),
    Column("name", String(256), nullable=False),  # the client's file name, metadata only
    Column("size", BigInteger, nullable=False),
    Column("create_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    Column("deleted", Integer, nullable=False, default=0),
    Index("ix_uploads_account", "account", "create_ms"),
    Index("ix_uploads_expires", "deleted", "expires_ms"),
)

# Finished tasks per (model, state, duration bucket), kept in the transaction that
# finishes each task: /metrics reads a few dozen rows however many tasks there are.
task_stats = Table(
    "task_stats",
    metadata,
    Column("model", String(64), primary_key=True),
    Column("state", String(16), primary_key=True),
    # Index of the first store.DURATION_BOUNDS_MS bound the duration is within; len = +Inf.
    Column("bucket", Integer, primary_key=True),
    Column("n", BigInteger, nullable=False),
    Column("sum_ms", BigInteger, nullable=False),
)

# Deliveries that reached a final state (delivered | failed) and their attempts, kept by
# the transaction that records the final attempt.
delivery_stats = Table(
    "delivery_stats",
    metadata,
    Column("state", String(16), primary_key=True),
    Column("n", BigInteger, nullable=False),
    Column("attempts", BigInteger, nullable=False),
)

# What every process of a fleet must agree on (storage identity, signing key fingerprint,
# public URL), recorded by the API; see ops/fleetcheck.py.
fleet_config = Table(
    "fleet_config",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# What a task did on an upstream engine (Kling), written as soon as it happens: a retry
# after a crash finds the upstream task or session here instead of paying for it twice.
upstream_tasks = Table(
    "upstream_tasks",
    metadata,
    Column("task_id", String(64), primary_key=True),  # lipdub's task
    Column("engine", String(16), nullable=False),
    # Kling's ids are long digit strings: kept as strings.
    Column("upstream_task_id", String(64), nullable=True),
    Column("upstream_session_id", String(64), nullable=True),
    # Last status seen upstream (submitted | processing | succeed | failed | identified).
    Column("status", String(16), nullable=True),
    # Identify's answer (faces), kept so a retry does not identify (and pay) again.
    Column("response_json", Text, nullable=True),
    # What upstream charged, as it reports it (Kling: final_unit_deduction, in units).
    Column("charge", String(32), nullable=True),
    Column("create_ms", BigInteger, nullable=False),
    Column("update_ms", BigInteger, nullable=False),
)

# Per-account request rate over every API process: the times (ms, comma-separated,
# oldest first) of the account's last accepted requests, at most the limit of them. A
# request is let in while fewer than the limit fall in the last second (a moving window).
rate_windows = Table(
    "rate_windows",
    metadata,
    Column("account", String(128), primary_key=True),
    Column("hits", Text, nullable=False),
)

# Inputs downloading right now, over every API process. A slot is leased: its process
# renews it while the download runs, so a process that dies frees its slots.
download_slots = Table(
    "download_slots",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("account", String(128), nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    Index("ix_download_slots_account", "account"),
)
