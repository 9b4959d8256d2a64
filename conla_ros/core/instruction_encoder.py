"""The instruction encoder at run time: text → (dim,) float32 sentence embedding, with no torch.

The policy's language input is a frozen all-MiniLM-L6-v2 sentence embedding (docs/method.md, stage 2).
`training/exports/text_encoder.py` exports it once into a shared cache as

    text_encoder.onnx   inputs  input_ids, attention_mask: (batch, tokens) int64
                        output  sentence_embedding: (batch, 384) float32, mean-pooled over the
                                attention mask and L2-normalised (what sentence-transformers returns)
    tokenizer.json      the HuggingFace `tokenizers` file (lower-casing WordPiece, truncation to
                        256 tokens as sentence-transformers does, no padding)

and this module runs it with `tokenizers` + onnxruntime. On the robot an instruction changes rarely
and frames arrive at 30+ Hz, so embeddings are cached per distinct instruction (an LRU of
`cache_size` strings): the encoder runs once per new instruction, not per frame.

Where the files live: `text_encoder_dir(name)` = `$CONLA_CACHE/text_encoder/<name>/`, with
`CONLA_CACHE` defaulting to `~/.cache/conla_ros`. A model directory may instead carry the files
itself (model.yaml `instruction_encoder.directory: .`).

The encoder runs on the CPU by default whatever the policy uses: it runs once per instruction
(a few ms), and on TensorRT its dynamic token length would rebuild an engine per length.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "DEFAULT_TEXT_ENCODER",
    "ENCODER_INPUTS",
    "ENCODER_ONNX",
    "ENCODER_OUTPUT",
    "ENCODER_TOKENIZER",
    "EncoderLoadError",
    "InstructionEncoder",
    "cache_root",
    "text_encoder_dir",
]

LOG = logging.getLogger(__name__)

DEFAULT_TEXT_ENCODER = "all-MiniLM-L6-v2"
ENCODER_ONNX = "text_encoder.onnx"
ENCODER_TOKENIZER = "tokenizer.json"
ENCODER_INPUTS = ("input_ids", "attention_mask")
ENCODER_OUTPUT = "sentence_embedding"
CACHE_ENV = "CONLA_CACHE"


class EncoderLoadError(ValueError):
    """The encoder files are missing or unusable; the message names the file."""


def cache_root() -> Path:
    """`$CONLA_CACHE`, or `~/.cache/conla_ros` when it is unset or empty."""
    value = os.environ.get(CACHE_ENV, "").strip()
    return Path(value).expanduser() if value else Path.home() / ".cache" / "conla_ros"


def text_encoder_dir(name: str = DEFAULT_TEXT_ENCODER) -> Path:
    """The shared cache folder of text encoder `name` (holds text_encoder.onnx + tokenizer.json)."""
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"text encoder name must be a plain folder name, got {name!r}")
    return cache_root() / "text_encoder" / name


class InstructionEncoder:
    """Instruction text → (dim,) float32 embedding via tokenizers + onnxruntime, cached per string.

    Args:
        directory: folder holding `onnx_file` and `tokenizer_file`.
        dim: expected embedding width (checked against the ONNX output at load).
        providers: onnxruntime execution providers (default: CPU only; see the module docstring).
        threads: intra-op threads for onnxruntime (None: onnxruntime's default).
        cache_size: distinct instructions kept (least recently used dropped first).

    Raises `EncoderLoadError` naming the file when a file is missing, is not a valid ONNX model or
    tokenizer, or has the wrong inputs/outputs. `encode` raises ValueError for a non-string or
    empty instruction. Thread-safe.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        dim: int = 384,
        onnx_file: str = ENCODER_ONNX,
        tokenizer_file: str = ENCODER_TOKENIZER,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        threads: int | None = None,
        cache_size: int = 64,
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size!r}")
        self.directory = Path(directory)
        self.onnx_path = self.directory / onnx_file
        self.tokenizer_path = self.directory / tokenizer_file
        self.dim = int(dim)
        for path in (self.onnx_path, self.tokenizer_path):
            if not path.is_file():
                raise EncoderLoadError(f"{path}: instruction encoder file not found")
        try:
            self._tokenizer = Tokenizer.from_file(str(self.tokenizer_path))
        except Exception as exc:  # tokenizers raises a bare Exception for a malformed file
            raise EncoderLoadError(f"{self.tokenizer_path}: not a valid tokenizers file: {exc}") from exc
        self._tokenizer.no_padding()  # one sentence at a time: padding would only cost time

        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(str(self.onnx_path), sess_options=options,
                                                 providers=list(providers))
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
            raise EncoderLoadError(f"{self.onnx_path}: cannot load ONNX model: {exc}") from exc
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = {o.name: o for o in self._session.get_outputs()}
        if set(inputs) != set(ENCODER_INPUTS):
            raise EncoderLoadError(f"{self.onnx_path}: inputs are {sorted(inputs)}, expected {list(ENCODER_INPUTS)}")
        if ENCODER_OUTPUT not in outputs:
            raise EncoderLoadError(f"{self.onnx_path}: no output {ENCODER_OUTPUT!r} (outputs: {sorted(outputs)})")
        width = outputs[ENCODER_OUTPUT].shape[-1]
        if isinstance(width, int) and width != self.dim:
            raise EncoderLoadError(f"{self.onnx_path}: output {ENCODER_OUTPUT!r} has width {width}, "
                                   f"expected dim {self.dim}")
        self.provider = self._session.get_providers()[0]
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self.calls = 0  # ONNX runs so far (cache misses)
        self.hits = 0
        self.last_latency_ms = 0.0  # of the last ONNX run

    def encode(self, instruction: str) -> np.ndarray:
        """(dim,) float32, read-only; computed once per distinct (whitespace-stripped) instruction."""
        if not isinstance(instruction, str):
            raise ValueError(f"instruction must be a str, got {type(instruction).__name__}")
        key = instruction.strip()  # the tokenizer ignores outer whitespace, so this cannot change a result
        if not key:
            raise ValueError("instruction is empty")
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                self.hits += 1
                return cached
        embedding = self._run([key])[0]
        embedding.flags.writeable = False  # shared by every caller through the cache
        with self._lock:
            self._cache[key] = embedding
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            self.calls += 1
        return embedding

    __call__ = encode

    def encode_batch(self, instructions: Sequence[str]) -> np.ndarray:
        """(N, dim) float32, uncached: padded to the longest instruction (for tests and tools)."""
        return self._run([str(s).strip() for s in instructions])

    def _run(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        length = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(texts), length), dtype=np.int64)
        mask = np.zeros((len(texts), length), dtype=np.int64)
        for row, enc in enumerate(encodings):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1
        start = time.perf_counter()
        (out,) = self._session.run([ENCODER_OUTPUT], {"input_ids": ids, "attention_mask": mask})
        self.last_latency_ms = (time.perf_counter() - start) * 1e3
        out = np.asarray(out, dtype=np.float32)
        if out.shape != (len(texts), self.dim) or not np.isfinite(out).all():
            raise RuntimeError(f"{self.onnx_path}: bad embedding (shape {out.shape}, expected "
                               f"({len(texts)}, {self.dim}), finite: {bool(np.isfinite(out).all())})")
        return out

    def warmup(self) -> None:
        """Run once, uncached, so that the first real instruction does not pay first-run costs."""
        self._run(["warm up"])

    def cache_clear(self) -> None:
        with self._lock:
            self._cache.clear()

    def __len__(self) -> int:
        return len(self._cache)
