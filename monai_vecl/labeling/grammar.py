"""Constrained decoding over the label grammar: a transformers ``LogitsProcessor`` that only lets a model write
a valid signed-label answer (``25`` alone, or distinct signed codes 1..24 separated by ``", "``) and end it.

The grammar is checked on text, character by character (:func:`is_prefix`, :func:`is_complete`); the
processor precomputes, once per tokenizer, the few vocabulary entries whose text uses only the grammar's
characters (digits, ``+``, ``-``, ``,`` and a space) and at every step allows those that keep the answer a
valid prefix, plus end-of-sequence once it is complete. Every answer it lets through parses with
:func:`monai_vecl.labeling.prompt.parse_answer`: distinct codes, so no ``k+`` with ``k-`` either. Near the
token budget it closes the answer (no new item, then end), so a valid label set comes back for every prompt.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

_ALPHABET = frozenset("0123456789+-, ")
_MAX_CODE = 24
#: Tokens an answer needs at most to close from any valid prefix: a digit, a sign, end-of-sequence.
CLOSE_TOKENS = 3


def _scan(text: str) -> tuple[bool, bool]:
    """(``text`` is a prefix of a valid answer, ``text`` is a complete valid answer)."""
    if text in ("", "2"):
        return True, False
    if text == "25":
        return True, True
    if not text[0].isdigit():
        return False, False
    used: set[int] = set()
    items = text.split(",")
    for i, item in enumerate(items):
        last = i == len(items) - 1
        if i and item.startswith(" "):
            item = item[1:]
        if not last:
            code = _full_item(item)
            if code is None or code in used:
                return False, False
            used.add(code)
            continue
        if item == "":
            return True, False  # just after a separator
        digits = item.rstrip("+-")
        sign = item[len(digits):]
        if not digits.isdigit() or len(sign) > 1 or digits.startswith("0") or len(digits) > 2:
            return False, False
        code = int(digits)
        if code > _MAX_CODE:
            return False, False
        if not sign:
            # "1" and "2" may still grow into 10..24; a code already used cannot be written again
            extendable = len(digits) == 1 and digits in "12" and any(
                c not in used for c in range(code * 10, min(code * 10 + 9, _MAX_CODE) + 1))
            return (code not in used and code >= 1) or extendable, False
        if code in used or code < 1:
            return False, False
        return True, True
    return False, False  # pragma: no cover - the loop always returns


def _full_item(item: str) -> int | None:
    digits, sign = item[:-1], item[-1:]
    if sign not in ("+", "-") or not digits.isdigit() or digits.startswith("0") or len(digits) > 2:
        return None
    code = int(digits)
    return code if 1 <= code <= _MAX_CODE else None


def _distance(text: str) -> int:
    """Tokens a valid prefix needs at most to become complete (single-character digit and sign tokens)."""
    prefix, complete = _scan(text)
    if complete:
        return 0
    if text == "2":
        return 1  # "25" or "2+"
    tail = text.rsplit(",", 1)[-1].strip()
    if not tail:
        return 2  # a digit and a sign
    used = {int(i.strip()[:-1]) for i in text.split(",")[:-1]}
    return 1 if int(tail) not in used and 1 <= int(tail) <= _MAX_CODE else 2


def is_prefix(text: str) -> bool:
    """Whether ``text`` can still be completed into a valid answer."""
    return _scan(text)[0]


def is_complete(text: str) -> bool:
    """Whether ``text`` is a complete valid answer."""
    return _scan(text)[1]


class LabelLogitsProcessor:
    """A transformers logits processor constraining generation to the label grammar.

    Args:
        tokenizer: the model's tokenizer (each vocabulary entry is decoded once).
        eos_token_ids: token ids that end an answer (the chat template's end-of-turn and the EOS token).
        vocab_size: number of logits (the model's output size; may exceed the tokenizer's vocabulary).

    Call :meth:`start` with the prompt length and the ``max_new_tokens`` of a ``generate`` call before it.
    """

    def __init__(self, tokenizer, eos_token_ids: Iterable[int], vocab_size: int | None = None) -> None:
        self.eos = sorted({int(t) for t in eos_token_ids})
        if not self.eos:
            raise ValueError("constrained decoding needs at least one end-of-sequence token id")
        self.vocab_size = vocab_size or len(tokenizer)
        self.pieces: dict[int, str] = {}
        special = set(getattr(tokenizer, "all_special_ids", []))
        for token_id in range(min(len(tokenizer), self.vocab_size)):
            if token_id in special:
                continue
            piece = tokenizer.decode([token_id])
            if piece and set(piece) <= _ALPHABET and piece.strip():
                self.pieces[token_id] = piece
        if not any(p.isdigit() for p in self.pieces.values()) or not {"+", "-"} & set("".join(self.pieces.values())):
            raise ValueError("this tokenizer cannot spell the label grammar (no digit or sign tokens)")
        self._ids = torch.tensor(sorted(self.pieces), dtype=torch.long)
        self._prompt_length = 0
        self._max_new_tokens = 0

    def start(self, prompt_length: int, max_new_tokens: int) -> None:
        """Reset for a ``generate`` call whose prompts are ``prompt_length`` tokens long (padded)."""
        if max_new_tokens < CLOSE_TOKENS + 1:
            raise ValueError(f"constrained decoding needs max_new_tokens >= {CLOSE_TOKENS + 1}")
        self._prompt_length = prompt_length
        self._max_new_tokens = max_new_tokens

    def allowed(self, generated: Sequence[int], remaining: int) -> list[int]:
        """Token ids allowed after ``generated`` (the answer's tokens so far) with ``remaining`` steps left,
        this one included: a token is allowed when the answer can still be completed and ended in time."""
        text = "".join(self.pieces.get(t, "\0") for t in generated)
        prefix, complete = _scan(text)
        if not prefix:
            return list(self.eos)  # cannot happen through this processor; end rather than go on
        out = [t for t, piece in self.pieces.items()
               if _scan(text + piece)[0] and _distance(text + piece) + 1 <= remaining - 1]
        if complete:
            out += self.eos
        return out or list(self.eos)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self._prompt_length:].tolist()
        remaining = self._max_new_tokens - (input_ids.shape[1] - self._prompt_length)
        mask = torch.full_like(scores, float("-inf"))
        eos = set(self.eos)
        for row, tokens in enumerate(generated):
            if eos & set(tokens):
                mask[row] = 0.0  # finished: generate() pads this row whatever the scores say
                continue
            mask[row, self.allowed(tokens, remaining)] = 0.0
        return scores + mask
