"""Throwaway servers on loopback for tests and benches: PostgreSQL and Chroma, started for real.

    with postgres_server(tmp_path) as url:        # postgresql://diffagent@127.0.0.1:PORT/postgres
        ...
    with chroma_server(tmp_path) as url:          # http://127.0.0.1:PORT
        ...

PostgreSQL comes from Debian's `postgresql` package (`.ci/services.sh` installs it); it refuses
to run as root, so as root the server runs as the `postgres` user on a folder it owns.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (initdb, pg_ctl), or None when not installed."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3])
    )
    return versions[-1].parent if versions else None


def _server_user() -> str | None:
    """The user PostgreSQL runs as: `postgres` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError(
            "PostgreSQL refuses to run as root and there is no 'postgres' user; "
            "install Debian's postgresql package (it creates the user)"
        ) from None
    return "postgres"


@contextmanager
def postgres_server(parent: Path | None = None, *, fsync: bool = True) -> Iterator[str]:
    """Start a fresh PostgreSQL cluster on a free loopback port; yield its URL; stop and remove it.

    `parent` must be reachable by the `postgres` user when running as root (default: /tmp).

    `fsync=False` trades crash safety of the database server itself for speed (tests only).
    """
    bindir = postgres_bin()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL is not installed (apt-get install -y postgresql)")
    user = _server_user()
    root = Path(tempfile.mkdtemp(prefix="diffagent-pg-", dir=parent))
    data = root / "data"
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    port = free_port()

    def run(*command: object) -> None:
        done = subprocess.run(  # noqa: S603
            [str(part) for part in command], user=user, capture_output=True, cwd=root, text=True
        )
        if done.returncode != 0:
            shutil.rmtree(root, ignore_errors=True)
            raise RuntimeError(f"{Path(str(command[0])).name} failed: {done.stderr.strip()}")

    run(bindir / "initdb", "-D", data, "-U", "diffagent", "--auth=trust", "-E", "UTF8", "--no-sync")
    options = (
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync={'on' if fsync else 'off'}"
    )
    run(bindir / "pg_ctl", "-D", data, "-o", options, "-l", root / "server.log", "-w", "start")
    try:
        yield f"postgresql://diffagent@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(  # noqa: S603
            [bindir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"],
            user=user,
            capture_output=True,
            cwd=root,
        )
        shutil.rmtree(root, ignore_errors=True)


def chroma_command() -> list[str]:
    """How to run the `chroma` command line that ships with the chromadb package."""
    beside = Path(sys.executable).parent / "chroma"
    return [str(beside)] if beside.exists() else ["chroma"]


@contextmanager
def chroma_server(parent: Path | None = None, *, timeout_s: float = 60.0) -> Iterator[str]:
    """Start `chroma run` on a free loopback port over a temporary folder; yield its URL."""
    root = Path(tempfile.mkdtemp(prefix="diffagent-chroma-", dir=parent))
    port = free_port()
    log = (root / "server.log").open("wb")
    process = subprocess.Popen(  # noqa: S603
        [*chroma_command(), "run", "--path", str(root / "data"), "--host", "127.0.0.1"]
        + ["--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"chroma run exited: {(root / 'server.log').read_text()[-2000:]}"
                )
            try:
                if httpx.get(f"{url}/api/v2/heartbeat", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"chroma run did not answer on {url} in {timeout_s:.0f} s")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)
