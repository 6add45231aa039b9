"""The item index of one retrieval model version: exported video embeddings and top-K by dot product.

Two backends, chosen by configuration (``RetrievalSettings.exact_max_items``):

* ``exact``: brute force, every query against every video (``faiss.IndexFlatIP``: blocked BLAS matrix
  products and a heap per query, about 3x NumPy's matmul + argpartition here). Exact, and fast enough
  for catalogs of up to a few hundred thousand videos scored once a day.
* ``faiss``: an HNSW graph (``faiss.IndexHNSWFlat``) for larger catalogs; approximate, with
  ``ef_search`` trading recall for speed. The item vectors are not of one length (the item bias and the
  popularity prior sit in the last column), and a graph search by inner product loses most of its recall
  on such vectors, so the graph is built in L2 over the usual reduction of inner-product search to
  nearest-neighbour search (Bachrach et al. 2014): each item gets one more coordinate
  ``sqrt(M^2 - |x|^2)`` (M the largest item norm) and each query a 0, so the nearest item in L2 is the one
  of largest inner product; the scores returned are the inner products.

Both return video ids (``-1`` pads a row when the index holds fewer than K videos) and scores, best
first; a test checks that they agree on a small catalog. An empty index returns only padding.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class ItemIndex:
    """Embeddings of the catalog's videos at build time, searchable by dot product."""

    video_ids: np.ndarray  # int64 [n]
    embeddings: np.ndarray  # float32 [n, d]
    built_at: str = ""  # ISO time the index was built (videos uploaded later are not in it)
    backend: str = "exact"
    hnsw_m: int = 32
    ef_search: int = 128
    _faiss: object = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        self.video_ids = np.asarray(self.video_ids, dtype=np.int64).reshape(-1)
        self.embeddings = np.ascontiguousarray(self.embeddings, dtype=np.float32)
        if self.embeddings.ndim != 2 or len(self.embeddings) != len(self.video_ids):
            raise ValueError(
                f"index: {len(self.video_ids)} ids but embeddings of shape {self.embeddings.shape}"
            )
        if self.backend not in ("exact", "faiss"):
            raise ValueError(f"unknown index backend {self.backend!r} (exact or faiss)")

    def __len__(self) -> int:
        return len(self.video_ids)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` videos per query row: (video ids [Q, k], scores [Q, k]), best first, -1 padding."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        ids = np.full((len(q), k), -1, dtype=np.int64)
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        if len(self) == 0 or len(q) == 0 or k <= 0:
            return ids, scores
        if q.shape[1] != self.dim:
            raise ValueError(f"queries of dimension {q.shape[1]}, index of dimension {self.dim}")
        kk = min(k, len(self))
        pos, sc = self._search(q, kk)
        ok = pos >= 0
        ids[:, :kk] = np.where(ok, self.video_ids[np.where(ok, pos, 0)], -1)
        scores[:, :kk] = np.where(ok, sc, -np.inf)
        return ids, scores

    def _faiss_index(self):
        import faiss

        if self._faiss is None:
            if self.backend == "exact":  # brute force: blocked BLAS matrix products and a heap per query
                index = faiss.IndexFlatIP(self.dim)
                index.add(self.embeddings)
            else:
                index = faiss.IndexHNSWFlat(self.dim + 1, self.hnsw_m, faiss.METRIC_L2)
                index.hnsw.efConstruction = max(40, 2 * self.hnsw_m)
                index.add(self._augmented_items())
            self._faiss = index
        return self._faiss

    def _augmented_items(self) -> np.ndarray:
        """Items with the coordinate ``sqrt(M^2 - |x|^2)``: every row then has the norm M."""
        sq = np.einsum("ij,ij->i", self.embeddings, self.embeddings)
        extra = np.sqrt(np.maximum(sq.max() - sq, 0.0))[:, None]
        return np.ascontiguousarray(np.hstack([self.embeddings, extra]), dtype=np.float32)

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        index = self._faiss_index()
        if self.backend == "exact":
            sc, pos = index.search(q, k)
            return pos.astype(np.int64), sc.astype(np.float32)
        index.hnsw.efSearch = max(self.ef_search, k)
        dist, pos = index.search(np.hstack([q, np.zeros((len(q), 1), np.float32)]), k)
        # |q - x'|^2 = |q|^2 + M^2 - 2 q.x, so q.x = (|q|^2 + M^2 - distance) / 2
        m2 = float(np.einsum("ij,ij->i", self.embeddings, self.embeddings).max())
        sc = (np.einsum("ij,ij->i", q, q)[:, None] + m2 - dist.astype(np.float64)) / 2.0
        return pos.astype(np.int64), np.where(pos >= 0, sc, -np.inf).astype(np.float32)

    # ------------------------------------------------------------------ persistence
    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, video_ids=self.video_ids, embeddings=self.embeddings, built_at=np.array(self.built_at))
        return buf.getvalue()

    def save(self, path: Path) -> Path:
        Path(path).write_bytes(self.to_bytes())
        return Path(path)

    @classmethod
    def load(cls, path: Path, *, backend: str = "exact", hnsw_m: int = 32, ef_search: int = 128) -> ItemIndex:
        with np.load(Path(path), allow_pickle=False) as z:
            return cls(z["video_ids"], z["embeddings"], str(z["built_at"]), backend, hnsw_m, ef_search)


def choose_backend(n_items: int, exact_max_items: int) -> str:
    """``exact`` up to ``exact_max_items`` videos, ``faiss`` beyond."""
    return "exact" if n_items <= exact_max_items else "faiss"
