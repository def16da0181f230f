"""The one deterministic DICOM UID scheme of the package.

Exported studies, SRs, SEGs and the gateway's report versions all take their UIDs from
:func:`deterministic_uid`: the same content gives the same UID (a PACS stores a re-sent object once,
the app and the gateway name the same report alike), different content a different one. It is
pydicom's ``generate_uid(entropy_srcs=...)`` (SHA-512 of the sources under pydicom's UID root).
"""

from __future__ import annotations

from pydicom.uid import UID, generate_uid


def deterministic_uid(*parts: object) -> UID:
    """A valid UID from ``parts`` (each turned into ``str``): same parts → same UID.

    pydicom concatenates its entropy sources, so ``("ab", "c")`` and ``("a", "bc")`` would collide;
    each part is length-prefixed to keep the boundaries.
    """
    if not parts:
        raise ValueError("deterministic_uid needs at least one part")
    return generate_uid(entropy_srcs=[f"{len(text)}:{text}" for text in map(str, parts)])
