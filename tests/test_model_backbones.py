"""Backbones: the factory, real ImageNet weights, and the preprocessing each carries."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from doohable.model.backbones import create_backbone, list_backbones
from doohable.model.runtime import prepare_image

# ImageNet: 281-285 are domestic cats (tabby, tiger cat, Persian, Siamese, Egyptian);
# 967 espresso, 968 cup, 504 coffee mug
CAT = {281, 282, 283, 284, 285}
COFFEE = {967, 968, 504}


def test_unknown_backbone_lists_known_and_close_names() -> None:
    with pytest.raises(ValueError) as err:
        create_backbone("mobilenetv2")
    msg = str(err.value)
    assert "known: efficientnet_lite0, mobilenet_v2" in msg
    assert "Did you mean mobilenet_v2" in msg


@pytest.mark.parametrize("name", list_backbones())
def test_pretrained_backbone_recognises_real_photos(name: str) -> None:
    model = create_backbone(name).eval()
    s = model.preprocess.input_size
    batch = np.stack([prepare_image(Image.fromarray(img), s) for img in (skdata.chelsea(), skdata.coffee())])
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        top3 = model(model.normalize(x)).topk(3).indices.tolist()
    assert top3[0][0] in CAT, top3
    assert top3[1][0] in COFFEE, top3


@pytest.mark.parametrize("name", list_backbones())
def test_backbone_splits_features_and_groups_every_parameter(name: str) -> None:
    model = create_backbone(name, pretrained=False, input_size=64).eval()
    with torch.no_grad():
        feats = model.forward_features(model.normalize(torch.zeros(2, 3, 64, 64)))
    assert feats.shape == (2, model.num_features)
    grouped = {id(p) for g in model.layer_groups() for p in g}
    head_ids = {id(p) for p in model.classifier.parameters()}
    backbone_ids = {id(p) for p in model.parameters()} - head_ids
    assert grouped == backbone_ids


def test_preprocessing_is_carried_by_the_model() -> None:
    mnv2, lite = (
        create_backbone("mobilenet_v2", pretrained=False),
        create_backbone("efficientnet_lite0", pretrained=False),
    )
    white = torch.full((1, 3, 4, 4), 255.0)
    # lite0 maps [0, 255] to [-1, 1]; MobileNetV2 uses the ImageNet mean and std
    assert torch.allclose(lite.normalize(white), torch.ones(1, 3, 4, 4))
    assert torch.allclose(
        mnv2.normalize(white)[0, :, 0, 0],
        torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225]),
    )
