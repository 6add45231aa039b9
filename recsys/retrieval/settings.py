"""Settings of the retrieval stage (``RECSYS_RETRIEVAL__*``): the two-tower model, its index and its gate."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class RetrievalSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    enabled: bool = True  # False: candidates come from the rule pools alone
    history_len: int = 20  # engaged videos pooled in the user tower
    embedding_dim: int = 32
    output_dim: int = 32
    units: tuple[int, ...] = (64,)
    temperature: float = 0.1
    logq_correction: bool = True  # subtract log(sampling probability) from the in-batch logits
    epochs: int = 4  # more overfit the few engagements per video here (bench/candidates.py, seed 1)
    batch_size: int = 256
    learning_rate: float = 3e-3
    k: int = 150  # two-tower candidates per user (the rule pools fill the rest of serving.n_candidates)
    fresh_quota: int = 30  # places kept for fresh uploads (the index knows no video uploaded after it)
    exact_max_items: int = 200_000  # exact matmul top-K up to this catalog size, faiss HNSW beyond
    hnsw_m: int = 32
    ef_search: int = 128
    eval_k: int = 200  # the gate's candidate Recall@K
    max_recall_regression: float = 0.0  # candidate recall may not fall more than this below the champion's
