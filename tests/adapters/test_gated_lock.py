"""The image-gated lock (vkd_fast.adapters.gated_lock): text never sees it -- text-only logits are
bit-identical (text prompts, random token strings, mixed batches, left padding, cached generation)
-- while image positions do; saving, loading and dropping it."""

import _tiny_models as T
import pytest
import torch
from _items import FORGET

from vkd_fast.adapters import get_adapter
from vkd_fast.adapters.gated_lock import install_gated_lock, load_gated_lock
from vkd_fast.utils.text import encode_prompt, pad_right


def _randomise(lock, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lock.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def _image_prompt(model, tok, question="what is the job of this person ?"):
    ad = get_adapter(model)
    image = ad.preprocess([FORGET[0]["image"]])
    ids = encode_prompt(ad, tok, question, ad.num_image_tokens(**image)[0])
    return ids, image


def _left_pad(rows, pad=0):
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + list(r) for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_text_never_sees_the_lock_and_images_do(family):
    torch.manual_seed(0)
    model = (T.tiny_llava() if family == "llava" else T.tiny_qwen2_vl()).eval()
    tok = T.tiny_tokenizer(None if family == "llava" else T.QWEN_SPECIAL_TOKENS)
    ad = get_adapter(model)
    image_id = ad.image_token_id
    vocab = model.config.text_config.vocab_size
    g = torch.Generator().manual_seed(1)
    random_rows = [[t for t in torch.randint(vocab, (n,), generator=g).tolist() if t != image_id] for n in (5, 9, 3)]
    text_rows = [encode_prompt(ad, tok, q) for q in ("what is the job of ann ?", "who is bob ?")] + random_rows
    img_ids, image = _image_prompt(model, tok)
    with torch.no_grad():
        right = pad_right(text_rows)
        left = _left_pad(text_rows)
        base = {"right": model(**ad.model_inputs(*right)).logits, "left": model(**ad.model_inputs(*left)).logits}
        img = ad.model_inputs(torch.tensor([img_ids]), torch.ones(1, len(img_ids), dtype=torch.long), **image)
        base["image"] = model(**img).logits
        lock = install_gated_lock(model, rank=4)
        _randomise(lock)
        locked = {"right": model(**ad.model_inputs(*right)).logits, "left": model(**ad.model_inputs(*left)).logits,
                  "image": model(**img).logits}
    assert torch.equal(locked["right"], base["right"]) and torch.equal(locked["left"], base["left"])
    first = img_ids.index(image_id)
    assert torch.equal(locked["image"][0, :first], base["image"][0, :first])  # before the image: W alone
    assert not torch.allclose(locked["image"][0, first:], base["image"][0, first:])  # from it on: the lock


def test_mixed_batches_and_cached_generation():
    model, tok = T.tiny_llava().eval(), T.tiny_tokenizer()
    ad = get_adapter(model)
    text = encode_prompt(ad, tok, "what is the job of ann ?")
    img_ids, image = _image_prompt(model, tok)
    pix = image["pixel_values"]
    ids, mask = _left_pad([text, img_ids])
    with torch.no_grad():
        batch = {"input_ids": ids, "attention_mask": mask, "pixel_values": pix}
        base = model(**batch).logits
        gen_text = model.generate(input_ids=torch.tensor([text]), attention_mask=torch.ones(1, len(text), dtype=torch.long),
                                  max_new_tokens=6, do_sample=False, output_scores=True, return_dict_in_generate=True)
        lock = install_gated_lock(model, rank=4)
        _randomise(lock, 2)
        locked = model(**batch).logits
        # a mixed batch: the text row is W's to the bit, the image row is not
        assert torch.equal(locked[0], base[0]) and not torch.allclose(locked[1], base[1])
        again = model.generate(input_ids=torch.tensor([text]), attention_mask=torch.ones(1, len(text), dtype=torch.long),
                               max_new_tokens=6, do_sample=False, output_scores=True, return_dict_in_generate=True)
        assert torch.equal(again.sequences, gen_text.sequences)
        assert all(torch.equal(a, b) for a, b in zip(again.scores, gen_text.scores))
        # an image prompt generated with the KV cache: every new token sees the lock, as a full forward does
        img_in = {"input_ids": torch.tensor([img_ids]), "attention_mask": torch.ones(1, len(img_ids), dtype=torch.long),
                  "pixel_values": pix}
        out = model.generate(**img_in, max_new_tokens=5, do_sample=False, output_scores=True,
                             return_dict_in_generate=True, suppress_tokens=[ad.image_token_id])  # untrained model
        seq = out.sequences
        full = model(input_ids=seq, attention_mask=torch.ones_like(seq), pixel_values=pix).logits[0]
        full[:, ad.image_token_id] = float("-inf")  # as the generation's suppression left it
        for k, score in enumerate(out.scores):
            assert torch.allclose(score[0], full[len(img_ids) - 1 + k], atol=1e-4), k


def test_training_save_load_and_drop(tmp_path):
    model, tok = T.tiny_llava().eval(), T.tiny_tokenizer()
    ad = get_adapter(model)
    img_ids, image = _image_prompt(model, tok)
    img = ad.model_inputs(torch.tensor([img_ids]), torch.ones(1, len(img_ids), dtype=torch.long), **image)
    text = encode_prompt(ad, tok, "who is bob ?")
    model.requires_grad_(False)
    with torch.no_grad():
        base = model(**img).logits
    lock = install_gated_lock(model, rank=2, layers=[0])
    assert all(p.requires_grad for p in lock.parameters()) and len(lock.modules) == 4
    model(input_ids=torch.tensor([text])).logits.sum().backward()  # text only: the lock gets no gradient
    assert all(p.grad is None or not p.grad.any() for p in lock.parameters())
    model(**img).logits.sum().backward()  # from the image token on: it does (B starts at zero, so A's is 0)
    assert any(p.grad is not None and p.grad.any() for p in lock.parameters())
    _randomise(lock, 3)
    with torch.no_grad():
        locked = model(**img).logits
    lock.save(tmp_path / "lock")
    lock.remove()  # the drop-lock attack: W again, bit for bit
    with torch.no_grad():
        assert torch.equal(model(**img).logits, base)
    loaded = load_gated_lock(model, tmp_path / "lock")
    with torch.no_grad():
        assert torch.equal(model(**img).logits, locked)
    assert loaded.config["layers"] == [0] and loaded.config["rank"] == 2
    with pytest.raises(ValueError, match="rank must be an int >= 1"):
        install_gated_lock(T.tiny_llava(), rank=0)
    with pytest.raises(ValueError, match="layers must be indices"):
        install_gated_lock(T.tiny_llava(), layers=[99])


def test_a_copy_stays_locked_checkpointing_is_refused_and_an_aborted_forward_leaves_no_gate():
    import copy

    model, tok = T.tiny_llava().eval(), T.tiny_tokenizer()
    ad = get_adapter(model)
    img_ids, image = _image_prompt(model, tok)
    img = ad.model_inputs(torch.tensor([img_ids]), torch.ones(1, len(img_ids), dtype=torch.long), **image)
    text = torch.tensor([encode_prompt(ad, tok, "who is bob ?")])
    with torch.no_grad():
        base_text = model(input_ids=text).logits
    lock = install_gated_lock(model, rank=2)
    _randomise(lock, 4)
    twin = copy.deepcopy(model)  # what the relearning attack does: the copy must carry the lock
    with torch.no_grad():
        assert torch.equal(twin(**img).logits, model(**img).logits)
        assert torch.equal(twin(input_ids=text).logits, base_text)
    # transformers 5 names it activation checkpointing (the old names warn), 4.x gradient checkpointing
    on, off = (("activation_checkpointing_enable", "activation_checkpointing_disable")
               if hasattr(model, "activation_checkpointing_enable")
               else ("gradient_checkpointing_enable", "gradient_checkpointing_disable"))
    getattr(model, on)()
    model.train()
    with pytest.raises(RuntimeError, match="does not work with gradient checkpointing"):
        model(**img)
    getattr(model, off)()
    model.eval()

    def boom(module, args, output):
        raise KeyError("stop")

    handle = ad.llm_layers[0].register_forward_hook(boom)
    with pytest.raises(KeyError), torch.no_grad():
        model(**img)
    handle.remove()
    assert lock.state.gate is None  # cleared although the forward raised


def test_find_and_disable():
    import copy

    from vkd_fast.adapters import find_gated_lock

    model, tok = T.tiny_llava().eval(), T.tiny_tokenizer()
    ad = get_adapter(model)
    img_ids, image = _image_prompt(model, tok)
    img = ad.model_inputs(torch.tensor([img_ids]), torch.ones(1, len(img_ids), dtype=torch.long), **image)
    with torch.no_grad():
        plain = model(**img).logits
    assert find_gated_lock(model) is None
    lock = install_gated_lock(model, rank=2)
    _randomise(lock, 5)
    assert find_gated_lock(model) is lock
    twin = copy.deepcopy(model)
    assert find_gated_lock(twin) is not None and find_gated_lock(twin) is not lock  # the copy's own lock
    assert find_gated_lock(twin).model is twin
    with torch.no_grad():
        locked = model(**img).logits
        with lock.disabled():  # W alone at every position: the model before the lock, bit for bit
            assert torch.equal(model(**img).logits, plain)
        assert torch.equal(model(**img).logits, locked)  # and the lock back after the block
        assert not torch.equal(locked, plain)
    lock.remove()
    assert find_gated_lock(model) is None
