"""Fixtures every test package may use.

* ``postgres_server`` (session): a throwaway PostgreSQL cluster (initdb + pg_ctl) on a free
  loopback port, started on first use and removed at the end of the session. It works as a
  normal user and as root (CI), where the cluster is owned by the ``postgres`` user.
  ``postgres_server.create_database()`` returns the URL of a new empty database
  (``at_head=True``: a copy of one migrated to the newest revision once per session);
  ``postgres_server.url_for(name)`` the URL of an existing one.
* ``database_url``: a fresh database per test, already migrated to the newest revision (as a
  service's first start leaves it), once on SQLite and once on PostgreSQL (test ids ``[sqlite]`` /
  ``[postgresql]``). Request it and your test runs on both backends. Without PostgreSQL binaries
  the postgresql variant is skipped, or fails when ``CI`` is set. The schema is migrated once per
  session and copied (a PostgreSQL template, an SQLite file): migrating every test's database
  from nothing cost about half a second each, most of it making the month partitions.
* ``empty_database_url``: the same, but empty: for tests of the migrations themselves.
* ``postgres_database``: a fresh empty PostgreSQL database, for tests on PostgreSQL alone.
* ``settings_factory(**overrides)``: smoltbot `Settings` for one test: home in ``tmp_path``,
  the test's ``database_url`` when the test uses it (else SQLite in home), a fixed hash
  secret, and ephemeral ports/addresses (``127.0.0.1:0``) everywhere.

Example::

    async def test_something(settings_factory):
        settings = settings_factory(session_idle_minutes=0.01)
        server = await build_server(settings)
"""

from __future__ import annotations

import asyncio
import glob
import itertools
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from smoltbot.core.data_dir import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE
from smoltbot.core.settings import Settings, load_settings

TEST_HASH_SECRET = "test-hash-secret-not-for-production"


def _find_pg_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer:
    """A running throwaway cluster; trust authentication as user ``postgres`` on 127.0.0.1."""

    def __init__(self, port: int, data_dir: Path) -> None:
        self.host = "127.0.0.1"
        self.port = port
        self.data_dir = data_dir
        self._names = itertools.count(1)
        self._lock = threading.Lock()
        self._template: str | None = None

    def url_for(self, dbname: str) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{dbname}"

    def create_database(self, *, at_head: bool = False) -> str:
        """Creates a new database and returns its URL: empty, or (`at_head`) at the newest
        revision, copied from a template migrated on first use."""
        with self._lock:
            name = f"test_{os.getpid()}_{next(self._names)}"
            if at_head and self._template is None:
                template = f"template_{os.getpid()}"
                _run_async_in_thread(self._create(template))
                _run_async_in_thread(_migrate_to_head(self.url_for(template)))
                self._template = template
            template = self._template if at_head else None
        _run_async_in_thread(self._create(name, template))
        return self.url_for(name)

    def drop_database(self, url: str) -> None:
        """Drops a database `create_database` made, whoever is still connected to it.

        Without this the cluster grew past a gigabyte over a whole run, and removing it at the
        end counted against the last test's timeout (it ran out on a busy disk)."""
        _run_async_in_thread(self._drop(url.rsplit("/", 1)[1]))

    async def _create(self, name: str, template: str | None = None) -> None:
        import asyncpg

        conn = await asyncpg.connect(host=self.host, port=self.port, user="postgres", database="postgres")
        try:
            await conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        finally:
            await conn.close()

    async def _drop(self, name: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(host=self.host, port=self.port, user="postgres", database="postgres")
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def _migrate_to_head(url: str) -> None:
    from smoltbot.core.storage.database import open_database
    from smoltbot.core.storage.migrate import migrate

    db = open_database(url)
    try:
        await migrate(db)
    finally:
        await db.close()  # a template is copied only while nobody is connected to it


def _run_async_in_thread(coroutine: object) -> None:
    # Fixtures may run while pytest-asyncio's loop runs in this thread; a thread of its own
    # gives asyncio.run a clean slate.
    errors: list[Exception] = []

    def target() -> None:
        try:
            asyncio.run(coroutine)  # type: ignore[arg-type]
        except Exception as error:  # noqa: BLE001 - re-raised in the calling thread
            errors.append(error)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def _as_cluster_owner(argv: list[str]) -> list[str]:
    # initdb refuses to run as root; CI runs as root.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster for the whole test session (see the module docstring)."""
    initdb, pg_ctl = _find_pg_binary("initdb"), _find_pg_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        message = "PostgreSQL binaries (initdb, pg_ctl) not found"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    base = Path(tempfile.mkdtemp(prefix="smoltbot-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, user="postgres", group="postgres")
    data_dir = base / "data"
    subprocess.run(
        _as_cluster_owner([initdb, "-D", str(data_dir), "-A", "trust", "-U", "postgres", "--no-sync",
                           "-E", "UTF8", "--locale=C"]),
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    server: PostgresServer | None = None
    last_error = ""
    for _attempt in range(3):  # the free port may be taken between probe and bind
        port = _free_port()
        options = (f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        started = subprocess.run(
            _as_cluster_owner([pg_ctl, "-D", str(data_dir), "-o", options, "-l", str(base / "server.log"),
                               "-w", "-t", "60", "start"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False,
        )
        if started.returncode == 0:
            server = PostgresServer(port, data_dir)
            break
        last_error = started.stderr + _tail(base / "server.log")
    if server is None:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL: {last_error}")
    try:
        yield server
    finally:
        subprocess.run(_as_cluster_owner([pg_ctl, "-D", str(data_dir), "-m", "immediate", "-w", "stop"]),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        shutil.rmtree(base, ignore_errors=True)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@pytest.fixture(scope="session")
def _sqlite_at_head(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite database migrated to the newest revision, once per session, to copy."""
    path = tmp_path_factory.mktemp("sqlite-template") / "smoltbot.db"
    _run_async_in_thread(_migrate_to_head(f"sqlite:///{path}"))
    return path


def _fresh_database(request: pytest.FixtureRequest, tmp_path: Path, *, at_head: bool) -> Iterator[str]:
    if request.param == "sqlite":
        path = tmp_path / "db" / "smoltbot.db"
        if at_head:
            template: Path = request.getfixturevalue("_sqlite_at_head")
            path.parent.mkdir(mode=PRIVATE_DIR_MODE)  # as the services make it
            with sqlite3.connect(template) as source, sqlite3.connect(path) as copy:
                source.backup(copy)
            path.chmod(PRIVATE_FILE_MODE)
        yield f"sqlite:///{path}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create_database(at_head=at_head)
    yield url
    server.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database at the newest revision for this test; the test runs once per backend."""
    yield from _fresh_database(request, tmp_path, at_head=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database (no revision yet) for this test; the test runs once per backend."""
    yield from _fresh_database(request, tmp_path, at_head=False)


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for a test that runs on PostgreSQL alone; dropped after."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


@pytest.fixture
def settings_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Settings]:
    """Builds test `Settings`; keyword arguments override any field."""
    database = next((request.getfixturevalue(name) for name in ("database_url", "empty_database_url")
                     if name in request.fixturenames), "")

    def build(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "home": tmp_path / "home",
            "database_url": database,
            "hash_secret": TEST_HASH_SECRET,
            "registry_address": "127.0.0.1:0",
            "observer_address": "127.0.0.1:0",
            "gateway_host": "127.0.0.1",
            "gateway_port": 0,
            "api_host": "127.0.0.1",
            "api_port": 0,
            "public_api_url": "http://127.0.0.1:8000",
        }
        values.update(overrides)
        return load_settings(**values)

    return build
