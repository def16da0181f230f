"""The label grammar and its logits processor: every answer it lets a model write parses, whatever the logits."""

import random

import pytest
import torch

from monai_vecl.labeling.grammar import CLOSE_TOKENS, LabelLogitsProcessor, is_complete, is_prefix
from monai_vecl.labeling.prompt import AnswerError, parse_answer


@pytest.mark.parametrize("text, prefix, complete", [
    ("", True, False), ("2", True, False), ("25", True, True), ("2+", True, True), ("1", True, False),
    ("15-, 2-, 3-", True, True), ("15-,2-", True, True), ("15-, ", True, False), ("15-,", True, False),
    ("24+", True, True), ("3", True, False), ("30", False, False), ("25+", False, False), ("25,", False, False),
    ("2+, 2-", False, False), ("2+, 2", True, False),  # "2" may still become 20..24
    ("1+, 2+, 3+, 4+, 5+, 6+, 7+, 8+, 9+, 1", True, False),  # 10..19 are free
    ("0", False, False), ("01+", False, False), (" 2+", False, False), ("2+,  3-", False, False),
    ("2++", False, False), ("a", False, False), ("2+ 3-", False, False),
])
def test_prefixes(text, prefix, complete):
    assert is_prefix(text) is prefix and is_complete(text) is complete
    if complete:
        assert parse_answer(text)


class CharTokenizer:
    """A toy tokenizer: one token per character of a small alphabet, some multi-character pieces, specials."""

    def __init__(self):
        self.vocab = ["<eos>", "<pad>"] + list("0123456789+-, ") + [", ", "1+", "25", "ab", "\n", "+,", " 2"] + list("xyz")
        self.all_special_ids = [0, 1]

    def __len__(self):
        return len(self.vocab)

    def decode(self, ids):
        return "".join(self.vocab[i] for i in ids if i not in self.all_special_ids)


def _generate(processor, logits_rng, max_new_tokens, prompt_len=3):
    processor.start(prompt_len, max_new_tokens)
    ids = torch.zeros(1, prompt_len, dtype=torch.long) + 1
    for _ in range(max_new_tokens):
        scores = torch.tensor([[logits_rng.gauss(0, 1) for _ in range(processor.vocab_size)]])
        nxt = int(processor(ids, scores).argmax())
        ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
        if nxt == 0:
            break
    return ids[0, prompt_len:].tolist()


def test_processor_only_lets_valid_answers_through():
    tok = CharTokenizer()
    processor = LabelLogitsProcessor(tok, [0], vocab_size=len(tok) + 5)  # model output wider than the vocab
    assert set(processor.pieces.values()) <= set("0123456789+-, ") | {", ", "1+", "25", "+,", " 2"}
    rng = random.Random(0)
    for trial in range(300):
        max_new = rng.randint(CLOSE_TOKENS + 1, 30)
        out = _generate(processor, rng, max_new)
        assert out[-1] == 0, "the answer must end within the token budget"
        text = tok.decode(out)
        assert parse_answer(text) == parse_answer(text)  # parses: no AnswerError
        assert len(out) <= max_new


def test_free_generation_of_the_same_logits_would_not_parse():
    """The check above could fail: random logits without the processor write garbage."""
    tok = CharTokenizer()
    rng = random.Random(1)
    failures = 0
    for _ in range(50):
        ids = [max(range(len(tok)), key=lambda _: rng.random()) for _ in range(8)]
        try:
            parse_answer(tok.decode(ids))
        except AnswerError:
            failures += 1
    assert failures > 40


def test_finished_rows_are_left_alone_and_budget_is_checked():
    tok = CharTokenizer()
    processor = LabelLogitsProcessor(tok, [0])
    with pytest.raises(ValueError, match="max_new_tokens"):
        processor.start(2, CLOSE_TOKENS)
    processor.start(2, 10)
    ids = torch.tensor([[1, 1, tok.vocab.index("2"), tok.vocab.index("5"), 0],
                        [1, 1, tok.vocab.index("2"), tok.vocab.index("5"), 1]])
    scores = torch.zeros(2, len(tok))
    out = processor(ids, scores)
    assert torch.all(out[0] == 0)  # finished row: untouched
    assert torch.isfinite(out[1]).nonzero().flatten().tolist() == [0]  # "25" is complete: only the end
    assert processor.allowed([tok.vocab.index("3")], remaining=CLOSE_TOKENS) == [tok.vocab.index("+"),
                                                                                  tok.vocab.index("-")]


def test_a_tokenizer_without_digits_is_refused():
    class Letters(CharTokenizer):
        def __init__(self):
            super().__init__()
            self.vocab = ["<eos>", "<pad>"] + list("abc")

    with pytest.raises(ValueError, match="cannot spell"):
        LabelLogitsProcessor(Letters(), [0])
    with pytest.raises(ValueError, match="end-of-sequence"):
        LabelLogitsProcessor(CharTokenizer(), [])
