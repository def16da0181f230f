"""Command line of the DICOM gateway.

``serve``  run the service until SIGTERM/SIGINT;
``status`` per-study state (queued, running, delivered, failed, ...) with hashed study UIDs only;
           exits 1 when a study failed or is stuck (for cron and monitoring), else 0;
``retry``  put failed studies back (delivery or processing).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

from monai_vecl.deploy.gateway_config import GatewayConfig
from monai_vecl.deploy.spool import spool_salt, uid_hash
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


def _status(config: GatewayConfig, as_json: bool, stuck_after: float) -> int:
    store = _state(config)
    try:
        counts, studies, stuck = store.counts(), store.studies(), set(store.stuck(stuck_after))
    finally:
        store.close()
    salt = spool_salt(config.spool_dir, config.uid_salt, create=False)
    rows = []
    for s in studies:
        row = asdict(s)
        row["stuck"] = row["study_uid"] in stuck
        row["study"] = uid_hash(row.pop("study_uid"), salt)
        rows.append(row)
    alert = counts["failed"] > 0 or bool(stuck)
    if as_json:
        print(json.dumps({"counts": counts, "stuck": len(stuck), "alert": alert, "studies": rows}, indent=1))
    else:
        print("  ".join(f"{k}={v}" for k, v in counts.items()) + f"  stuck={len(stuck)}")
        print(f"{'study':16}  {'state':10}  {'inst':>4}  {'tries':>5}  {'updated (UTC)':19}  reason / outcome")
        for r in rows:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["updated"]))
            note = "; ".join(x for x in ("STUCK" if r["stuck"] else "", r["reason"] or "", r["outcome"] or "") if x)
            print(f"{r['study']:16}  {r['state']:10}  {r['instances']:>4}  {r['attempts']:>5}  {when:19}  {note}")
    if alert:
        print(f"ALERT: {counts['failed']} failed, {len(stuck)} stuck for more than {stuck_after:.0f} s", file=sys.stderr)
    return 1 if alert else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monai_vecl.deploy.gateway", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (monai_vecl loggers only)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("serve", "run the gateway"), ("status", "show per-study state"), ("retry", "retry failed studies")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", type=Path, required=True, help="gateway YAML (with a 'gateway:' section)")
        if name == "status":
            p.add_argument("--json", action="store_true", help="machine-readable output")
            p.add_argument("--stuck-after", type=float, default=None, metavar="SECONDS",
                           help="a study in a non-terminal state this long counts as stuck "
                                "(default: the config's stuck_after_seconds)")
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
        stuck_after = config.stuck_after_seconds if args.stuck_after is None else args.stuck_after
        try:
            return _status(config, args.json, stuck_after)
        except BrokenPipeError:
            # `status | head` closed the pipe: not an error of ours. Python would otherwise
            # report the failed flush of stdout at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
    store = _state(config)
    try:
        print(f"{store.retry_failed()} failed studies put back")
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
