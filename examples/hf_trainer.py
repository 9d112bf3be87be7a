"""VKD inside a Hugging Face ``Trainer``: a ``Trainer`` subclass whose ``compute_loss`` is the method's
step, fed the batch plan as an ``IterableDataset`` -- ending with exactly the weights of ``vf.unlearn``.

What it does (docs/integration.md):

1. writes a checkpoint folder (a tiny random LLaVA -- CLIP ViT + Llama built from a transformers
   config, nothing downloaded -- and its image processor) and forget / retain items
   (``{"image": PIL image, "identity": person}``) for 2 + 4 made-up people;
2. prepares a VKD method object on the loaded model (``method.prepare``: checks, teacher cache,
   forget targets, trainable set) and trains it with ``UnlearningTrainer(...).train()``: the
   optimiser and schedule are the trainer's own (AdamW, ``cosine_schedule``), passed as
   ``optimizers=``; ``Trainer`` does the backward pass, clipping and stepping;
3. saves the model with ``trainer.save_model`` and checks it against ``vf.unlearn`` on a fresh copy
   of the checkpoint with the same seed, plan and schedule: every weight equal, bit for bit.

Run (about 10 s on this project's 2-core CPU VM; files under --output-dir, default a temporary folder)::

    python examples/hf_trainer.py --output-dir /tmp/vkd-hf-trainer

Exits with status 1 if the weights differ from ``vf.unlearn``'s or anything outside the vision tower
and projector changed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image

import vkd_fast as vf
from vkd_fast.engine import batch_plan, cosine_schedule, step_generator

STEPS, BATCH, LR, SEED = 8, 4, 1e-3, 0
VISUAL = ("vision_tower", "multi_modal_projector")  # LLaVA's V and P; everything else is the language model


def write_checkpoint(folder: Path) -> Path:
    """A tiny random LLaVA and its image processor saved as a checkpoint folder (stands in for e.g.
    llava-1.5-7b-hf)."""
    import transformers
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(0)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                       num_attention_heads=4, image_size=32, patch_size=8, projection_dim=32),
        text_config=LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                                num_key_value_heads=2, vocab_size=128, max_position_embeddings=256),
        image_token_id=120)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    # transformers 5.x names the PIL-based class ...Pil; 4.x's CLIPImageProcessor is PIL-based
    processor = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    processor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def load(folder: Path):
    from transformers import LlavaForConditionalGeneration

    return LlavaForConditionalGeneration.from_pretrained(folder).eval()


def people(names: list[str], seed: int, images_per_person: int = 2) -> list[dict]:
    """A portrait per item (a colour of the person's own plus noise) and the person it shows."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for name in names:
        colour = torch.rand(3, generator=g) * 200
        for _ in range(images_per_person):
            pixels = (colour + torch.rand(32, 32, 3, generator=g) * 55).clamp(0, 255).to(torch.uint8)
            items.append({"image": Image.fromarray(pixels.numpy()), "identity": name})
    return items


def train_with_hf_trainer(model, forget, retain, output_dir: Path):
    """VKD's steps as a transformers Trainer's compute_loss. Returns the Trainer's TrainOutput."""
    from transformers import Trainer, TrainingArguments

    torch.manual_seed(SEED)                       # what vf.unlearn does with config.seed before the set-up
    method = vf.methods.VKD()                     # default options; VKD({...}) or VKDOptions(...) for others
    method.prepare(model, forget, retain, seed=SEED)  # checks, teacher cache, targets, trainable set
    plan = batch_plan(len(forget), len(retain), steps=STEPS, batch_size=BATCH,
                      generator=torch.Generator().manual_seed(SEED))
    gen = step_generator(SEED)                    # the steps' own draws (VKD's forget augmentation)
    opt = torch.optim.AdamW(method.parameters(), lr=LR, weight_decay=0.0)
    sched = cosine_schedule(opt, steps=STEPS)

    class PlanDataset(torch.utils.data.IterableDataset):
        """The plan in order, one step per row; index tensors, as Trainer's data pipeline expects."""

        def __iter__(self):
            return iter({"forget": torch.tensor(b.forget), "retain": torch.tensor(b.retain),
                         "slots": torch.tensor(b.slots)} for b in plan)

    class UnlearningTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            # slots: the forget entries' places in the run's draw -- VKD keys each image's augmentation on them
            batch = vf.methods.Batch(inputs["forget"].tolist(), inputs["retain"].tolist(),
                                     tuple(inputs["slots"].tolist()))
            loss, _terms = method.step(batch, generator=gen)
            return loss

    args = TrainingArguments(output_dir=str(output_dir), max_steps=STEPS, per_device_train_batch_size=1,
                             learning_rate=LR, max_grad_norm=1.0, remove_unused_columns=False,
                             report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True,
                             use_cpu=True, dataloader_num_workers=0)  # the CPU: bit for bit against vf.unlearn
    trainer = UnlearningTrainer(model=model, args=args, train_dataset=PlanDataset(), optimizers=(opt, sched),
                                data_collator=lambda rows: rows[0])  # a row is already a whole step's batch
    output = trainer.train()
    method.after_steps()                          # nothing for vkd; vkd_robust trains its lock here
    method.close()
    model.requires_grad_(False)
    trainer.save_model(str(output_dir / "unlearned"))  # save_pretrained: loads back with transformers
    return output


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, default=None, help="where to write (default: a temporary folder)")
    args = parser.parse_args(argv)
    out = args.output_dir or Path(tempfile.mkdtemp(prefix="vkd-hf-trainer-"))
    if out.is_dir() and any(out.iterdir()):
        parser.error(f"--output-dir {out} is not empty: choose a new folder")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # transformers' per-load bars would drown the few lines printed here
    checkpoint = write_checkpoint(out / "checkpoint")
    forget = people(["ann", "bo"], seed=1)
    retain = people(["cy", "dee", "eli", "fay"], seed=2)

    model = load(checkpoint)
    output = train_with_hf_trainer(model, forget, retain, out / "trainer")
    print(f"Trainer: {output.global_step} steps, mean loss {output.training_loss:.4f}; "
          f"saved {out / 'trainer' / 'unlearned'}")

    base = dict(load(checkpoint).named_parameters())
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, base[n])]
    language = [n for n in changed if not any(part in n for part in VISUAL)]
    print(f"{len(changed)} tensors changed: {len(changed) - len(language)} in the vision tower / projector, "
          f"{len(language)} in the language model")

    reference = load(checkpoint)
    result = vf.unlearn(reference, forget, retain, config=vf.UnlearnConfig(steps=STEPS, batch_size=BATCH, lr=LR,
                                                                           seed=SEED, device="cpu"))
    mean = sum(h["loss"] for h in result.history) / len(result.history)
    theirs = dict(reference.named_parameters())
    differ = [n for n, p in model.named_parameters() if not torch.equal(p, theirs[n])]
    print(f"vf.unlearn on a fresh copy: mean loss {mean:.4f}; weights equal to the Trainer's bit for bit: "
          f"{'yes' if not differ else f'NO ({len(differ)} differ)'}")
    return 0 if changed and not language and not differ else 1


if __name__ == "__main__":
    sys.exit(main())
