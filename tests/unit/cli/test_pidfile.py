"""Pid files are replaced in one step: `driftloop status`, `down` and the fault tests read
them while the supervisor restarts a service and writes its new pid."""

from __future__ import annotations

import threading
from pathlib import Path

from driftloop.cli.supervisor import read_pid, write_pid


def test_a_reader_never_sees_a_pid_file_empty_while_it_is_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "gateway.pid"
    write_pid(path, 1234)
    done = threading.Event()

    def rewrite() -> None:
        for pid in range(100_000, 104_000):
            write_pid(path, pid)
        done.set()

    writer = threading.Thread(target=rewrite)
    writer.start()
    seen = []
    while not done.is_set():
        seen.append(path.read_text())
    writer.join()

    assert seen
    torn = {text for text in seen if not text.isdigit()}
    assert not torn, f"read while being written: {sorted(torn)}"
    assert path.read_text() == "103999"
    assert not list(tmp_path.glob(".*.tmp")), "no partial file left"


def test_a_pid_file_of_a_process_that_is_gone_reads_as_none(tmp_path: Path) -> None:
    path = tmp_path / "x.pid"
    assert read_pid(path) is None  # no file
    write_pid(path, 2**22 + 12345)  # above any pid the kernel hands out here
    assert read_pid(path) is None
