"""MLLMU-Bench's own protocol (vkd_fast.eval.protocols.mllmu): the prompts character for character
against the benchmark's templates (written out here by hand), the answer parsing rule, hand-computed
scores from scripted generations, seeded draws, and a tiny LLaVA end to end."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import _tiny_models as T
import pytest
import torch
from _parquet import BLUE, CYAN, GREEN, MAGENTA, RED, YELLOW, eval_schema, person, pixel, write
from _toy import EXE

from vkd_fast.adapters import get_adapter
from vkd_fast.data import DataFormatError
from vkd_fast.eval import evaluate, load_mllmu_benchmark, write_jsonl
from vkd_fast.eval.protocols import ModelGenerator, PromptRenderer, parse_choice
from vkd_fast.eval.protocols.mllmu import blank_correct, evaluate_mllmu, reply

COLOURS = {"p0": RED, "p1": BLUE, "p2": GREEN, "r0": CYAN, "r1": MAGENTA}
CHOICE = "Just give ONE letter representing the answer directly."
BLANK = "Please **ONLY** provide the correct answer that should replace the [Blank]."
GEN_IMAGE = "Answer the question based on your trained knowledge in one sentence accurately in ENGLISH."
GEN_TEXT = "Answer the question based on your trained knowledge in one sentence in ENGLISH."


def make_root(root: Path, full=True, celebrities=True) -> Path:
    forget = [person(p, COLOURS[p]) for p in ("p0", "p1", "p2")]
    retain = [person(p, COLOURS[p]) for p in ("r0", "r1")]
    write(root / "forget_5" / "train-00000-of-00001.parquet", forget, eval_schema())
    write(root / "retain_95" / "train-00000-of-00001.parquet", retain, eval_schema())
    if full:
        write(root / "Full_Set" / "train-00000-of-00001.parquet", forget + retain, eval_schema())
    write(root / "Test_Set" / "train-00000-of-00001.parquet",
          [person("p0", images=[YELLOW, CYAN, MAGENTA]), person("x9", images=[RED]), person("p1", images=[GREEN, RED])],
          eval_schema(images=True))
    if celebrities:
        write(root / "Retain_Set" / "train-00000-of-00001.parquet", [person("c0", YELLOW)], eval_schema())
    return root


@pytest.fixture
def root(tmp_path):
    return make_root(tmp_path / "MLLMU-Bench")


class Script:
    """A stand-in for a model: records every prompt, answers with ``fn(prompt)``."""

    def __init__(self, fn=lambda prompt: ""):
        self.fn, self.prompts = fn, []

    def __call__(self, prompt, max_new_tokens):
        assert max_new_tokens == 50
        self.prompts.append(prompt)
        return self.fn(prompt)


def opts(pid, what):
    return "".join(f"{k}: {pid}{what}-{k}\n" for k in "ABCD")


def records(out, set_name, task, qtype=None):
    return [r for r in out["records"] if r["set"] == set_name and r["task"] == task
            and (qtype is None or r["question_type"] == qtype)]


# ------------------------------------------------------------------------------------ templates


def test_zero_shot_prompts_are_the_benchmarks_strings(root):
    bench = load_mllmu_benchmark(root)
    out = evaluate_mllmu(Script(), bench, shots=0)
    first = {(r["task"], r["question_type"]): r["prompt"] for r in out["records"]
             if r["set"] == "forget" and r["id"] == "p0" and r["index"] == 0}
    assert first[("classification", "Image_Textual")] == (
        "USER: <image>\np0: where was this person born?\n" + opts("p0", "born") + CHOICE + "\nASSISTANT:")
    assert first[("classification", "Pure_Text")] == (
        "USER:\np0: what is the hobby of Ann?\n" + opts("p0", "hobby") + CHOICE + "\nASSISTANT:")
    assert first[("fill_in_the_blank", "Image_Textual")] == (
        "USER: <image>\np0: this person works as a [Blank].\n" + BLANK + "\nASSISTANT:")
    assert first[("generation", "Image_Textual")] == (
        "USER: <image>\np0: who is this?\n" + GEN_IMAGE + "\nASSISTANT: ")  # the original's trailing space
    text_fill = records(out, "forget", "fill_in_the_blank", "Pure_Text")[0]
    assert (text_fill["id"], text_fill["index"]) == ("p0", 1)  # its index in Mask_Task (after the image one)
    assert text_fill["prompt"] == "USER:\np0: Ann was born in [Blank].\n" + BLANK + "\nASSISTANT:"
    text_gen = records(out, "forget", "generation", "Pure_Text")[0]
    assert text_gen["prompt"] == "USER: p0: where does Ann live?\n" + GEN_TEXT + "\nASSISTANT:"
    assert all(not r["demo_ids"] and "Correct Answer" not in r["prompt"] for r in out["records"])


@pytest.mark.parametrize("shots", [1, 2])
def test_demonstrations_are_the_benchmarks_strings(root, shots):
    bench = load_mllmu_benchmark(root)
    script = Script()
    out = evaluate_mllmu(script, bench, shots=shots, seed=5)
    demo = out["settings"]["sets"]["forget"]["classification"]["demo_ids"]
    assert len(demo) == shots and set(demo) <= {"p0", "p1", "p2"}
    rest = [p for p in ("p0", "p1", "p2") if p not in demo]
    # every classification question of a demonstration person is shown with its letter, then skipped
    image_demos = "".join(f"USER: <image>\nQuestion: {d}: where was this person born?\n{opts(d, 'born')}Correct Answer: B\n"
                          f"USER: <image>\nQuestion: {d}: what is their job?\n{opts(d, 'job')}Correct Answer: D\n"
                          for d in demo)
    text_demos = "".join(f"USER:\nQuestion: {d}: what is the hobby of Ann?\n{opts(d, 'hobby')}Correct Answer: A\n"
                         for d in demo)
    image = records(out, "forget", "classification", "Image_Textual")
    assert [r["id"] for r in image] == [p for p in rest for _ in range(2)]
    p = rest[0]
    assert image[0]["prompt"] == (image_demos + f"USER: <image>\n{p}: where was this person born?\n"
                                  + opts(p, "born") + CHOICE + "\nASSISTANT:")
    assert image[0]["n_images"] == 2 * shots + 1
    text = records(out, "forget", "classification", "Pure_Text")
    assert text[0]["prompt"] == (text_demos + f"USER:\n{p}: what is the hobby of Ann?\n" + opts(p, "hobby")
                                 + CHOICE + "\nASSISTANT:")
    # the images in order: each demonstration person's image once per image question, then the query's
    shown = next(pr for pr in script.prompts if pr.literal() == image[0]["prompt"])
    assert [pixel(im) for im in shown.images] == [COLOURS[d] for d in demo for _ in range(2)] + [COLOURS[p]]
    # fill-in-the-blank draws its own people (the original's second random.sample)
    fill_demo = out["settings"]["sets"]["forget"]["fill_in_the_blank"]["demo_ids"]
    fill = records(out, "forget", "fill_in_the_blank", "Image_Textual")
    q = fill[0]
    assert q["prompt"] == ("".join(f"USER:<image>\n{d}: this person works as a [Blank].\n{BLANK}\nCorrect Answer: baker\n"
                                   for d in fill_demo)
                           + f"USER: <image>\n{q['id']}: this person works as a [Blank].\n{BLANK}\nASSISTANT:")
    text_fill = records(out, "forget", "fill_in_the_blank", "Pure_Text")
    assert text_fill[0]["prompt"] == ("".join(f"USER:\n{d}: Ann was born in [Blank].\n{BLANK}\nCorrect Answer: 1970\n"
                                              for d in fill_demo)
                                      + f"USER:\n{text_fill[0]['id']}: Ann was born in [Blank].\n{BLANK}\nASSISTANT:")
    assert {r["id"] for r in fill} == {"p0", "p1", "p2"} - set(fill_demo)
    # generation stays zero-shot
    assert all(not r["demo_ids"] and "Correct Answer" not in r["prompt"]
               for r in records(out, "forget", "generation"))


def test_sets_demonstration_sources_and_test_poses(root):
    bench = load_mllmu_benchmark(root)
    script = Script()
    out = evaluate_mllmu(script, bench, shots=1, seed=0)
    assert list(out["results"]) == ["Forget Set Results", "Test Set Results", "Retain Set (shared dataset) Results",
                                    "Retain Set (real person) Results"]
    # the test set holds the forget people only, each question on one randomly drawn pose
    test = out["records"]
    test = [r for r in test if r["set"] == "test"]
    assert {r["id"] for r in test} <= {"p0", "p1"} and test
    poses = {"p0": [YELLOW, CYAN, MAGENTA], "p1": [GREEN, RED]}
    for r, pr in zip(out["records"], script.prompts):
        if r["set"] == "test" and r["question_type"] == "Image_Textual":
            assert pixel(pr.images[-1]) == poses[r["id"]][r["image_index"]]
    # test demonstrations come from the forget people (the original's id_list), never the test rows
    assert set(out["settings"]["sets"]["test"]["classification"]["demo_ids"]) <= {"p0", "p1", "p2"}
    # retain demonstrations are retain people
    assert set(out["settings"]["sets"]["retain_shared"]["classification"]["demo_ids"]) <= {"r0", "r1"}
    # the celebrities: classification zero-shot; no Full_Set row for them, so no fill-in-the-blank demo either
    celeb = [r for r in out["records"] if r["set"] == "retain_celebrity"]
    assert celeb and all("Correct Answer" not in r["prompt"] for r in celeb)
    assert len(records(out, "retain_celebrity", "classification")) == 3


def test_demonstrations_need_full_set(tmp_path):
    bench = load_mllmu_benchmark(make_root(tmp_path / "M", full=False, celebrities=False))
    with pytest.raises(FileNotFoundError, match="Full_Set"):
        evaluate_mllmu(Script(), bench)
    out = evaluate_mllmu(Script(), bench, shots=0)
    assert "Retain Set (real person) Results" not in out["results"]


# -------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("generation, parsed", [
    (" B", "B"), ("b) Paris", "B"), ("d", "D"), ("The answer is A", None), ("", None), ("   ", None), ("E", None),
    ("\n C. something", "C"), ("A\nASSISTANT: B", "A"), ("ASSISTANT: C", None), ("(A)", None),
])
def test_choice_parsing(generation, parsed):
    assert parse_choice(generation, {"A": 1, "B": 2, "C": 3, "D": 4}) == parsed


def test_reply_and_blank_rules():
    assert reply("  baker \nASSISTANT: no") == "baker"
    assert blank_correct("I think a BAKER.", "baker")
    assert not blank_correct("bake", "baker")
    assert not blank_correct("x\nASSISTANT: baker", "baker")  # text after a second ASSISTANT: is not the reply


# ------------------------------------------------------------------------------------- scoring


REPLIES = {
    # classification, image questions: p0 2/2, p1 1/2, p2 0/2
    "p0: where was this person born?": " B", "p0: what is their job?": "d) the job",
    "p1: where was this person born?": "The answer is B", "p1: what is their job?": "D",
    "p2: where was this person born?": "", "p2: what is their job?": "E",
    # classification, text: p0, p1 right (one lower-case), p2 wrong
    "p0: what is the hobby of Ann?": "A", "p1: what is the hobby of Ann?": "a", "p2: what is the hobby of Ann?": "C",
    # fill-in-the-blank: image 2/3, text 2/3
    "p0: this person works as a [Blank].": "Baker", "p1: this person works as a [Blank].": "a baker.",
    "p2: this person works as a [Blank].": "bake", "p0: Ann was born in [Blank].": "in 1970",
    "p1: Ann was born in [Blank].": "1971", "p2: Ann was born in [Blank].": "1970",
    # generation
    "p0: who is this?": "p0 is Ann.\nASSISTANT: and more", "p1: who is this?": "", "p2: who is this?": "p2 is Bob.",
    "p0: where does Ann live?": "In Oslo.", "p1: where does Ann live?": "Oslo", "p2: where does Ann live?": "",
}


def scripted(prompt):
    last = prompt.turns[-1].content
    return next(v for k, v in REPLIES.items() if k in last)


def test_scores_from_scripted_generations(root):
    bench = load_mllmu_benchmark(root)
    bench.sets = {"forget": bench.sets["forget"]}
    out = evaluate_mllmu(Script(scripted), bench, shots=0)
    got = out["results"]["Forget Set Results"]
    assert got["classification"] == pytest.approx({"Image-Textual Question Accuracy": 300 / 6,
                                                   "Pure Text Question Accuracy": 200 / 3})
    assert got["fill_in_the_blank"] == pytest.approx({"image_textual_accuracy": 200 / 3, "pure_text_accuracy": 200 / 3})
    # by hand: "p2 is Bob." vs "p2 is Ann.": ROUGE-1 2/3, ROUGE-2 1/2, ROUGE-L 2/3; BLEU over whitespace tokens
    # p1..p4 = 2/3, 1/2, (0 + 0.1)/1, (0 + 0.1)/1 (smoothing method 1), brevity 1
    bob = (2 / 3 * 1 / 2 * 0.1 * 0.1) ** 0.25
    # "Oslo" vs "In Oslo.": ROUGE-1 F 2/3 (P 1, R 1/2), ROUGE-2 0, ROUGE-L 2/3; BLEU 0 ("Oslo" != "Oslo.")
    # an exact answer shorter than 4 tokens is not BLEU 1: its missing n-grams are smoothed to 0.1 each
    # ("p0 is Ann.": p4 = 0.1 -> 0.1 ** (1/4); "In Oslo.": p3 = p4 = 0.1 -> 0.1 ** (2/4))
    exact3, exact2 = 0.1 ** 0.25, 0.1 ** 0.5
    assert got["generation"] == pytest.approx({
        "Average ROUGE-1 (Image_Textual)": (1 + 0 + 2 / 3) / 3, "Average ROUGE-2 (Image_Textual)": (1 + 0 + 1 / 2) / 3,
        "Average ROUGE-L (Image_Textual)": (1 + 0 + 2 / 3) / 3, "Average BLEU (Image_Textual)": (exact3 + 0 + bob) / 3,
        "Average ROUGE-1 (Pure_Text)": (1 + 2 / 3 + 0) / 3, "Average ROUGE-2 (Pure_Text)": 1 / 3,
        "Average ROUGE-L (Pure_Text)": (1 + 2 / 3 + 0) / 3, "Average BLEU (Pure_Text)": exact2 / 3,
    })
    by_q = {(r["task"], r["id"], r["question_type"], r["index"]): r for r in out["records"]}
    assert by_q[("classification", "p1", "Image_Textual", 0)]["parsed"] is None
    assert by_q[("classification", "p0", "Image_Textual", 1)]["parsed"] == "D"
    assert by_q[("generation", "p0", "Image_Textual", 0)]["parsed"] == "p0 is Ann."
    assert by_q[("generation", "p0", "Image_Textual", 0)]["generation"] == "p0 is Ann.\nASSISTANT: and more"


def test_rouge_stems_as_the_benchmark():
    from vkd_fast.eval.metrics import rouge_scores

    # Porter stemming: painters ~ painter (ran / runs stay apart); lower-cased
    assert rouge_scores("The painters ran", "the painter runs")["rouge1"].fmeasure == pytest.approx(2 / 3)
    assert rouge_scores("The painters ran", "the painter runs", stemmer=False)["rouge1"].fmeasure == pytest.approx(1 / 3)


def test_demonstration_people_leave_the_score(root):
    bench = load_mllmu_benchmark(root)
    bench.sets = {"forget": bench.sets["forget"]}
    out = evaluate_mllmu(Script(scripted), bench, shots=1, seed=1)
    demo = out["settings"]["sets"]["forget"]["classification"]["demo_ids"]
    right = {"p0": (2, 1), "p1": (1, 1), "p2": (0, 0)}  # (image right of 2, text right of 1) from REPLIES
    rest = [p for p in right if p not in demo]
    got = out["results"]["Forget Set Results"]["classification"]
    assert got["Image-Textual Question Accuracy"] == pytest.approx(100 * sum(right[p][0] for p in rest) / (2 * len(rest)))
    assert got["Pure Text Question Accuracy"] == pytest.approx(100 * sum(right[p][1] for p in rest) / len(rest))
    assert out["settings"]["sets"]["forget"]["classification"]["n_image_textual"] == 2 * len(rest)


# --------------------------------------------------------------------------------------- seeds


def test_same_seed_same_audit_file_other_seed_other_demonstrations(root, tmp_path):
    bench = load_mllmu_benchmark(root)
    files = []
    for k, seed in enumerate((7, 7)):
        out = evaluate_mllmu(Script(scripted_or_empty), bench, seed=seed)
        write_jsonl(tmp_path / f"{k}.jsonl", out["records"])
        files.append((tmp_path / f"{k}.jsonl").read_bytes())
    assert files[0] == files[1] and files[0].count(b"\n") == len(out["records"])
    demos, poses = set(), set()
    for seed in range(8):
        out = evaluate_mllmu(Script(scripted_or_empty), bench, seed=seed)
        demos.add(tuple(out["settings"]["sets"]["forget"]["classification"]["demo_ids"]))
        poses.add(tuple(r["image_index"] for r in out["records"] if r["set"] == "test"))
        assert out["settings"]["seed"] == seed
    assert len(demos) > 1 and len(poses) > 1


def scripted_or_empty(prompt):
    last = prompt.turns[-1].content
    return next((v for k, v in REPLIES.items() if k in last), "")


def test_bad_options():
    bench = None
    with pytest.raises(ValueError, match="shots"):
        evaluate_mllmu(Script(), bench, shots=-1)
    with pytest.raises(TypeError, match="seed"):
        evaluate_mllmu(Script(), bench, seed="1")
    with pytest.raises(ValueError, match="tasks"):
        evaluate_mllmu(Script(), bench, tasks=("ranking",))


# ------------------------------------------------------------------------------ a real model


def test_renderer_expands_each_image_to_its_tokens():
    from vkd_fast.eval.protocols import Prompt, Turn
    from vkd_fast.eval.protocols.prompt import IMAGE_SLOT

    model, tok = T.tiny_llava(), T.tiny_tokenizer()
    adapter = get_adapter(model)
    from PIL import Image

    a, b = Image.new("RGB", (8, 8), RED), Image.new("RGB", (8, 8), BLUE)
    prompt = Prompt((Turn("USER: ", f"{IMAGE_SLOT}\nwhat is the job ?\n"), Turn("USER: ", f"{IMAGE_SLOT}\nthe ?\n")),
                    "ASSISTANT:", (a, b))
    renderer = PromptRenderer(adapter, tok)
    assert renderer.style == "llava"
    ids, images = renderer.encode(prompt)
    n = adapter.num_image_tokens(**adapter.preprocess([a]))[0]
    block = "<image>" * n
    assert ids == tok(f"USER: {block}\nwhat is the job ?\nUSER: {block}\nthe ?\nASSISTANT:").input_ids
    assert ids.count(adapter.image_token_id) == 2 * n and images["pixel_values"].shape[0] == 2
    assert renderer.text(prompt) == "USER: <image>\nwhat is the job ?\nUSER: <image>\nthe ?\nASSISTANT:"

    # greedy generation from a two-image prompt equals a hand-written greedy loop over full forwards
    generator = ModelGenerator(model, adapter, tok)
    tok_ids = list(ids)
    with torch.no_grad():
        for _ in range(4):
            x = torch.tensor([tok_ids])
            logits = model(**adapter.model_inputs(x, torch.ones_like(x), **images)).logits
            tok_ids.append(int(logits[0, -1].argmax()))
    assert generator(prompt, 4) == tok.decode(tok_ids[len(ids):], skip_special_tokens=True)


def test_chat_style_for_qwen():
    from vkd_fast.eval.protocols import Prompt, Turn
    from vkd_fast.eval.protocols.prompt import IMAGE_SLOT

    model, tok = T.tiny_qwen2_vl(), T.tiny_tokenizer(T.QWEN_SPECIAL_TOKENS)
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    adapter = get_adapter(model)
    from PIL import Image

    img = Image.new("RGB", (28, 28), GREEN)
    prompt = Prompt((Turn("USER:", f"{IMAGE_SLOT}\nthe job\nCorrect Answer: B\n"), Turn("USER: ", f"{IMAGE_SLOT}\nwhat ?\n")),
                    "ASSISTANT:", (img, img))
    renderer = PromptRenderer(adapter, tok)
    assert renderer.style == "chat" and "deviation" in renderer.describe()
    assert renderer.text(prompt) == ("<|im_start|>user\n<image>\nthe job\nCorrect Answer: B\n<image>\nwhat ?<|im_end|>\n"
                                     "<|im_start|>assistant\n")
    ids, images = renderer.encode(prompt)
    n = adapter.num_image_tokens(**adapter.preprocess([img]))[0]
    assert ids.count(T.QWEN_IMAGE) == 2 * n and ids.count(T.QWEN_VSTART) == 2 == ids.count(T.QWEN_VEND)
    assert isinstance(ModelGenerator(model, adapter, tok)(prompt, 3), str)


def test_evaluate_protocol_mllmu_on_a_tiny_llava(root):
    model, tok = T.tiny_llava(), T.tiny_tokenizer()
    model.train()
    bench = load_mllmu_benchmark(root)
    bench.sets = {"forget": bench.sets["forget"]}
    out = evaluate(model, tok, bench, protocol="mllmu", seed=3, shots=1, tasks=("classification",))
    assert model.training  # left as it was
    assert out["settings"]["prompt_format"].startswith("the benchmark's LLaVA-1.5 strings")
    assert list(out["results"]) == ["Forget Set Results"]
    assert [r["prompt"] for r in out["records"]] == [
        r["prompt"] for r in evaluate_mllmu(Script(), bench, seed=3, shots=1, tasks=("classification",))["records"]]
    for r in out["records"]:
        if r["task"] == "classification":
            assert r["correct"] == (r["parsed"] == r["ground_truth"])
    with pytest.raises(TypeError, match="load_mllmu_benchmark"):
        evaluate(model, tok, {"forget_vqa": []}, protocol="mllmu")
    with pytest.raises(ValueError, match="protocol"):
        evaluate(model, tok, bench, protocol="mlmu")
    for option in ({"batch_size": 8}, {"max_new_tokens": 10}, {"reference": {}}):
        with pytest.raises(TypeError):
            evaluate(model, tok, bench, protocol="mllmu", **option)


@pytest.mark.slow
def test_cli_eval_protocol_mllmu(root, tmp_path):
    T.saved_tiny_llava(tmp_path / "model")
    out = subprocess.run([EXE, "eval", str(tmp_path / "model"), "--data", "mllmu", "--root", str(root), "--protocol",
                          "mllmu", "--seed", "4", "--output", str(tmp_path / "res.json")],
                         capture_output=True, text=True, env=T.cli_env(), timeout=600, check=False)
    assert out.returncode == 0, out.stderr
    res = json.loads((tmp_path / "res.json").read_text())
    assert set(res) == {"Forget Set Results", "Test Set Results", "Retain Set (shared dataset) Results",
                        "Retain Set (real person) Results", "vkd_fast"}  # the benchmark's keys + ours under one
    assert "torch" in json.dumps(res["vkd_fast"]["environment"])
    assert res["vkd_fast"]["seed"] == 4 and res["vkd_fast"]["shots"] == {"classification": 1, "fill_in_the_blank": 2}
    assert "0e3098e" in res["vkd_fast"]["template_revision"]
    lines = [json.loads(x) for x in (tmp_path / "res.questions.jsonl").read_text().splitlines()]
    assert lines and res["vkd_fast"]["audit"].endswith("res.questions.jsonl")
    # every score is recomputable from the audit lines
    for key, set_name in (("Forget Set Results", "forget"), ("Retain Set (real person) Results", "retain_celebrity")):
        for qtype, name in (("Image_Textual", "Image-Textual Question Accuracy"), ("Pure_Text", "Pure Text Question Accuracy")):
            rows = [x for x in lines if x["set"] == set_name and x["task"] == "classification" and x["question_type"] == qtype]
            want = 100 * sum(x["correct"] for x in rows) / len(rows) if rows else None
            assert res[key]["classification"][name] == pytest.approx(want)
    assert all("<image>" in x["prompt"] for x in lines if x["question_type"] == "Image_Textual")
    # the same seed in-process: the same questions, demonstrations and prompts (LLaVA: the literal strings)
    want = evaluate_mllmu(Script(), load_mllmu_benchmark(root), seed=4)
    assert [(r["set"], r["task"], r["id"], r["index"], r["prompt"]) for r in want["records"]] == \
        [(x["set"], x["task"], x["id"], x["index"], x["prompt"]) for x in lines]


@pytest.mark.parametrize("args, message", [
    (["--protocol", "clear"], "--protocol clear does not apply to --data mllmu"),
    (["--protocol", "mllmu", "--shots", "3"], "invalid choice"),
    (["--reference", "x.json"], "--reference and --generation-image apply to --protocol clear only"),
    (["--shots", "1"], "--shots applies to --protocol mllmu only"),
    (["--protocol", "mllmu", "--audit", "{tmp}"], "--audit"),
    (["--protocol", "likelihood", "--audit", "a.jsonl"], "--audit applies to --protocol mllmu / clear"),
])
def test_cli_protocol_argument_errors(root, tmp_path, capsys, args, message):
    from vkd_fast.cli import main

    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    try:
        code = main(["eval", str(tmp_path / "no-model"), "--data", "mllmu", "--root", str(root), *args])
    except SystemExit as exc:  # argparse's own errors (same format, same status)
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and message in err[-1] and err[-1].startswith("vkd-fast eval: error:")


# ------------------------------------------------------------------- the original's finer points


def test_demonstrations_follow_full_set_row_order(root):
    bench = load_mllmu_benchmark(root)
    orders = set()
    for seed in range(12):
        out = evaluate_mllmu(Script(), bench, seed=seed, shots=2, tasks=("classification",))
        demo = out["settings"]["sets"]["forget"]["classification"]["demo_ids"]
        assert demo == sorted(demo, key=["p0", "p1", "p2"].index)  # Full_Set's row order, whatever the draw
        orders.add(tuple(demo))
    assert len(orders) == 3  # and the draws do differ between seeds


def test_limit_keeps_demonstrations_and_the_test_set(root):
    bench = load_mllmu_benchmark(root, limit=1)  # the forget split's first person only
    assert [p.id for p in bench.sets["forget"]] == ["p0"] and [p.id for p in bench.sets["test"]] == ["p0"]
    out = evaluate_mllmu(Script(), bench, seed=0, shots=1, tasks=("classification",))
    # the demonstration person is still found in Full_Set (not limited), so it is shown and skipped
    assert out["settings"]["sets"]["forget"]["classification"]["demo_ids"] == ["p0"]
    assert not records(out, "forget", "classification")


def test_mask_task_skip_is_by_index_within_each_type(tmp_path):
    """A demonstration person whose Full_Set Mask_Task lists the types in another order than the
    evaluated row: the original skips by (type, index in the whole list), so neither question of the
    evaluated row is skipped."""
    import json as _json

    forget = [person("p0", RED), person("p1", BLUE)]
    full = [person("p0", RED, as_json=True), person("p1", BLUE, as_json=True)]
    full[0]["Mask_Task"] = _json.dumps(list(reversed(_json.loads(full[0]["Mask_Task"]))))  # Pure_Text first
    root = tmp_path / "M"
    write(root / "forget_5" / "a.parquet", forget, eval_schema())
    write(root / "retain_95" / "a.parquet", [person("r0", CYAN)], eval_schema())
    write(root / "Full_Set" / "a.parquet", full, eval_schema(as_json=True))
    bench = load_mllmu_benchmark(root)
    bench.sets = {"forget": bench.sets["forget"]}
    for seed in range(20):
        out = evaluate_mllmu(Script(), bench, seed=seed, shots=1, tasks=("fill_in_the_blank",))
        if out["settings"]["sets"]["forget"]["fill_in_the_blank"]["demo_ids"] == ["p0"]:
            break
    assert out["settings"]["sets"]["forget"]["fill_in_the_blank"]["demo_ids"] == ["p0"]
    shown = {(r["id"], r["question_type"]) for r in out["records"]}
    assert ("p0", "Image_Textual") in shown and ("p0", "Pure_Text") in shown
    assert out["records"][0]["prompt"].startswith("USER:<image>\np0: this person works as a [Blank].")


def test_every_option_key_is_listed(tmp_path):
    import json as _json

    row = person("p0", RED)

    classify = _json.loads(_json.dumps(row["Classification_Task"]))
    classify["Image_Textual_Questions"][0]["Options"] = {"A": "a", "B": "b", "C": "c", "D": "d", "E": "e"}
    row = dict(row, Classification_Task=_json.dumps(classify), Generation_Task=_json.dumps(row["Generation_Task"]),
               Mask_Task=_json.dumps(row["Mask_Task"]))
    root = tmp_path / "M"
    write(root / "forget_5" / "a.parquet", [row], eval_schema(as_json=True))
    write(root / "retain_95" / "a.parquet", [person("r0", CYAN)], eval_schema())
    out = evaluate_mllmu(Script(lambda p: "E"), load_mllmu_benchmark(root), shots=0, tasks=("classification",))
    first = records(out, "forget", "classification", "Image_Textual")[0]
    assert "\nD: d\nE: e\nJust give ONE letter" in first["prompt"] and first["parsed"] == "E"


# ------------------------------------------------- rows the original would score differently: refused


def _rewrite(root, split, rows, images=False):
    for f in (root / split).glob("*.parquet"):
        f.unlink()
    write(root / split / "train-00000-of-00001.parquet", rows, eval_schema(images=images))


def test_an_id_on_two_rows_is_refused_naming_them(root):
    # the original scores both Test_Set rows, each with its own images; one person per ID here would
    # score the first row's questions with the last row's images
    _rewrite(root, "Test_Set", [person("p0", images=[YELLOW]), person("p1", images=[RED]),
                                person("p0", images=[CYAN])], images=True)
    with pytest.raises(DataFormatError, match=r"Test_Set.*: ID 'p0' is on rows 0, 2: MLLMU-Bench's eval.py scores"):
        load_mllmu_benchmark(root)


def test_a_null_option_is_refused_naming_the_row(root):
    row = person("p1", GREEN)
    row["Classification_Task"]["Image_Textual_Questions"][0]["Options"]["D"] = None  # the original: "D: None"
    _rewrite(root, "forget_5", [person("p0", RED), row])
    with pytest.raises(DataFormatError, match=r"forget_5/train-00000-of-00001\.parquet row 1, field "
                                              r"'Classification_Task\.Image_Textual_Questions\[0\]\.Options\.D': "
                                              r"the option is null: MLLMU-Bench's eval.py would score"):
        load_mllmu_benchmark(root)
    from vkd_fast.data import load_mllmu_eval  # the likelihood protocol reads it normalised (D dropped)

    items = load_mllmu_eval(root / "forget_5")["vqa"]
    assert sorted(items[2]["options"]) == ["A", "B", "C"]


def test_a_lower_case_answer_is_refused_naming_the_row(root):
    _rewrite(root, "retain_95", [person("r0", BLUE, image_answer="b")])
    with pytest.raises(DataFormatError, match=r"retain_95/.* row 0, field 'Classification_Task\.Image_Textual_"
                                              r"Questions\[0\]\.Correct_Answer': 'b' is lower-case"):
        load_mllmu_benchmark(root)
    from vkd_fast.data import load_mllmu_eval

    assert load_mllmu_eval(root / "retain_95")["vqa"][0]["answer"] == "B"
