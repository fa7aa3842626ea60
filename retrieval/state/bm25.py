"""Lexical matching: Qdrant's own BM25 model turns text into sparse vectors (no server needed).

The collection stores term frequencies; Qdrant applies IDF at query time (sparse ``Modifier.Idf``),
so the scores stay right as the catalogue grows.
"""

from __future__ import annotations

import qdrant_edge

from retrieval.storage.vector_store import SparseVector


class Bm25Encoder:
    """Text to BM25 sparse vectors, English stemming and stop words.

    Example::

        bm25 = Bm25Encoder()
        doc = bm25.encode_documents(["Red heavy-duty stapler"])[0]
        query = bm25.encode_query("stapler")
    """

    def __init__(self, avg_len: float = 40.0):
        # Item texts are a title plus a short description: ~40 tokens, not BM25's default 256.
        self.model = qdrant_edge.Bm25(qdrant_edge.Bm25Config(language="english", avg_len=avg_len))

    def encode_documents(self, texts: list[str]) -> list[SparseVector]:
        out = []
        for text in texts:
            sv = self.model.embed_document(text)
            out.append(SparseVector(list(sv.indices), list(sv.values)))
        return out

    def encode_query(self, text: str) -> SparseVector:
        sv = self.model.embed_query(text)
        return SparseVector(list(sv.indices), list(sv.values))
