"""``vecl``: one command in front of the package's entry points.

``vecl phantom ...`` generates the embedded data set, ``vecl label ...`` labels a manifest's
report sentences, ``vecl gateway serve|status|retry ...`` runs the DICOM gateway. Each
sub-command is the same as ``python -m <module>``; its ``--help`` lists the options.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

#: sub-command → (module holding ``main(argv)``, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "phantom": ("monai_vecl.data.phantom", "generate the phantom chest X-ray data set"),
    "label": ("monai_vecl.label", "label report sentences of a manifest (rules | transformers | openai)"),
    "gateway": ("monai_vecl.deploy.gateway_cli", "DICOM gateway: serve, status, retry"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to the sub-command's ``main``; returns its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help") or args[0] not in COMMANDS:
        print("usage: vecl {" + ",".join(COMMANDS) + "} [options]\n")
        for name, (_, text) in COMMANDS.items():
            print(f"  {name:8} {text}")
        return 0 if args and args[0] in ("-h", "--help") else 2
    module = importlib.import_module(COMMANDS[args[0]][0])
    return int(module.main(args[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
