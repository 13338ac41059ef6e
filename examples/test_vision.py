"""Energy test for a vision transformer: ViT-B/16 on a batch of 224 x 224 images."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.irene(budget="100J")
def test_vit_b16(irene, vit) -> None:
    images = torch.zeros(32, 3, 224, 224)
    # 196 patches of 16 x 16 pixels + the class token: the tokens each layer processes
    tree = irene(vit, {"pixel_values": images}, label="images", seq_len=197)
    assert tree.seq_len == 197
    # the patch embedding is a Conv2d leaf, gated like every module
    assert tree["embeddings.patch_embeddings.projection"].type == "Conv2d"
    assert len([n for n in tree.modules() if n.type == "ViTLayer"]) == 12
