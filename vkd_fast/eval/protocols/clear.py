"""CLEAR's own evaluation protocol (docs/method.md §4.3), reproduced from its ``mm/eval.py`` and
``mm/calculate_metrics.py`` (somvy/multimodal_unlearning at bb14c96, 2025-08-06; logic, not code),
seeded.

Six tasks, each on the first ``rows`` (300) rows of a configuration folder:

============== ======================= ================================ ============ ======================
task           configuration           question                         answer       perturbed answers
============== ======================= ================================ ============ ======================
Forget         forget split            one of 9 caption questions       caption      perturbed_captions
Retain         retain split            one of 9 caption questions       caption      perturbed_captions
Forget FaceRec forget split            "The name of the person on ..."  name         perturbed_names
Retain FaceRec retain split            same                             name         perturbed_names
Real Faces     real_faces              same                             answer       options
Real World     real_world              the row's ``question``           answer       options
============== ======================= ================================ ============ ======================

(the "paraphrased" answer is ``paraphrased_caption`` for the caption tasks, the answer itself
elsewhere). Per item: the mean per-token loss of the answer, the paraphrase and every perturbed
answer after the question (image included), and a greedy generation (300 new tokens) scored by
ROUGE-L recall (rouge-score, stemming). Aggregates, under CLEAR's key names:

* ``Prob. T``: mean ``exp(-loss)`` of the answer (caption tasks), else mean of the answer's share
  ``p / (p + sum p_perturbed)``;
* ``Truth Ratio T``: ``TR_i = exp(mean(all perturbed losses of the task) - paraphrase loss_i)`` (the
  original averages the perturbed losses over the whole task, not per item; kept), reported as
  ``mean(min(TR, 1/TR))`` for the forget tasks and ``mean(max(0, 1 - 1/TR))`` otherwise;
* ``Model Utility``: the harmonic mean of every non-forget aggregate present;
* ``KS test p-value`` (``scipy.stats.ks_2samp``) and ``JS metric`` (``scipy.spatial.distance.
  jensenshannon``) between the Forget task's truth ratios and a reference (gold) model's, when a
  reference result is given; the paper's tables report forget quality as ``1 - JS``.

The original draws each caption question without a seed (independently for the answer, the
paraphrase and every perturbed answer); here from ``random.Random("<seed>/<task>")``. As in the
original, the ROUGE generation sees the question text only, not the image (it re-encodes the decoded
prompt without pixel values); ``generation_image=True`` shows the image instead (a deviation,
recorded in the settings).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

from .prompt import IMAGE_SLOT, Prompt, Turn
from .registry import BenchmarkProtocol, register_protocol

TEMPLATE_REVISION = "CLEAR mm/eval.py + mm/calculate_metrics.py @ bb14c96 (2025-08-06)"
CAPTION_QUESTIONS = (
    "What can you see in this picture?",
    "Tell me about the content of this image",
    "Can you give a description of the image?",
    "What is depicted in the image?",
    "Explain what you observe in the picture.",
    "Describe the image in detail.",
    "What is the main subject of this image?",
    "Can you describe the scene or objects in the image?",
    "What is happening in this image?",
)
FACE_QUESTION = "The name of the person on the image is "
ROWS = 300
MAX_NEW_TOKENS = 300
#: task -> (split role, question strategy, answer column, paraphrase column, perturbed column)
TASKS = {
    "Real Faces": ("real_faces", "faces", "answer", "answer", "options"),
    "Real World": ("real_world", "column", "answer", "answer", "options"),
    "Retain": ("retain", "caption", "caption", "paraphrased_caption", "perturbed_captions"),
    "Retain FaceRec": ("retain", "faces", "name", "name", "perturbed_names"),
    "Forget": ("forget", "caption", "caption", "paraphrased_caption", "perturbed_captions"),
    "Forget FaceRec": ("forget", "faces", "name", "name", "perturbed_names"),
}
DEFAULT_SPLITS = {"forget": "forget10_perturbed", "retain": "retain_perturbed", "real_faces": "real_faces",
                  "real_world": "real_world"}


@dataclass
class ClearBenchmark:
    """Rows of the configurations the protocol reads (``load_clear`` dicts), by role: ``forget``,
    ``retain``, ``real_faces``, ``real_world`` (absent roles: their tasks are left out)."""

    rows: dict[str, list[dict]]
    source: dict[str, str]


def load_clear_benchmark(root, forget_split: str | None = None, retain_split: str | None = None,
                         rows: int = ROWS) -> ClearBenchmark:
    """Read a local CLEAR copy (one folder per configuration: ``forget10_perturbed/``,
    ``retain_perturbed/``, ``real_faces/``, ``real_world/``) for :func:`evaluate_clear`: the first
    ``rows`` rows of each, as the original. The forget split is required; the others may be absent."""
    from ...data import load_clear

    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory (expected the CLEAR root with configuration folders "
                                f"such as {DEFAULT_SPLITS['forget']}/)")
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ValueError(f"rows must be an int >= 1, got {rows!r}")
    names = dict(DEFAULT_SPLITS, forget=forget_split or DEFAULT_SPLITS["forget"],
                 retain=retain_split or DEFAULT_SPLITS["retain"])
    out, source = {}, {}
    for role, name in names.items():
        folder = root / name
        if not folder.exists():
            if role == "forget":
                raise FileNotFoundError(f"{folder} does not exist (expected the CLEAR forget configuration {name}/ "
                                        f"under {root})")
            continue
        out[role], source[role] = load_clear(folder, limit=rows), str(folder)
    return ClearBenchmark(out, source)


def _require(row: dict, column: str, task: str, i: int):
    value = row.get(column)
    if value is None or (isinstance(value, (str, list)) and not value):
        raise ValueError(f"CLEAR task {task!r}: row {i} ({row.get('id')}) has no {column!r} "
                         f"(columns: {sorted(k for k in row if k != 'image')})")
    return value


def _options(value, task: str, i: int) -> list[str]:
    if isinstance(value, dict):
        value = list(value.values())
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"CLEAR task {task!r}: row {i}: perturbed answers must be a non-empty list of strings, "
                         f"got {value!r}"[:300])
    return value


def truth_ratios(paraphrase_losses, perturbed_losses) -> list[float]:
    """CLEAR's ``TR_i = exp(mean over the task's every perturbed loss - paraphrase loss_i)``."""
    flat = [x for row in perturbed_losses for x in row]
    mean = sum(flat) / len(flat)
    return [math.exp(mean - p) for p in paraphrase_losses]


def require_scipy() -> None:
    """CLEAR's forget quality and model utility use scipy (the ``eval`` extra): a clear error before any work."""
    import importlib.util

    if importlib.util.find_spec("scipy") is None:
        raise ImportError("the CLEAR protocol needs scipy (KS test, Jensen-Shannon distance, harmonic mean): "
                          "pip install 'vkd-fast[eval]'")


def _hmean(values: list[float]) -> float:
    from scipy.stats import hmean

    return float(hmean(values))


def reference_truth_ratios(reference) -> list[float]:
    """The Forget-task truth ratios of a reference (gold) model's CLEAR result: the whole result (its
    ``vkd_fast`` block, as the CLI writes it) or :func:`evaluate_clear`'s return value."""
    ref = {}
    if isinstance(reference, dict):
        ref = reference.get("vkd_fast") or reference.get("settings") or reference
    values = (ref.get("truth_ratios") or {}).get("Forget") if isinstance(ref, dict) else None
    if (not isinstance(values, list) or not values
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values)):
        raise ValueError("the reference must be a CLEAR result of this protocol, holding the gold model's Forget "
                         "truth ratios (vkd_fast.truth_ratios.Forget, positive numbers): run `vkd-fast eval GOLD "
                         "--data clear --protocol clear --output FILE` first")
    return [float(v) for v in values]


def forget_quality(truth_ratios_model, truth_ratios_reference) -> dict:
    """KS-test p-value and Jensen-Shannon distance between two models' Forget-task truth ratios."""
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import ks_2samp

    a, b = list(truth_ratios_model), list(truth_ratios_reference)
    if not a or not b:
        raise ValueError("forget quality needs truth ratios of both models")
    out = {"KS test p-value": float(ks_2samp(a, b).pvalue), "JS metric": None}
    if len(a) == len(b):  # the original's JS treats both arrays as distributions over the same rows
        out["JS metric"] = float(jensenshannon(a, b))
    return out


def _generation_prompt(question: str, image, with_image: bool) -> Prompt:
    if with_image:
        return Prompt((Turn("USER: ", f"{IMAGE_SLOT}\n{question}"),), " ASSISTANT:", (image,))
    # the original's prompt: the decoded chat text without its (special) image token, no pixel values
    return Prompt((Turn("USER: ", f"\n{question}"),), " ASSISTANT: ")


def evaluate_clear(generate, score, bench: ClearBenchmark, *, seed: int = 0, reference: dict | None = None,
                   generation_image: bool = False, max_new_tokens: int = MAX_NEW_TOKENS, describe=None) -> dict:
    """CLEAR's protocol with ``generate(prompt, max_new_tokens) -> str`` and ``score(question, image,
    answers) -> [mean per-token loss of each answer]`` (:class:`ClearScorer`, or stand-ins).

    ``reference``: the ``vkd_fast`` block of a gold model's CLEAR result (or the whole result), whose
    Forget truth ratios give the KS test. Returns ``{"results": CLEAR's flat JSON, "records": one dict
    per item, "settings"}``."""
    from ..metrics import require_text_metrics, rouge_scores

    require_scipy()
    require_text_metrics()
    reference_tr = None if reference is None else reference_truth_ratios(reference)  # before any work
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    describe = describe or (lambda p: p.literal())
    results, records, per_task = {}, [], {}
    for task, (role, strategy, answer_col, para_col, pert_col) in TASKS.items():
        rows = bench.rows.get(role)
        if not rows:
            continue
        rng = random.Random(f"{seed}/{task}")

        def question(row, i, strategy=strategy, rng=rng, task=task):
            if strategy == "caption":
                return rng.choice(CAPTION_QUESTIONS)
            if strategy == "faces":
                return FACE_QUESTION
            return _require(row, "question", task, i)

        gt, para, pert, probs, rouge, named = [], [], [], [], [], []
        for i, row in enumerate(rows):
            image = _require(row, "image", task, i)
            answer = _require(row, answer_col, task, i)
            paraphrase = _require(row, para_col, task, i)
            perturbed = _options(_require(row, pert_col, task, i), task, i)
            q_gt, q_para = question(row, i), question(row, i)
            q_pert = [question(row, i) for _ in perturbed]
            loss_gt = score(q_gt, image, [answer])[0]
            loss_para = score(q_para, image, [paraphrase])[0]
            loss_pert = []
            for q in dict.fromkeys(q_pert):  # one scoring call per distinct question
                idx = [k for k, qk in enumerate(q_pert) if qk == q]
                for k, loss in zip(idx, score(q, image, [perturbed[k] for k in idx])):
                    loss_pert.append((k, loss))
            loss_pert = [loss for _, loss in sorted(loss_pert)]
            prompt = _generation_prompt(q_gt, image, generation_image)
            generation = generate(prompt, max_new_tokens)
            recall = rouge_scores(generation, answer, ("rougeL",))["rougeL"].recall
            p_gt = math.exp(-loss_gt)
            share = p_gt / (p_gt + sum(math.exp(-x) for x in loss_pert))
            prob = p_gt if strategy == "caption" else share
            gt.append(loss_gt), para.append(loss_para), pert.append(loss_pert), probs.append(prob)
            rouge.append(recall)
            named.append(loss_gt < min(loss_pert))
            records.append({"task": task, "row": i, "id": row.get("id"), "question": q_gt,
                            "generation_prompt": describe(prompt), "generation": generation, "answer": answer,
                            "rougeL_recall": recall, "avg_gt_loss": loss_gt, "avg_paraphrased_loss": loss_para,
                            "average_perturb_loss": loss_pert, "prob": prob,
                            # eval.py's own per-item key: exp(paraphrase loss - mean perturbed loss), the
                            # reciprocal of calculate_metrics' TR (which the aggregates use)
                            "truth_ratio": math.exp(loss_para - sum(loss_pert) / len(loss_pert)),
                            "answer_beats_perturbed": bool(named[-1])})
        tr = truth_ratios(para, pert)
        forget = task.startswith("Forget")
        results[f"Prob. {task}"] = sum(probs) / len(probs)
        results[f"ROUGE {task}"] = sum(rouge) / len(rouge)
        results[f"Truth Ratio {task}"] = (sum(min(t, 1 / t) for t in tr) / len(tr) if forget
                                          else sum(max(0.0, 1 - 1 / t) for t in tr) / len(tr))
        per_task[task] = {"n": len(rows), "truth_ratios": tr,
                          "answer_beats_perturbed": sum(named) / len(named)}
    if not results:
        raise ValueError("no CLEAR task could run: the benchmark has no rows")
    utility = [v for k, v in results.items() if "Forget" not in k]
    results["Model Utility"] = _hmean(utility) if utility else None
    quality = {"KS test p-value": None, "JS metric": None}
    if reference_tr is not None and "Forget" in per_task:
        quality = forget_quality(per_task["Forget"]["truth_ratios"], reference_tr)
    results.update(quality)
    settings = {"protocol": "clear", "template_revision": TEMPLATE_REVISION, "seed": seed,
                "rows_per_configuration": {k: len(v) for k, v in bench.rows.items()},
                "max_new_tokens": max_new_tokens, "generation_sees_image": generation_image,
                "forget_quality_1_minus_js": (None if quality["JS metric"] is None else 1 - quality["JS metric"]),
                "truth_ratios": {t: v["truth_ratios"] for t, v in per_task.items()},
                "name_recognition_accuracy": {t: v["answer_beats_perturbed"] for t, v in per_task.items()}}
    return {"results": results, "records": records, "settings": settings}


class ClearScorer:
    """``score(question, image, answers) -> [mean per-token loss]``: each answer's mean negative
    log-likelihood after CLEAR's question prompt with ``image`` (LLaVA: ``<s>USER: <image>\n{question}
    ASSISTANT: {answer}``; chat-template families: their template), over the answer tokens only,
    all answers of one call in one forward."""

    def __init__(self, model, adapter, tokenizer, style: str | None = None):
        from .prompt import PromptRenderer

        adapter.require_language_model("CLEAR scoring")
        self.model, self.adapter, self.tokenizer = model, adapter, tokenizer
        self.renderer = PromptRenderer(adapter, tokenizer, style)

    def __call__(self, question: str, image, answers: list[str]) -> list[float]:
        from ...utils.text import pad_id
        from ..metrics import answer_mean_logprobs

        prompt = Prompt((Turn("USER: ", f"{IMAGE_SLOT}\n{question}"),), " ASSISTANT:", (image,))
        prompt_ids, image_inputs = self.renderer.encode(prompt)
        rows = [(f"CLEAR answer {answer!r}", self.renderer.encode(prompt, answer=answer)[0]) for answer in answers]
        scores = answer_mean_logprobs(self.model, self.adapter, prompt_ids, rows, image_inputs, pad_id(self.tokenizer))
        return [-s for s in scores]


class ClearProtocol(BenchmarkProtocol):
    """CLEAR's: probabilities, truth ratios, ROUGE-L recall, forget quality (300 new tokens by default)."""

    summary = "CLEAR's (probabilities, truth ratio, ROUGE-L recall, forget quality)"
    data_type = ClearBenchmark
    loader = "vkd_fast.eval.load_clear_benchmark(root)"
    options = ("seed", "reference", "generation_image", "max_new_tokens")

    @classmethod
    def require(cls) -> None:
        from ..metrics import require_text_metrics

        require_scipy()
        require_text_metrics()

    @classmethod
    def run(cls, model, tokenizer, data, adapter, generator, style, options: dict) -> dict:
        return evaluate_clear(generator, ClearScorer(model, adapter, tokenizer, style), data,
                              describe=generator.text, **options)


register_protocol("clear", ClearProtocol)
