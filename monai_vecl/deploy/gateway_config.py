"""The gateway's YAML configuration (``gateway:`` section of ``deploy/gateway.yaml``).

Relative paths in the file are resolved against the file's own folder, so a deployment folder
can be moved as a whole. Every value is type-checked (:mod:`monai_vecl.config`): a quoted number, a
``'true'`` string or an unknown key stops the start-up with a message naming the key. ``pipeline`` names the MONAI Deploy app's settings (a YAML file with a
``deploy:`` section, normally ``config.yaml``); without it the gateway file's own ``deploy:``
section is used.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from monai_vecl.config import check_dataclass, check_fields, check_min
from monai_vecl.deploy.config_file import read_config

# CR, DX for presentation, DX for processing: the chest radiograph storage classes the app reads.
DEFAULT_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.1",
    "1.2.840.10008.5.1.4.1.1.1.1",
    "1.2.840.10008.5.1.4.1.1.1.1.1",
)


@dataclass(frozen=True)
class Peer:
    """A sender allowed to push: its calling AE title and, optionally, the hosts it may connect from."""

    ae_title: str
    hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_dataclass(self, "gateway.peers[]")

    def allows(self, ae_title: str, host: str) -> bool:
        return ae_title == self.ae_title and (not self.hosts or host in self.hosts)


@dataclass(frozen=True)
class Destination:
    """Where SRs are sent (normally the PACS that pushed the study)."""

    ae_title: str
    host: str
    port: int

    def __post_init__(self) -> None:
        check_dataclass(self, "gateway.destination")
        _check_port("gateway.destination.port", self.port)


@dataclass(frozen=True)
class TLSConfig:
    """DICOM TLS (PS3.15 Annex B) for both directions: the SCP and the SR delivery."""

    certificate: Path
    private_key: Path
    ca_certificates: Path
    require_client_certificate: bool = True
    check_hostname: bool = True

    def __post_init__(self) -> None:
        check_dataclass(self, "gateway.tls")

    def server_context(self) -> ssl.SSLContext:
        """Context of the Storage SCP: our certificate; peers' certificates verified against the CA."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=self.ca_certificates)
        ctx.load_cert_chain(self.certificate, self.private_key)
        ctx.verify_mode = ssl.CERT_REQUIRED if self.require_client_certificate else ssl.CERT_NONE
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """Context of the SR delivery: the PACS certificate verified, ours presented."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_certificates)
        ctx.load_cert_chain(self.certificate, self.private_key)
        ctx.check_hostname = self.check_hostname
        return ctx


def _check_port(name: str, port: int) -> None:
    if not 0 <= port <= 65535:
        raise ValueError(f"{name} must be a TCP port in [0, 65535], got {port}")


def _section(data: Any, cls: type, name: str) -> dict[str, Any]:
    """``data`` as a dict for ``cls``: a mapping with known keys only (the values' types are checked by the
    dataclass itself, once paths and lists are converted)."""
    if not isinstance(data, Mapping):
        raise TypeError(f"{name} must be a mapping, got {data!r}")
    known = {f.name for f in fields(cls)}
    check_fields(cls, {k: v for k, v in data.items() if k not in known}, name)
    return dict(data)


def _tuples(values: dict[str, Any], *keys: str) -> dict[str, Any]:
    """YAML lists under ``keys`` as tuples (anything else is left for the type check to refuse)."""
    return {**values, **{k: tuple(values[k]) for k in keys if isinstance(values.get(k), list)}}


def _path(base_dir: str | os.PathLike, value: Any, name: str) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path, got {value!r} of type {type(value).__name__}")
    return Path(base_dir) / value


@dataclass(frozen=True)
class GatewayConfig:
    destination: Destination
    peers: tuple[Peer, ...]
    spool_dir: Path
    ae_title: str = "VECL"
    host: str = "127.0.0.1"
    port: int = 11112
    quiet_seconds: float = 5.0
    poll_seconds: float = 0.5
    tcp_nodelay: bool = True
    accepted_sop_classes: tuple[str, ...] = DEFAULT_SOP_CLASSES
    max_associations: int = 16
    processing_workers: int = 1
    network_timeout: float = 15.0
    acse_timeout: float = 10.0
    keepalive_seconds: int = 20
    recovery_grace_seconds: float = 120.0
    max_attempts: int | None = None
    backoff_seconds: float = 2.0
    backoff_max_seconds: float = 60.0
    uid_salt: str | None = None
    monitoring_host: str = "127.0.0.1"
    monitoring_port: int | None = 9108
    stuck_after_seconds: float = 900.0
    tls: TLSConfig | None = None
    # What StudyPipeline takes: a YAML path with a ``deploy:`` section, a mapping or a PipelineConfig.
    pipeline: Any = None

    def __post_init__(self) -> None:
        check_dataclass(self, "gateway")
        _check_port("gateway.port", self.port)
        if self.monitoring_port is not None:
            _check_port("gateway.monitoring_port", self.monitoring_port)
        for key in ("processing_workers", "max_associations", "keepalive_seconds"):
            check_min(f"gateway.{key}", getattr(self, key), 1)
        for key in ("quiet_seconds", "recovery_grace_seconds", "stuck_after_seconds"):
            check_min(f"gateway.{key}", getattr(self, key), 0)
        for key in ("poll_seconds", "network_timeout", "acse_timeout"):
            if getattr(self, key) <= 0:
                raise ValueError(f"gateway.{key} must be > 0, got {getattr(self, key)!r}")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("gateway.max_attempts must be >= 1, or null to retry delivery forever")
        if not 0 < self.backoff_seconds <= self.backoff_max_seconds:
            raise ValueError("gateway backoff needs 0 < backoff_seconds <= backoff_max_seconds")
        if not self.peers:
            raise ValueError("gateway.peers is empty: no sender could push")

    @property
    def state_db(self) -> Path:
        """The SQLite state machine lives with the spool it describes."""
        return self.spool_dir / "state.sqlite"

    def with_overrides(self, **overrides: Any) -> GatewayConfig:
        return replace(self, **overrides)

    @classmethod
    def from_dict(cls, section: dict[str, Any], base_dir: str | os.PathLike = ".") -> GatewayConfig:
        """Build from the ``gateway:`` mapping; unknown keys and mistyped values are errors naming the key."""
        values = _section(section, cls, "gateway")
        for required in ("destination", "peers", "spool_dir"):
            if required not in values:
                raise ValueError(f"gateway config needs '{required}'")
        values["destination"] = Destination(**_section(values["destination"], Destination, "gateway.destination"))
        if not isinstance(values["peers"], list):
            raise TypeError(f"gateway.peers must be a list of {{ae_title, hosts}}, got {values['peers']!r}")
        peers = [_section(p, Peer, "gateway.peers[]") for p in values["peers"]]
        values["peers"] = tuple(Peer(**_tuples(p, "hosts")) for p in peers)
        values["spool_dir"] = _path(base_dir, values["spool_dir"], "gateway.spool_dir")
        if isinstance(values.get("pipeline"), str):
            values["pipeline"] = Path(base_dir) / values["pipeline"]
        if values.get("tls") is not None:
            tls = _section(values["tls"], TLSConfig, "gateway.tls")
            for key in ("certificate", "private_key", "ca_certificates"):
                if key not in tls:
                    raise ValueError(f"gateway config tls needs '{key}'")
                tls[key] = _path(base_dir, tls[key], f"gateway.tls.{key}")
            values["tls"] = TLSConfig(**tls)
        return cls(**_tuples(values, "accepted_sop_classes"))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> GatewayConfig:
        path = Path(path)
        doc = read_config(path, "gateway")
        config = cls.from_dict(doc["gateway"], base_dir=path.parent)
        if config.pipeline is None and "deploy" in doc:
            # One file may carry both sections: the app's ``deploy:`` and the gateway's.
            config = config.with_overrides(pipeline=path)
        return config
