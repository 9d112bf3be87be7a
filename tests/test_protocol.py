"""Protocol pieces without a trained model: MLLMU-Bench evaluation sets, forget-image augmentation,
the question-answer collator."""

from __future__ import annotations

import _tiny_models as T
import pytest
import torch
from PIL import Image
from test_loaders import BLUE, CYAN, GREEN, RED, YELLOW, eval_schema, person, pixel, write

import vkd_fast.adapters as A
from vkd_fast.data import QACollator
from vkd_fast.engine import UnlearnConfig
from vkd_fast.engine.augment import augment_forget_pixels
from vkd_fast.eval import mllmu_eval_sets


def test_mllmu_eval_sets(tmp_path):
    root = tmp_path / "MLLMU-Bench"
    write(root / "forget_5" / "a.parquet", [person("p0", RED), person("p1", BLUE)], eval_schema())
    write(root / "retain_95" / "a.parquet", [person("r0", GREEN)], eval_schema())
    # Test_Set holds every person's unseen images: only the forget people's count as forget VQA
    write(root / "Test_Set" / "a.parquet", [person("p1", images=[YELLOW, CYAN]), person("r0", images=[RED])],
          eval_schema(images=True))
    sets = mllmu_eval_sets(root)
    assert sorted(sets) == ["forget_qa", "forget_vqa", "forget_vqa_unseen", "retain_qa", "retain_vqa"]
    assert [it["id"] for it in sets["forget_vqa"]] == ["p0", "p0", "p1", "p1"]
    assert [(it["id"], pixel(it["image"])) for it in sets["forget_vqa_unseen"]] == [
        ("p1", YELLOW), ("p1", CYAN), ("p1", YELLOW), ("p1", CYAN)]
    assert [it["id"] for it in sets["retain_vqa"]] == ["r0", "r0"] and len(sets["retain_qa"]) == 1
    write(root / "Retain_Set" / "a.parquet", [person("w0", GREEN)], eval_schema())
    sets = mllmu_eval_sets(root, limit=1)
    assert [it["id"] for it in sets["real_world_vqa"]] == ["w0", "w0"] and len(sets["forget_qa"]) == 1
    with pytest.raises(ValueError, match="forget_7"):
        mllmu_eval_sets(root, forget_split="forget_7")


def test_forget_augmentation_changes_only_forget_images():
    g = torch.Generator().manual_seed(0)
    pv = torch.randn(5, 3, 32, 32, generator=g)
    before = pv.clone()
    out = augment_forget_pixels({"pixel_values": pv, "image_sizes": torch.ones(5, 2)}, 2, 1.0,
                                torch.Generator().manual_seed(1))
    assert torch.equal(out["pixel_values"][2:], pv[2:]) and not torch.equal(out["pixel_values"][:2], pv[:2])
    assert torch.equal(out["image_sizes"], torch.ones(5, 2)) and torch.equal(pv, before)  # input untouched
    again = augment_forget_pixels({"pixel_values": pv}, 2, 1.0, torch.Generator().manual_seed(1))
    assert torch.equal(again["pixel_values"], out["pixel_values"])  # deterministic given the generator
    # the shift is a circular roll of at most strength * H / 8 pixels: undo the noise-free part
    quiet = augment_forget_pixels({"pixel_values": pv}, 1, 0.5, torch.Generator().manual_seed(3))["pixel_values"][0]
    best = min(((quiet - torch.roll(pv[0], (dy, dx), (-2, -1))).abs().max().item(), (dy, dx))
               for dy in range(-2, 3) for dx in range(-2, 3))
    assert best[0] < 0.5  # noise std 0.05: some roll within reach explains the image
    assert augment_forget_pixels({"pixel_values": pv}, 0, 1.0, g)["pixel_values"] is pv
    # flattened patch rows (Qwen-VL): noise on the forget images' rows only
    grid = torch.tensor([[1, 2, 2], [1, 4, 4]])
    flat = torch.randn(4 + 16, 12, generator=g)
    out = augment_forget_pixels({"pixel_values": flat, "image_grid_thw": grid}, 1, 1.0, g)["pixel_values"]
    assert not torch.equal(out[:4], flat[:4]) and torch.equal(out[4:], flat[4:])
    with pytest.raises(ValueError, match="image_grid_thw"):
        augment_forget_pixels({"pixel_values": flat}, 1, 1.0, g)


def test_forget_augment_config():
    assert UnlearnConfig(forget_augment=0.5).forget_augment == 0.5
    with pytest.raises(ValueError, match=r"forget_augment must be in \[0, 1\]"):
        UnlearnConfig(forget_augment=2.0)
    with pytest.raises(ValueError, match="forget_augment needs a target that is not the image.s own"):
        UnlearnConfig(forget_augment=0.5, forget_target="repel")


@pytest.mark.parametrize("build", [T.tiny_llava, T.tiny_qwen2_vl], ids=["llava", "qwen2_vl"])
def test_qa_collator_labels_only_the_answer(build):
    model = build()
    tok = T.tiny_tokenizer(None if build is T.tiny_llava else T.QWEN_SPECIAL_TOKENS)
    image = Image.new("RGB", (32, 32), (10, 200, 30))
    items = [{"image": image, "question": "what is the job of this person ?", "answer": "baker"},
             {"image": image, "question": "what is the job ?", "answer": "mira tolvan"}]
    inputs, labels = QACollator(model, tok)(items)
    assert labels.shape == inputs["input_ids"].shape
    for row, it in enumerate(items):
        answer = tok(" " + it["answer"], add_special_tokens=False).input_ids
        assert labels[row][labels[row] != -100].tolist() == answer
        n = int(inputs["attention_mask"][row].sum())
        assert inputs["input_ids"][row, n - len(answer): n].tolist() == answer  # the answer ends the prompt
    with torch.no_grad():
        assert model(**inputs).logits.shape[:2] == labels.shape
    assert QACollator(A.get_adapter(model), tok).adapter is not None
    with pytest.raises(ValueError, match="items must not be empty"):
        QACollator(model, tok)([])


def test_nearest_retain_keys_by_pixels():
    from vkd_fast.engine.teacher import nearest_retain_keys

    g = torch.Generator().manual_seed(0)
    retain = [torch.randn(1, 3, 8, 8, generator=g) for _ in range(5)] + [torch.randn(1, 3, 8, 16, generator=g)]
    forget = [retain[3] + 0.01 * torch.randn(1, 3, 8, 8, generator=g),
              retain[5] + 0.01 * torch.randn(1, 3, 8, 16, generator=g),  # only same-shaped images compete
              retain[0] * 0.99]
    assert nearest_retain_keys(forget, retain) == [3, 5, 0]
    with pytest.raises(ValueError, match=r"forget image 0: no retain image has its processed shape \(1, 3, 4, 4\)"):
        nearest_retain_keys([torch.zeros(1, 3, 4, 4)], retain)


def test_nearest_retain_target_pulls_forget_features_to_the_nearest_retain_image():
    import vkd_fast as vf

    def image(rgb, noise_seed):
        g = torch.Generator().manual_seed(noise_seed)
        px = (torch.tensor(rgb, dtype=torch.float32) + 20 * torch.randn(32, 32, 3, generator=g)).clamp(0, 255)
        return {"image": Image.fromarray(px.to(torch.uint8).numpy())}

    forget = [image((200, 30, 30), 0), image((30, 200, 30), 1)]
    retain = [image((190, 40, 40), 2), image((40, 190, 40), 3), image((30, 30, 200), 4), image((120, 120, 120), 5)]
    teacher = T.tiny_llava()
    ad_t = A.get_adapter(teacher)

    def feats(ad, items):
        with torch.no_grad():
            return ad.visual_features(tap="vision:feature", **ad.preprocess([it["image"] for it in items]))[0]

    f_t, near = feats(ad_t, forget), feats(ad_t, [retain[0], retain[1]])  # by colour: forget i -> retain i
    model = T.tiny_llava()
    cfg = UnlearnConfig(forget_target="nearest_retain", steps=100, batch_size=2, lr=5e-3)
    vf.unlearn(model, forget, retain, config=cfg)
    f_s = feats(A.get_adapter(model), forget)
    before, after = (f_t - near).pow(2).mean().item(), (f_s - near).pow(2).mean().item()
    assert after < 0.5 * before, (before, after)


def test_eval_command_on_an_mllmu_copy(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = tmp_path / "MLLMU-Bench"
    write(root / "forget_5" / "a.parquet", [person("p0", RED)], eval_schema())
    write(root / "retain_95" / "a.parquet", [person("r0", GREEN)], eval_schema())
    model, tok = T.tiny_llava(), T.tiny_tokenizer()
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    exe = str(Path(sys.executable).with_name("vkd-fast"))
    out = subprocess.run([exe, "eval", str(tmp_path / "model"), "--data", "mllmu", "--root", str(root),
                          "--max-new-tokens", "2", "--output", str(tmp_path / "e.json")],
                         capture_output=True, text=True, env=env, timeout=600, check=False)
    assert out.returncode == 0, out.stderr
    metrics = json.loads((tmp_path / "e.json").read_text())["metrics"]
    assert metrics["n"] == {"forget_vqa": 2, "forget_qa": 1, "retain_vqa": 2, "retain_qa": 1, "forget_generation": 2,
                            "forget_cloze": 2, "retain_generation": 2, "retain_cloze": 2}
    for key in ("forget_vqa", "forget_generation_rouge_l", "forget_cloze", "retain_generation_exact_match"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert "forget_cloze:" in out.stdout
