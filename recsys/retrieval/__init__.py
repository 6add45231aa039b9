"""Learned candidate generation: a two-tower retrieval model and its item index (issue 14).

Modules: ``settings`` (``RECSYS_RETRIEVAL__*``), ``features`` (tower inputs from the ranker's fitted
transform), ``model`` (the Keras two-tower model and its in-batch softmax with the logQ correction),
``index`` (exported item embeddings, exact or faiss top-K), ``train`` (fit, candidate recall, the gate),
``registry`` (MLflow: its own registered model, paired with the ranker), ``serve`` (the two-tower pool for
the candidate generator). Importing this package imports nothing heavy.
"""
