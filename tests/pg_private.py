"""A private PostgreSQL server for tests that stop and restart it (the machine's shared one is never
touched): `initdb` into a temporary directory, `pg_ctl` on a free port, trust auth on 127.0.0.1.

    pg = PrivatePostgres.create()      # skips, saying why, when the server binaries are missing
    url = pg.url                        # postgresql+psycopg://postgres@127.0.0.1:PORT/chatloop
    pg.stop(); pg.start(); pg.destroy()

initdb refuses to run as root, so as root every command runs as the `postgres` system user
(`runuser -u postgres --`), which then owns the data directory.
"""

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from server_util import free_port

PG_ROOT = Path("/usr/lib/postgresql")


def _bin_dir() -> Path:
    found = sorted((p.parent for p in PG_ROOT.glob("*/bin/initdb") if (p.parent / "pg_ctl").exists()),
                   key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if not found:
        pytest.skip(f"no PostgreSQL server binaries (initdb, pg_ctl) under {PG_ROOT}/*/bin: install the "
                    "postgresql package to run this test")
    return found[-1]


def _as_user() -> tuple[list[str], str | None]:
    """(command prefix, user) so that the server does not run as root."""
    if os.geteuid() != 0:
        return [], None
    runuser = shutil.which("runuser")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        runuser = None
    if not runuser:
        pytest.skip("running as root without runuser or a `postgres` user: initdb refuses root")
    return [runuser, "-u", "postgres", "--"], "postgres"


class PrivatePostgres:
    def __init__(self, root: Path, bindir: Path, prefix: list[str], port: int):
        self.root, self.bindir, self.prefix, self.port = root, bindir, prefix, port
        self.data, self.log = root / "data", root / "server.log"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/chatloop"

    @classmethod
    def create(cls) -> "PrivatePostgres":
        bindir = _bin_dir()
        prefix, user = _as_user()
        root = Path(tempfile.mkdtemp(prefix="chatloop-pg-"))  # under /tmp: the postgres user can reach it
        if user:
            shutil.chown(root, user)
        pg = cls(root, bindir, prefix, free_port())
        pg._run("initdb", "-D", str(pg.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        pg.start()
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{pg.port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE chatloop")
        return pg

    def _run(self, tool: str, *args: str) -> None:
        proc = subprocess.run([*self.prefix, str(self.bindir / tool), *args], capture_output=True, text=True,
                              timeout=120, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{tool} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")

    def start(self) -> None:
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
                   "-c fsync=off -c max_connections=50")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
