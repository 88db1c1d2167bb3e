"""Fixtures of the service tests (real SQLite and PostgreSQL, real HTTP servers)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from lipdub.config import Settings
from lipdub.service.callbacks.payloads import WIRE
from lipdub.service.context import Context
from lipdub.service.store import Store

from .faults import FaultProxy, S3Server
from .helpers import PG_URL, MediaServer, Receiver


@pytest.fixture(scope="session")
def media_server() -> Iterator[MediaServer]:
    m = MediaServer()
    yield m
    m.close()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each kind: a SQLite file, or a PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    yield from _pg_schema()


@pytest.fixture()
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema (for what only PostgreSQL has: its clock, NOTIFY)."""
    yield from _pg_schema()


@pytest.fixture()
def pg_proxy() -> Iterator[FaultProxy]:
    """A fault proxy in front of the test PostgreSQL server."""
    from sqlalchemy.engine import make_url

    u = make_url(PG_URL)
    proxy = FaultProxy(u.host or "127.0.0.1", u.port or 5432)
    yield proxy
    proxy.close()


def through(proxy: FaultProxy, url: str) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(
        hide_password=False
    )


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server()
    yield server
    server.close()


def _pg_schema() -> Iterator[str]:
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture()
def store(db_url: str) -> Iterator[Store]:
    s = Store.open(db_url, callbacks=WIRE)
    yield s
    s.close()


@pytest.fixture()
def ctx(tmp_path: Path, store: Store) -> Context:
    settings = Settings(
        data_dir=tmp_path / "data",
        public_url="http://127.0.0.1:9",
        allow_private_urls="127.0.0.1/32",
    )
    return Context.build(settings, store)


@pytest.fixture(scope="session")
def short_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 3 s of a real talking head with its sound: end-to-end runs stay cheap."""
    from tests.mediagen import crop_video

    from .helpers import MEDIA

    out = tmp_path_factory.mktemp("media") / "face_3s.mp4"
    return crop_video(MEDIA / "videoretalking__face_2.mp4", out, 3.0)
