"""Database outages under load: PostgreSQL connections killed (``pg_terminate_backend``) again and
again while 8 clients vote, undo and upload and a moderator decides, on a real server. Requests in
flight get a clear 503 with ``Retry-After`` (never a 500), the server reconnects by itself, and
every acknowledged vote, image and decision is stored once. SQLite: a locked or read-only
database answers 503 with the reason; the CLI prints it without a traceback."""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, event, func, select, text

from conftest import PG_URL
from doohable.api.app import create_app
from doohable.config import Settings
from doohable.ingest import sweep_orphan_blobs
from doohable.store.blobs import open_blobs
from doohable.store.db import dispose_all, get_engine, session_scope
from doohable.store.models import Decision
from doohable.store.users import add_user
from server_support import free_port, serve_in_thread, start_server, stop_server
from test_crash_consistency import CLIENTS, Acked, _check_store, _client_loop
from voting_support import add_images

DOOHABLE = str(Path(sys.executable).with_name("doohable"))


class Answers:
    """Every status code the clients saw, and whether each 503 carried Retry-After."""

    def __init__(self) -> None:
        self.codes: Counter[int] = Counter()
        self.bad_503: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, r: httpx.Response) -> None:
        with self.lock:
            self.codes[r.status_code] += 1
            if r.status_code == 503 and not r.headers.get("Retry-After"):
                self.bad_503.append(str(r.request.url))
            if r.status_code >= 500 and r.status_code != 503:
                r.read()
                self.bad_503.append(f"{r.status_code} {r.request.url}: {r.text[:300]}")


def _moderate(url: str, token: str, decided: dict[int, tuple[int, str]], stop: threading.Event,
              answers: Answers) -> None:
    """Approve or reject queued images until ``stop``; remember each acknowledged decision."""
    rng = random.Random(7)
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=auth, timeout=30, event_hooks={"response": [answers]}) as c:
        while not stop.is_set():
            try:
                q = c.get("/api/v1/moderation/queue", params={"limit": 20})
                if q.status_code != 200 or not q.json():
                    time.sleep(0.05)
                    continue
                image_id = rng.choice(q.json())["id"]
                verdict = rng.choice(["approved", "rejected"])
                r = c.post("/api/v1/moderation/decisions", json={"image_id": image_id, "decision": verdict})
                if r.status_code == 201:
                    decided[r.json()["decision_id"]] = (image_id, verdict)
            except httpx.HTTPError:
                return


VICTIM = "doohable-under-test"  # application_name of the server's connections


def _kill_connections(db: str, stop: threading.Event, kills: list[int]) -> None:
    """Terminate every connection of the server under test to database ``db`` every 0.2-0.5 s
    until ``stop`` (other connections, e.g. the test's own, are left alone)."""
    admin = create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1), poolclass=None)
    rng = random.Random(3)
    with admin.connect() as conn:
        while not stop.wait(rng.uniform(0.2, 0.5)):
            n = conn.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = :db AND application_name = :victim"
            ), {"db": db, "victim": VICTIM}).scalar_one()
            conn.commit()
            kills.append(int(n))
    admin.dispose()


Outage = Callable[[threading.Event, list[int]], None]  # runs until the event; appends what it did


def _load_through_outage(settings: Settings, tmp_path: Path, server_url: str, outage: Outage) -> None:
    """8 voters and a moderator on a real server (database ``server_url``) while ``outage``
    runs; then the same server serves again, every 5xx was a 503 with Retry-After, and every
    acknowledged vote, undo, image and decision is stored once (ratings = replay)."""
    engine = get_engine(settings.resolved_database_url)
    with session_scope(engine) as s:
        add_images(s, 30, blobs=open_blobs(settings.resolved_blob_url))
        tokens = [(u.id, t) for u, t in (add_user(s, f"voter{k}", "voter") for k in range(CLIENTS))]
        _, mod_token = add_user(s, "mod", "moderator")
    dispose_all()
    proc, url = start_server(tmp_path / "serve.log", env={"DOOHABLE_DATABASE_URL": server_url})
    acked, stop, answers = Acked(), threading.Event(), Answers()
    decided: dict[int, tuple[int, str]] = {}
    faults: list[int] = []
    threads = [threading.Thread(target=_client_loop, args=(url, t, uid, k, acked, stop, answers), daemon=True)
               for k, (uid, t) in enumerate(tokens)]
    threads.append(threading.Thread(target=_moderate, args=(url, mod_token, decided, stop, answers)))
    outage_stop = threading.Event()
    faulty = threading.Thread(target=outage, args=(outage_stop, faults))
    try:
        for t in threads:
            t.start()
        time.sleep(1.0)
        faulty.start()
        deadline = time.monotonic() + 60  # a loaded machine may need long for two outages
        while time.monotonic() < deadline and (
            answers.codes[503] < 5 or len(acked.votes) < 80 or sum(faults) < 2
        ):
            time.sleep(0.1)
        outage_stop.set()
        faulty.join(60)
        time.sleep(1.0)  # the outage is over: the same server, not restarted, serves again
        n_votes = len(acked.votes)
        time.sleep(2.0)
        assert len(acked.votes) > n_votes, "the server did not recover by itself after the outage"
    finally:
        stop.set()
        outage_stop.set()
        for t in threads:
            t.join(timeout=60)
        stop_server(proc)
    print(f"status codes {dict(answers.codes)}, faults {faults}")
    assert sum(faults) >= 2, f"too few faults: {faults}"
    assert answers.codes[503] >= 1, f"no request was caught by the outage: {answers.codes}"
    assert not answers.bad_503, answers.bad_503[:5]  # every 5xx is a 503 with Retry-After
    assert decided, "the moderator got nothing done"
    # orphan blobs of uploads whose commit failed are swept (serve does it at start-up)
    sweep_orphan_blobs(engine, open_blobs(settings.resolved_blob_url), older_than_s=0)
    _check_store(settings, acked)
    with session_scope(engine) as s:
        stored = {d.id: (d.image_id, d.decision) for d in s.scalars(select(Decision))}
        assert all(stored.get(i) == v for i, v in decided.items()), "an acknowledged decision was lost"


@pytest.mark.slow
def test_postgres_connections_killed_under_load_lose_nothing(settings: Settings, tmp_path: Path) -> None:
    if not settings.resolved_database_url.startswith("postgresql"):
        pytest.skip("pg_terminate_backend is PostgreSQL's (SQLite: see the locked/read-only tests)")
    with session_scope(get_engine(settings.resolved_database_url)) as s:
        db = s.execute(text("SELECT current_database()")).scalar_one()
    server_url = f"{settings.resolved_database_url}&application_name={VICTIM}"
    _load_through_outage(
        settings, tmp_path, server_url, lambda stop, kills: _kill_connections(db, stop, kills)
    )


def _pg_bin(name: str) -> str | None:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(found[-1]) if found else shutil.which(name)


class ThrowawayPostgres:
    """A PostgreSQL server of our own (initdb in a temp folder, a free port) that the test may
    stop and start; run as the ``postgres`` user when the tests run as root."""

    def __init__(self) -> None:
        initdb, self.pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if initdb is None or self.pg_ctl is None:
            pytest.skip("no initdb/pg_ctl for a throwaway PostgreSQL server")
        root = Path(tempfile.mkdtemp(prefix="doohable-pg-"))  # not under pytest's 0700 folder
        self.root, self.data, self.port = root, root / "pgdata", free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            self.as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(root, "postgres")
        self._run([initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"])
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, cmd: list[str]) -> None:
        done = subprocess.run([*self.as_user, *cmd], capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {done.stderr[-2000:]}")

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.data / "log")
        self._run([self.pg_ctl, "-D", str(self.data), "-o", opts, "-l", log, "-w", "start"])

    def stop(self, mode: str = "fast") -> None:
        self._run([self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop"])


@pytest.mark.slow
def test_postgres_server_restarted_under_load_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server process itself goes down (immediate shutdown: like a crash, recovery from
    the WAL at start) and comes back, twice, under load."""
    pg = ThrowawayPostgres()
    pg.start()
    try:
        home = tmp_path / "home"
        settings = Settings(home=home, database_url=pg.url, blob_url=f"file://{home / 'blobs'}")
        for k, v in {"DOOHABLE_HOME": str(home), "DOOHABLE_DATABASE_URL": pg.url,
                     "DOOHABLE_BLOB_URL": str(settings.blob_url)}.items():
            monkeypatch.setenv(k, v)

        def restarts(stop: threading.Event, done: list[int]) -> None:
            while len(done) < 2 and not stop.wait(1.5):
                pg.stop("immediate")
                time.sleep(1.0)  # requests arriving now find no server at all
                pg.start()
                done.append(1)

        _load_through_outage(settings, tmp_path, pg.url, restarts)
    finally:
        dispose_all()
        pg.stop()
        shutil.rmtree(pg.root, ignore_errors=True)


def _sqlite_settings(settings: Settings) -> Settings:
    if not settings.resolved_database_url.startswith("sqlite"):
        pytest.skip("a SQLite fault")
    return settings


def test_sqlite_locked_answers_503_then_recovers(settings: Settings) -> None:
    _sqlite_settings(settings)
    engine = get_engine(settings.resolved_database_url)
    with session_scope(engine) as s:
        add_images(s, 4)
        _, token = add_user(s, "v", "voter")
    # wait 0.2 s for a lock instead of 30 s, so that the test is quick
    event.listen(engine, "connect", lambda c, _r: c.execute("PRAGMA busy_timeout=200"))
    engine.dispose()
    holder = sqlite3.connect(settings.resolved_database_url.removeprefix("sqlite:///"), isolation_level=None)
    with serve_in_thread(create_app(settings)) as url, httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as c:
        p = c.get("/api/v1/pairs/next").json()
        holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        r = c.post("/api/v1/votes", json={"pair_token": p["pair_token"], "winner_id": p["left"]["id"]})
        assert r.status_code == 503 and r.headers["Retry-After"], r.text
        assert "locked" in r.json()["detail"] and "Traceback" not in r.text
        holder.execute("ROLLBACK")
        r = c.post("/api/v1/votes", json={"pair_token": p["pair_token"], "winner_id": p["left"]["id"]})
        assert r.status_code == 201, r.text
    holder.close()


def _read_only(home: Path, script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with ``home`` bind-mounted read-only (a private mount namespace)."""
    cmd = f"mount --bind {home} {home} && mount -o remount,ro,bind {home} && {script}"
    return subprocess.run(["unshare", "-m", "sh", "-c", cmd], capture_output=True, text=True,
                          env=dict(os.environ), timeout=120, check=False)


def test_sqlite_read_only_gives_a_clear_error(settings: Settings) -> None:
    _sqlite_settings(settings)
    with session_scope(get_engine(settings.resolved_database_url)) as s:
        add_images(s, 2)
    dispose_all()
    folder = Path(settings.resolved_database_url.removeprefix("sqlite:///")).parent
    probe = _read_only(folder, "true")
    if probe.returncode != 0:
        pytest.skip(f"cannot make a read-only mount here: {probe.stderr.strip()}")
    done = _read_only(folder, f"{DOOHABLE} users add someone --json")
    assert done.returncode == 3, done.stderr
    assert "read-only" in done.stderr and "Traceback" not in done.stderr
    with session_scope(get_engine(settings.resolved_database_url)) as s:
        assert s.scalar(select(func.count()).select_from(Decision)) == 0  # database intact, readable


def test_ingest_reconnects_after_its_connections_are_killed(settings: Settings, tmp_path: Path) -> None:
    """Every connection of a CLI-style ingest is killed after each image: the pool checks a
    connection before use (pre-ping) and opens a new one, so no image is lost or refused."""
    if not settings.resolved_database_url.startswith("postgresql"):
        pytest.skip("pg_terminate_backend is PostgreSQL's")
    from doohable.ingest import ingest_inputs
    from voting_support import jpeg_bytes

    url = f"{settings.resolved_database_url}&application_name={VICTIM}"
    victim = settings.model_copy(update={"database_url": url})
    for k in range(5):
        (tmp_path / f"{k}.jpg").write_bytes(jpeg_bytes(900 + k, size=96))
    admin = get_engine(settings.resolved_database_url)
    killed: list[int] = []

    def kill(_done: int, _total: int, _source: str) -> None:
        with admin.connect() as conn:
            killed.append(conn.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = :v"
            ), {"v": VICTIM}).scalar_one())

    report = ingest_inputs([str(tmp_path / f"{k}.jpg") for k in range(5)], victim, on_progress=kill)
    assert sum(killed) >= 4, killed
    assert (report.added, report.rejected) == (5, []), report.rejected
