"""The identity probe (docs/method.md §4): how well people can still be told apart from the visual
features the language model reads.

A nearest-centroid classifier over all people: each person's centroid is the mean of their training
images' features (standardised per feature with the training set's mean and spread), and each test
image (e.g. an unseen portrait of a forget person) is assigned to the centroid of highest cosine
similarity. Accuracy near 1 means the features still carry who the person is -- for a model that
unlearned them, the structure a relearning attack can re-amplify; near chance (1 / people) means
identity is gone from what the LLM reads. Compare with the gold model's value: a model that never
learned the forget people still sees that their portraits differ.
"""

from __future__ import annotations

import torch

from ..adapters import get_adapter
from ..utils.items import person_of, require_persons

#: what needs the persons, the start of the probe's refusal
_NEEDS = "identity_probe tells people apart, so it needs to know who every image pictures"


@torch.no_grad()
def image_features(model, items: list[dict], tap: str = "projector", batch_size: int = 32) -> dict[int, torch.Tensor]:
    """``{id(image): flattened features}`` of each distinct image of ``items`` at ``tap`` (float32, CPU)."""
    adapter = get_adapter(model)
    images = list({id(it["image"]): it["image"] for it in items if it.get("image") is not None}.items())
    device = next(adapter.vision_tower.parameters()).device
    out = {}
    for start in range(0, len(images), batch_size):
        chunk = images[start: start + batch_size]
        inputs = adapter.collate([adapter.preprocess([img]) for _, img in chunk])
        feats, offsets = adapter.visual_features(tap=tap, **{k: v.to(device) for k, v in inputs.items()})
        bounds = offsets.tolist()
        for (key, _), a, b in zip(chunk, bounds, bounds[1:]):
            out[key] = feats[a:b].float().flatten().cpu()
    return out


def identity_probe(model, train_items: list[dict], test_items: list[dict], tap: str = "projector",
                   batch_size: int = 32) -> dict:
    """Nearest-centroid identification of ``test_items``' images among the people of ``train_items``
    (centroids from their images). Returns ``accuracy``, ``chance`` (1 / people), ``n`` (test images)
    and ``people``. Images of different sizes must give features of one size (true of the toy world
    and of fixed-resolution families). Every image item needs a person (:func:`vkd_fast.data.person_of`:
    its ``identity``, ``name`` or ``id``)."""
    train_images = [it for it in train_items if it.get("image") is not None]
    test_images = [it for it in test_items if it.get("image") is not None]
    require_persons("training", train_images, _NEEDS)
    require_persons("test", test_images, _NEEDS)
    train_people = {id(it["image"]): person_of(it) for it in train_images}
    test_people = {id(it["image"]): person_of(it) for it in test_images}
    if not train_people or not test_people:
        raise ValueError("identity_probe needs image items to fit on and to test")
    unknown = {p for p in test_people.values()} - set(train_people.values())
    if unknown:
        raise ValueError(f"test items picture people with no training image: {sorted(map(str, unknown))[:5]}")
    feats = image_features(model, [it for it in train_items + test_items if it.get("image") is not None], tap,
                           batch_size)
    sizes = {f.numel() for f in feats.values()}
    if len(sizes) != 1:
        raise ValueError(f"identity_probe needs features of one size per image, got sizes {sorted(sizes)[:5]}")
    train = torch.stack([feats[k] for k in train_people])
    mean, std = train.mean(0), train.std(0) + 1e-6
    people = sorted(set(train_people.values()), key=repr)
    labels = torch.tensor([people.index(p) for p in train_people.values()])
    z = (train - mean) / std
    centroids = torch.stack([z[labels == i].mean(0) for i in range(len(people))])
    centroids = centroids / centroids.norm(dim=1, keepdim=True).clamp_min(1e-12)
    test = (torch.stack([feats[k] for k in test_people]) - mean) / std
    test = test / test.norm(dim=1, keepdim=True).clamp_min(1e-12)
    predicted = (test @ centroids.T).argmax(1)
    truth = torch.tensor([people.index(p) for p in test_people.values()])
    return {"accuracy": float((predicted == truth).double().mean()), "chance": 1 / len(people),
            "n": len(test_people), "people": len(people)}
