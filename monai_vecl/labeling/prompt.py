"""The labeling prompt and the strict parser of its answers.

The prompt follows the structure of the VECL paper's labeling prompt (the 24 findings with definitions,
worked examples, "No Mention" for everything else) and extends it so the model states the polarity of each
finding (``k+`` present, ``k-`` absent), as the signed-label taxonomy needs. Definitions and examples are
our own wording. Bump :data:`PROMPT_VERSION` whenever the text changes: it is part of the cache key.
"""

from __future__ import annotations

import re

from monai_vecl.taxonomy import FINDINGS, NO_MENTION, normalize_label_set

PROMPT_VERSION = "p1"

_DEFINITIONS: dict[int, str] = {
    1: "lung collapse, volume loss", 2: "pleural fluid", 3: "pleural air", 4: "enlarged heart",
    5: "increased lung density, airspace disease", 6: "lung infection", 7: "mass over 3 cm",
    8: "lung fluid, vascular congestion", 9: "round opacity up to 3 cm", 10: "infiltrate", 11: "scarring",
    12: "emphysema, hyperinflation", 13: "thickened pleura", 14: "e.g. hiatal hernia",
    15: "airspace filled with fluid or cells", 16: "rib, clavicle or spine fracture",
    17: "widened mediastinum", 18: "e.g. pleural plaques", 19: "lesion of the lung",
    20: "tubes, lines, catheters, pacemakers, wires, clips", 21: "other abnormal lesion", 22: "granuloma",
    23: "calcified granuloma", 24: "calcification of any tissue",
}

_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("There is a small left pleural effusion.", "2+"),
    ("No focal consolidation, pleural effusion or pneumothorax.", "15-, 2-, 3-"),
    ("Right basal opacity, likely atelectasis.", "5+, 1+"),
    ("The patient was seen by Dr. ___.", "25"),
)

SYSTEM_PROMPT = (
    "You label sentences from chest X-ray reports. Findings, by code:\n"
    + "\n".join(f"{code}: {name} ({_DEFINITIONS[code]})" for code, name in FINDINGS.items())
    + f"\n{NO_MENTION}: No Mention (none of the above)\n"
    "Give the code of each finding the sentence mentions with + if present or - if absent, comma-separated, "
    f"or {NO_MENTION} alone. Codes only.\n"
    + "\n".join(f"Sentence: {s}\nAnswer: {a}" for s, a in _EXAMPLES)
)

_PREFIX = re.compile(r"^\s*(?:answer|labels?|codes?)\s*:\s*", re.IGNORECASE)
_ITEM = re.compile(r"^(\d{1,2})([+-]?)$")


class AnswerError(ValueError):
    """An LLM answer that does not follow the label grammar; the message says why (fed to the repair prompt)."""


def messages_for(sentence: str) -> list[dict[str, str]]:
    """Chat messages asking for the labels of one sentence."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"Sentence: {sentence}\nAnswer:"},
    ]


def repair_messages(sentence: str, answer: str, error: str) -> list[dict[str, str]]:
    """The original conversation plus the invalid answer and why it was rejected."""
    return messages_for(sentence) + [
        {"role": "assistant", "content": answer},
        {"role": "user", "content": f"That answer is invalid: {error}. Reply with codes only, "
                                    f"for example '2+, 3-' or '{NO_MENTION}'.\nAnswer:"},
    ]


def parse_answer(answer: str) -> tuple[str, ...]:
    """Parse an answer such as ``"15-, 2-, 3-"`` or ``"25"`` into a validated label set.

    Only the first non-empty line counts, an ``Answer:`` prefix and a final period are tolerated; anything
    else raises :class:`AnswerError`: codes outside 1..25, an unsigned finding, a signed 25, 25 with other
    codes, or the same finding both present and absent.
    """
    lines = [line for line in answer.strip().splitlines() if line.strip()]
    if not lines:
        raise AnswerError("empty answer")
    text = _PREFIX.sub("", lines[0]).strip().rstrip(".").strip()
    items = [item.strip() for item in text.split(",")]
    labels = []
    for item in items:
        m = _ITEM.match(item)
        if not m:
            raise AnswerError(f"{item!r} is not a code like '2+', '3-' or '{NO_MENTION}'")
        code, sign = int(m.group(1)), m.group(2)
        if code == NO_MENTION:
            if sign:
                raise AnswerError(f"code {NO_MENTION} takes no sign")
            labels.append(str(code))
        elif code in FINDINGS:
            if not sign:
                raise AnswerError(f"code {code} needs a sign (+ present, - absent)")
            labels.append(f"{code}{sign}")
        else:
            raise AnswerError(f"code {code} is outside 1..{NO_MENTION}")
    try:
        return normalize_label_set(labels)
    except ValueError as err:
        raise AnswerError(str(err)) from err
