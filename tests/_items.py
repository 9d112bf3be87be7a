"""Shared unlearning inputs of the method and trainer tests: coloured noise images of different sizes
(forget: reddish, retain: bluish), question-answer items, and an independent computation of answer
log-probabilities (one item per forward, no padding: the method tests' reference)."""

import torch
from PIL import Image


def _images(n, base, seed, sizes=((32, 32), (32, 64), (64, 32))):
    """``n`` items, each picturing a person of its own: ``identity`` = the item's index (VKD's default
    ``retain_person`` target needs a person per item; index identities order the people as the
    implicit one-person-per-image of earlier versions did, so the draws and figures are the same)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        h, w = sizes[int(torch.randint(0, len(sizes), (1,), generator=g))]
        pixels = (torch.rand(h, w, 3, generator=g) * 60 + torch.tensor(base)).clamp(0, 255).to(torch.uint8)
        out.append({"image": Image.fromarray(pixels.numpy()), "identity": i})
    return out


FORGET = _images(4, [200.0, 0.0, 0.0], 0)
RETAIN = _images(10, [0.0, 0.0, 200.0], 1)
CFG = {"steps": 12, "batch_size": 3, "lr": 3e-3}


def qa(items, answer):
    return [{**it, "question": "what is the job of this person ?", "answer": answer} for it in items]


def answer_logps(model, tokenizer, items):
    """Per item: (sum of the answer tokens' log-probabilities, a tensor connected to the graph; the
    number of answer tokens). One unpadded forward per item, the prompt from the adapter."""
    import vkd_fast.adapters as A

    ad = A.get_adapter(model)
    out = []
    for it in items:
        image = ad.preprocess([it["image"]])
        n = ad.num_image_tokens(**image)[0]
        prompt = tokenizer(ad.prompt(tokenizer, it["question"], n_image_tokens=n), add_special_tokens=False).input_ids
        full = tokenizer(ad.prompt(tokenizer, it["question"], n_image_tokens=n, answer=it["answer"]),
                         add_special_tokens=False).input_ids
        ids = torch.tensor([full])
        logits = model(**ad.model_inputs(ids, torch.ones_like(ids), **image)).logits[0].float()
        logp = torch.log_softmax(logits[:-1], dim=-1)
        answer = torch.arange(len(prompt), len(full))
        out.append((logp[answer - 1, ids[0, answer]].sum(), len(full) - len(prompt)))
    return out
