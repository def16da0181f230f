"""Gateway configuration: the shipped example loads, mistakes fail loudly at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from monai_vecl.deploy.gateway_config import GatewayConfig

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "gateway.yaml"


def test_example_config_loads_with_paths_relative_to_its_folder() -> None:
    config = GatewayConfig.from_yaml(EXAMPLE)
    assert config.pipeline == EXAMPLE.parent / "config.yaml" and config.pipeline.is_file()
    assert config.spool_dir.is_relative_to(EXAMPLE.parent), "resolved against the file, not the working folder"
    assert config.host == "127.0.0.1", "loopback unless the operator says otherwise"
    assert config.peers and config.tcp_nodelay and config.quiet_seconds == 5
    # Nothing silent, safe defaults: delivery retried forever with the next attempt within a minute,
    # a random salt, metrics and health on loopback, a grace period after restarts.
    assert config.max_attempts is None and config.backoff_max_seconds <= 60
    assert config.uid_salt is None and config.monitoring_host == "127.0.0.1" and config.monitoring_port
    assert config.recovery_grace_seconds >= 60 and config.network_timeout <= 15


def _write(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_single_file_with_deploy_section_is_its_own_pipeline_config(tmp_path: Path) -> None:
    gateway = {"peers": [{"ae_title": "PACS"}], "destination": {"ae_title": "PACS", "host": "h", "port": 1},
               "spool_dir": "spool"}
    path = _write(tmp_path, {"gateway": gateway, "deploy": {"bundle_root": None}})
    config = GatewayConfig.from_yaml(path)
    assert config.pipeline == path and config.spool_dir == tmp_path / "spool"
    assert config.peers[0].allows("PACS", "10.1.2.3") and not config.peers[0].allows("OTHER", "10.1.2.3")


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"peers": [{"ae_title": "A"}], "destination": {"ae_title": "P", "host": "h", "port": 1}, "spool_dir": "s",
          "quiet_second": 1}, "unknown gateway config keys"),
        ({"peers": [], "destination": {"ae_title": "P", "host": "h", "port": 1}, "spool_dir": "s"}, "empty"),
        ({"peers": [{"ae_title": "A"}], "spool_dir": "s"}, "destination"),
    ],
)
def test_config_mistakes_are_reported(tmp_path: Path, section: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GatewayConfig.from_yaml(_write(tmp_path, {"gateway": section}))
