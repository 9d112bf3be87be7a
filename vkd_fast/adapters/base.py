"""The adapter interface: one family's layout of an MLLM behind one API.

An adapter knows where a model keeps its vision encoder (V), projector (P) and language model (W),
how to run V and P alone to get each image's visual tokens, where those tokens sit in the LLM
input, and which parameters influence a feature tap. Everything is done with removable forward
hooks on the model's own modules, never by patching code:

* a *stop hook* on a block records its output and raises ``_StopForward``, which ends the forward
  right there -- that is how the ViT runs only up to the layer the model reads (or a ``vision:i``
  tap) and the LLM only up to layer j for an ``llm:j`` tap (cost grows with j, not with depth);
* visual features are inserted into the LLM input the way the model does it (embeddings at the
  image-token positions replaced in order).

Taps (the grammar is in taps.py) come back packed ``[sum of tokens, D]`` with per-image
``offsets``; a ``vision:i`` tap at the model's own patch-token selection (e.g. without CLIP's CLS
token), an ``llm:j`` tap as ``hidden_states[j]`` of a full forward (before any final norm) at the
image-token positions. Hooks are in hooks.py, trainable sets in trainable.py.

Image pre-processing follows the checkpoint: for a model loaded from a local folder (transformers
``from_pretrained`` or :func:`vkd_fast.load_visual_model`, both record it in ``model.name_or_path``)
:meth:`VisualAdapter.preprocess` uses the folder's own image processor config
(``preprocessor_config.json``, or the ``image_processor`` section of ``processor_config.json``)
with the PIL-based class it names -- what ``AutoImageProcessor.from_pretrained(folder)`` gives with
the PIL backend (transformers 4.x: ``use_fast=False``). Only a model without such a file gets the
family's class with its defaults and the values derived from the model config, with a warning.
Nothing is downloaded; the processor is built once per folder (and file modification time) or model.
"""

from __future__ import annotations

import json
import os
import warnings
import weakref
from pathlib import Path

import torch
from torch import nn

from .hooks import run_until
from .taps import Tap, resolve_tap
from .trainable import param_names, set_trainable, trainable_names

#: where a checkpoint folder keeps its image processor's values (transformers reads the first; newer
#: layouts nest them under ``"image_processor"`` in the second -- which one wins is transformers' rule)
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
# (folder, family classes) -> (files' stamp, processor); a model without a folder's config -> (key, processor)
_FOLDER_PROCESSORS: dict[tuple[str, tuple[str, ...]], tuple[tuple, object]] = {}
_MODEL_PROCESSORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def checkpoint_folder(model: nn.Module) -> Path | None:
    """The local folder ``model`` was loaded from (``name_or_path``, which transformers'
    ``from_pretrained`` and :func:`vkd_fast.load_visual_model` set), or None (built from a config,
    or loaded by a hub name)."""
    config = getattr(model, "config", None)
    name = getattr(model, "name_or_path", None) or getattr(config, "_name_or_path", None)
    if isinstance(name, (str, os.PathLike)) and str(name) and os.path.isdir(name):
        return Path(name)
    return None


def _files_stamp(folder: Path) -> tuple:
    """(modification time, size) of each of :data:`PROCESSOR_FILES` in ``folder`` (None: absent)."""
    stamp = []
    for name in PROCESSOR_FILES:
        try:
            st = (folder / name).stat()
        except OSError:
            stamp.append(None)
        else:
            stamp.append((st.st_mtime_ns, st.st_size))
    return tuple(stamp)


def _has_processor_config(folder: Path, stamp: tuple) -> bool:
    if stamp[0] is not None:
        return True
    if stamp[1] is None:
        return False
    try:
        return "image_processor" in json.loads((folder / PROCESSOR_FILES[1]).read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def pil_processor_class(name: str):
    """The PIL-based transformers image processor class for the class name ``name`` (5.x: its ``...Pil``
    variant; 4.x: the "slow" class; a ``...Fast`` name: its counterpart), or None when this transformers
    has none. The torchvision-based ("fast") classes are never returned: torchvision does not work next
    to the CPU torch here, and their output differs from the PIL path in the last bits."""
    import transformers
    from transformers.image_processing_utils import BaseImageProcessor

    try:
        from transformers.image_processing_utils_fast import BaseImageProcessorFast
    except ImportError:  # pragma: no cover - a transformers without fast processors
        BaseImageProcessorFast = ()
    base = name.removesuffix("Fast").removesuffix("Pil")
    for candidate in (f"{base}Pil", base):
        try:
            cls = getattr(transformers, candidate, None)
        except Exception:  # a lazy import of a missing backend
            cls = None
        if (isinstance(cls, type) and issubclass(cls, BaseImageProcessor)
                and not (BaseImageProcessorFast and issubclass(cls, BaseImageProcessorFast))):
            return cls
    return None


_TEMPLATE_STYLES: dict[str, str] = {}  # chat template -> "text" (string content) or "parts" (typed parts)
_PROBE = "vkdfastprobe"


def chat_prompt(tokenizer, content: str) -> str:
    """One user message holding ``content`` in ``tokenizer``'s chat template, with the generation prompt.

    Templates come in two kinds: a tokenizer's own (Qwen's: ``content`` is a string) and a
    processor's, which a checkpoint folder's ``chat_template.jinja`` gives the tokenizer too
    (LLaVA-1.5's: ``content`` is a list of typed parts, and a plain string renders to an empty turn,
    ``"USER: ASSISTANT:"``). The kind is found once per template by rendering a probe; a template that
    shows the text neither way is refused."""
    template = tokenizer.chat_template
    style = _TEMPLATE_STYLES.get(template) if isinstance(template, str) else None
    if style is None:
        for style in ("text", "parts"):
            if _PROBE in _render(tokenizer, _PROBE, style):
                break
        else:
            raise ValueError("the tokenizer's chat template shows the message's text neither as a string nor as "
                             "[{'type': 'text', 'text': ...}] parts; pass a tokenizer whose template does")
        if isinstance(template, str):
            _TEMPLATE_STYLES[template] = style
    return _render(tokenizer, content, style)


def _render(tokenizer, content: str, style: str) -> str:
    message = content if style == "text" else [{"type": "text", "text": content}]
    return tokenizer.apply_chat_template([{"role": "user", "content": message}], tokenize=False,
                                         add_generation_prompt=True)


class VisualAdapter:
    """Base class of a model family's adapter. Everything family-specific lives in the subclass, so a
    new family is one file (a subclass, registered with ``register_adapter(AdapterClass)``) and a test;
    the rest of the package (training, checkpoints, VKD's augmentation, benchmark prompts) asks the
    adapter. ``examples/extending/new_family.py`` is a worked example.

    Required (the base has no usable default):

    * ``model_types`` -- the ``config.model_type`` names the class is registered under (non-empty);
    * layout properties: ``vision_tower`` (V), ``vision_blocks`` (V's transformer blocks, in order),
      ``projector_modules`` (P: the modules -- or loose parameters -- between the block the model reads
      and the LLM input, e.g. a final ViT norm the model applies), ``language_model`` (W, the decoder
      without its head, called with ``inputs_embeds``) and ``llm_layers`` (its decoder layers);
    * ``vision_param_owners(last_block)`` -- the modules of V that influence block ``last_block``'s
      output (embeddings, stem norms, blocks ``0..last_block``);
    * ``_vision_forward(pixel_values, **image_kwargs)`` -- run V on the pixels (stopped by a hook);
    * ``_select_patch_tokens(block_out, **image_kwargs)`` -- a block output as one ``[tokens, D]``
      tensor per image, at the model's own token selection (``vision:i`` taps);
    * ``_project(block_out, **image_kwargs)`` -- the feature block's output through P, one
      ``[visual tokens, D_llm]`` tensor per image, exactly as the model computes its image features;
    * ``num_image_tokens(**image_kwargs)`` -- visual tokens per image in the LLM input;
    * ``image_processor_classes`` -- transformers image processor class names to try (PIL-based first).

    Optional (the default suits a LLaVA-like family):

    * ``image_token_id`` (default ``config.image_token_id``); ``feature_block`` (default: the last block);
    * ``image_processor_kwargs()`` -- processor values taken from the model config (a model without a
      checkpoint folder's processor config); ``collate`` -- join single images' inputs (default: ``torch.cat``);
    * ``pixel_layout`` (``"images"``: one image per leading index of ``pixel_values``; ``"patch_rows"``:
      every image's patches flattened into rows, counted by ``pixel_rows(**image_kwargs)``, which such a
      family must then define);
    * ``checkpoint_renames`` / ``checkpoint_key`` -- how a checkpoint's tensor names map to the model's
      across transformers versions (beyond the common ``model.`` / ``language_model.`` wrappers);
    * ``_llm_kwargs`` (extra LLM arguments for ``llm:j`` taps, e.g. position ids); ``model_inputs``;
      ``text_logits``;
    * prompts: ``image_prompt_template`` / ``text_prompt_template`` (used when the tokenizer has no chat
      template), ``chat_image_separator``, ``answer_separator``, ``_image_block`` (the text an image
      occupies, default the image token repeated) and ``benchmark_prompt_style``;
    * ``trainable_names`` -- extend a trainable set (e.g. a loose parameter of P).
    """

    #: the ``config.model_type`` names ``register_adapter(AdapterClass)`` registers this class under
    model_types: tuple[str, ...] = ()
    #: how ``pixel_values`` holds a batch: ``"images"`` -- one image per leading index (``[B, C, H, W]``,
    #: ``[B, crops, C, H, W]``); ``"patch_rows"`` -- all images' patches flattened into rows
    #: (``[sum of rows, patch dim]``), image by image, :meth:`pixel_rows` rows each
    pixel_layout: str = "images"
    #: prefix rewrites (``(checkpoint / parameter prefix, canonical prefix)``) applied by :meth:`checkpoint_key`
    #: after the common wrappers are removed, for names that transformers versions spell differently
    checkpoint_renames: tuple[tuple[str, str], ...] = ()
    #: the benchmark prompt style (``vkd_fast.eval``) whatever the tokenizer: ``"llava"`` (the MLLMU-Bench
    #: templates' own format, what LLaVA-1.5 was trained on); None: ``"chat"`` when the tokenizer has a chat
    #: template, else ``"llava"``
    benchmark_prompt_style: str | None = None

    def __init__(self, model: nn.Module):
        self.model = model
        self.config = model.config

    # ------------------------------------------------------------------ layout (family-specific)
    @property
    def vision_tower(self) -> nn.Module:
        raise NotImplementedError

    @property
    def vision_blocks(self) -> nn.ModuleList:
        raise NotImplementedError

    @property
    def projector_modules(self) -> list[nn.Module]:
        """Modules (and owners of parameters) of P."""
        raise NotImplementedError

    @property
    def language_model(self) -> nn.Module:
        raise NotImplementedError

    @property
    def llm_layers(self) -> nn.ModuleList:
        raise NotImplementedError

    @property
    def image_token_id(self) -> int:
        return int(self.config.image_token_id)

    @property
    def feature_block(self) -> int:
        """0-based index of the last ViT block whose output the model uses."""
        return len(self.vision_blocks) - 1

    def vision_param_owners(self, last_block: int) -> list[nn.Module]:
        """Modules of V that influence the output of block ``last_block`` (embeddings, blocks 0..last)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ taps
    def parse_tap(self, tap: str) -> Tap:
        """The tap resolved against this model's layout (:func:`vkd_fast.adapters.taps.resolve_tap`)."""
        return resolve_tap(tap, len(self.vision_blocks), self.feature_block, len(self.llm_layers))

    def _run_vision(self, pixel_values, last_block: int, **image_kwargs) -> torch.Tensor:
        """Output of ViT block ``last_block``; blocks after it never run."""
        return run_until(lambda: self._vision_forward(pixel_values, **image_kwargs), self.vision_blocks[last_block])

    def visual_features(self, pixel_values, tap: str = "projector", input_ids=None, attention_mask=None,
                        **image_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """Each image's features at ``tap``, packed: ``(feats [sum tokens, D], offsets [n_images + 1])``.

        ``llm:j`` taps also need the prompt (``input_ids`` with the model's image tokens, and
        ``attention_mask``): hidden states at image positions depend on the text before them.
        """
        t = self.parse_tap(tap)
        if t.kind == "llm":
            self.require_language_model(f"tap {tap!r}")
        if t.kind == "vision":
            out = self._run_vision(pixel_values, t.index, **image_kwargs)
            return self._pack(self._select_patch_tokens(out, **image_kwargs))
        per_image = self._project(self._run_vision(pixel_values, self.feature_block, **image_kwargs), **image_kwargs)
        if t.kind == "projector":
            return self._pack(per_image)
        if input_ids is None:
            raise ValueError(f"tap {tap!r} needs input_ids (the prompt with the image tokens) and attention_mask")
        feats = torch.cat(per_image)
        mask = input_ids == self.image_token_id
        n_tok = int(mask.sum())
        if n_tok != feats.shape[0]:
            raise ValueError(f"input_ids hold {n_tok} image tokens but the images give {feats.shape[0]} visual tokens")
        embeds = self.model.get_input_embeddings()(input_ids)
        embeds = embeds.masked_scatter(mask.unsqueeze(-1), feats.to(embeds.dtype))
        kwargs = self._llm_kwargs(input_ids, attention_mask, embeds, **image_kwargs)
        hidden = run_until(lambda: self.language_model(**kwargs), self.llm_layers[t.index - 1])
        rows = hidden[mask]
        return rows, self._offsets([p.shape[0] for p in per_image], rows.device)

    def visual_token_positions(self, input_ids) -> torch.Tensor:
        """Row numbers of the image tokens in ``input_ids`` flattened to ``[B * L]`` -- the rows of
        ``hidden_states.reshape(-1, D)`` that hold visual tokens (a ``student_index`` for the loss)."""
        return torch.nonzero((input_ids == self.image_token_id).reshape(-1)).squeeze(1)

    @staticmethod
    def _offsets(lengths, device) -> torch.Tensor:
        offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64, device=device)
        if lengths:
            offsets[1:] = torch.tensor(lengths, device=device).cumsum(0)
        return offsets

    def _pack(self, per_image) -> tuple[torch.Tensor, torch.Tensor]:
        per_image = list(per_image)
        return torch.cat(per_image), self._offsets([p.shape[0] for p in per_image], per_image[0].device)

    # family hooks
    def _vision_forward(self, pixel_values, **image_kwargs):
        raise NotImplementedError

    def _select_patch_tokens(self, block_out, **image_kwargs) -> list[torch.Tensor]:
        raise NotImplementedError

    def _project(self, block_out, **image_kwargs) -> list[torch.Tensor]:
        raise NotImplementedError

    def _llm_kwargs(self, input_ids, attention_mask, inputs_embeds, **image_kwargs) -> dict:
        return {"inputs_embeds": inputs_embeds, "attention_mask": attention_mask}

    def num_image_tokens(self, **image_kwargs) -> list[int]:
        """Visual tokens each image takes in the LLM input (what the prompt must hold)."""
        raise NotImplementedError

    def pixel_rows(self, **image_kwargs) -> list[int]:
        """Rows of ``pixel_values`` each image takes, in order (``pixel_layout = "patch_rows"``)."""
        raise NotImplementedError(f"{type(self).__name__}: pixel_layout {self.pixel_layout!r} defines no pixel_rows")

    # ------------------------------------------------------------------ checkpoint names
    @classmethod
    def checkpoint_key(cls, name: str) -> str:
        """The canonical form of a parameter or checkpoint tensor name, the same for one weight whichever
        transformers version wrote it (``vkd_fast.checkpoints`` matches the two by it, one to one).

        Default: the common wrappers removed -- a leading ``model.``, then ``language_model.model.`` or
        ``language_model.`` (transformers 4.x checkpoints store W as ``language_model.model.layers...``,
        5.x models hold it as ``model.language_model.layers...``; Qwen2-VL stores ``model.layers...``) --
        then the first matching prefix of :attr:`checkpoint_renames` rewritten."""
        n = name[len("model."):] if name.startswith("model.") else name
        if n.startswith("language_model.model."):
            n = "language_model." + n[len("language_model.model."):]
        if n.startswith("language_model."):
            n = n[len("language_model."):]
        for prefix, canonical in cls.checkpoint_renames:
            if n.startswith(prefix):
                return canonical + n[len(prefix):]
        return n

    def visual_param_names(self) -> set[str]:
        """Every parameter of V and P, whatever a tap reads (blocks after the feature block included)
        and loose ones of P (e.g. LLaVA-NeXT's ``image_newline``)."""
        return self._param_names([self.vision_tower, *self.projector_modules]) | set(
            self.trainable_names("vision+projector"))

    @property
    def has_language_model(self) -> bool:
        """False for a model loaded without its language model (:func:`vkd_fast.load_visual_model`)."""
        return not any(p.is_meta for p in self.language_model.parameters())

    def require_language_model(self, what: str) -> None:
        """A clear error when ``what`` needs the language model and it was not loaded."""
        if not self.has_language_model:
            raise ValueError(f"{what} runs the language model, but this model was loaded without it "
                             "(vkd_fast.load_visual_model: only the vision tower and projector are in memory); load "
                             "the whole model with from_pretrained for that")

    def place_visual(self, device) -> None:
        """Move only V and P (with their buffers) to ``device``; the language model stays where it is.
        For projector / vision taps that is all training needs, so a 7B-class LLM never has to sit on
        the accelerator."""
        device = torch.device(device)
        self.vision_tower.to(device)
        for module in self.projector_modules:
            module.to(device)
        visual = set(self.trainable_names("vision+projector"))
        owners = dict(self.model.named_modules())
        for name, param in list(self.model.named_parameters()):
            if name in visual and param.device != device:  # loose parameters of P (e.g. image_newline)
                owner_name, _, leaf = name.rpartition(".")
                owner = owners[owner_name]
                owner._parameters[leaf] = nn.Parameter(param.data.to(device), requires_grad=param.requires_grad)

    # ------------------------------------------------------------------ image pre-processing
    #: transformers image processor classes to try, in order (PIL-based ones first: torchvision,
    #: which the "fast" processors need, does not work next to CPU torch here)
    image_processor_classes: tuple[str, ...] = ()

    def image_processor_kwargs(self) -> dict:
        """Values the family's image processor takes from the model config (sizes, patching), used
        with the class defaults only for a model without a checkpoint folder's processor config."""
        return {}

    def _family_processor_class(self):
        """The first of :attr:`image_processor_classes` this transformers has."""
        import transformers

        for name in self.image_processor_classes:
            cls = getattr(transformers, name, None)
            if cls is not None:
                return cls
        raise RuntimeError(f"none of the image processors {self.image_processor_classes} exists in transformers "
                           f"{transformers.__version__}")

    def default_image_processor(self):
        """A new processor of the family's class with its defaults and :meth:`image_processor_kwargs`
        (what :meth:`image_processor` falls back to, with a warning, for a model without a checkpoint
        folder's config; ``save_pretrained`` it into a folder to record it)."""
        return self._family_processor_class()(**self.image_processor_kwargs())

    def image_processor(self):
        """The model's transformers image processor (PIL-based).

        Loaded from a local folder with an image processor config (``model.name_or_path``; see
        :data:`PROCESSOR_FILES`): the PIL-based class the folder names (a ``...Fast`` / torchvision
        name: its PIL counterpart; no name: the family's class) with the folder's values -- what
        ``AutoImageProcessor.from_pretrained(folder)`` gives with the PIL backend (``use_fast=False``
        in transformers 4.x). Otherwise the family's class with its defaults and
        :meth:`image_processor_kwargs`, and a warning (once per model). Nothing is downloaded. Built
        once per folder and file modification time (or per model) and shared: do not modify it
        (``copy.deepcopy`` it to change values)."""
        folder = checkpoint_folder(self.model)
        if folder is not None:
            stamp = _files_stamp(folder)
            key = (str(folder.resolve()), tuple(self.image_processor_classes))
            cached = _FOLDER_PROCESSORS.get(key)
            if cached is None or cached[0] != stamp:  # None: the folder has no image processor config
                processor = self._folder_processor(folder) if _has_processor_config(folder, stamp) else None
                cached = _FOLDER_PROCESSORS[key] = (stamp, processor)
            if cached[1] is not None:
                return cached[1]
        kwargs = self.image_processor_kwargs()
        key = (type(self), repr(sorted(kwargs.items())))
        cached = _MODEL_PROCESSORS.get(self.model)
        if cached is None or cached[0] != key:
            processor = self.default_image_processor()
            if cached is None:
                where = (f"its checkpoint folder {folder} has no image processor values in "
                         f"{' or '.join(PROCESSOR_FILES)}" if folder is not None
                         else "it was not loaded from a local checkpoint folder")
                warnings.warn(f"{type(self.model).__name__}: no preprocessor config ({where}); images are "
                              f"pre-processed with {type(processor).__name__}'s class defaults and values from the "
                              "model config, which may differ from how the checkpoint was trained", UserWarning,
                              stacklevel=3)
            cached = _MODEL_PROCESSORS[self.model] = (key, processor)
        return cached[1]

    def _folder_processor(self, folder: Path):
        """The PIL-based image processor of the config in ``folder`` (as AutoImageProcessor resolves it)."""
        from transformers.image_processing_utils import ImageProcessingMixin

        try:
            values, _ = ImageProcessingMixin.get_image_processor_dict(str(folder), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{folder}: cannot read its image processor config "
                             f"({' '.join(str(exc).split())})") from None
        named = values.get("image_processor_type")
        if named is None and values.get("feature_extractor_type"):  # an old feature-extractor config
            named = values.pop("feature_extractor_type").replace("FeatureExtractor", "ImageProcessor")
        cls = pil_processor_class(named) if isinstance(named, str) and named else None
        if cls is None:
            cls = self._family_processor_class()
            if named:
                warnings.warn(f"{folder}: its image processor {named!r} has no PIL-based class in this transformers; "
                              f"using {cls.__name__} with the folder's values", UserWarning, stacklevel=4)
        return cls.from_dict(values)

    def collate(self, per_image: list[dict]) -> dict:
        """Join the image inputs of single images (``preprocess([image])`` each) into one batch."""
        return {k: torch.cat([d[k] for d in per_image]) for k in per_image[0]}

    def preprocess(self, images) -> dict:
        """PIL images -> the keyword arguments of :meth:`visual_features` (``pixel_values`` and the
        family's extras such as ``image_sizes`` or ``image_grid_thw``), by :meth:`image_processor`
        (the checkpoint folder's own processor config when there is one)."""
        out = self.image_processor()(images=images, return_tensors="pt")
        return {k: v for k, v in out.items()}

    # ------------------------------------------------------------------ text
    def model_inputs(self, input_ids, attention_mask=None, **image_kwargs) -> dict:
        """Keyword arguments of a full forward ``model(**...)`` of a prompt with its images."""
        return {"input_ids": input_ids, "attention_mask": attention_mask, **image_kwargs}

    def text_logits(self, input_ids, attention_mask=None) -> torch.Tensor:
        """Logits of a text-only forward (no image: V and P never run)."""
        self.require_language_model("text_logits")
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    image_prompt_template = "USER: {image}\n{question} ASSISTANT:"
    text_prompt_template = "USER: {question} ASSISTANT:"
    chat_image_separator = "\n"  # between the image block and the question in a chat turn
    answer_separator = " "

    def image_token(self, tokenizer) -> str:
        return tokenizer.convert_ids_to_tokens(self.image_token_id)

    def _image_block(self, tokenizer, n_image_tokens: int) -> str:
        """The text an image occupies in the prompt: its placeholder token, repeated."""
        return self.image_token(tokenizer) * n_image_tokens

    def image_block(self, tokenizer, n_image_tokens: int) -> str:
        """The prompt text one image of ``n_image_tokens`` visual tokens occupies (e.g. LLaVA: ``<image>``
        repeated; Qwen2-VL: the pads between its vision start / end tokens), for prompts built by hand."""
        return self._image_block(tokenizer, n_image_tokens)

    def prompt(self, tokenizer, question: str, n_image_tokens: int | None = None, answer: str | None = None) -> str:
        """The prompt text for an image question (``n_image_tokens`` given: the image placeholder is
        repeated that many times, as the model expects) or a text-only question. Uses the tokenizer's
        chat template when it has one, else the family's plain template."""
        block = None if n_image_tokens is None else self._image_block(tokenizer, n_image_tokens)
        if getattr(tokenizer, "chat_template", None):
            content = question if block is None else f"{block}{self.chat_image_separator}{question}"
            text = chat_prompt(tokenizer, content)
        elif block is None:
            text = self.text_prompt_template.format(question=question)
        else:
            text = self.image_prompt_template.format(image=block, question=question)
        return text if answer is None else f"{text}{self.answer_separator}{answer}"

    # ------------------------------------------------------------------ trainable sets (trainable.py)
    def _param_names(self, owners: list) -> set[str]:
        """Names of the model's parameters held by ``owners`` (modules, or parameters themselves)."""
        return param_names(self, owners)

    def trainable_names(self, spec: str, tap: str = "projector") -> list[str]:
        """Parameter names of the trainable set ``spec`` that can influence ``tap`` (sorted)."""
        return trainable_names(self, spec, tap)

    def set_trainable(self, spec: str = "vision+projector", tap: str = "projector", lora: dict | None = None) -> dict:
        """Freeze everything, then unfreeze the trainable set ``spec`` (restricted to what influences
        ``tap``); with ``lora`` (peft ``LoraConfig`` arguments) only LoRA adapters on its Linear layers
        train. Returns ``trainable`` / ``total`` counts, ``share``, ``names``, ``spec``, ``tap``, ``lora``."""
        return set_trainable(self, spec, tap, lora)
