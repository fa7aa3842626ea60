"""The sequence encoder: a small transformer that reads a user's recent items, in order, and answers
with one vector in the item space, pointing at what they are likely to take next.

Items enter as their text vectors from the bi-encoder (through a learned adaptor), plus a learned
residual for items that had interactions when the model was trained; the output is compared with
the items' text vectors themselves. So an item the model never saw (a new one, or one added after
training) is read and found from its text alone, from its first second in the catalogue.

Example::

    model = SequenceModel.load(folder, device="cpu")
    vectors = model.encode([["a", "b", "c"], ["d"]], item_vectors)  # (2, dim) unit vectors
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from encoders.device import resolve_device

WEIGHTS_FILE = "sequence.pt"
CONFIG_FILE = "sequence.json"


@dataclass(frozen=True)
class SequenceShape:
    """The architecture: what a saved model needs to be rebuilt."""

    item_dim: int  # the bi-encoder's dimension: inputs and outputs live in its space
    hidden: int = 128
    layers: int = 2
    heads: int = 2
    max_length: int = 20  # the newest items read
    dropout: float = 0.1


class SequenceEncoder(nn.Module):
    """The network: adaptor + residual + position -> causal transformer -> item space.

    Inputs are left-padded windows of ``max_length`` items: ``vectors`` (batch, length, item_dim),
    ``residual_ids`` (batch, length; 0 where an item has no learned residual) and ``mask`` (batch,
    length; True on real items). Position ``t``'s output is the guess for the item after position
    ``t``, so one window trains every step of it at once; serving reads the last position.
    """

    def __init__(self, shape: SequenceShape, residual_items: int):
        super().__init__()
        self.shape = shape
        self.adaptor = nn.Linear(shape.item_dim, shape.hidden)
        self.residual = nn.Embedding(residual_items + 1, shape.hidden, padding_idx=0)
        nn.init.zeros_(self.residual.weight)  # an untrained residual adds nothing to the text
        self.position = nn.Embedding(shape.max_length, shape.hidden)
        layer = nn.TransformerEncoderLayer(shape.hidden, shape.heads, dim_feedforward=2 * shape.hidden,
                                           dropout=shape.dropout, batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, shape.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(shape.hidden)
        self.output = nn.Linear(shape.hidden, shape.item_dim)
        self.register_buffer("causal", torch.triu(torch.ones(shape.max_length, shape.max_length, dtype=torch.bool), 1),
                             persistent=False)

    def forward(self, vectors: torch.Tensor, residual_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        length = vectors.shape[1]
        positions = torch.arange(length, device=vectors.device) + (self.shape.max_length - length)
        x = self.adaptor(vectors) + self.residual(residual_ids) + self.position(positions)[None]
        # Each position reads itself and the real items before it. A padding position reads only
        # itself (its output is never used), so no row of the attention is empty (NaN).
        eye = torch.eye(length, dtype=torch.bool, device=x.device)
        allowed = (~self.causal[-length:, -length:])[None] & (mask[:, None, :] | eye[None])
        blocked = (~allowed).repeat_interleave(self.shape.heads, dim=0)
        x = self.transformer(x, mask=blocked)
        return nn.functional.normalize(self.output(self.norm(x)), dim=-1)


class SequenceModel:
    """A trained ``SequenceEncoder`` with what serving needs around it: which items have residuals,
    the device, and a batch-first ``encode``. Device is decided here, once."""

    def __init__(self, network: SequenceEncoder, residual_items: Sequence[str], device: str = "auto"):
        self.device = resolve_device(device)
        self.network = network.to(self.device).eval()
        self.shape = network.shape
        self.residual_items = list(residual_items)
        self._residual_row = {item: n for n, item in enumerate(self.residual_items, start=1)}

    def window(self, histories: Sequence[Sequence[str]], item_vectors: Mapping[str, np.ndarray],
               drop_residual: float = 0.0, rng: np.random.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Left-padded inputs for a batch of histories (oldest first); items without a vector (deleted)
        are skipped. ``drop_residual`` hides a share of residuals (training: so the model also reads
        items by their text alone, as it must for new ones)."""
        length, dim = self.shape.max_length, self.shape.item_dim
        vectors = np.zeros((len(histories), length, dim), dtype=np.float32)
        residual = np.zeros((len(histories), length), dtype=np.int64)
        mask = np.zeros((len(histories), length), dtype=bool)
        for row, history in enumerate(histories):
            kept = [i for i in history if i in item_vectors][-length:]
            start = length - len(kept)
            for col, item in enumerate(kept, start=start):
                vectors[row, col] = item_vectors[item]
                residual[row, col] = self._residual_row.get(item, 0)
                mask[row, col] = True
        if drop_residual > 0 and rng is not None:
            residual[rng.random(residual.shape) < drop_residual] = 0
        to = self.device
        return torch.from_numpy(vectors).to(to), torch.from_numpy(residual).to(to), torch.from_numpy(mask).to(to)

    @torch.inference_mode()
    def encode(self, histories: Sequence[Sequence[str]], item_vectors: Mapping[str, np.ndarray]) -> np.ndarray:
        """One unit vector in the item space per history (zeros for a history with no known item)."""
        if not histories:
            return np.zeros((0, self.shape.item_dim), dtype=np.float32)
        vectors, residual, mask = self.window(histories, item_vectors)
        out = self.network(vectors, residual, mask)[:, -1].float().cpu().numpy()
        out[~mask.any(1).cpu().numpy()] = 0.0
        return out

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu() for k, v in self.network.state_dict().items()}, folder / WEIGHTS_FILE)
        (folder / CONFIG_FILE).write_text(json.dumps({"shape": asdict(self.shape),
                                                      "residual_items": self.residual_items}))

    @classmethod
    def load(cls, folder: str | Path, device: str = "auto") -> SequenceModel:
        folder = Path(folder)
        config = json.loads((folder / CONFIG_FILE).read_text())
        items = config["residual_items"]
        network = SequenceEncoder(SequenceShape(**config["shape"]), len(items))
        network.load_state_dict(torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True))
        return cls(network, items, device)
