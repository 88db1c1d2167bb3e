"""Where the API processes count their shared limits: the database (the default; no
extra service) or Redis (opt-in, ``LIPDUB_REDIS_URL``).

Both keep the same two things: a per-account moving window of requests (at most N in
any second) and leased download slots (per account and in total). Every call blocks on
the network or the database: the admission runs them on a worker thread.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Protocol

from limits import RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from lipdub.config import Settings
from lipdub.service.store import DownloadSlotsFull, Store


class LimitsUnavailable(Exception):
    """The shared counter (Redis) did not answer; the request cannot be admitted."""


class SharedLimits(Protocol):
    def hit(self, account: str, per_s: int) -> bool:
        """Count one request; False if the account already made ``per_s`` in the last
        second (then nothing is counted)."""
        ...

    def take_slot(self, account: str, per_account: int, total: int, lease_ms: int) -> str:
        """A download slot's id; DownloadSlotsFull if the account or server has none."""
        ...

    def renew_slots(self, slots: Mapping[str, str], lease_ms: int) -> None:
        """Extend the leases of ``slots`` (id -> account) still in use."""
        ...

    def release_slot(self, slot: str, account: str) -> None: ...

    def close(self) -> None: ...


class DatabaseLimits:
    """Counts in the database every API process already shares (store/limits.py)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def hit(self, account: str, per_s: int) -> bool:
        return self.store.rate_hit(account, per_s)

    def take_slot(self, account: str, per_account: int, total: int, lease_ms: int) -> str:
        return self.store.take_download_slot(account, per_account, total, lease_ms)

    def renew_slots(self, slots: Mapping[str, str], lease_ms: int) -> None:
        self.store.renew_download_slots(list(slots), lease_ms)

    def release_slot(self, slot: str, account: str) -> None:
        self.store.release_download_slot(slot)

    def close(self) -> None:
        pass  # the store is the context's to close


# Download slots as two sorted sets (the account's and the server's), scored by lease
# expiry in Redis's own clock; one script, so the check and the take are atomic.
_TAKE_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 1 end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return 2 end
local expires = now + tonumber(ARGV[4])
redis.call('ZADD', KEYS[1], expires, ARGV[1])
redis.call('ZADD', KEYS[2], expires, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 0
"""
_RENEW_SLOT = """
local t = redis.call('TIME')
local expires = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], 'XX', expires, ARGV[1])
redis.call('ZADD', KEYS[2], 'XX', expires, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 0
"""


class RedisLimits:
    """Counts in Redis: the request rate through the ``limits`` library's moving window
    (a Lua script, atomic; it stamps hits with this machine's clock, so API machines
    should keep theirs in sync, as NTP does), the download slots through the scripts
    above (Redis's own clock)."""

    def __init__(self, url: str, prefix: str) -> None:
        import redis  # optional dependency: only an installation that sets the URL needs it

        self._errors: tuple[type[Exception], ...] = (StorageError, redis.RedisError)
        self.prefix = prefix
        self.client: Any = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._take = self.client.register_script(_TAKE_SLOT)
        self._renew = self.client.register_script(_RENEW_SLOT)
        storage = RedisStorage(url, key_prefix=f"{prefix}rate", wrap_exceptions=True)
        self._rate = MovingWindowRateLimiter(storage)
        self._items: dict[int, RateLimitItemPerSecond] = {}

    def check(self) -> None:
        """Raise LimitsUnavailable unless Redis answers (a start-up check)."""
        try:
            self.client.ping()
        except self._errors as e:
            raise LimitsUnavailable(
                f"Redis does not answer ({e}): start it, or unset LIPDUB_REDIS_URL to count "
                "limits in the database"
            ) from None

    def _keys(self, account: str) -> list[str]:
        return [f"{self.prefix}slots:account:{account}", f"{self.prefix}slots:all"]

    def hit(self, account: str, per_s: int) -> bool:
        item = self._items.setdefault(per_s, RateLimitItemPerSecond(per_s))
        try:
            return bool(self._rate.hit(item, account))
        except self._errors as e:
            raise LimitsUnavailable(str(e)) from None

    def take_slot(self, account: str, per_account: int, total: int, lease_ms: int) -> str:
        slot = "dl_" + uuid.uuid4().hex
        try:
            refused = int(self._take(self._keys(account), [slot, per_account, total, lease_ms]))
        except self._errors as e:
            raise LimitsUnavailable(str(e)) from None
        if refused:
            raise DownloadSlotsFull("account" if refused == 1 else "server")
        return slot

    def renew_slots(self, slots: Mapping[str, str], lease_ms: int) -> None:
        try:
            for slot, account in slots.items():
                self._renew(self._keys(account), [slot, lease_ms])
        except self._errors as e:
            raise LimitsUnavailable(str(e)) from None

    def release_slot(self, slot: str, account: str) -> None:
        keys = self._keys(account)
        try:
            pipe = self.client.pipeline()
            pipe.zrem(keys[0], slot)
            pipe.zrem(keys[1], slot)
            pipe.execute()
        except self._errors as e:
            raise LimitsUnavailable(str(e)) from None

    def close(self) -> None:
        self.client.close()


def shared_limits(settings: Settings, store: Store) -> SharedLimits:
    """Redis when ``LIPDUB_REDIS_URL`` is set (checked now: a wrong URL fails at start,
    not on the first request), else the database."""
    if not settings.redis_url:
        return DatabaseLimits(store)
    try:
        limits = RedisLimits(settings.redis_url, settings.redis_prefix)
    except ImportError:
        raise LimitsUnavailable(
            "LIPDUB_REDIS_URL is set but the Redis client is not installed: "
            "pip install 'lipdub[redis]'"
        ) from None
    limits.check()
    return limits
