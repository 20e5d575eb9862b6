"""Gateway workers' spools: each slot's file names, the orphans of slots that no longer exist,
and the lock that keeps a live spool from being adopted."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftloop.gateway.adapters.records import RecordSpool, SpoolBusyError
from driftloop.gateway.spools import lock_wait, orphans, spool_paths


@pytest.mark.parametrize(
    ("slot", "names"),
    [
        (0, ("gateway-8000.sqlite", "gateway-8000-shadow.sqlite")),
        (2, ("gateway-8000-w2.sqlite", "gateway-8000-w2-shadow.sqlite")),
    ],
    ids=["slot 0 keeps the single process's names", "slot 2"],
)
def test_each_slot_has_its_own_spools(tmp_path: Path, slot: int, names: tuple[str, str]) -> None:
    records, shadow = spool_paths(tmp_path, 8000, slot)

    assert (records.name, shadow.name) == names


def test_orphans_are_the_spools_of_slots_past_the_count(tmp_path: Path) -> None:
    for name in (
        "gateway-8000.sqlite",
        "gateway-8000-shadow.sqlite",
        "gateway-8000-w1.sqlite",
        "gateway-8000-w2.sqlite",
        "gateway-8000-w2-shadow.sqlite",
        "gateway-8000-w10.sqlite",
        "gateway-8001-w5.sqlite",
        "gateway-8000-w3.sqlite-wal",
    ):
        (tmp_path / name).touch()

    found = [p.name for p in orphans(tmp_path, 8000, 2)]

    assert found == [
        "gateway-8000-w2-shadow.sqlite",
        "gateway-8000-w2.sqlite",
        "gateway-8000-w10.sqlite",
    ]
    assert orphans(tmp_path, 8000, 11) == []


def test_a_locked_spool_is_refused_to_another_opener_until_closed(tmp_path: Path) -> None:
    path = tmp_path / "gateway-8000-w1.sqlite"
    owner = RecordSpool(path, capacity=10, lock_wait=0)

    with pytest.raises(SpoolBusyError):
        RecordSpool(path, capacity=10, lock_wait=0.2)
    owner.close()
    again = RecordSpool(path, capacity=10, lock_wait=0)
    again.close()


def test_slot_zero_spools_are_not_locked(tmp_path: Path) -> None:
    path = tmp_path / "gateway-8000.sqlite"
    first = RecordSpool(path, capacity=10, lock_wait=lock_wait(0))
    second = RecordSpool(path, capacity=10, lock_wait=lock_wait(0))  # as before: no lock

    assert first.lock is None
    assert second.lock is None
    first.close()
    second.close()
