"""The gateway's durable study state machine and spool (no network)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from monai_vecl.deploy.spool import Spool, uid_hash
from monai_vecl.deploy.state import StateStore


@pytest.fixture()
def store(tmp_path: Path) -> StateStore:
    s = StateStore(tmp_path / "state.sqlite")
    yield s
    s.close()


def _receive(store: StateStore, study: str, sop: str, digest: str, now: float) -> bool:
    return store.record_instance(study, sop, digest, Path(f"/spool/{sop}.dcm"), now=now)


def _deliver_round(store: StateStore, now: float) -> str:
    """Quiet → claim → SR written → delivered; returns the SR UID used."""
    store.promote_quiet(1.0, now=now)
    job = store.claim_next(now=now)
    sr_uid = f"sr-{job.digest[:8]}"
    store.sr_written(job, sr_uid, Path(f"/out/{sr_uid}.dcm"), now=now)
    (delivery,) = store.due_deliveries(now=now)
    store.delivered(delivery, now=now)
    return sr_uid


def test_quiet_period_gates_processing(store: StateStore) -> None:
    _receive(store, "S1", "I1", "a", now=100.0)
    _receive(store, "S1", "I2", "b", now=100.5)
    assert store.promote_quiet(1.0, now=101.0) == 0, "last instance came 0.5 s ago"
    assert store.claim_next(now=101.0) is None
    assert store.promote_quiet(1.0, now=101.6) == 1
    job = store.claim_next(now=101.6)
    assert job.study_uid == "S1" and len(job.paths) == 2
    assert store.counts()["running"] == 1


def test_same_content_again_gives_no_second_round(store: StateStore) -> None:
    _receive(store, "S1", "I1", "a", now=0.0)
    first_sr = _deliver_round(store, now=5.0)
    assert _receive(store, "S1", "I1", "a", now=10.0) is False
    assert store.counts()["delivered"] == 1 and store.promote_quiet(1.0, now=20.0) == 0
    assert store.is_own_sr(first_sr)


@pytest.mark.parametrize("change", ["new_instance", "changed_bytes"])
def test_changed_content_reopens_delivered_study(store: StateStore, change: str) -> None:
    _receive(store, "S1", "I1", "a", now=0.0)
    first_sr = _deliver_round(store, now=5.0)
    if change == "new_instance":
        assert _receive(store, "S1", "I2", "b", now=10.0)
    else:
        assert _receive(store, "S1", "I1", "a-edited", now=10.0)
    assert store.counts()["received"] == 1
    second_sr = _deliver_round(store, now=20.0)
    assert second_sr != first_sr


def test_content_arriving_while_running_starts_a_new_round_after_delivery(store: StateStore) -> None:
    _receive(store, "S1", "I1", "a", now=0.0)
    store.promote_quiet(1.0, now=5.0)
    job = store.claim_next(now=5.0)
    _receive(store, "S1", "I2", "b", now=6.0)
    assert store.counts()["running"] == 1, "a running study keeps running"
    store.sr_written(job, "sr-old", Path("/out/old.dcm"), now=7.0)
    store.delivered(store.due_deliveries(now=7.0)[0], now=7.0)
    assert store.counts()["received"] == 1, "the newer content must get its own SR"


def test_recover_requeues_running_and_keeps_written_srs(store: StateStore, tmp_path: Path) -> None:
    _receive(store, "S1", "I1", "a", now=0.0)
    _receive(store, "S2", "I2", "b", now=0.0)
    store.promote_quiet(1.0, now=5.0)
    store.claim_next(now=5.0)
    job2 = store.claim_next(now=5.0)
    store.sr_written(job2, "sr-2", Path("/out/2.dcm"), now=6.0)
    _receive(store, "S3", "I3", "c", now=6.0)
    store.close()
    reopened = StateStore(tmp_path / "state.sqlite")
    try:
        assert reopened.recover(30.0, now=10.0) == (1, 1)
        counts = reopened.counts()
        assert counts["queued"] == 1 and counts["sr_written"] == 1 and counts["received"] == 1
        assert [d.sr_uid for d in reopened.due_deliveries(now=10.0)] == ["sr-2"]
        assert reopened.promote_quiet(1.0, now=39.9) == 0, "a partial study waits the recovery grace period"
        _receive(reopened, "S3", "I4", "d", now=20.0)  # the sender resends the rest after the restart
        assert reopened.promote_quiet(1.0, now=39.9) == 0, "still within the grace period"
        assert reopened.promote_quiet(1.0, now=40.0) == 1
        assert len(reopened.claim_next(now=40.0).paths) == 1 and len(reopened.claim_next(now=40.0).paths) == 2
    finally:
        reopened.close()


def test_a_reevaluation_with_the_same_report_sends_nothing(store: StateStore) -> None:
    _receive(store, "S1", "I1", "a", now=0.0)
    store.promote_quiet(1.0, now=5.0)
    store.sr_written(store.claim_next(now=5.0), "sr-1", Path("/out/1.dcm"), report_key="k1", now=5.0)
    store.delivered(store.due_deliveries(now=5.0)[0], now=6.0)
    _receive(store, "S1", "I2", "b", now=10.0)  # a late instance (e.g. a lateral)
    store.promote_quiet(1.0, now=12.0)
    job = store.claim_next(now=12.0)
    report = store.last_report("S1")
    assert (report.sr_uid, report.report_key, report.delivered) == ("sr-1", "k1", True)
    store.report_unchanged(job, report, now=13.0)
    assert store.counts()["delivered"] == 1 and store.due_deliveries(now=100.0) == []
    assert store.studies()[0].outcome == "unchanged after late instances"
    _receive(store, "S1", "I3", "c", now=20.0)  # a changed report: a second SR
    store.promote_quiet(1.0, now=22.0)
    store.sr_written(store.claim_next(now=22.0), "sr-2", Path("/out/2.dcm"), report_key="k2", now=22.0)
    assert store.last_report("S1").sr_uid == "sr-2"


def test_stuck_studies_are_found_per_state(store: StateStore) -> None:
    _receive(store, "S1", "I1", "a", now=0.0)
    store.promote_quiet(1.0, now=5.0)
    store.sr_written(store.claim_next(now=5.0), "sr-1", Path("/out/1.dcm"), now=5.0)
    store.delivery_failed(store.due_deliveries(now=5.0)[0], "destination unreachable", retry_at=100.0, now=50.0)
    assert store.stuck(60.0, now=60.0) == [] and store.stuck(60.0, now=66.0) == ["S1"], "since the SR was made"
    _receive(store, "S2", "I2", "b", now=60.0)
    assert store.stuck(60.0, now=119.0) == ["S1"] and sorted(store.stuck(60.0, now=121.0)) == ["S1", "S2"]


def test_delivery_backoff_then_give_up_and_retry(store: StateStore) -> None:
    _receive(store, "S1", "I1", "a", now=0.0)
    store.promote_quiet(1.0, now=5.0)
    store.sr_written(store.claim_next(now=5.0), "sr-1", Path("/out/1.dcm"), now=5.0)
    (d,) = store.due_deliveries(now=5.0)
    store.delivery_failed(d, "destination unreachable", retry_at=9.0, now=5.0)
    assert store.due_deliveries(now=8.9) == []
    (d,) = store.due_deliveries(now=9.0)
    assert d.attempts == 1
    store.delivery_failed(d, "destination unreachable", retry_at=None, now=9.0)
    assert store.counts()["failed"] == 1 and store.studies()[0].reason == "destination unreachable"
    assert store.retry_failed(now=10.0) == 1
    assert [x.sr_uid for x in store.due_deliveries(now=10.0)] == ["sr-1"], "the kept SR is sent, not recomputed"


def test_finish_rejects_non_terminal_state(store: StateStore) -> None:
    with pytest.raises(ValueError, match="skipped"):
        store.finish("S1", "delivered")


def test_spool_write_is_atomic_and_hashes_names(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", salt="s")
    path = spool.instance_path("1.2.3", "1.2.3.4")
    assert "1.2.3" not in str(path.relative_to(tmp_path)) and uid_hash("1.2.3", "s") in str(path)
    assert uid_hash("1.2.3", "s") != uid_hash("1.2.3", "t")
    spool.write(path, b"first")
    spool.write(path, b"second")
    assert path.read_bytes() == b"second"
    assert os.listdir(path.parent) == [path.name]
    (path.parent / f".{path.name}.0123.part").write_bytes(b"half")  # what a crash mid-write leaves
    assert spool.clear_tmp() == 1 and spool.instance_files() == [path]
    assert os.listdir(path.parent) == [path.name]


def test_deliver_now_makes_waiting_deliveries_due(store: StateStore) -> None:
    _receive(store, "S1", "I1", "a", now=0.0)
    store.promote_quiet(1.0, now=5.0)
    store.sr_written(store.claim_next(now=5.0), "sr-1", Path("/out/1.dcm"), now=5.0)
    store.delivery_failed(store.due_deliveries(now=5.0)[0], "destination unreachable", retry_at=65.0, now=5.0)
    assert store.due_deliveries(now=10.0) == []
    assert store.deliver_now(now=10.0) == 1 and [d.sr_uid for d in store.due_deliveries(now=10.0)] == ["sr-1"]
