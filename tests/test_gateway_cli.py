"""The gateway CLI's ``status`` and ``retry`` commands on a state database (no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from monai_vecl.deploy.gateway_cli import main
from monai_vecl.deploy.gateway_config import GatewayConfig
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
    store = StateStore(GatewayConfig.from_yaml(config_path).state_db)
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
    main(["status", "--config", str(config_path)])
    table = capsys.readouterr().out
    assert "failed=1" in table and "destination unreachable" in table and STUDY not in table
    main(["retry", "--config", str(config_path)])
    assert capsys.readouterr().out.startswith("1 failed")
    main(["status", "--config", str(config_path), "--json"])
    status = json.loads(capsys.readouterr().out)
    assert status["counts"]["sr_written"] == 1 and status["studies"][0]["attempts"] == 0
    assert STUDY not in json.dumps(status)
