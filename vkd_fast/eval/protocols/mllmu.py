"""MLLMU-Bench's own evaluation protocol (docs/method.md §4.3), reproduced from its ``eval.py``
(franciscoliu/MLLMU-Bench at 0e3098e, 2025-03-12; its logic, not its code), seeded.

Four sets — the forget split, the forget people on unseen images (``Test_Set``), the retain split
("shared dataset") and the real celebrities (``Retain_Set``) — and three tasks each:

* **classification**: greedy generation (50 new tokens) after the question, its options as ``A: ...``
  lines and ``Just give ONE letter representing the answer directly.``; the prediction is the first
  character of the reply, upper-cased, and counts only when it is an option key. The forget, test and
  retain-shared sets are shown demonstrations first: every multiple-choice question of ``shots``
  (default 1) people drawn from the evaluated set's IDs, taken from ``Full_Set`` with their correct
  letter; those people's questions are left out of the score. The celebrity set is zero-shot.
* **fill_in_the_blank**: ``__`` becomes ``[Blank]`` plus the instruction line; demonstrations of
  ``shots`` (default 2, LLaVA's count) people in every set; correct when the ground truth occurs in
  the reply, case-insensitively.
* **generation**: zero-shot with the instruction line; ROUGE-1/2/L F-measure (Porter stemming) and
  sentence BLEU of whitespace tokens (smoothing method 1), averaged over questions.

Accuracies are percentages, ROUGE / BLEU fractions, under the benchmark's own key names. The
original draws its demonstration people and the test set's pose images without a seed; here every
draw comes from ``random.Random("<seed>/<set>/<task>")``, so a run is reproducible and independent
of which sets are evaluated.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .prompt import IMAGE_SLOT, Prompt, Turn
from .registry import BenchmarkProtocol, register_protocol

#: the original's revision whose logic this reproduces (written into every result)
TEMPLATE_REVISION = "MLLMU-Bench eval.py @ 0e3098e (2025-03-12)"
#: our set name -> the benchmark's result key
SET_KEYS = {
    "forget": "Forget Set Results",
    "test": "Test Set Results",
    "retain_shared": "Retain Set (shared dataset) Results",
    "retain_celebrity": "Retain Set (real person) Results",
}
TASKS = ("classification", "fill_in_the_blank", "generation")
#: demonstration people per task in the original (LLaVA); generation is always zero-shot
DEFAULT_SHOTS = {"classification": 1, "fill_in_the_blank": 2}
#: sets shown demonstrations, per task (the original's mode lists)
DEMO_SETS = {"classification": ("forget", "retain_shared", "test"),
             "fill_in_the_blank": ("forget", "retain_shared", "test", "retain_celebrity")}
MAX_NEW_TOKENS = 50
CHOICE_INSTRUCTION = "Just give ONE letter representing the answer directly."
BLANK_INSTRUCTION = "Please **ONLY** provide the correct answer that should replace the [Blank]."
IMAGE_GENERATION_INSTRUCTION = ("Answer the question based on your trained knowledge in one sentence accurately "
                                "in ENGLISH.")
TEXT_GENERATION_INSTRUCTION = "Answer the question based on your trained knowledge in one sentence in ENGLISH."


# ------------------------------------------------------------------------------------------ data


@dataclass
class Person:
    """One row of a split: its images (one, or the ``Test_Set`` poses) and its questions by task, each
    list indexed as in the row (``None`` where a question was not loaded)."""

    id: str
    images: list = field(default_factory=list)
    image_mc: dict = field(default_factory=dict)   # index -> item
    text_mc: dict = field(default_factory=dict)
    mask: dict = field(default_factory=dict)        # index -> item (with "type")
    generation: dict = field(default_factory=dict)


def _check_faithful(evaluation: dict, where: str) -> None:
    """Refuse, before any work, rows this protocol would score differently from MLLMU-Bench's eval.py
    (0e3098e): an ID on two rows (the original scores each row with its own images; regrouping by ID
    would mix them), a null option (the original shows "D: None" and accepts D) and a lower-case
    Correct_Answer (the original never matches it). The message names the row(s)."""
    from ...data import DataFormatError

    rows: dict = {}
    for items in evaluation.values():
        for item in items:
            if item.get("quirks"):
                raise DataFormatError(f"{item['quirks'][0]}: MLLMU-Bench's eval.py would score this question "
                                      "differently from this protocol; fix the row (or use the likelihood protocol, "
                                      "which reads it normalised)")
            rows.setdefault(item["id"], set()).add(item["row"])
    twice = {pid: sorted(r) for pid, r in rows.items() if len(r) > 1}
    if twice:
        pid, at = next(iter(twice.items()))
        raise DataFormatError(f"{where}: ID {pid!r} is on rows {', '.join(map(str, at))}: MLLMU-Bench's eval.py "
                              "scores each row with its own images, this protocol one person per ID; give each row "
                              "its own ID or drop the duplicates")


def _people(evaluation: dict, where: str) -> list[Person]:
    """Regroup ``load_mllmu_eval`` items by person, in row order, and by question index (rows the
    original would score differently are refused first: :func:`_check_faithful`)."""
    _check_faithful(evaluation, where)
    people: dict[str, tuple[int, Person]] = {}

    def image_of(p: Person, item) -> None:
        if item.get("image") is None:
            return
        k = item.get("image_index", 0)
        while len(p.images) <= k:
            p.images.append(None)
        p.images[k] = item["image"]

    for kind, attr in (("vqa", "image_mc"), ("qa", "text_mc"), ("cloze", "mask"), ("generation", "generation")):
        for item in evaluation[kind]:
            p = people.setdefault(item["id"], (item["row"], Person(item["id"])))[1]
            image_of(p, item)
            getattr(p, attr).setdefault(item["index"], {k: v for k, v in item.items()
                                                         if k not in ("image", "image_index", "row")})
    return [p for _, p in sorted(people.values(), key=lambda rp: rp[0])]


class MllmuBenchmark:
    """The splits the protocol reads, regrouped by person: ``sets`` (``forget``, ``retain_shared`` and,
    when present, ``test`` and ``retain_celebrity``), and ``Full_Set`` (the demonstrations' source),
    read only for the people drawn as demonstrations (:meth:`full_people`)."""

    def __init__(self, sets: dict[str, list[Person]], full_path: str | None, source: dict[str, str]):
        self.sets, self.full_path, self.source = sets, full_path, source
        self._full: dict[str, tuple[int, Person]] = {}

    def full_people(self, ids) -> list[Person]:
        """The ``Full_Set`` rows of ``ids``, in ``Full_Set``'s row order (the order the original shows
        them); ids without a row are left out."""
        from ...data import load_mllmu_eval

        if self.full_path is None:
            return []
        missing = [i for i in ids if i not in self._full]
        if missing:
            loaded = load_mllmu_eval(self.full_path, ids=missing)
            rows = {it["id"]: it["row"] for kind in loaded.values() for it in kind}
            for person in _people(loaded, self.full_path):
                self._full[person.id] = (rows[person.id], person)
        found = [self._full[i] for i in dict.fromkeys(ids) if i in self._full]
        return [p for _, p in sorted(found, key=lambda rp: rp[0])]


def load_mllmu_benchmark(root, forget_split: str | None = None, retain_split: str | None = None,
                         limit: int | None = None) -> MllmuBenchmark:
    """Read a local MLLMU-Bench copy for :func:`evaluate_mllmu`. ``limit``: rows per file of the
    forget, retain and celebrity splits (quick runs); ``Test_Set`` is read for the forget people
    only, ``Full_Set`` for the demonstration people only, neither limited. ``Test_Set``,
    ``Retain_Set`` and ``Full_Set`` may be absent (their results are then left out; demonstrations
    need ``Full_Set``). Splits: None = ``vkd_fast.data.mllmu.DEFAULT_SPLITS`` (forget_5, retain_95)."""
    from ...data import load_mllmu_eval, mllmu_split_path
    from ...data.mllmu import DEFAULT_SPLITS

    forget_split, retain_split = forget_split or DEFAULT_SPLITS[0], retain_split or DEFAULT_SPLITS[1]

    def read(split, **kwargs):
        path = mllmu_split_path(root, split)
        return _people(load_mllmu_eval(path, **kwargs), str(path)), str(path)

    sets, source = {}, {}
    sets["forget"], source["forget"] = read(forget_split, limit=limit)
    sets["retain_shared"], source["retain_shared"] = read(retain_split, limit=limit)
    forget_ids = [p.id for p in sets["forget"]]
    for name, split, kwargs in (("test", "Test_Set", {"ids": forget_ids}),
                                ("retain_celebrity", "Retain_Set", {"limit": limit})):
        try:
            sets[name], source[name] = read(split, **kwargs)
        except FileNotFoundError:
            continue
    try:
        full_path = str(mllmu_split_path(root, "Full_Set"))
        source["full"] = full_path
    except FileNotFoundError:
        full_path = None
    return MllmuBenchmark({k: sets[k] for k in SET_KEYS if k in sets}, full_path, source)


# ------------------------------------------------------------------------------------- templates


def options_text(options: dict) -> str:
    return "\n".join(f"{k}: {v}" for k, v in options.items())


def classification_prompt(item: dict, image, demos: list[tuple[dict, object]]) -> Prompt:
    """``demos``: (item, image or None) of the demonstration questions, shown with their letter."""
    body = []
    for demo, demo_image in demos:
        head = f"{IMAGE_SLOT}\n" if demo_image is not None else "\n"
        body.append(Turn("USER: " if demo_image is not None else "USER:",
                         f"{head}Question: {demo['question']}\n{options_text(demo['options'])}\n"
                         f"Correct Answer: {demo['answer']}\n"))
    head = f"{IMAGE_SLOT}\n" if image is not None else "\n"
    body.append(Turn("USER: " if image is not None else "USER:",
                     f"{head}{item['question']}\n{options_text(item['options'])}\n{CHOICE_INSTRUCTION}\n"))
    images = tuple(im for _, im in demos if im is not None) + ((image,) if image is not None else ())
    return Prompt(tuple(body), "ASSISTANT:", images)


def blank_question(question: str) -> str:
    return question.replace("__", "[Blank]") + "\n" + BLANK_INSTRUCTION


def blank_prompt(item: dict, image, demos: list[tuple[dict, object]]) -> Prompt:
    body = [Turn("USER:", (f"{IMAGE_SLOT}\n" if im is not None else "\n")
                 + f"{blank_question(d['question'])}\nCorrect Answer: {d['answer']}\n") for d, im in demos]
    head = f"{IMAGE_SLOT}\n" if image is not None else "\n"
    body.append(Turn("USER: " if image is not None else "USER:", f"{head}{blank_question(item['question'])}\n"))
    images = tuple(im for _, im in demos if im is not None) + ((image,) if image is not None else ())
    return Prompt(tuple(body), "ASSISTANT:", images)


def generation_prompt(item: dict, image) -> Prompt:
    if image is not None:
        return Prompt((Turn("USER: ", f"{IMAGE_SLOT}\n{item['question']}\n{IMAGE_GENERATION_INSTRUCTION}\n"),),
                      "ASSISTANT: ", (image,))
    return Prompt((Turn("USER: ", f"{item['question']}\n{TEXT_GENERATION_INSTRUCTION}\n"),), "ASSISTANT:")


# --------------------------------------------------------------------------------------- parsing


def reply(generation: str) -> str:
    """The model's reply as the original reads it: it decodes prompt + continuation and keeps what lies
    between the prompt's ``ASSISTANT:`` and a next one, stripped — on the continuation alone that is
    the text before any ``ASSISTANT:`` it writes."""
    return generation.split("ASSISTANT:")[0].strip()


def parse_choice(generation: str, keys) -> str | None:
    """The predicted option key: the reply's first character, upper-cased, if it is one of ``keys``;
    else None (counted wrong)."""
    text = reply(generation)
    letter = text[0].upper() if text else None
    return letter if letter in set(keys) else None


def blank_correct(generation: str, ground_truth: str) -> bool:
    return ground_truth.lower() in reply(generation).lower()


# ------------------------------------------------------------------------------------ evaluation


_TYPE_NAMES = {"image": "Image_Textual", "text": "Pure_Text"}


def _questions(person: Person, task: str) -> list[tuple[str | None, int, dict]]:
    """``(kind, index, item)`` of a person's questions for ``task`` (classification or fill-in-the-blank),
    kind ``"image"`` / ``"text"``, or None for a Mask_Task type the original does not count."""
    if task == "classification":
        return ([("image", i, q) for i, q in sorted(person.image_mc.items())]
                + [("text", i, q) for i, q in sorted(person.text_mc.items())])
    kinds = {"Image_Textual": "image", "Pure_Text": "text"}
    return [(kinds.get(str(q.get("type") or "")), i, q) for i, q in sorted(person.mask.items())]


def _demos(bench: MllmuBenchmark, set_name: str, task: str, shots: int, rng: random.Random, show: bool):
    """(demo IDs shown, IDs drawn without a ``Full_Set`` row, per-ID skipped indices {id: {"image":
    set, "text": set}}, demo entries by kind). As in the original, the people are drawn from the
    evaluated set's IDs (the forget split's for the test set), looked up in ``Full_Set`` and shown in
    its row order; their questions are skipped even where demonstrations are not shown."""
    ids = list(dict.fromkeys(p.id for p in bench.sets["forget" if set_name == "test" else set_name]))
    chosen = rng.sample(ids, min(shots, len(ids))) if shots else []
    skip: dict[str, dict[str, set]] = {}
    entries: dict[str, list] = {"image": [], "text": []}
    if chosen and show and bench.full_path is None and set_name != "retain_celebrity":
        raise FileNotFoundError("MLLMU-Bench's protocol shows demonstrations from Full_Set/, which this copy does "
                                "not have: add the Full_Set folder, or pass --shots 0 (shots=0)")
    people = bench.full_people(chosen)  # the celebrities have no Full_Set row: no demonstration, nothing skipped
    for person in people:
        image = person.images[0] if person.images else None
        marks = skip.setdefault(person.id, {"image": set(), "text": set()})
        for kind, idx, item in _questions(person, task):
            if kind is not None:
                entries[kind].append((item, image if kind == "image" else None))
                marks[kind].add(idx)
    shown = [p.id for p in people]
    return shown, [i for i in chosen if i not in shown], skip, entries


def _pose(person: Person, set_name: str, rng: random.Random):
    """(image, image index or None): a random pose on the test set, the row's image elsewhere."""
    if not person.images:
        return None, None
    if set_name == "test":
        k = rng.randrange(len(person.images))
        return person.images[k], k
    return person.images[0], None


def _pct(correct: int, total: int):
    return 100.0 * correct / total if total else None


def _run_choice_or_blank(bench, set_name, task, generate, shots, seed, records, describe) -> tuple[dict, dict]:
    rng = random.Random(f"{seed}/{set_name}/{task}")
    show = set_name in DEMO_SETS[task]
    chosen, absent, skip, demo_entries = _demos(bench, set_name, task, shots, rng, show)
    tally = {"image": [0, 0], "text": [0, 0]}
    for person in bench.sets[set_name]:
        image, image_index = _pose(person, set_name, rng)
        marks = skip.get(person.id, {"image": set(), "text": set()})
        for kind, idx, item in _questions(person, task):
            if kind is None or idx in marks[kind]:
                continue  # a type the original does not count, or a demonstration question
            demos = demo_entries[kind] if show else []
            img = image if kind == "image" else None
            if kind == "image" and img is None:
                raise ValueError(f"MLLMU-Bench {set_name} person {person.id!r}: an image question without an image")
            if task == "classification":
                prompt = classification_prompt(item, img, demos)
            else:
                prompt = blank_prompt(item, img, demos)
            out = generate(prompt, MAX_NEW_TOKENS)
            if task == "classification":
                parsed = parse_choice(out, item["options"])
                correct = parsed == item["answer"]
            else:
                parsed, correct = reply(out), blank_correct(out, item["answer"])
            tally[kind][0] += correct
            tally[kind][1] += 1
            records.append({"set": set_name, "task": task, "question_type": _TYPE_NAMES[kind], "id": person.id,
                            "index": idx, "image_index": image_index, "demo_ids": chosen if show else [],
                            "prompt": describe(prompt), "n_images": len(prompt.images), "generation": out,
                            "parsed": parsed, "ground_truth": item["answer"], "correct": bool(correct)})
    if task == "classification":
        result = {"Image-Textual Question Accuracy": _pct(*tally["image"]),
                  "Pure Text Question Accuracy": _pct(*tally["text"])}
    else:
        result = {"image_textual_accuracy": _pct(*tally["image"]), "pure_text_accuracy": _pct(*tally["text"])}
    info = {"n_image_textual": tally["image"][1], "n_pure_text": tally["text"][1], "demo_ids": chosen if show else []}
    if absent and set_name != "retain_celebrity":
        info["demo_ids_not_in_full_set"] = absent  # drawn, but Full_Set has no row: no demonstration from them
    return result, info


def _run_generation(bench, set_name, generate, seed, records, describe) -> tuple[dict, dict]:
    from ..metrics import bleu, rouge_scores

    rng = random.Random(f"{seed}/{set_name}/generation")
    sums = {kind: {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0, "bleu": 0.0, "n": 0} for kind in ("image", "text")}
    for person in bench.sets[set_name]:
        image, image_index = _pose(person, set_name, rng)
        for idx, item in sorted(person.generation.items()):
            kind = "image" if item.get("type") == "Image_Textual" else "text"
            if kind == "image" and image is None:
                raise ValueError(f"MLLMU-Bench {set_name} person {person.id!r}: an image question without an image")
            prompt = generation_prompt(item, image if kind == "image" else None)
            out = generate(prompt, MAX_NEW_TOKENS)
            answer = reply(out)
            scores = rouge_scores(answer, item["answer"])
            row = {"rouge1": scores["rouge1"].fmeasure, "rouge2": scores["rouge2"].fmeasure,
                   "rougeL": scores["rougeL"].fmeasure, "bleu": bleu(answer, item["answer"])}
            for k, v in row.items():
                sums[kind][k] += v
            sums[kind]["n"] += 1
            records.append({"set": set_name, "task": "generation", "question_type": _TYPE_NAMES[kind], "id": person.id,
                            "index": idx, "image_index": image_index if kind == "image" else None, "demo_ids": [],
                            "prompt": describe(prompt), "n_images": len(prompt.images), "generation": out,
                            "parsed": answer, "ground_truth": item["answer"], **row})
    result = {}
    for kind, label in (("image", "Image_Textual"), ("text", "Pure_Text")):
        n = sums[kind]["n"]
        if n:  # the original writes a group's keys only when it has questions
            result[f"Average ROUGE-1 ({label})"] = sums[kind]["rouge1"] / n
            result[f"Average ROUGE-2 ({label})"] = sums[kind]["rouge2"] / n
            result[f"Average ROUGE-L ({label})"] = sums[kind]["rougeL"] / n
            result[f"Average BLEU ({label})"] = sums[kind]["bleu"] / n
    return result, {"n_image_textual": sums["image"]["n"], "n_pure_text": sums["text"]["n"]}


def evaluate_mllmu(generate, bench: MllmuBenchmark, *, seed: int = 0, shots: int | None = None,
                   tasks=TASKS, describe=None) -> dict:
    """MLLMU-Bench's protocol with ``generate(prompt, max_new_tokens) -> str`` (e.g.
    :class:`~vkd_fast.eval.protocols.prompt.ModelGenerator`, or a scripted stand-in).

    ``shots``: demonstration people for classification and fill-in-the-blank (None: the original's
    1 and 2; 0: none anywhere); ``describe(prompt) -> str``: the prompt text written to the audit
    records (default: the LLaVA-1.5 string). Returns ``{"results": the benchmark's JSON,
    "records": one dict per question, "settings": seed, shots, template revision, demonstration
    IDs and counts per set and task}``."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    if "generation" in tuple(tasks):
        from ..metrics import require_text_metrics

        require_text_metrics()
    if shots is not None:
        if isinstance(shots, bool) or not isinstance(shots, int) or shots < 0:
            raise ValueError(f"shots must be None (the original's counts) or an int >= 0, got {shots!r}")
    tasks = tuple(tasks)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {tasks!r}")
    describe = describe or (lambda p: p.literal())
    counts = {t: (DEFAULT_SHOTS[t] if shots is None else shots) for t in DEFAULT_SHOTS}
    results, records, details = {}, [], {}
    for set_name, people in bench.sets.items():
        if not people:
            continue
        block, info = {}, {}
        # the original's order within a set; each (set, task) draws from its own seeded stream anyway
        for task in TASKS:
            if task not in tasks:
                continue
            if task == "generation":
                block[task], info[task] = _run_generation(bench, set_name, generate, seed, records, describe)
            else:
                block[task], info[task] = _run_choice_or_blank(bench, set_name, task, generate, counts[task], seed,
                                                               records, describe)
        results[SET_KEYS[set_name]] = {t: block[t] for t in ("fill_in_the_blank", "classification", "generation")
                                       if t in block}
        details[set_name] = info
    settings = {"protocol": "mllmu", "template_revision": TEMPLATE_REVISION, "seed": seed,
                "shots": counts, "max_new_tokens": MAX_NEW_TOKENS, "sets": details}
    return {"results": results, "records": records, "settings": settings}


class MllmuProtocol(BenchmarkProtocol):
    """MLLMU-Bench's ``eval.py``: generated letters, fill-in-the-blank, ROUGE / BLEU (50 new tokens)."""

    summary = "MLLMU-Bench's eval.py (generated letter, fill-in-the-blank, ROUGE/BLEU)"
    data_type = MllmuBenchmark
    loader = "vkd_fast.eval.load_mllmu_benchmark(root)"
    options = ("seed", "shots", "tasks")
    fixed_length = True  # MLLMU-Bench's own length (50) is part of its protocol

    @classmethod
    def require(cls) -> None:
        from ..metrics import require_text_metrics

        require_text_metrics()

    @classmethod
    def run(cls, model, tokenizer, data, adapter, generator, style, options: dict) -> dict:
        return evaluate_mllmu(generator, data, describe=generator.text, **options)


register_protocol("mllmu", MllmuProtocol)
