"""`driftloop drift REFERENCE CURRENT`: the monitor's drift report offline, through the CLI.

The command runs in this process (helpers.invoke_cli), but for one test that proves the entry
point itself (`python -m driftloop.cli drift --json`): a report is what is under test here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import Result
from helpers import LEAKY_PREFIXES, invoke_cli

FEATURES = ["tenure", "monthly_charges", "plan", "region"]


def driftloop(*args: str, home: Path) -> Result:
    """`driftloop drift ARGS`, run in this process."""
    return invoke_cli(home, "drift", *args)


def said(result: Result | subprocess.CompletedProcess[str]) -> str:
    """stderr with rich's line wrapping undone."""
    return " ".join(result.stderr.split())


def churn(rng: np.random.Generator, n: int, *, shift: float) -> pd.DataFrame:
    """tenure and plan drift with `shift`; monthly_charges and region do not."""
    frame = pd.DataFrame(
        {
            "tenure": rng.gamma(2.0, 12.0 + 12.0 * shift, n),
            "monthly_charges": rng.normal(70.0, 20.0, n),
            "plan": rng.choice(
                ["basic", "pro", "max"], n, p=[0.6 - shift / 2, 0.3, 0.1 + shift / 2]
            ),
            "region": rng.choice(["north", "south"], n),
            "churned": rng.integers(0, 2, n),
        }
    )
    frame.loc[::97, "monthly_charges"] = np.nan
    return frame


@pytest.fixture
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(42)
    return churn(rng, 3000, shift=0.0), churn(rng, 2000, shift=0.5)


@pytest.fixture
def csv_pair(tmp_path: Path, frames: tuple[pd.DataFrame, pd.DataFrame]) -> tuple[Path, Path]:
    reference, current = tmp_path / "ref.csv", tmp_path / "cur.csv"
    frames[0].to_csv(reference, index=False)
    frames[1].to_csv(current, index=False)
    return reference, current


def test_the_entry_point_prints_the_json_report(
    tmp_path: Path, csv_pair: tuple[Path, Path]
) -> None:
    """`python -m driftloop.cli drift --json` itself: exit 0 and nothing but the JSON on
    stdout, as a script piping it sees them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(LEAKY_PREFIXES)}
    command = [sys.executable, "-m", "driftloop.cli", "drift", *map(str, csv_pair)]
    result = subprocess.run(
        [*command, "--target", "churned", "--json"],
        env=env | {"DRIFTLOOP_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["rows"] == {"reference": 3000, "current": 2000}
    assert list(doc["features"]) == FEATURES
    assert {"tenure", "plan"} <= set(doc["drifted_features"])


def test_json_report_of_two_csv_files(tmp_path: Path, csv_pair: tuple[Path, Path]) -> None:
    result = driftloop(*map(str, csv_pair), "--target", "churned", "--json", home=tmp_path)

    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["rows"] == {"reference": 3000, "current": 2000}
    assert list(doc["features"]) == FEATURES
    assert doc["features"]["tenure"]["kind"] == "numeric"
    assert doc["features"]["plan"]["kind"] == "categorical"
    assert doc["features"]["monthly_charges"]["missing"] == len(range(0, 2000, 97))
    assert {"tenure", "plan"} <= set(doc["drifted_features"])
    assert "region" not in doc["drifted_features"]


def test_parquet_files_give_the_same_report_as_csv(
    tmp_path: Path, csv_pair: tuple[Path, Path], frames: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    reference, current = tmp_path / "ref.parquet", tmp_path / "cur.parquet"
    frames[0].to_parquet(reference)
    frames[1].to_parquet(current)

    from_parquet = driftloop(
        str(reference), str(current), "--target", "churned", "--json", home=tmp_path
    )
    from_csv = driftloop(*map(str, csv_pair), "--target", "churned", "--json", home=tmp_path)

    assert from_parquet.exit_code == 0, from_parquet.stderr
    parquet_doc, csv_doc = json.loads(from_parquet.stdout), json.loads(from_csv.stdout)
    assert parquet_doc["drifted_features"] == csv_doc["drifted_features"]
    for name in FEATURES:
        assert parquet_doc["features"][name]["psi"] == pytest.approx(
            csv_doc["features"][name]["psi"], rel=1e-9
        )


def test_table_names_every_feature_and_the_verdict(
    tmp_path: Path, csv_pair: tuple[Path, Path]
) -> None:
    result = driftloop(*map(str, csv_pair), "--target", "churned", home=tmp_path)

    assert result.exit_code == 0, result.stderr
    for name in FEATURES:
        assert name in result.stdout
    assert "churned" not in result.stdout.split("\n", 1)[1]
    assert "dataset drift" in result.stdout


def test_html_page_is_self_contained_with_a_histogram_per_feature(
    tmp_path: Path, csv_pair: tuple[Path, Path]
) -> None:
    page = tmp_path / "report.html"

    result = driftloop(
        *map(str, csv_pair), "--target", "churned", "--html", str(page), home=tmp_path
    )

    assert result.exit_code == 0, result.stderr
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>")
    for name in FEATURES:
        assert f"<h2>{name} " in text
    assert text.count("<svg") == len(FEATURES)
    assert "<script" not in text
    assert "src=" not in text
    assert "href=" not in text


def test_spec_picks_the_features_and_the_target(
    tmp_path: Path, csv_pair: tuple[Path, Path]
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("model: churn\ntarget: churned\nfeatures: [plan, tenure]\n")

    result = driftloop(*map(str, csv_pair), "--spec", str(spec), "--json", home=tmp_path)

    assert result.exit_code == 0, result.stderr
    assert list(json.loads(result.stdout)["features"]) == ["plan", "tenure"]


def test_spec_without_features_compares_every_shared_column_but_its_target(
    tmp_path: Path, csv_pair: tuple[Path, Path]
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("model: churn\ntarget: churned\n")

    result = driftloop(*map(str, csv_pair), "--spec", str(spec), "--json", home=tmp_path)

    assert result.exit_code == 0, result.stderr
    assert list(json.loads(result.stdout)["features"]) == FEATURES


def test_a_missing_file_fails_with_its_name(tmp_path: Path, csv_pair: tuple[Path, Path]) -> None:
    result = driftloop(str(csv_pair[0]), str(tmp_path / "nope.csv"), "--json", home=tmp_path)

    assert result.exit_code == 1
    assert "nope.csv: no such file" in said(result)
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("model: churn\ntarget: churned\nfeatures: [plan, age]\n", "age"),
        ("model: churn\n", "target"),
    ],
    ids=["unknown-feature", "bad-spec"],
)
def test_a_bad_spec_or_column_fails_naming_it(
    tmp_path: Path, csv_pair: tuple[Path, Path], spec: str, named: str
) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(spec)

    result = driftloop(*map(str, csv_pair), "--spec", str(path), home=tmp_path)

    assert result.exit_code == 1
    assert named in said(result)


def test_files_that_share_no_column_fail(tmp_path: Path) -> None:
    reference, current = tmp_path / "a.csv", tmp_path / "b.csv"
    reference.write_text("x\n1\n2\n")
    current.write_text("y\n1\n2\n")

    result = driftloop(str(reference), str(current), home=tmp_path)

    assert result.exit_code == 1
    assert "share no column" in said(result)
