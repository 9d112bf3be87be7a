"""The identity probe (vkd_fast.eval.probe): nearest-centroid identification against an independent
computation, and its errors."""

import _tiny_models as T
import pytest
import torch
from PIL import Image

import vkd_fast.adapters as A
from vkd_fast.eval.probe import identity_probe


def _portraits(person: int, n: int, seed: int):
    colours = [(220, 30, 30), (30, 220, 30), (30, 30, 220), (200, 200, 40)]
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        px = (torch.tensor(colours[person], dtype=torch.float32) + 25 * torch.randn(32, 32, 3, generator=g)).clamp(0, 255)
        out.append({"image": Image.fromarray(px.to(torch.uint8).numpy()), "identity": person, "question": "q"})
    return out


def test_probe_matches_an_independent_nearest_centroid():
    model = T.tiny_llava()
    train = [it for p in range(4) for it in _portraits(p, 4, seed=p)]
    test = [it for p in range(4) for it in _portraits(p, 2, seed=10 + p)]
    got = identity_probe(model, train, test)
    ad = A.get_adapter(model)
    with torch.no_grad():
        feats = lambda items: torch.stack([ad.visual_features(tap="projector", **ad.preprocess([it["image"]]))[0].flatten()  # noqa: E731
                                           for it in items])
        f_train, f_test = feats(train), feats(test)
    mean, std = f_train.mean(0), f_train.std(0) + 1e-6
    z = (f_train - mean) / std
    cent = torch.nn.functional.normalize(torch.stack([z[4 * p: 4 * p + 4].mean(0) for p in range(4)]), dim=1)
    pred = (torch.nn.functional.normalize((f_test - mean) / std, dim=1) @ cent.T).argmax(1)
    want = float((pred == torch.arange(4).repeat_interleave(2)).double().mean())
    assert got["accuracy"] == pytest.approx(want) and got["chance"] == 0.25 and got["n"] == 8 and got["people"] == 4
    assert got["accuracy"] > 0.5  # distinct colours stay distinct through a random tiny model


def test_probe_errors():
    model = T.tiny_llava()
    train = _portraits(0, 2, 0)
    with pytest.raises(ValueError, match="people with no training image"):
        identity_probe(model, train, _portraits(1, 1, 1))
    with pytest.raises(ValueError, match="identity_probe .* 1 of the 1 training items have no person"):
        identity_probe(model, [{"image": train[0]["image"]}], train)
