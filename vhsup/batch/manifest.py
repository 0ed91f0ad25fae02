"""The batch manifest: one SQLite file, ``OUT/.vhsup/jobs.db``, the source of truth.

Only the batch's parent process writes it (workers report back over pipes or
Ray), every change is its own short transaction, and the journal is WAL, so
``vhsup batch status`` can read while a run writes and a killed run leaves
the last committed state behind - never half a row.

A run holds an exclusive lock on ``OUT/.vhsup/lock`` (``flock``, released by
the kernel however the process dies). So at the start of a run every row
still marked ``running`` belongs to a dead run and becomes ``interrupted``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vhsup.errors import VhsupError

STATES = ("pending", "running", "done", "failed", "interrupted")
SCHEMA_VERSION = 1
_MB = 1 << 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    input        TEXT PRIMARY KEY,          -- path relative to the source folder, '/' separated
    source       TEXT NOT NULL,             -- absolute input path when last seen
    size         INTEGER NOT NULL,
    mtime_ns     INTEGER NOT NULL,
    fingerprint  TEXT NOT NULL,             -- sha256 over size, first MB and last MB
    settings     TEXT NOT NULL,             -- settings hash (model, weights, options)
    model        TEXT,
    output       TEXT NOT NULL,
    written      INTEGER NOT NULL DEFAULT 0, -- 1 once this batch has written the output file
    state        TEXT NOT NULL CHECK (state IN ('pending','running','done','failed','interrupted')),
    attempts     INTEGER NOT NULL DEFAULT 0, -- finished tries (done or failed) for this input+settings
    error        TEXT,
    started      REAL,
    finished     REAL,
    seconds      REAL,
    frames       INTEGER,
    fps          REAL,
    worker       TEXT,                      -- host:pid of the process that ran it
    pid          INTEGER,
    run_id       TEXT,
    updated      REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id   TEXT PRIMARY KEY,
    pid      INTEGER NOT NULL,
    host     TEXT NOT NULL,
    started  REAL NOT NULL,
    finished REAL,
    src      TEXT,
    engine   TEXT,
    settings TEXT,                          -- the options as JSON, for people reading the file
    status   INTEGER                        -- the exit status; NULL while running or if it died
);
"""


def fingerprint(path: str | os.PathLike[str], size: int | None = None) -> str:
    """sha256 of the size, the first MB and the last MB: cheap even for a 40 GB capture."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        if size is None:
            size = os.fstat(fh.fileno()).st_size
        h.update(str(size).encode())
        h.update(fh.read(_MB))
        if size > 2 * _MB:
            fh.seek(size - _MB)
            h.update(fh.read(_MB))
        elif size > _MB:
            h.update(fh.read())
    return h.hexdigest()


def settings_hash(settings: dict) -> str:
    """A short stable hash of the options that decide what an output looks like."""
    text = json.dumps(settings, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Job:
    """One row of the manifest."""

    input: str
    source: str
    size: int
    mtime_ns: int
    fingerprint: str
    settings: str
    model: str | None
    output: str
    state: str
    written: int = 0
    attempts: int = 0
    error: str | None = None
    started: float | None = None
    finished: float | None = None
    seconds: float | None = None
    frames: int | None = None
    fps: float | None = None
    worker: str | None = None
    pid: int | None = None
    run_id: str | None = None
    updated: float = 0.0

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


_COLUMNS = tuple(Job.__dataclass_fields__)


def manifest_dir(out: str | os.PathLike[str]) -> Path:
    return Path(out) / ".vhsup"


def db_path(out: str | os.PathLike[str]) -> Path:
    return manifest_dir(out) / "jobs.db"


class Manifest:
    """The jobs table of one output folder.

    Open it with :meth:`open` (creating it) or :meth:`read` (status: must
    exist, never written).
    """

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path = path
        self.conn = conn

    @classmethod
    def open(cls, out: str | os.PathLike[str]) -> Manifest:
        path = db_path(out)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise VhsupError(f"cannot create the manifest folder ({exc.strerror or exc})", path.parent) from None
        conn = cls._connect(path)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a commit survives a killed process
            with conn:
                conn.executescript(_SCHEMA)
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise VhsupError(f"the batch manifest is unreadable ({exc}); move it away to start afresh", path) from None
        return cls(path, conn)

    @classmethod
    def read(cls, out: str | os.PathLike[str]) -> Manifest:
        path = db_path(out)
        if not path.is_file():
            raise VhsupError("no batch manifest here (.vhsup/jobs.db); run `vhsup batch SRC --out` first", out)
        return cls(path, cls._connect(path))

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(str(path), timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise VhsupError(f"cannot open the batch manifest ({exc})", path) from None
        conn.row_factory = sqlite3.Row
        # isolation_level=None: autocommit unless `with self.tx()`.
        return conn

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- reading -------------------------------------------------------------

    def jobs(self) -> list[Job]:
        try:
            rows = self.conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs ORDER BY input").fetchall()
        except sqlite3.DatabaseError as exc:
            raise VhsupError(f"the batch manifest is unreadable ({exc})", self.path) from None
        return [Job(**dict(r)) for r in rows]

    def job(self, key: str) -> Job | None:
        row = self.conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE input = ?", (key,)).fetchone()
        return Job(**dict(row)) if row else None

    def runs(self) -> list[dict]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM runs ORDER BY started")]

    # -- writing (the parent process only) ----------------------------------

    def begin_run(self, src: str, engine: str, settings: dict) -> str:
        """Record a run and turn rows left ``running`` by dead runs into ``interrupted``.

        Call it only while holding :func:`run_lock`: then no other run is alive.
        """
        run_id = uuid.uuid4().hex[:12]
        now = time.time()
        with self.tx() as c:
            c.execute(
                "UPDATE jobs SET state='interrupted', error='the run was stopped before this job finished', "
                "updated=? WHERE state='running'",
                (now,),
            )
            c.execute(
                "INSERT INTO runs (run_id, pid, host, started, src, engine, settings) VALUES (?,?,?,?,?,?,?)",
                (run_id, os.getpid(), socket.gethostname(), now, src, engine, json.dumps(settings, default=str)),
            )
        return run_id

    def end_run(self, run_id: str, status: int) -> None:
        with self.tx() as c:
            c.execute("UPDATE runs SET finished=?, status=? WHERE run_id=?", (time.time(), status, run_id))

    def upsert(self, job: Job) -> None:
        job.updated = time.time()
        with self.tx() as c:
            c.execute(
                f"INSERT OR REPLACE INTO jobs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                tuple(getattr(job, k) for k in _COLUMNS),
            )

    def update(self, key: str, **fields: object) -> None:
        bad = set(fields) - set(_COLUMNS)
        if bad:
            raise ValueError(f"unknown manifest column(s): {sorted(bad)}")
        if "state" in fields and fields["state"] not in STATES:
            raise ValueError(f"unknown state {fields['state']!r}")
        fields["updated"] = time.time()
        sets = ", ".join(f"{k}=?" for k in fields)
        with self.tx() as c:
            c.execute(f"UPDATE jobs SET {sets} WHERE input=?", (*fields.values(), key))


class LockBusy(VhsupError):
    """Another batch run is writing to this output folder."""


@contextlib.contextmanager
def run_lock(out: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the output folder's run lock for the duration of a run.

    ``flock`` is released by the kernel when the holder dies (even by
    SIGKILL), so a crashed run never blocks the next one.
    """
    lock_file = manifest_dir(out) / "lock"
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock; one run at a time is then the user's job
            pass
        else:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                raise LockBusy(f"another vhsup batch ({holder}) is writing to this folder", out) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield
    finally:
        os.close(fd)


def lock_is_held(out: str | os.PathLike[str]) -> bool:
    """Whether a live run holds the lock (for `status`: its `running` rows are real)."""
    lock_file = manifest_dir(out) / "lock"
    if not lock_file.exists():
        return False
    try:
        import fcntl
    except ImportError:
        return False
    fd = os.open(lock_file, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
