"""Gateway configuration: the shipped example loads, mistakes fail loudly at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from monai_vecl.deploy.gateway_config import Destination, GatewayConfig, Peer

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
          "quiet_second": 1}, r"unknown gateway option\(s\) \['quiet_second'\]"),
        ({"peers": [], "destination": {"ae_title": "P", "host": "h", "port": 1}, "spool_dir": "s"}, "empty"),
        ({"peers": [{"ae_title": "A"}], "spool_dir": "s"}, "destination"),
    ],
)
def test_config_mistakes_are_reported(tmp_path: Path, section: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GatewayConfig.from_yaml(_write(tmp_path, {"gateway": section}))


_MINIMAL = {"peers": [{"ae_title": "A"}], "destination": {"ae_title": "P", "host": "h", "port": 104}, "spool_dir": "s"}


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"tcp_nodelay": "false"}, TypeError, "gateway.tcp_nodelay must be bool, got 'false'"),
        ({"port": "11112"}, TypeError, "gateway.port must be int, got '11112' of type str"),
        ({"quiet_seconds": "5"}, TypeError, "gateway.quiet_seconds must be float"),
        ({"max_attempts": 2.5}, TypeError, r"gateway.max_attempts must be int \| None"),
        ({"uid_salt": 1234}, TypeError, r"gateway.uid_salt must be str \| None"),
        ({"accepted_sop_classes": "1.2.840.10008.5.1.4.1.1.1"}, TypeError, "gateway.accepted_sop_classes must be"),
        ({"spool_dir": 7}, TypeError, "gateway.spool_dir must be a path"),
        ({"port": 70000}, ValueError, r"gateway.port must be a TCP port in \[0, 65535\]"),
        ({"processing_workers": 0}, ValueError, "gateway.processing_workers must be >= 1"),
        ({"poll_seconds": 0}, ValueError, "gateway.poll_seconds must be > 0"),
        ({"destination": {"ae_title": "P", "host": "h", "port": "104"}}, TypeError,
         "gateway.destination.port must be int"),
        ({"destination": {"ae_title": "P", "host": "h", "port": 104, "aet": "X"}}, ValueError,
         r"unknown gateway.destination option\(s\) \['aet'\]"),
        ({"peers": [{"ae_title": "A", "hosts": "127.0.0.1"}]}, TypeError, r"gateway.peers\[\].hosts must be"),
        ({"peers": [{"ae_title": "A", "host": ["h"]}]}, ValueError, r"unknown gateway.peers\[\] option\(s\)"),
        ({"peers": {"ae_title": "A"}}, TypeError, "gateway.peers must be a list"),
        ({"tls": {"certificate": "c", "private_key": "k", "ca_certificates": "ca", "check_hostname": "no"}},
         TypeError, "gateway.tls.check_hostname must be bool"),
        ({"tls": {"certificate": "c", "private_key": "k", "ca_certificate": "ca"}}, ValueError,
         r"unknown gateway.tls option\(s\) \['ca_certificate'\]"),
    ],
)
def test_mistyped_values_name_the_key_and_the_accepted_type(tmp_path: Path, changes: dict, error: type,
                                                             message: str) -> None:
    with pytest.raises(error, match=message):
        GatewayConfig.from_yaml(_write(tmp_path, {"gateway": {**_MINIMAL, **changes}}))


def test_direct_construction_is_checked_too(tmp_path: Path) -> None:
    config = GatewayConfig.from_dict(_MINIMAL, base_dir=tmp_path)
    with pytest.raises(TypeError, match="gateway.tcp_nodelay must be bool"):
        config.with_overrides(tcp_nodelay="true")
    with pytest.raises(TypeError, match="gateway.destination.port must be int"):
        Destination("P", "h", "104")
    with pytest.raises(TypeError, match=r"gateway.peers\[\].hosts must be tuple\[str, \.\.\.\]"):
        Peer("A", "127.0.0.1")
