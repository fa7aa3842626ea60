"""A throwaway PostgreSQL server for tests and benchmarks, from the machine's own binaries.

``initdb`` and ``pg_ctl`` in a temporary folder, on a free port of 127.0.0.1, trust
authentication; as the ``postgres`` user when running as root (PostgreSQL refuses root).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def postgres_bindir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are, or None when this machine has no PostgreSQL server."""
    candidates = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(Path(out.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    if shutil.which("initdb"):
        candidates.append(Path(shutil.which("initdb")).parent)
    for path in candidates:
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """Start one server; ``url(dbname)`` for each database, ``create_database`` for a fresh one.

    Example::

        server = PostgresServer.start()
        url = server.create_database("contract")
        ...
        server.stop()
    """

    def __init__(self, bindir: Path, root: Path, port: int, run_as: str | None):
        self.bindir, self.root, self.port, self.run_as = bindir, root, port, run_as

    @classmethod
    def start(cls) -> "PostgresServer":
        bindir = postgres_bindir()
        if bindir is None:
            raise FileNotFoundError("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
        root = Path(tempfile.mkdtemp(prefix="hybridrec-pg-"))
        run_as = "postgres" if os.geteuid() == 0 else None
        if run_as:
            shutil.chown(root, run_as, run_as)
        server = cls(bindir, root, free_port(), run_as)
        server._run("initdb", "-D", str(root / "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                    "--no-instructions")
        server._run("pg_ctl", "-D", str(root / "data"), "-l", str(root / "server.log"), "-w", "-t", "60", "-o",
                    f"-p {server.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=on", "start")
        return server

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bindir / tool), *args]
        if self.run_as:
            command = ["runuser", "-u", self.run_as, "--", *command]
        out = subprocess.run(command, capture_output=True, text=True)
        if out.returncode != 0:
            log = self.root / "server.log"
            raise RuntimeError(f"{tool} failed: {out.stderr.strip() or out.stdout.strip()}"
                               + (f"\n{log.read_text()[-2000:]}" if log.exists() else ""))

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, dbname: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{dbname}"')
        return self.url(dbname)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
