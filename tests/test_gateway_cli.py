"""The gateway CLI's ``status`` and ``retry`` commands on a state database (no network): hashed output,
exit status for monitoring, a closed pipe, the salt kept in the spool."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from monai_vecl.deploy.gateway_cli import main
from monai_vecl.deploy.gateway_config import GatewayConfig
from monai_vecl.deploy.spool import spool_salt, uid_hash
from monai_vecl.deploy.state import StateStore

STUDY = "1.2.826.0.1.3680043.8.498.1234567890"


@pytest.fixture()
def config_path(tmp_path: Path) -> Path:
    section = {"peers": [{"ae_title": "PACS"}], "destination": {"ae_title": "PACS", "host": "127.0.0.1", "port": 1},
               "spool_dir": "spool"}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"gateway": section}))
    return path


def _failed_delivery(config_path: Path) -> None:
    config = GatewayConfig.from_yaml(config_path)
    spool_salt(config.spool_dir, config.uid_salt)  # what the service does at its first start
    store = StateStore(config.state_db)
    store.record_instance(STUDY, STUDY + ".1", "d", Path("x.dcm"), now=0.0)
    store.promote_quiet(1.0, now=5.0)
    store.sr_written(store.claim_next(now=5.0), STUDY + ".9", Path("sr.dcm"), now=5.0)
    store.delivery_failed(store.due_deliveries(now=5.0)[0], "destination unreachable", retry_at=None, now=6.0)
    store.close()


def test_status_without_state_says_so(config_path: Path) -> None:
    with pytest.raises(SystemExit, match="no gateway state"):
        main(["status", "--config", str(config_path)])


def test_status_and_retry(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _failed_delivery(config_path)
    assert main(["status", "--config", str(config_path)]) == 1, "a failed study must make monitoring alert"
    out = capsys.readouterr()
    assert "failed=1" in out.out and "destination unreachable" in out.out and STUDY not in out.out
    assert "ALERT: 1 failed" in out.err
    main(["retry", "--config", str(config_path)])
    assert capsys.readouterr().out.startswith("1 failed")
    # Retried: waiting for delivery, not stuck until it has waited longer than --stuck-after.
    assert main(["status", "--config", str(config_path), "--json", "--stuck-after", "1e12"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["counts"]["sr_written"] == 1 and status["studies"][0]["attempts"] == 0
    assert STUDY not in json.dumps(status)
    assert main(["status", "--config", str(config_path), "--json", "--stuck-after", "0"]) == 1
    assert json.loads(capsys.readouterr().out)["studies"][0]["stuck"] is True


def test_the_salt_is_random_kept_in_the_spool_and_an_explicit_one_wins(tmp_path: Path) -> None:
    first = spool_salt(tmp_path / "a", None)
    assert len(first) == 32 and spool_salt(tmp_path / "a", None) == first
    assert spool_salt(tmp_path / "b", None) != first
    assert oct((tmp_path / "a" / "salt").stat().st_mode & 0o777) == "0o600"
    assert spool_salt(tmp_path / "a", "site-secret") == "site-secret"
    assert uid_hash(STUDY, first) != uid_hash(STUDY), "the hash is not the bare sha256 of the UID"
    with pytest.raises(FileNotFoundError, match="no salt"):
        spool_salt(tmp_path / "c", None, create=False)


def test_status_piped_into_head_ends_cleanly(config_path: Path) -> None:
    _failed_delivery(config_path)
    store = StateStore(GatewayConfig.from_yaml(config_path).state_db)
    for i in range(3000):  # more rows than a pipe buffer holds
        store.record_instance(f"{STUDY}.{i}", f"{STUDY}.{i}.1", "d", Path("x.dcm"), now=0.0)
    store.close()
    cmd = f"{sys.executable} -m monai_vecl.deploy.gateway status --config {config_path} | head -2"
    run = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert len(run.stdout.splitlines()) == 2 and "Traceback" not in run.stderr and "BrokenPipe" not in run.stderr
