"""The cross-encoder reranker: reads a (context, candidate) pair together and scores it.

Initialised from the bundled MiniLM backbone with a fresh one-logit head (no pretrained reranker
can be had offline), then fine-tuned on the service's own event log (``encoders.training``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from encoders.bi_encoder import default_model_path
from encoders.device import resolve_device


class CrossEncoderReranker:
    """Score (context, candidate) text pairs; higher is better.

    Example::

        reranker = CrossEncoderReranker()                     # untrained head on MiniLM
        reranker.score(["Recently: Gel pen (Pens)."], ["Pen refills, 0.5 mm."])
        reranker.save("data/models/reranker/v1")
        CrossEncoderReranker("data/models/reranker/v1", device="cuda")   # fp16 on a GPU
    """

    def __init__(self, model_path: str | Path | None = None, device: str = "auto", max_length: int = 192):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import CrossEncoder

        self.model_path = str(model_path or default_model_path())
        self.device = resolve_device(device)
        self.max_length = max_length
        self.cross_encoder = CrossEncoder(self.model_path, num_labels=1, device=self.device,
                                          local_files_only=True, max_length=max_length)
        self.model = self.cross_encoder.model
        self.tokenizer = self.cross_encoder.tokenizer
        self.half = False

    def for_inference(self) -> "CrossEncoderReranker":
        """Eval mode, and half precision on CUDA (scores stay in float32 for the caller)."""
        self.model.eval()
        if self.device.startswith("cuda") and not self.half:
            self.model.half()
            self.half = True
        return self

    def logits(self, queries: list[str], documents: list[str]) -> torch.Tensor:
        features = self.tokenizer(queries, documents, padding=True, truncation="longest_first",
                                  max_length=self.max_length, return_tensors="pt").to(self.device)
        return self.model(**features).logits.view(-1)

    @torch.inference_mode()
    def score(self, queries: list[str], documents: list[str], batch_size: int | None = None) -> np.ndarray:
        """One score per pair, in order. Pairs are batched longest first, so a batch pads to lengths
        alike; ``batch_size`` defaults to 256 on a GPU and 64 on a CPU."""
        if len(queries) != len(documents):
            raise ValueError("queries and documents must pair up one to one")
        self.for_inference()
        batch_size = batch_size or (256 if self.device.startswith("cuda") else 64)
        order = sorted(range(len(queries)), key=lambda i: -(len(queries[i]) + len(documents[i])))
        scores = np.zeros(len(queries), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            scores[batch] = self.logits([queries[i] for i in batch], [documents[i] for i in batch]).float().cpu().numpy()
        return scores

    def save(self, path: str | Path) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        if self.half:  # never persist the fp16 copy: reload in full precision
            self.model.float()
            self.half = False
        self.cross_encoder.save(str(path))
