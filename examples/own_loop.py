"""Unlearning from your own code: ``vf.unlearn`` in one call, then the same run as your own PyTorch loop
over a method object -- which ends with exactly the weights of ``vf.unlearn``.

What it does (docs/python-api.md; docs/integration.md):

1. writes a checkpoint folder as a hub download looks: a tiny random LLaVA (CLIP ViT + Llama built
   from a transformers config, nothing downloaded) and its image processor, and makes forget and
   retain items -- ``{"image": PIL image, "identity": person}`` -- for 2 + 4 made-up people;
2. ``vf.unlearn(model, forget, retain, config=vf.UnlearnConfig(...))``: VKD with its default options
   trains only the vision tower and projector; the run folder keeps the teacher cache and the last
   checkpoint; ``result.save_pretrained(out, base=checkpoint)`` writes the unlearned checkpoint
   (only the changed shards rewritten);
3. the same run from a plain loop: ``method.prepare``, ``batch_plan``, ``step_generator``, AdamW,
   ``cosine_schedule``, ``method.step`` -- and checks that every weight equals step 2's, bit for bit.

Run (about 10 s on this project's 2-core CPU VM; files under --output-dir, default a temporary folder)::

    python examples/own_loop.py --output-dir /tmp/vkd-own-loop

Step 2 under torchrun (DDP over gloo, on the CPU): each process takes an equal share of every global
batch and DDP averages the gradients; rank 0 writes the run folder and the export; step 3 (a
single-process loop) is skipped::

    torchrun --nproc_per_node 2 examples/own_loop.py --output-dir /tmp/vkd-ddp

Exits with status 1 if the language model changed, the vision side did not, or the loop's weights
differ from ``vf.unlearn``'s.
"""

from __future__ import annotations

import argparse
import os
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
    """A tiny random LLaVA and its image processor saved as a checkpoint folder (config.json,
    model.safetensors, preprocessor_config.json): stands in for e.g. llava-1.5-7b-hf."""
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
    """Items for vf.unlearn: a portrait per item (a colour of the person's own plus noise) and the person
    it shows. VKD needs only the image and the person; the baselines also need "question" and "answer"."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for name in names:
        colour = torch.rand(3, generator=g) * 200
        for _ in range(images_per_person):
            pixels = (colour + torch.rand(32, 32, 3, generator=g) * 55).clamp(0, 255).to(torch.uint8)
            items.append({"image": Image.fromarray(pixels.numpy()), "identity": name})
    return items


def changed_tensors(before: torch.nn.Module, after: torch.nn.Module) -> list[str]:
    params = dict(before.named_parameters())
    return [n for n, p in after.named_parameters() if not torch.equal(p, params[n])]


def own_loop(model, forget, retain):
    """What vf.unlearn does with the default UnlearnConfig (AdamW, no weight decay, cosine schedule to 10%,
    gradient clipping at 1.0), written out: the loop to adapt to your own training code."""
    torch.manual_seed(SEED)                       # vf.unlearn seeds the global generator with config.seed
    method = vf.methods.VKD()                     # or VKD({"forget_target": "nearest_retain", ...}) / VKDOptions
    summary = method.prepare(model, forget, retain, seed=SEED)  # checks, teacher cache, targets, trainable set
    plan = batch_plan(len(forget), len(retain), steps=STEPS, batch_size=BATCH,
                      generator=torch.Generator().manual_seed(SEED))  # lazy: Batch(forget, retain, slots) per step
    gen = step_generator(SEED)                    # the steps' own draws (VKD's forget augmentation)
    opt = torch.optim.AdamW(method.parameters(), lr=LR, weight_decay=0.0)
    sched = cosine_schedule(opt, steps=STEPS)
    for i, batch in enumerate(plan):
        loss, terms = method.step(batch, upcoming=plan[i + 1] if i + 1 < len(plan) else None, generator=gen)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(method.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    method.after_steps()                          # nothing for vkd; vkd_robust trains its lock here
    method.close()
    return summary, float(loss.detach())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, default=None, help="where to write (default: a temporary folder)")
    args = parser.parse_args(argv)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1  # started by torchrun
    if distributed and args.output_dir is None:
        parser.error("under torchrun, give --output-dir: a folder every process sees")
    out = args.output_dir or Path(tempfile.mkdtemp(prefix="vkd-own-loop-"))
    if int(os.environ.get("RANK", "0")) == 0 and out.is_dir() and any(out.iterdir()):
        parser.error(f"--output-dir {out} is not empty: choose a new folder")  # its run folder would be refused
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # transformers' per-load bars would drown the few lines printed here

    rank = 0
    if distributed:
        import torch.distributed as dist

        torch.set_num_threads(1)
        dist.init_process_group("gloo")  # CPU tensors here; on GPUs "nccl" with UnlearnConfig(device="auto")
        rank = dist.get_rank()
    try:
        checkpoint = out / "checkpoint"
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            write_checkpoint(checkpoint)
        if distributed:
            dist.barrier()
        forget = people(["ann", "bo"], seed=1)
        retain = people(["cy", "dee", "eli", "fay"], seed=2)

        # -- 2. vf.unlearn: the whole run in one call (device="cpu" for a bit-for-bit comparison with step 3;
        #       the default "auto" takes the GPU when torch sees one, cuda:<LOCAL_RANK> under torchrun)
        model = load(checkpoint)
        cfg = vf.UnlearnConfig(steps=STEPS, batch_size=BATCH, lr=LR, seed=SEED, device="cpu",
                               output_dir=str(out / "run"))
        result = vf.unlearn(model, forget, retain, method="vkd", config=cfg)  # the model changes in place
        if rank == 0:
            last = result.history[-1]
            print(f"vf.unlearn: {result.method}, {last['step']} steps in {result.wall_seconds:.1f} s; "
                  f"{result.trainable['trainable']:,} of {result.trainable['total']:,} parameters trained "
                  f"({result.options['trainable']}, tap {result.options['tap']}); last step: loss {last['loss']:.4f} "
                  f"(retain term {last['loss_retain']:.4f}, forget term {last['loss_forget']:.4f})")
            result.save_pretrained(out / "unlearned", base=checkpoint)  # rewrites only the shards that changed
            changed = changed_tensors(load(checkpoint), model)
            language = [n for n in changed if not any(part in n for part in VISUAL)]
            print(f"saved {out / 'unlearned'}: {len(changed)} tensors changed, "
                  f"{len(changed) - len(language)} of them in the vision tower / projector, "
                  f"{len(language)} in the language model")
            if not changed or language:
                print("FAIL: VKD should change the vision side and nothing else", file=sys.stderr)
                return 1
        if distributed:
            print(f"rank {rank}: done ({dist.get_world_size()} processes); the own loop runs single-process only")
            return 0

        # -- 3. the same run from your own loop, on a fresh copy of the checkpoint
        mine = load(checkpoint)
        summary, final_loss = own_loop(mine, forget, retain)
        differ = changed_tensors(model, mine)
        print(f"own loop: {summary['trainable']:,} parameters trained, last loss {final_loss:.4f}; "
              f"weights equal to vf.unlearn's bit for bit: {'yes' if not differ else f'NO ({len(differ)} differ)'}")
        return 0 if not differ else 1
    finally:
        if distributed:
            dist.barrier()
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
