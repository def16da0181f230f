"""Command line of the DICOM gateway.

``serve``  run the service until SIGTERM/SIGINT;
``status`` per-study state (queued, running, delivered, failed, ...) with hashed study UIDs only;
``retry``  put failed studies back (delivery or processing).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

from monai_vecl.deploy.gateway_config import GatewayConfig
from monai_vecl.deploy.spool import uid_hash
from monai_vecl.deploy.state import StateStore


def _state(config: GatewayConfig) -> StateStore:
    db = config.state_db
    if not db.exists():
        raise SystemExit(f"no gateway state at {db} (has the gateway run with this config?)")
    return StateStore(db)


def _serve(config: GatewayConfig) -> int:
    from monai_vecl.deploy.gateway import GatewayService

    service = GatewayService(config)

    def _stop(signum: int, _frame: object) -> None:
        logging.getLogger("monai_vecl.deploy.gateway").info("signal %d: stopping", signum)
        service.request_stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    service.serve_forever()
    service.stop()
    return 0


def _status(config: GatewayConfig, as_json: bool) -> int:
    store = _state(config)
    try:
        counts, studies = store.counts(), store.studies()
    finally:
        store.close()
    rows = []
    for s in studies:
        row = asdict(s)
        row["study"] = uid_hash(row.pop("study_uid"), config.uid_salt)
        rows.append(row)
    if as_json:
        print(json.dumps({"counts": counts, "studies": rows}, indent=1))
        return 0
    print("  ".join(f"{k}={v}" for k, v in counts.items()))
    print(f"{'study':16}  {'state':10}  {'inst':>4}  {'tries':>5}  {'updated (UTC)':19}  reason")
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["updated"]))
        print(f"{r['study']:16}  {r['state']:10}  {r['instances']:>4}  {r['attempts']:>5}  {when:19}  {r['reason'] or ''}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monai_vecl.deploy.gateway", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (monai_vecl loggers only)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("serve", "run the gateway"), ("status", "show per-study state"), ("retry", "retry failed studies")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", type=Path, required=True, help="gateway YAML (with a 'gateway:' section)")
        if name == "status":
            p.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    # Libraries log identifiers at INFO (pynetdicom: request UIDs; highdicom: source SOP Instance
    # UIDs): only our own loggers, which hash UIDs, go below WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    logging.getLogger("monai_vecl").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    config = GatewayConfig.from_yaml(args.config)
    if args.command == "serve":
        return _serve(config)
    if args.command == "status":
        return _status(config, args.json)
    store = _state(config)
    try:
        print(f"{store.retry_failed()} failed studies put back")
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
