"""A real `mlflow server` for the tests that need MLflow over HTTP: an outage (killed and
started again on the same port and store), or a server that keeps the artifacts itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from helpers import fixed_port


class MlflowServer:
    """`mlflow server` on a free port, its store under `root`; stop() kills it, start() brings
    it back on the same port and store. With `serve_artifacts`, the server keeps the artifacts
    in `root/server-artifacts` (`--artifacts-destination`, as the MinIO bucket of
    docker-compose does: clients get `mlflow-artifacts:` locations); else clients write them to
    `root/artifacts` themselves (`--default-artifact-root`)."""

    def __init__(self, root: Path, *, serve_artifacts: bool = False) -> None:
        self.root = root
        self.port = fixed_port()
        self.serve_artifacts = serve_artifacts
        self.artifacts = root / ("server-artifacts" if serve_artifacts else "artifacts")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        where = "--artifacts-destination" if self.serve_artifacts else "--default-artifact-root"
        self.proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--backend-store-uri",
                f"sqlite:///{self.root / 'mlflow.db'}",
                where,
                str(self.artifacts),
                "--workers",
                "1",
            ],
            stdout=(self.root / "mlflow.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its web workers are its children: stop them all
        )

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.uri}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None
