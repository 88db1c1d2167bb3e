"""Every setting of the service, read from ``LIPDUB_*`` environment variables.

A frozen dataclass rather than a module of globals: the app factory, the workers and the
tests each build their own ``Settings`` and pass it down, so two servers in one test
process never share state. ``Settings.from_env(overrides)`` is the single entry point;
command-line flags arrive as overrides and win over the environment.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MB = 1024 * 1024
# The engines a task can run on (docs/kling-engine.md).
ENGINES = ("local", "kling")
REDIS_SCHEMES = ("redis", "rediss", "unix")


@dataclass(frozen=True)
class Settings:
    # Where the SQLite file, uploads, sessions and results live unless told otherwise.
    data_dir: Path = Path(".lipdub")
    # Empty means SQLite at <data_dir>/lipdub.db; PostgreSQL: postgresql+psycopg://...
    database_url: str = ""
    # Base of every URL the service hands out (face_reference, resultUrls, uploads).
    public_url: str = "http://127.0.0.1:8000"
    # "false" (default), "true" (every address), or a comma list of networks that are
    # allowed although private, e.g. "127.0.0.1/32" for tests on loopback.
    allow_private_urls: str = "false"
    # Secret for signed media URLs; empty means one generated once under data_dir.
    signing_key: str = ""
    # Where media lives: "" (a directory under data_dir), file:///path, or
    # s3://bucket/prefix (endpoint and credentials from the standard AWS_* variables).
    storage_url: str = ""
    # How /media links to S3 objects answer: "proxy" streams them through the API (the
    # bucket may be private and unreachable by clients), "presign" redirects to a
    # presigned URL valid for media_presign_s (clients fetch from the bucket directly).
    storage_links: str = "proxy"
    media_presign_s: int = 3600
    # Each task attempt's private working directory lives under here (local disk of the
    # worker; not shared). Empty means <data_dir>/scratch.
    scratch_dir: str = ""

    # Workers: how many tasks one process runs at once, and the lease that lets another
    # process take over a task whose worker died.
    workers: int = 1
    lease_s: float = 30.0
    heartbeat_s: float = 5.0
    max_attempts: int = 3
    poll_s: float = 0.2
    # A run longer than its model's limit fails (refunded, code "timeout"); an engine
    # whose progress does not move for stall_s is stopped (refunded, "engine_stalled").
    max_run_s_identify: float = 900.0
    max_run_s_sync: float = 3600.0
    stall_s: float = 300.0
    # How engines start: "warm" forks each task's process from a fork server that has
    # loaded the engine once (worker/zygote.py); "cold" starts a fresh interpreter per
    # task (0.6 s+ of imports and model loading each; kept to compare, bench/warm_engines.py).
    engine_start: str = "warm"
    # Resident memory one task's engine process may use, in MB; past it that process is
    # killed and the task fails (limit_exceeded, refunded), the worker runs on. A 4K
    # minute's sync peaks at ~1 GB. 0 switches the cap off (the kernel's OOM killer is
    # then the only bound).
    engine_memory_mb: int = 4096
    # Processes refuse to start when what the fleet must share does not match (see
    # fleetcheck.py); "false" skips the check (not advised).
    fleet_check: bool = True

    # Media limits checked before a task is accepted.
    max_video_bytes: int = 100 * MB
    max_video_ms: int = 60_000
    min_video_ms: int = 1_000
    max_audio_bytes: int = 20 * MB
    max_audio_ms: int = 60_000
    min_side_px: int = 128
    max_side_px: int = 4096
    min_clip_ms: int = 1_000
    max_faces_per_task: int = 8
    max_upload_bytes: int = 100 * MB

    # Fetching user URLs. A source slower than fetch_min_bytes_per_s over any window of
    # fetch_rate_window_s (or silent that long) is cut then, not at the overall deadline.
    fetch_timeout_s: float = 60.0
    fetch_connect_timeout_s: float = 10.0
    max_redirects: int = 5
    fetch_min_bytes_per_s: int = 16 * 1024
    fetch_rate_window_s: float = 5.0
    # Inputs downloading at once, over all accounts (503 past it) and per account (429).
    max_downloads: int = 32
    max_downloads_per_account: int = 4

    # The request rate and the download slots hold across every API process: counted in
    # the database the processes share (SQLite or PostgreSQL, no extra service), or in
    # Redis when redis_url is set (redis://host:6379/0, rediss://, unix://; needs the
    # `redis` extra). Keys start with redis_prefix (one installation per prefix). A slot
    # of a process that died is free again after download_slot_lease_s (a live process
    # renews its slots every third of it).
    redis_url: str = ""
    redis_prefix: str = "lipdub:"
    download_slot_lease_s: float = 30.0

    # Per-account limits, answered with 429; 0 switches one off. Tasks count while
    # pending or processing; upload bytes over the last 24 h; stored bytes are the
    # account's uploads not yet expired.
    rate_limit_per_s: int = 50
    max_tasks_per_account: int = 20
    max_upload_bytes_per_day: int = 2048 * MB
    max_stored_bytes_per_account: int = 1024 * MB

    # Below this much free space on the data dir's disk new work is refused (503),
    # /healthz answers 503, and running tasks fail with a refund.
    min_free_bytes: int = 1024 * MB

    # Prices in micro-dollars (1 USD = 1,000,000).
    price_identify_micros: int = 700
    price_sync_block_micros: int = 6_300
    sync_block_ms: int = 5_000

    # Lifetimes.
    session_ttl_s: int = 24 * 3600
    result_retention_days: float = 30.0
    janitor_interval_s: float = 3600.0

    # Callbacks: quick retries after a failed attempt, then re-sends at offsets from the
    # first attempt until one answers 2xx or the give-up age passes.
    callback_timeout_s: float = 10.0
    callback_retry_delays_s: tuple[float, ...] = (1.0, 2.0, 4.0)
    callback_resend_offsets_s: tuple[float, ...] = (60, 120, 300, 600, 1200, 1800)
    callback_give_up_s: float = 1800.0
    # Multiplies every callback delay; 1.0 is real time, tests use e.g. 0.002.
    callback_time_scale: float = 1.0
    # Attempts in flight at once; at most callback_per_host of them to one receiver
    # (scheme://host:port), of which one account holds at most callback_per_account_host,
    # so a hanging endpoint of one account leaves the others a slot even behind a shared
    # gateway. An endpoint (URL) that timed out or refused the connection waits
    # callback_endpoint_backoff_s, doubling with each such failure in a row up to
    # callback_endpoint_backoff_max_s (both scaled), then sends one attempt at a time
    # outside the receiver's slots until it answers (service/callbacks/pacing.py).
    callback_senders: int = 16
    callback_per_host: int = 2
    callback_per_account_host: int = 1
    callback_endpoint_backoff_s: float = 1.0
    callback_endpoint_backoff_max_s: float = 8.0

    # Kling's own API (/v1, docs/kling.md). identify-face answers synchronously: past this
    # many seconds it answers Kling's 5002 (HTTP 504) and cancels the task (refunded),
    # below the 60 s at which HTTP clients and proxies commonly give up. JWTs' exp and
    # nbf are checked with this much leeway for clocks that disagree.
    kling_identify_timeout_s: float = 55.0
    kling_jwt_leeway_s: float = 5.0
    # Which engine runs an account's tasks when the account names none (`lipdub account
    # engine`): "local" (lipdub's own CPU engine) or "kling" (Kling's cloud, below).
    default_engine: str = "local"
    # Kling's official API as an engine (docs/kling-engine.md). Credentials: an AccessKey
    # and SecretKey (a short-lived HS256 JWT is signed per request), or an API key sent
    # as the bearer itself.
    kling_base_url: str = "https://api-singapore.klingai.com"
    # Kept out of repr(): a settings object in a log line or traceback shows no secret.
    kling_access_key: str = dataclasses.field(default="", repr=False)
    kling_secret_key: str = dataclasses.field(default="", repr=False)
    kling_api_key: str = dataclasses.field(default="", repr=False)
    # One HTTP request to Kling (identify is synchronous and may take a while).
    kling_timeout_s: float = 120.0
    kling_connect_timeout_s: float = 10.0
    # How often a running upstream task is looked at.
    kling_poll_s: float = 5.0
    # Kling's outages (5000-5002, network errors) and rate or concurrency refusals
    # (1302, 1303) are retried with growing pauses (up to kling_backoff_max_s) for this
    # long before the task fails and is refunded.
    kling_retry_s: float = 600.0
    kling_backoff_s: float = 1.0
    kling_backoff_max_s: float = 60.0

    # Embedded default: `lipdub serve` runs workers in-process when true.
    embedded_workers: bool = True

    # --- derived -----------------------------------------------------------------

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'lipdub.db').resolve()}"

    @property
    def media_dir(self) -> Path:
        return self.data_dir / "media"

    @property
    def scratch_root(self) -> Path:
        return Path(self.scratch_dir) if self.scratch_dir else self.data_dir / "scratch"

    def max_run_s(self, model: str) -> float:
        return self.max_run_s_identify if "identify" in model else self.max_run_s_sync

    @property
    def allows_all_private(self) -> bool:
        return self.allow_private_urls.strip().lower() in {"1", "true", "yes", "on"}

    @property
    def allowed_private_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        v = self.allow_private_urls.strip().lower()
        if v in {"", "0", "false", "no", "off"} or self.allows_all_private:
            return ()
        return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in v.split(",") if p)

    @property
    def result_retention_s(self) -> float:
        return self.result_retention_days * 86400.0

    def secret_key(self) -> bytes:
        """The signing key; generated once into the data dir so API and workers agree."""
        if self.signing_key:
            return self.signing_key.encode()
        path = self.data_dir / "signing.key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(os.urandom(32).hex())
            tmp.chmod(0o600)
            # link() fails if another process won the race; then we read theirs.
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return path.read_text().strip().encode()

    # --- construction ------------------------------------------------------------

    @classmethod
    def from_env(
        cls, overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
    ) -> Settings:
        """Settings from ``LIPDUB_<FIELD>`` variables, then ``overrides`` (None = unset)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f"LIPDUB_{f.name.upper()}")
            if raw is not None and raw != "":
                values[f.name] = _parse(f.name, raw, cls.__dataclass_fields__[f.name].type)
        for k, v in (overrides or {}).items():
            if v is not None:
                values[k] = v
        if "data_dir" in values:
            values["data_dir"] = Path(values["data_dir"])
        s = cls(**values)
        s.validate()
        return s

    def validate(self) -> None:
        if self.workers < 0:
            raise ValueError("LIPDUB_WORKERS must be 0 or more: set a non-negative count.")
        if self.callback_time_scale <= 0:
            raise ValueError("LIPDUB_CALLBACK_TIME_SCALE must be positive: 1.0 is real time.")
        for name in (
            "max_downloads",
            "max_downloads_per_account",
            "callback_senders",
            "callback_per_host",
            "callback_per_account_host",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"LIPDUB_{name.upper()} must be 1 or more: set a count.")
        if self.engine_start not in ("warm", "cold"):
            raise ValueError("LIPDUB_ENGINE_START must be 'warm' or 'cold'.")
        if self.engine_memory_mb < 0:
            raise ValueError("LIPDUB_ENGINE_MEMORY_MB must be 0 (no cap) or more: e.g. 4096.")
        if self.callback_per_account_host > self.callback_per_host:
            raise ValueError(
                "LIPDUB_CALLBACK_PER_ACCOUNT_HOST must not exceed LIPDUB_CALLBACK_PER_HOST: "
                "an account's share is part of the receiver's slots."
            )
        if not 0 <= self.callback_endpoint_backoff_s <= self.callback_endpoint_backoff_max_s:
            raise ValueError(
                "LIPDUB_CALLBACK_ENDPOINT_BACKOFF_S must be 0 or more and at most "
                "LIPDUB_CALLBACK_ENDPOINT_BACKOFF_MAX_S (seconds)."
            )
        if self.storage_links not in ("proxy", "presign"):
            raise ValueError("LIPDUB_STORAGE_LINKS must be 'proxy' or 'presign'.")
        if self.kling_identify_timeout_s <= 0 or self.kling_jwt_leeway_s < 0:
            raise ValueError(
                "LIPDUB_KLING_IDENTIFY_TIMEOUT_S must be positive and "
                "LIPDUB_KLING_JWT_LEEWAY_S 0 or more: e.g. 55 and 5 (seconds)."
            )
        if self.redis_url and self.redis_url.split("://", 1)[0] not in REDIS_SCHEMES:
            raise ValueError(
                "LIPDUB_REDIS_URL must start with redis://, rediss:// or unix:// "
                "(e.g. redis://127.0.0.1:6379/0), or be empty to count limits in the database."
            )
        if self.download_slot_lease_s <= 0:
            raise ValueError("LIPDUB_DOWNLOAD_SLOT_LEASE_S must be positive: e.g. 30 (seconds).")
        if self.fetch_rate_window_s <= 0:
            raise ValueError("LIPDUB_FETCH_RATE_WINDOW_S must be positive: e.g. 5 (seconds).")
        if self.default_engine not in ENGINES:
            raise ValueError(
                f"LIPDUB_DEFAULT_ENGINE={self.default_engine!r}: use one of {', '.join(ENGINES)}."
            )
        if self.kling_poll_s <= 0 or self.kling_backoff_s <= 0:
            raise ValueError("LIPDUB_KLING_POLL_S and LIPDUB_KLING_BACKOFF_S must be positive.")
        self.allowed_private_networks  # noqa: B018 - parses, so a typo fails at start-up


def _parse(name: str, raw: str, typ: object) -> Any:
    t = str(typ)
    try:
        if "tuple" in t:
            return tuple(float(x) for x in raw.split(",") if x.strip())
        if t == "bool":
            return raw.strip().lower() in {"1", "true", "yes", "on"}
        if t == "int":
            return int(float(raw))
        if t == "float":
            return float(raw)
    except ValueError:
        raise ValueError(
            f"LIPDUB_{name.upper()}={raw!r} is not a valid {t}: fix the environment variable."
        ) from None
    return raw
