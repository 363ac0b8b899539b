"""A fast CPU text embedding for the benchmark baselines.

Character n-grams (3 and 4, within word boundaries, of the first 500 characters) are hashed into a sparse vector
(:class:`sklearn.feature_extraction.text.HashingVectorizer`, no vocabulary to hold), weighted by TF-IDF and
projected to a few dense dimensions with truncated SVD (LSA). TF-IDF and SVD are fitted on the benign
baseline traffic only; rows are L2-normalised, so Euclidean distance is a monotone function of cosine
similarity. This stands in for the neural sentence encoders the papers used, so the baselines run in seconds
on CPU.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["HashEmbedder", "event_texts"]


def event_texts(table) -> list[str]:
    """The text of each event a baseline embeds: system text, a blank line, then the user text."""
    names = set(table.column_names)
    user = table.column("user_text").to_pylist() if "user_text" in names else [""] * table.num_rows
    system = table.column("system_text").to_pylist() if "system_text" in names else [None] * table.num_rows
    return [f"{s}\n\n{u or ''}" if s else (u or "") for s, u in zip(system, user)]


class HashEmbedder:
    """Hashed char n-grams -> TF-IDF -> truncated SVD -> L2 normalisation."""

    def __init__(self, dim: int = 64, ngram_range: tuple[int, int] = (3, 4), n_features: int = 2**18,
                 max_chars: int = 500, max_fit_texts: int = 20000, seed: int = 0):
        self.dim = dim
        self.ngram_range = tuple(ngram_range)
        self.n_features = n_features
        self.max_chars = max_chars
        self.max_fit_texts = max_fit_texts
        self.seed = seed

    def _hash(self, texts: Sequence[str]):
        from sklearn.feature_extraction.text import HashingVectorizer

        hv = HashingVectorizer(analyzer="char_wb", ngram_range=self.ngram_range, n_features=self.n_features,
                               alternate_sign=False, norm=None, lowercase=True)
        return hv.transform([(t or "")[: self.max_chars] for t in texts])

    def fit(self, texts: Sequence[str]) -> "HashEmbedder":
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfTransformer

        texts = list(texts)
        if not texts:
            raise ValueError("HashEmbedder.fit needs at least one text")
        rng = np.random.default_rng(self.seed)
        if len(texts) > self.max_fit_texts:
            idx = rng.choice(len(texts), self.max_fit_texts, replace=False)
            texts = [texts[i] for i in sorted(idx)]
        x = self._hash(texts)
        # keep only the hashed n-grams the baseline uses: the SVD then works on thousands of columns, not 2^18
        self.columns_ = np.unique(x.indices)
        x = x[:, self.columns_]
        self.tfidf_ = TfidfTransformer(sublinear_tf=True).fit(x)
        xt = self.tfidf_.transform(x)
        k = max(1, min(self.dim, xt.shape[0] - 1, xt.shape[1] - 1))
        self.svd_ = TruncatedSVD(n_components=k, random_state=self.seed).fit(xt)
        return self

    def transform(self, texts: Sequence[str], batch: int = 8192) -> np.ndarray:
        if not hasattr(self, "svd_"):
            raise RuntimeError("HashEmbedder must be fitted before transform()")
        # templated and repeated prompts are common: embed each distinct (truncated) text once
        keys = [(t or "")[: self.max_chars] for t in texts]
        index: dict[str, int] = {}
        inverse = np.fromiter((index.setdefault(k, len(index)) for k in keys), dtype=np.int64, count=len(keys))
        uniq = list(index)
        out = np.zeros((len(uniq), self.svd_.n_components), dtype=np.float32)
        for start in range(0, len(uniq), batch):
            x = self._hash(uniq[start:start + batch])[:, self.columns_]
            z = self.svd_.transform(self.tfidf_.transform(x))
            norm = np.linalg.norm(z, axis=1, keepdims=True)
            out[start:start + batch] = z / np.where(norm > 0, norm, 1.0)
        return out[inverse]
