"""Sentence labeling: signed VECL labels from report sentences with rules or an LLM, through a cache.

Heavy backends (transformers, httpx) are imported only when :func:`build_labeler` asks for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monai_vecl.labeling.base import Labeler, LabelResult, LabelStats
from monai_vecl.labeling.cache import LabelCache
from monai_vecl.labeling.pipeline import label_sentences
from monai_vecl.labeling.rules import RulesLabeler

BACKENDS = ("rules", "transformers", "openai", "hybrid")

__all__ = ["BACKENDS", "LabelCache", "LabelResult", "LabelStats", "Labeler", "RulesLabeler", "build_labeler",
           "label_sentences"]


def build_labeler(config: Mapping[str, Any]) -> Labeler:
    """Labeler from a config mapping: ``backend`` (rules | transformers | openai | hybrid), the backend's keyword
    arguments, and for LLM backends an optional ``fallback`` mapping of :class:`RulesLabeler` arguments.
    ``hybrid`` takes an ``llm`` mapping (a transformers or openai config) and sends the LLM only the sentences
    the rules labeler is unsure of.

    Example: ``{"backend": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "llama3",
    "concurrency": 8, "fallback": {"uncertainty": "negative"}}``.
    """
    options = dict(config)
    backend = options.pop("backend", "rules")
    if backend not in BACKENDS:
        raise ValueError(f"unknown labeling backend {backend!r}; choose one of {BACKENDS}")
    if backend == "rules":
        return RulesLabeler(**options)
    if backend == "hybrid":
        from monai_vecl.labeling.hybrid import HybridLabeler

        llm = dict(options.pop("llm", {}))
        if llm.get("backend") not in ("transformers", "openai"):
            raise ValueError("hybrid labeling needs an 'llm' mapping with backend transformers or openai")
        if options:
            llm.setdefault("fallback", options.pop("fallback", {}))
        if options:
            raise ValueError(f"unknown hybrid options {sorted(options)}")
        return HybridLabeler(build_labeler(llm))  # type: ignore[arg-type]
    fallback_options = dict(options.pop("fallback", {}))
    if "max_chars" in options:
        fallback_options.setdefault("max_chars", options["max_chars"])
    fallback = RulesLabeler(**fallback_options)
    if backend == "transformers":
        from monai_vecl.labeling.transformers_backend import TransformersLabeler

        return TransformersLabeler(fallback=fallback, **options)
    from monai_vecl.labeling.openai_backend import OpenAILabeler

    return OpenAILabeler(fallback=fallback, **options)
