"""The suite's own machinery under pytest-xdist: tests sharing an expensive fixture run on one
worker. (pytest 9.2 with pytest-xdist 3.8 silently dropped every `xdist_group`: each worker
then started its own `driftloop up` for the fault tests, and a module's shared one too.)"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_tests_sharing_a_fixture_run_on_one_worker(tmp_path: Path) -> None:
    """The real grouping hook of tests/conftest.py, on a copy of the suite's layout: two fault
    test files and a file with a module-scoped fixture, beside tests scheduled alone."""
    suite = tmp_path / "tests"
    (suite / "faults").mkdir(parents=True)
    (suite / "conftest.py").write_text(
        "import importlib.util, sys\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "spec = importlib.util.spec_from_file_location(\n"
        f"    'suite_conftest', {str(TESTS / 'conftest.py')!r})\n"
        "suite = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(suite)\n"
        "pytest_collection_modifyitems = suite.pytest_collection_modifyitems\n"
    )
    shared = [
        ("a", "faults/test_one.py"),
        ("a", "faults/test_two.py"),
        ("b", "test_permissions.py"),
    ]
    for group, file in shared:
        (suite / file).write_text(
            "".join(f"def test_{group}_{i}():\n    pass\n\n\n" for i in range(4))
        )
    (suite / "test_alone.py").write_text(
        "".join(f"def test_alone_{i}():\n    pass\n\n\n" for i in range(6))
    )

    run = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v"),
            *("-p", "no:cacheprovider", "-o", "addopts=", "--rootdir", str(tmp_path), str(suite)),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )

    assert run.returncode == 0, run.stdout + run.stderr
    ran = re.findall(r"\[(gw\d)\].*PASSED \S*::(test_\w+)", run.stdout)
    assert len(ran) == 18, run.stdout
    for group in ("a", "b"):
        workers = {worker for worker, test in ran if test.startswith(f"test_{group}_")}
        assert len(workers) == 1, f"group {group} ran on {sorted(workers)}"
