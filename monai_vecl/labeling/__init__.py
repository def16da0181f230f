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

BACKENDS = ("rules", "transformers", "openai")

__all__ = ["BACKENDS", "LabelCache", "LabelResult", "LabelStats", "Labeler", "RulesLabeler", "build_labeler",
           "label_sentences"]


def build_labeler(config: Mapping[str, Any]) -> Labeler:
    """Labeler from a config mapping: ``backend`` (rules | transformers | openai), the backend's keyword
    arguments, and for LLM backends an optional ``fallback`` mapping of :class:`RulesLabeler` arguments.

    Example: ``{"backend": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "llama3",
    "concurrency": 8, "fallback": {"uncertainty": "negative"}}``.
    """
    options = dict(config)
    backend = options.pop("backend", "rules")
    if backend not in BACKENDS:
        raise ValueError(f"unknown labeling backend {backend!r}; choose one of {BACKENDS}")
    if backend == "rules":
        return RulesLabeler(**options)
    fallback = RulesLabeler(**options.pop("fallback", {}))
    if backend == "transformers":
        from monai_vecl.labeling.transformers_backend import TransformersLabeler

        return TransformersLabeler(fallback=fallback, **options)
    from monai_vecl.labeling.openai_backend import OpenAILabeler

    return OpenAILabeler(fallback=fallback, **options)
