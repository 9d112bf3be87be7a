"""The recipe a team runs on a real checkpoint folder -- the paper's MLLMU-Bench row, shipped as
``vkd_fast/configs/mllmu_llava15_vkd.sh`` + ``.yaml`` -- run as shipped on tiny stand-ins of its inputs.

What it does (docs/reproducing.md; docs/integration.md):

1. writes the three inputs the script takes, at tiny size (nothing downloaded):
   ``VANILLA``, a LLaVA checkpoint folder in the hub's layout (``config.json``, ``model.safetensors``,
   tokenizer files, ``preprocessor_config.json``) holding a tiny random LLaVA built from a transformers
   config; ``BENCH``, MLLMU-Bench's evaluation copy (``forget_5/``, ``retain_95/``, ``Test_Set/``,
   ``Full_Set/``, ``Retain_Set/`` parquet folders, 2 + 2 made-up people and a "celebrity"); ``TRAIN``,
   the baseline training split (``forget_5/``, ``retain_95/``: ``ID``, ``image``, ``metadata`` rows);
2. runs the shipped script, changing sizes only (``UNLEARN_ARGS="steps=4 batch_size=2"``,
   ``EVAL_ARGS="--limit 2"``, ``SEEDS=0``). The script runs, with the real paths in place of these::

       vkd-fast unlearn $VANILLA --forget mllmu:$TRAIN/forget_5 --retain mllmu:$TRAIN/retain_95 \\
           --config .../mllmu_llava15_vkd.yaml --device auto --output-dir $OUT/run --save delta
       vkd-fast export $VANILLA $OUT/run $OUT/model
       vkd-fast eval $OUT/model --data mllmu --root $BENCH --protocol mllmu --seed 0 --device auto \\
           --output $OUT/eval/vkd-seed0.json        # and the same for $VANILLA -> vanilla-seed0.json

3. reads back what it wrote: the run's ``result.json``, which tensors the export changed (the vision
   tower and projector only), and both models' MLLMU-Bench classification accuracies (a random
   model's: the numbers show the pipeline, not the method).

On a real checkpoint the same script runs unchanged (docs/reproducing.md)::

    VANILLA=/models/llava-mllmu-vanilla BENCH=/data/MLLMU-Bench TRAIN=/data/baseline_train_split \\
    OUT=runs/mllmu-vkd bash vkd_fast/configs/mllmu_llava15_vkd.sh

Run this example (about 30 s on this project's 2-core CPU VM, most of it the four ``vkd-fast``
processes starting; needs bash and pyarrow; the script's own output goes to ``recipe.log`` in the
output folder)::

    python examples/checkpoint_recipe.py --output-dir /tmp/vkd-recipe

Exits with the script's status if it fails, and with 1 if the export changed anything outside the
vision tower and projector.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image

import vkd_fast.configs

IMAGE_TOKEN = 120  # the tiny model's <image> id: the last ids of its 128-word vocabulary are special tokens


# ---------------------------------------------------------------------------------------------- the model
def write_vanilla(folder: Path) -> Path:
    """A tiny random LLaVA in the hub's folder layout: what `save_pretrained` of the model, its tokenizer and
    its image processor writes (the recipe's VANILLA is LLaVA-1.5-7B fine-tuned on MLLMU-Bench's ft_Data)."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        PreTrainedTokenizerFast,
    )

    torch.manual_seed(0)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                       num_attention_heads=4, image_size=32, patch_size=8, projection_dim=32),
        text_config=LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                                num_key_value_heads=2, vocab_size=128, max_position_embeddings=1024),
        image_token_id=IMAGE_TOKEN)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    # a word-level tokenizer (trained offline, no download) whose <image> has the model's image token id
    words = ["<unk>", "<s>", "</s>", "USER:", "ASSISTANT:", "A", "B", "C", "D", "the", "is", "of", "this", "person",
             "what", "where", "job", "born", "?", ".", ":"]
    vocab = {w: i for i, w in enumerate(words)} | {"<image>": IMAGE_TOKEN}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                            additional_special_tokens=["<image>"]).save_pretrained(folder)
    # transformers 5.x names the PIL-based class ...Pil; 4.x's CLIPImageProcessor is PIL-based
    processor = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    processor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------------------------------- the data
def image_cell(seed: int) -> dict:
    """An image as MLLMU-Bench's parquet files hold it: a Hugging Face image struct of PNG bytes."""
    g = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(3, generator=g) * 200 + torch.rand(48, 48, 3, generator=g) * 55).to(torch.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels.numpy()).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def eval_row(person: str, seed: int, unseen: bool = False) -> dict:
    """One evaluation row: the person's image(s) and questions (the nested columns as JSON strings, which
    the reader accepts as it accepts structs)."""
    def mc(question, answer):
        return {"Question": f"{question} ?", "Options": {k: f"{person}-{k}" for k in "ABCD"}, "Correct_Answer": answer}

    row = {"ID": person, "biography": f"{person} is a made-up person.",
           "Classification_Task": json.dumps({
               "Image_Textual_Questions": [mc("where was this person born", "B"), mc("what is the job of this person",
                                                                                     "D")],
               "Pure_Text_Questions": [mc(f"what is the job of {person}", "D")]}),
           "Generation_Task": json.dumps([{"Type": "Image_Textual", "Question": "who is this person ?",
                                           "Ground_Truth": f"this is {person} ."}]),
           "Mask_Task": json.dumps([{"Type": "Pure_Text", "Question": f"{person} was born in __ .",
                                     "Ground_Truth": "oslo"}])}
    if unseen:  # Test_Set: the forget people on other images, an `images` list
        row["images"] = [image_cell(seed + 100), image_cell(seed + 200)]
    else:
        row["image"] = image_cell(seed)
    return row


def write_parquet(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    types = {"ID": pa.string(), "image": image, "images": pa.list_(image), "metadata": pa.string()}
    schema = pa.schema([(name, types.get(name, pa.string())) for name in rows[0]])
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path / "train-00000-of-00001.parquet")


def write_benchmark(bench: Path, train: Path, forget: list[str], retain: list[str]) -> None:
    """MLLMU-Bench's evaluation copy (BENCH) and its baseline training split (TRAIN)."""
    seeds = {p: 10 * i for i, p in enumerate(forget + retain)}
    write_parquet(bench / "forget_5", [eval_row(p, seeds[p]) for p in forget])
    write_parquet(bench / "retain_95", [eval_row(p, seeds[p]) for p in retain])
    write_parquet(bench / "Full_Set", [eval_row(p, seeds[p]) for p in forget + retain])  # demonstrations
    write_parquet(bench / "Test_Set", [eval_row(p, seeds[p], unseen=True) for p in forget])
    write_parquet(bench / "Retain_Set", [eval_row("celebrity", 999)])  # real people in the benchmark
    for split, people in (("forget_5", forget), ("retain_95", retain)):  # training rows: ID = the person
        write_parquet(train / split, [
            {"ID": p, "image": image_cell(seeds[p] + k),
             "metadata": json.dumps([{"Question": "what is the job of this person ?", "Answer": f"{p}-job"}])}
            for p in people for k in range(2)])


# ---------------------------------------------------------------------------------------------- the run
def vkd_fast_command() -> str:
    """The `vkd-fast` command of this interpreter's environment (the script's VKD_FAST)."""
    beside = Path(sys.executable).with_name("vkd-fast")
    found = str(beside) if beside.is_file() else shutil.which("vkd-fast")
    if found is None:
        sys.exit("the vkd-fast command is not installed in this environment (pip install -e .)")
    return found


def changed_tensors(before_file: Path, after_file: Path) -> list[str]:
    from safetensors.torch import load_file

    before, after = load_file(before_file), load_file(after_file)
    if before.keys() != after.keys():
        raise SystemExit(f"{after_file}: other tensor names than {before_file}")
    return sorted(k for k in before if not torch.equal(before[k], after[k]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, default=None, help="where to write (default: a temporary folder)")
    parser.add_argument("--steps", type=int, default=4, help="VKD steps (the recipe's: 600)")
    args = parser.parse_args(argv)
    root = args.output_dir or Path(tempfile.mkdtemp(prefix="vkd-recipe-"))
    if root.is_dir() and any(root.iterdir()):
        parser.error(f"--output-dir {root} is not empty: choose a new folder")
    vanilla, bench, train, out = root / "llava-mllmu-vanilla", root / "MLLMU-Bench", root / "baseline_train_split", \
        root / "runs" / "mllmu-vkd"
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    write_vanilla(vanilla)
    write_benchmark(bench, train, forget=["ann", "bo"], retain=["cy", "dee"])
    print(f"inputs: VANILLA={vanilla} BENCH={bench} TRAIN={train}", flush=True)

    script = vkd_fast.configs.path("mllmu_llava15_vkd.sh")  # the shipped recipe (package data)
    sizes = {"UNLEARN_ARGS": f"steps={args.steps} batch_size=2", "EVAL_ARGS": "--limit 2", "SEEDS": "0"}
    env = {**os.environ, "VANILLA": str(vanilla), "BENCH": str(bench), "TRAIN": str(train), "OUT": str(out),
           "VKD_FAST": vkd_fast_command(), **sizes}
    log = root / "recipe.log"
    print(f"running: {' '.join(f'{k}={v!r}' for k, v in sizes.items())} bash {script}\n"
          f"  (its own output: {log})", flush=True)
    with open(log, "w") as f:
        run = subprocess.run(["bash", str(script)], env=env, stdout=f, stderr=subprocess.STDOUT, check=False)
    if run.returncode != 0:
        print(f"FAIL: the recipe exited with status {run.returncode}; the end of {log}:", file=sys.stderr)
        print("\n".join(log.read_text().splitlines()[-30:]), file=sys.stderr)
        return run.returncode

    summary = json.loads((out / "run" / "result.json").read_text())
    cfg, opts = summary["config"], summary["options"]
    print(f"unlearn: {summary['method']} ({opts['trainable']}, tap {opts['tap']}, forget_target "
          f"{opts['forget_target']}), {cfg['steps']} steps of {cfg['batch_size']} + {cfg['batch_size']} images, "
          f"lr {cfg['lr']}; only the vision tower and projector loaded: {summary['visual_only']}; {out / 'run'}")
    changed = changed_tensors(vanilla / "model.safetensors", out / "model" / "model.safetensors")
    language = [k for k in changed if "vision_tower" not in k and "multi_modal_projector" not in k]
    print(f"export: {out / 'model'}: {len(changed)} tensors changed, {len(language)} of them outside the vision "
          f"tower and projector")
    for who in ("vanilla", "vkd"):
        result = json.loads((out / "eval" / f"{who}-seed0.json").read_text())
        acc = {key: result[f"{key} Set Results"]["classification"]["Image-Textual Question Accuracy"]
               for key in ("Forget", "Test")}
        print(f"eval {who}: forget VQA {acc['Forget']:.1f}%, test (unseen images) VQA {acc['Test']:.1f}% "
              f"({out / 'eval' / f'{who}-seed0.json'}; per-question audit beside it)")
    return 0 if changed and not language else 1


if __name__ == "__main__":
    sys.exit(main())
