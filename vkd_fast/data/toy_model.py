"""The toy world's models (docs/method.md §6): a tiny LLaVA of the real transformers classes, built
from a config with a word-level tokenizer trained offline on the world's text, taught the world
until it passes the accuracy bar ("vanilla"), and the gold reference model trained the same way
without the forget people's image questions. Both are cached on disk, keyed by the world, model
and training configs, so only the first run trains them.

Cache folder: ``$VKD_FAST_CACHE_DIR/toy/<key>/`` (default ``~/.cache/vkd_fast``), holding
``vanilla/`` and ``gold/`` (``save_pretrained``), ``tokenizer/`` and ``build.json`` (accuracies,
steps, seconds). A build is written to a temporary folder and renamed into place, so an
interrupted build leaves nothing half-written and concurrent builds do not clash.

Shipped builds: the package carries the trained files of the default world (``toy_models/<key>/``
beside this module, each file's SHA-256 in its ``MANIFEST.json``). The float results of a build move
with the machine, the thread count and the library versions, so a world built here is not the world
the docs' tables were measured on; a shipped build is, bit for bit. :func:`load_toy_models` loads a
shipped build whenever its key matches (checking every file's checksum first) and builds only the
worlds that are not shipped, or any world when asked to rebuild.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..utils.files import atomic_write, sha256_file
from ..utils.loop import train_steps
from ..utils.options import check_types
from ..utils.text import encode_prompt, pad_right
from ..utils.validate import check_positive_int
from .toy import ToyWorld, ToyWorldConfig

#: bump when the training recipe changes in a way that changes the models (invalidates caches)
BUILD_VERSION = 2
#: the oracle's schedule length (the robustness study's): a V+P from scratch needs more steps than the
#: vanilla build's 600 (it stops earlier once both accuracies reach the target)
ORACLE_STEPS = 1500
SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>", "<image>")


@dataclass(frozen=True)
class ToyModelConfig:
    """Size of the tiny LLaVA and how it is taught the world."""

    vision_hidden: int = 64
    vision_layers: int = 4
    patch_size: int = 8
    text_hidden: int = 128
    text_layers: int = 3
    heads: int = 4
    lr: float = 2e-3  # AdamW peak; linear warm-up, then cosine decay to lr / 10 at the schedule's end
    warmup_steps: int = 50
    image_batch: int = 48
    text_batch: int = 16
    max_steps: int = 600  # the schedule's length for a world of up to 24 people; it grows with more people
    check_every: int = 50
    target_accuracy: float = 0.99  # stop training once both kinds of question reach this
    min_accuracy: float = 0.95  # the bar: a build that does not reach it is an error
    rescue_factor: float = 1.0  # below the bar at the schedule's end: up to this x schedule more steps at lr / 10
    seed: int = 0

    def schedule_steps(self, n_identities: int) -> int:
        """The cosine schedule's length for a world of ``n_identities`` people: ``max_steps``, scaled
        up in proportion beyond 24 people (each person's questions get as many steps)."""
        return max(self.max_steps, math.ceil(self.max_steps * n_identities / 24))

    def __post_init__(self) -> None:
        check_types(self)
        for name in ("vision_hidden", "vision_layers", "patch_size", "text_hidden", "text_layers", "heads",
                     "image_batch", "text_batch", "max_steps", "check_every", "warmup_steps"):
            check_positive_int(name, getattr(self, name))
        if self.rescue_factor < 0:
            raise ValueError(f"rescue_factor must be >= 0, got {self.rescue_factor!r}")
        if not 0 < self.min_accuracy <= self.target_accuracy <= 1:
            raise ValueError(f"need 0 < min_accuracy <= target_accuracy <= 1, got {self.min_accuracy}, "
                             f"{self.target_accuracy}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def cache_root() -> Path:
    return Path(os.environ.get("VKD_FAST_CACHE_DIR") or Path.home() / ".cache" / "vkd_fast") / "toy"


#: the shipped builds (module docstring): ``<key>/`` folders with a ``MANIFEST.json``
SHIPPED_ROOT = Path(__file__).resolve().parent / "toy_models"
MANIFEST = "MANIFEST.json"


def shipped_build(key: str, root: Path | None = None) -> Path | None:
    """The shipped build of ``key`` (a :func:`build_key`), its files checked against their SHA-256
    in ``MANIFEST.json``; None when the package ships no build of that key. A file that is missing
    or differs is an error (a damaged install): nothing is loaded from it."""
    folder = (SHIPPED_ROOT if root is None else Path(root)) / key
    if not (folder / MANIFEST).is_file():
        return None
    manifest = json.loads((folder / MANIFEST).read_text())
    if manifest.get("key") != key:
        raise RuntimeError(f"shipped toy build {folder}: its {MANIFEST} names key {manifest.get('key')!r}, "
                           f"not {key!r}")
    for name, digest in manifest["files"].items():
        path = folder / name
        if not path.is_file() or sha256_file(path) != digest:
            raise RuntimeError(f"shipped toy build {folder}: {name} is {'missing' if not path.is_file() else 'damaged'}"
                               f" (SHA-256 differs from {MANIFEST}): reinstall vkd_fast, or build the world "
                               f"yourself (--rebuild on the command line, rebuild=True in Python)")
    return folder


def write_manifest(folder: str | os.PathLike, key: str, note: dict | None = None) -> Path:
    """Record every file under ``folder`` (a build folder to ship as ``toy_models/<key>/``) with its
    SHA-256 in ``folder/MANIFEST.json`` (written to a temporary name, then renamed)."""
    folder = Path(folder)
    files = {p.relative_to(folder).as_posix(): sha256_file(p)
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}
    atomic_write(folder / MANIFEST, json.dumps({"key": key, "files": files, **({"note": note} if note else {})},
                                               indent=2) + "\n")
    return folder / MANIFEST


def build_key(world: ToyWorldConfig, model: ToyModelConfig) -> str:
    import transformers

    payload = {"world": world.to_dict(), "model": model.to_dict(), "version": BUILD_VERSION,
               "transformers_major": transformers.__version__.split(".")[0]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------- tokenizer and model
def build_tokenizer(world: ToyWorld):
    """A WordLevel tokenizer trained on the world's text: every world word (names, attribute values,
    question words, the prompt template's words) is one token."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from ..adapters.base import VisualAdapter

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS), min_frequency=1)
    template = VisualAdapter.image_prompt_template + " " + VisualAdapter.text_prompt_template
    corpus = [template.replace("{image}", " ").replace("{question}", " ")] + [" ".join(world.words)]
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", additional_special_tokens=["<image>"])


def build_model(world: ToyWorld, tokenizer, config: ToyModelConfig):
    """A randomly initialised LlavaForConditionalGeneration sized by ``config``."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    side = world.config.image_size
    vision = CLIPVisionConfig(hidden_size=config.vision_hidden, intermediate_size=2 * config.vision_hidden,
                              num_hidden_layers=config.vision_layers, num_attention_heads=config.heads,
                              image_size=side, patch_size=config.patch_size, projection_dim=config.vision_hidden)
    text = LlamaConfig(hidden_size=config.text_hidden, intermediate_size=2 * config.text_hidden,
                       num_hidden_layers=config.text_layers, num_attention_heads=config.heads,
                       num_key_value_heads=config.heads, vocab_size=len(tokenizer),
                       max_position_embeddings=4 * (side // config.patch_size) ** 2 + 64,
                       pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                      vision_feature_layer=-1, vision_feature_select_strategy="default",
                      pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(config.seed)
    return LlavaForConditionalGeneration(cfg)


# ---------------------------------------------------------------------- training
def _bar(total: int, desc: str):
    """Training progress on stderr (a live bar on a terminal, plain lines elsewhere); stops early leave
    it short of ``total``."""
    from ..utils.progress import progress_bar

    return progress_bar(total, f"[vkd-fast] {desc}")


class _Encoded:
    """Items tokenised once: prompt ids (right-padded), the answer token, the image index."""

    def __init__(self, adapter, tokenizer, items: list[dict], image_index: list[int | None]):
        rows, answers = [], []
        for it in items:
            n = adapter.num_image_tokens()[0] if it["image"] is not None else None
            rows.append(encode_prompt(adapter, tokenizer, it["question"], n))
            ans = tokenizer(" " + it["answer"], add_special_tokens=False).input_ids
            if len(ans) != 1:
                raise RuntimeError(f"answer {it['answer']!r} is not one token for the toy tokenizer")
            answers.append(ans[0])
        self.ids, self.mask = pad_right(rows, tokenizer.pad_token_id)
        self.last = self.mask.sum(1) - 1
        self.answer = torch.tensor(answers)
        self.image_index = image_index

    def __len__(self) -> int:
        return self.ids.shape[0]

    def logits(self, model, pixels, rows: torch.Tensor) -> torch.Tensor:
        """Next-token logits at the end of each prompt in ``rows``."""
        ids, mask = self.ids[rows], self.mask[rows]
        width = int(mask.sum(1).max())
        kwargs = {"input_ids": ids[:, :width], "attention_mask": mask[:, :width]}
        if self.image_index[int(rows[0])] is not None:
            kwargs["pixel_values"] = pixels[[self.image_index[int(r)] for r in rows]]
        out = model(**kwargs).logits
        return out[torch.arange(len(rows)), self.last[rows]]


def _accuracy(model, pixels, enc: _Encoded, option_ids: torch.Tensor, batch: int = 128) -> float:
    """Multiple-choice accuracy among the attribute's values (all answers are one token)."""
    correct = 0
    with torch.no_grad():
        for start in range(0, len(enc), batch):
            rows = torch.arange(start, min(start + batch, len(enc)))
            logits = enc.logits(model, pixels, rows)
            opts = option_ids[rows]
            pred = opts.gather(1, logits.gather(1, opts).argmax(1, keepdim=True)).squeeze(1)
            correct += int((pred == enc.answer[rows]).sum())
    return correct / len(enc)


def train_on_world(model, tokenizer, world: ToyWorld, image_ids: list[int], text_ids: list[int],
                   config: ToyModelConfig, label: str = "model", progress: bool = False) -> dict:
    """Teach ``model`` the image questions of ``image_ids`` (training images) and the text questions of
    ``text_ids`` until both accuracies reach ``target_accuracy`` (checked every ``check_every`` steps)
    or ``max_steps``; raises if the bar ``min_accuracy`` is not reached."""
    from ..adapters import get_adapter
    from .toy import ATTRIBUTES

    adapter = get_adapter(model)
    variants = list(range(world.config.n_train_images))
    images = [(i, v) for i in image_ids for v in variants]
    pixels = adapter.preprocess([world.image(i, v) for i, v in images])["pixel_values"]
    pos = {iv: k for k, iv in enumerate(images)}
    img_items = world.image_items(image_ids)
    txt_items = world.text_items(text_ids)
    img = _Encoded(adapter, tokenizer, img_items, [pos[(it["identity"], it["variant"])] for it in img_items])
    txt = _Encoded(adapter, tokenizer, txt_items, [None] * len(txt_items))

    def options(items):
        return torch.tensor([[tokenizer.convert_tokens_to_ids(v) for v in ATTRIBUTES[it["attribute"]]]
                             for it in items])

    img_opts, txt_opts = options(img_items), options(txt_items)
    gen = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr)

    schedule = config.schedule_steps(world.config.n_identities)
    ceiling = schedule + math.ceil(schedule * config.rescue_factor)

    def lr_factor(step: int) -> float:  # measured: ~550 steps to 100% vs ~1200 at a constant 1e-3
        warm = min(1.0, (step + 1) / config.warmup_steps)
        return warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / schedule))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)

    def batch_loss() -> torch.Tensor:  # a random batch of image questions plus one of text questions
        ri = torch.randint(len(img), (config.image_batch,), generator=gen)
        rt = torch.randint(len(txt), (config.text_batch,), generator=gen)
        return torch.nn.functional.cross_entropy(img.logits(model, pixels, ri), img.answer[ri]) \
            + torch.nn.functional.cross_entropy(txt.logits(model, pixels, rt), txt.answer[rt])

    model.train()
    start, step, acc = time.perf_counter(), 0, {}
    bar = _bar(schedule, f"training {label}") if progress else None
    tick = None if bar is None else (lambda: bar.update(1))
    limit = schedule  # raised to the ceiling when the schedule ends below the bar (the rescue phase)
    while step < limit:
        n = min(config.check_every, limit - step)
        loss = train_steps(batch_loss, opt, n, scheduler=sched, after_step=tick)
        step += n
        model.eval()
        acc = {"image": _accuracy(model, pixels, img, img_opts), "text": _accuracy(model, pixels, txt, txt_opts)}
        model.train()
        if bar is not None:
            bar.set_postfix(loss=f"{loss.item():.3f}", image_acc=f"{acc['image']:.3f}", text_acc=f"{acc['text']:.3f}")
        if min(acc.values()) >= config.target_accuracy:
            break
        if step >= limit and limit < ceiling and min(acc.values()) < config.min_accuracy:
            limit = ceiling  # below the bar at the schedule's end: go on at the floor learning rate
            if bar is not None:
                bar.total = ceiling
                bar.refresh()
    if bar is not None:
        bar.close()
    model.eval()
    if min(acc.values()) < config.min_accuracy:
        raise RuntimeError(f"the toy {label} model reached only {', '.join(f'{k} {v:.3f}' for k, v in acc.items())} "
                           f"after {step} steps (bar {config.min_accuracy}): build with more steps -- "
                           f"--build-max-steps {2 * config.max_steps} on the command line, "
                           f"ToyModelConfig(max_steps={2 * config.max_steps}) in Python")
    return {"steps": step, "schedule_steps": schedule, "rescued": step > schedule,
            "seconds": round(time.perf_counter() - start, 1), "accuracy": acc,
            "threads": torch.get_num_threads()}


# ---------------------------------------------------------------------- cached builds
@dataclass
class ToyModels:
    """What :func:`load_toy_models` returns. ``vanilla`` and ``gold`` are in eval mode with every
    parameter frozen (``requires_grad=False``); the unlearning engine unfreezes what it trains."""

    world: ToyWorld
    tokenizer: object
    vanilla: torch.nn.Module
    gold: torch.nn.Module
    path: Path
    build: dict
    #: where builds of this world that are not in ``path`` go (the oracle of another length): the cache
    #: folder of the world's key; None: ``path`` itself
    cache_path: Path | None = None

    @property
    def shipped(self) -> bool:
        """Whether the models are the package's shipped build (module docstring)."""
        return self.cache_path is not None and self.path != self.cache_path

    def fresh_vanilla(self) -> torch.nn.Module:
        """A new copy of the vanilla model, loaded from the cache (to unlearn without touching ``vanilla``)."""
        return _load(self.path / "vanilla")

    def oracle(self, steps: int = ORACLE_STEPS, progress: bool = False) -> torch.nn.Module:
        """The V+P-only limit (docs/method.md §4.4): the vanilla model's language model, frozen, with a
        vision tower and projector re-initialised and trained on the retain people's image questions
        only -- the best a method that keeps the LLM (as VKD does) could hope for. Built on first use
        (``steps``: the schedule's length, default :data:`ORACLE_STEPS`) and cached beside the
        vanilla and gold models; frozen, in eval mode."""
        check_positive_int("steps", steps)
        folder = self.path / f"oracle-{steps}"
        if not (folder / "oracle.json").exists():  # not shipped, or a cache folder: built into the cache
            folder = (self.cache_path or self.path) / f"oracle-{steps}"
        if not (folder / "oracle.json").exists():
            folder.parent.mkdir(parents=True, exist_ok=True)
            if progress:
                print(f"[vkd-fast] building the toy world's oracle (a V+P trained on retain people only) into "
                      f"{folder} (first run only)", file=sys.stderr, flush=True)

            def build(tmp: Path) -> None:
                model, info = build_oracle(self, steps, progress)
                model.save_pretrained(tmp)
                _save_processor(model, tmp)
                (tmp / "oracle.json").write_text(json.dumps(info, indent=2))

            _build_into(folder, "oracle.json", build)
        return _load(folder)


def build_oracle(models: ToyModels, steps: int = ORACLE_STEPS, progress: bool = False) -> tuple[torch.nn.Module, dict]:
    """(the oracle model, its build record): a fresh copy of the vanilla model whose vision tower and
    projector are re-initialised as the build initialises them, then trained (the LLM frozen) on the
    retain people's image questions; text questions of everyone stay in the batches, as in the
    vanilla build, and cannot change anything (no trainable tensor reaches them)."""
    from ..adapters import get_adapter

    world, tokenizer = models.world, models.tokenizer
    config = ToyModelConfig(**{**models.build.get("model", {}), "max_steps": steps})
    model = models.fresh_vanilla()
    visual = set(get_adapter(model).trainable_names("vision+projector"))
    init = dict(build_model(world, tokenizer, config).named_parameters())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in visual:
                p.copy_(init[name])
            p.requires_grad_(name in visual)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*no preprocessor config", category=UserWarning)
        info = train_on_world(model, tokenizer, world, world.retain_ids, list(range(len(world.identities))), config,
                              "oracle", progress)
    model.eval()
    model.requires_grad_(False)
    return model, {"world": world.config.to_dict(), "model": config.to_dict(), "version": BUILD_VERSION,
                   "trained": sorted(visual), "oracle": info}


def _load(path: Path):
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(path, attn_implementation="eager").eval()
    model.requires_grad_(False)
    if not (path / "preprocessor_config.json").exists():  # a cache built before the folders recorded it
        _save_processor(model, path)
    return model


def _save_processor(model, folder: Path) -> None:
    """The toy models are trained with the family's image processor defaults: record them in the model
    folder, so loading it pre-processes exactly as in training (the adapters read the folder's config)."""
    from ..adapters import get_adapter

    get_adapter(model).default_image_processor().save_pretrained(folder)


def _build_into(folder: Path, marker: str, build) -> None:
    """``build(tmp)`` into a temporary folder beside ``folder``, then renamed to it: a build that fails
    or is interrupted leaves nothing half-written; another process that finished the same build first
    (its ``marker`` file exists) wins."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        build(tmp)
        try:
            tmp.rename(folder)
        except OSError:  # another process finished the same build first: keep theirs
            if not (folder / marker).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _build(world: ToyWorld, config: ToyModelConfig, target: Path, progress: bool) -> dict:
    tokenizer = build_tokenizer(world)
    everyone = list(range(len(world.identities)))
    info = {"world": world.config.to_dict(), "model": config.to_dict(), "version": BUILD_VERSION}
    for label, image_ids in (("vanilla", everyone), ("gold", world.retain_ids)):
        model = build_model(world, tokenizer, config)
        model.config._attn_implementation = "eager"
        with warnings.catch_warnings():  # built from a config: the family's processor defaults are the intent
            warnings.filterwarnings("ignore", message=r".*no preprocessor config", category=UserWarning)
            info[label] = train_on_world(model, tokenizer, world, image_ids, everyone, config, label, progress)
        model.save_pretrained(target / label)
        _save_processor(model, target / label)
    tokenizer.save_pretrained(target / "tokenizer")
    (target / "build.json").write_text(json.dumps(info, indent=2))
    return info


def load_toy_models(world: ToyWorldConfig | ToyWorld | None = None, model: ToyModelConfig | None = None, *,
                    rebuild: bool = False, progress: bool = False, cache_dir: str | os.PathLike | None = None,
                    shipped: bool = True) -> ToyModels:
    """Load the vanilla and gold models of a toy world: the package's shipped build when it has the
    world's key (checksums checked; ``shipped=False`` or ``rebuild=True`` ignore it), else from the
    cache, building (training) them first when they are not there (about a minute each on a 2-core
    CPU with the defaults). ``rebuild``: train them anew into the cache."""
    from transformers import PreTrainedTokenizerFast

    world = world if isinstance(world, ToyWorld) else ToyWorld(world)
    model = model or ToyModelConfig()
    if not isinstance(model, ToyModelConfig):
        raise TypeError(f"model must be a ToyModelConfig, got {type(model).__name__}")
    root = Path(cache_dir) / "toy" if cache_dir is not None else cache_root()
    key = build_key(world.config, model)
    cache_path = path = root / key
    if rebuild and path.exists():
        shutil.rmtree(path)
    if not rebuild and shipped:
        path = shipped_build(key) or cache_path
    if not (path / "build.json").exists():
        root.mkdir(parents=True, exist_ok=True)
        if progress:
            print(f"[vkd-fast] building the toy world's vanilla and gold models into {path} (first run only)",
                  file=sys.stderr, flush=True)
        _build_into(path, "build.json", lambda tmp: _build(world, model, tmp, progress))
    build = json.loads((path / "build.json").read_text())
    tokenizer = PreTrainedTokenizerFast.from_pretrained(path / "tokenizer")
    return ToyModels(world, tokenizer, _load(path / "vanilla"), _load(path / "gold"), path, build, cache_path)
