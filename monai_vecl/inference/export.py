"""The exported head's deployment contract: what ``models/model.ts`` records about itself so that the deploy app
scores with it without MONAI's ``ConfigParser``, the network code or the text encoder.

:class:`~monai_vecl.inference.head.ZeroShotHead` keeps the contract's JSON as a uint8 buffer (:data:`BUFFER`), so the
TorchScript module that ``monai.bundle ckpt_export`` writes carries it: ckpt_export's own extra files hold only raw
(unresolved) config files, while the contract needs the resolved prompts, the input geometry and the digest of the
weights file the head was loaded from; tracing keeps buffers but drops plain attributes, and a scripted method
returning a string would make TorchScript compile the network's properties, which it cannot. Beside it
ckpt_export stores ``configs/inference.yaml`` as it was (extra file :data:`CONFIG_EXTRA_FILE`), which the deploy
app compares with the bundle's current one to refuse a stale export.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch

from monai_vecl.config import check_choice, check_dataclass
from monai_vecl.inference.zero_shot import MODES
from monai_vecl.thresholds import FILE_NAME

FORMAT = 1
#: The head's buffer holding the contract's JSON as UTF-8 bytes (:meth:`HeadContract.to_buffer`, ``from_buffer``).
BUFFER = "deploy_contract"
#: The extra file in which ``ckpt_export`` stores ``configs/inference.yaml`` (as JSON).
CONFIG_EXTRA_FILE = "inference.json"


@dataclass(frozen=True)
class HeadContract:
    """What the head scores and with which weights: score columns ``class_names`` (in order), the prompts and
    ``score_mode`` (reported in the SR), the input geometry, the sha256 of the weights file its weights came from
    (None until weights from a file were loaded) and the thresholds file relative to that file's folder."""

    class_names: tuple[str, ...]
    pos_template: str
    neg_template: str
    score_mode: str
    image_size: int
    load_size: int
    model_sha256: str | None = None
    thresholds_file: str = FILE_NAME

    def __post_init__(self) -> None:
        check_dataclass(self, "exported head contract")
        check_choice("exported head contract score_mode", self.score_mode, MODES)
        if not self.class_names:
            raise ValueError("exported head contract: class_names is empty")

    def to_buffer(self) -> torch.Tensor:
        """The contract as JSON in a uint8 tensor, for :data:`BUFFER`."""
        text = json.dumps({"format": FORMAT, **asdict(self)}, sort_keys=True)
        return torch.frombuffer(bytearray(text.encode()), dtype=torch.uint8)

    @classmethod
    def from_buffer(cls, buffer: torch.Tensor | None, source: str) -> HeadContract:
        """Parse :meth:`to_buffer`'s tensor; a missing, malformed or other-format contract fails naming ``source``."""
        again = "export the head again (the bundle README's ckpt_export command)"
        if buffer is None:
            raise ValueError(f"{source} records no deployment contract (exported by an earlier version): {again}")
        try:
            data = json.loads(buffer.cpu().numpy().tobytes())
            if data.pop("format") != FORMAT:
                raise ValueError(f"format is not {FORMAT}")
            return cls(**{**data, "class_names": tuple(data["class_names"])})
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            raise ValueError(f"{source}: unreadable deployment contract ({err}): {again}") from err
