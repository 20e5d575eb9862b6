"""The services' event loop (`DRIFTLOOP_EVENT_LOOP`): uvloop's when installed, asyncio's when
asked for, and a clear error when uvloop is asked for by name but missing. Each case runs
`service.run` in a process of its own, as a service starts (it installs the process's logging
and tracing)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SERVE = """
import asyncio, sys
{hide}
from driftloop.shared import service

async def serve(settings):
    loop = asyncio.get_running_loop()
    print(type(loop).__module__ + "." + type(loop).__name__)

service.run("probe", serve)
"""


def run_service(tmp_path: Path, choice: str | None, *, hide_uvloop: bool = False) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRIFTLOOP_", "OTEL_"))}
    env |= {"DRIFTLOOP_HOME": str(tmp_path), "OTEL_TRACES_EXPORTER": "none"}
    if choice is not None:
        env["DRIFTLOOP_EVENT_LOOP"] = choice
    hide = "sys.modules['uvloop'] = None  # as if not installed" if hide_uvloop else ""
    done = subprocess.run(
        [sys.executable, "-c", SERVE.format(hide=hide)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return (done.stdout + done.stderr).strip()


def test_a_service_runs_on_uvloop_by_default(tmp_path: Path) -> None:
    assert run_service(tmp_path, None).splitlines()[-1] == "uvloop.Loop"


def test_asyncio_s_own_loop_when_asked_for(tmp_path: Path) -> None:
    assert run_service(tmp_path, "asyncio").splitlines()[-1].startswith("asyncio.")


def test_without_uvloop_auto_falls_back_to_asyncio(tmp_path: Path) -> None:
    out = run_service(tmp_path, None, hide_uvloop=True)

    assert out.splitlines()[-1].startswith("asyncio.")


def test_uvloop_asked_for_but_missing_is_an_error_that_says_so(tmp_path: Path) -> None:
    out = run_service(tmp_path, "uvloop", hide_uvloop=True)

    assert "DRIFTLOOP_EVENT_LOOP=uvloop, but uvloop is not installed" in out
    assert "uvloop.Loop" not in out


def test_an_unknown_loop_is_refused_naming_the_variable(tmp_path: Path) -> None:
    out = run_service(tmp_path, "trio")

    assert "event_loop" in out
    assert "uvloop.Loop" not in out
