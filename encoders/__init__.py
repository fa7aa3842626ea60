"""Models and text: how items and users become vectors.

Nothing here knows about storage or HTTP; `retrieval` builds on it.
"""

from encoders.bi_encoder import BiEncoder, default_model_path
from encoders.device import resolve_device
from encoders.profile import EVENT_WEIGHTS, ProfileEvent, aggregate_profile
from encoders.text import item_text

__all__ = [
    "BiEncoder",
    "EVENT_WEIGHTS",
    "ProfileEvent",
    "aggregate_profile",
    "default_model_path",
    "item_text",
    "resolve_device",
]
