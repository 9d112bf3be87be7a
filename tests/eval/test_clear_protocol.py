"""CLEAR's own protocol (vkd_fast.eval.protocols.clear): hand-computed probabilities, truth ratios,
ROUGE-L recall, model utility and forget quality from scripted losses and generations; seeded
questions; the scorer against a hand-written loss; a tiny LLaVA end to end through the CLI."""

from __future__ import annotations

import json
import math
import subprocess

import _tiny_models as T
import pytest
import torch
from _parquet import BLUE, CYAN, GREEN, MAGENTA, RED, YELLOW, pixel, write_clear_benchmark
from _toy import EXE

from vkd_fast.adapters import get_adapter
from vkd_fast.eval import load_clear_benchmark
from vkd_fast.eval.protocols import ClearScorer, evaluate_clear
from vkd_fast.eval.protocols.clear import CAPTION_QUESTIONS, FACE_QUESTION, forget_quality

FORGET, RETAIN = [RED, BLUE, GREEN], [CYAN, MAGENTA]

LOSS = {
    # Forget captions: answer 1.0; paraphrases 1.0 / 2.0 / 0.5; perturbed [2, 2], [1, 3], [1.5, 0.5]
    "Person 0 wears a red coat.": 1.0, "Person 1 wears a red coat.": 1.0, "Person 2 wears a red coat.": 1.0,
    "A red coat on person 0.": 1.0, "A red coat on person 1.": 2.0, "A red coat on person 2.": 0.5,
    "Person 0 wears a blue hat.": 2.0, "Person 0 rides a bike.": 2.0, "Person 1 wears a blue hat.": 1.0,
    "Person 1 rides a bike.": 3.0, "Person 2 wears a blue hat.": 1.5, "Person 2 rides a bike.": 0.5,
    # Forget names 0.5 / 1.0 / 2.0, perturbed names 1.0 and 1.5
    "Name 0": 0.5, "Name 1": 1.0, "Name 2": 2.0, "Other 0": 1.0, "Other 1": 1.0, "Other 2": 1.0,
    "Wrong 0": 1.5, "Wrong 1": 1.5, "Wrong 2": 1.5,
    # Retain: captions and paraphrases 0.5, perturbed 2.0; names 0.2, perturbed names 2.0
    **{f"Person {k} wears a red coat.": 0.5 for k in (10, 11)}, **{f"A red coat on person {k}.": 0.5 for k in (10, 11)},
    **{f"Person {k} wears a blue hat.": 2.0 for k in (10, 11)}, **{f"Person {k} rides a bike.": 2.0 for k in (10, 11)},
    **{f"Name {k}": 0.2 for k in (10, 11)}, **{f"Other {k}": 2.0 for k in (10, 11)}, **{f"Wrong {k}": 2.0 for k in (10, 11)},
    # Real Faces (the options hold the answer too, as CLEAR's rows do) and Real World
    "Ada Byron": 0.3, "Alan Turing": 0.3, "Grace Hopper": 2.0, "Green": 0.4, "Red": 2.5, "Blue": 2.5,
}
# generations in the protocol's task order (Real Faces, Real World, Retain, Retain FaceRec, Forget, Forget FaceRec)
GENERATIONS = ["Ada", "Alan Turing", "It is green", "Person wears a coat", "Person wears a coat", "Name 10", "nobody",
               "Person wears a coat", "Person wears a coat", "Person wears a coat", "", "", "Name 2"]


@pytest.fixture
def root(tmp_path):
    return write_clear_benchmark(tmp_path / "CLEAR", FORGET, RETAIN)


class Scripted:
    def __init__(self, outputs=None):
        self.outputs, self.prompts, self.scored = list(outputs or []), [], []

    def generate(self, prompt, max_new_tokens):
        self.prompts.append(prompt)
        return self.outputs.pop(0) if self.outputs else ""

    def score(self, question, image, answers):
        self.scored.append((question, pixel(image), list(answers)))
        return [LOSS[a] for a in answers]


def test_metrics_by_hand(root):
    s = Scripted(GENERATIONS)
    out = evaluate_clear(s.generate, s.score, load_clear_benchmark(root))
    got = out["results"]
    e = math.exp
    want = {}
    # Real Faces: share p / (p + sum p_options); TR_i = exp(mean of all option losses - answer loss)
    want["Prob. Real Faces"] = (e(-.3) / (e(-.3) + e(-.3) + e(-.3)) + e(-.3) / (e(-.3) + e(-2.0) + e(-.3))) / 2
    m = (0.3 + 0.3 + 2.0 + 0.3) / 4
    want["ROUGE Real Faces"] = (1 / 2 + 1) / 2  # "Ada" recalls 1 of "Ada Byron"
    want["Truth Ratio Real Faces"] = max(0, 1 - 1 / e(m - 0.3))
    want["Prob. Real World"] = e(-.4) / (e(-.4) + 2 * e(-2.5))
    want["ROUGE Real World"] = 1.0  # "green" in "It is green" (lower-cased)
    want["Truth Ratio Real World"] = 1 - 1 / e(2.5 - 0.4)
    # Retain captions: Prob = exp(-loss), ROUGE-L recall of "Person wears a coat" = 4 of 6 tokens
    want["Prob. Retain"] = e(-0.5)
    want["ROUGE Retain"] = 4 / 6
    want["Truth Ratio Retain"] = 1 - 1 / e(2.0 - 0.5)
    want["Prob. Retain FaceRec"] = e(-.2) / (e(-.2) + 2 * e(-2.0))
    want["ROUGE Retain FaceRec"] = (1 + 0) / 2
    want["Truth Ratio Retain FaceRec"] = 1 - 1 / e(2.0 - 0.2)
    # Forget: the perturbed losses are averaged over the whole task (10 / 6), reported as min(TR, 1/TR)
    want["Prob. Forget"] = e(-1.0)
    want["ROUGE Forget"] = 4 / 6
    tr = [e(10 / 6 - p) for p in (1.0, 2.0, 0.5)]
    want["Truth Ratio Forget"] = sum(min(t, 1 / t) for t in tr) / 3
    want["Prob. Forget FaceRec"] = sum(e(-g) / (e(-g) + e(-1.0) + e(-1.5)) for g in (0.5, 1.0, 2.0)) / 3
    want["ROUGE Forget FaceRec"] = 1 / 3
    tr_names = [e(1.25 - g) for g in (0.5, 1.0, 2.0)]
    want["Truth Ratio Forget FaceRec"] = sum(min(t, 1 / t) for t in tr_names) / 3
    utility = [v for k, v in want.items() if "Forget" not in k]
    want["Model Utility"] = len(utility) / sum(1 / v for v in utility)
    assert {k: got[k] for k in want} == pytest.approx(want)
    assert got["KS test p-value"] is None and got["JS metric"] is None  # no reference given
    assert out["settings"]["truth_ratios"]["Forget"] == pytest.approx(tr)
    # name recognition: the true name's loss beats every perturbed name for person 0 only
    assert out["settings"]["name_recognition_accuracy"]["Forget FaceRec"] == pytest.approx(1 / 3)
    assert len(out["records"]) == 13 and not s.outputs


def test_questions_images_and_generation_prompts(root):
    s = Scripted()
    out = evaluate_clear(s.generate, s.score, load_clear_benchmark(root), seed=3)
    rows = {"Real Faces": [RED, BLUE], "Real World": [GREEN], "Retain": RETAIN, "Retain FaceRec": RETAIN,
            "Forget": FORGET, "Forget FaceRec": FORGET}
    for r, prompt in zip(out["records"], s.prompts):
        q = r["question"]
        if r["task"] in ("Retain", "Forget"):
            assert q in CAPTION_QUESTIONS
        elif r["task"] == "Real World":
            assert q == "What colour is the field?"
        else:
            assert q == FACE_QUESTION
        # CLEAR's generation sees the decoded prompt text only, without the image
        assert r["generation_prompt"] == f"USER: \n{q} ASSISTANT: " and prompt.images == ()
    assert all(colour in [c for t in rows.values() for c in t] for _, colour, _ in s.scored)
    # each answer, paraphrase and perturbed answer is scored with the row's own image
    faces = [(q, c, a) for q, c, a in s.scored if a[0] in ("Ada Byron", "Alan Turing", "Grace Hopper")]
    assert [c for _, c, _ in faces][:1] == [RED]
    s2 = Scripted()
    out2 = evaluate_clear(s2.generate, s2.score, load_clear_benchmark(root), seed=3, generation_image=True)
    r = out2["records"][0]
    assert r["generation_prompt"] == f"USER: <image>\n{r['question']} ASSISTANT:"
    assert [pixel(im) for im in s2.prompts[0].images] == [RED]
    assert out2["settings"]["generation_sees_image"] is True


def test_seeded_caption_questions(root):
    bench = load_clear_benchmark(root)

    def questions(seed):
        s = Scripted()
        evaluate_clear(s.generate, s.score, bench, seed=seed)
        return [q for q, _, _ in s.scored]

    assert questions(0) == questions(0)
    assert len({tuple(questions(seed)) for seed in range(4)}) > 1


def test_forget_quality_against_a_reference(root):
    s = Scripted()
    out = evaluate_clear(s.generate, s.score, load_clear_benchmark(root))
    same = evaluate_clear(s.generate, s.score, load_clear_benchmark(root), reference=out)
    assert same["results"]["KS test p-value"] == pytest.approx(1.0)
    assert same["results"]["JS metric"] == pytest.approx(0.0, abs=1e-7)
    far = evaluate_clear(s.generate, s.score, load_clear_benchmark(root),
                         reference={"vkd_fast": {"truth_ratios": {"Forget": [100.0, 200.0, 300.0]}}})
    # two samples of 3 with no overlap: D = 1, exact two-sided p = 2 / C(6, 3) = 0.1
    assert far["results"]["KS test p-value"] == pytest.approx(0.1)
    assert 0 < far["results"]["JS metric"] <= 1
    assert far["settings"]["forget_quality_1_minus_js"] == pytest.approx(1 - far["results"]["JS metric"])
    assert forget_quality([1.0, 2.0], [1.0, 2.0, 3.0])["JS metric"] is None  # JS needs the same rows
    with pytest.raises(ValueError, match="truth_ratios"):
        evaluate_clear(s.generate, s.score, load_clear_benchmark(root), reference={"Model Utility": 0.5})


def test_rows_and_missing_configurations(root, tmp_path):
    bench = load_clear_benchmark(root, rows=2)
    assert {k: len(v) for k, v in bench.rows.items()} == {"forget": 2, "retain": 2, "real_faces": 2, "real_world": 1}
    import shutil

    shutil.rmtree(root / "real_world")
    s = Scripted()
    out = evaluate_clear(s.generate, s.score, load_clear_benchmark(root))
    assert "Prob. Real World" not in out["results"] and "Prob. Real Faces" in out["results"]
    with pytest.raises(FileNotFoundError, match="forget10_perturbed"):
        load_clear_benchmark(tmp_path / "CLEAR", forget_split="forget10_perturbed_missing")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_clear_benchmark(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="rows"):
        load_clear_benchmark(root, rows=0)


def test_scorer_is_the_mean_answer_token_loss():
    from PIL import Image

    model, tok = T.tiny_llava(), T.tiny_tokenizer()
    adapter = get_adapter(model)
    image = Image.new("RGB", (8, 8), YELLOW)
    got = ClearScorer(model, adapter, tok)("what is the job of this person ?", image, ["baker", "the pilot"])
    inputs = adapter.preprocess([image])
    n = adapter.num_image_tokens(**inputs)[0]
    for answer, loss in zip(["baker", "the pilot"], got):
        prompt = tok("USER: " + "<image>" * n + "\nwhat is the job of this person ? ASSISTANT:").input_ids
        full = prompt + tok(" " + answer).input_ids
        x = torch.tensor([full])
        with torch.no_grad():
            logits = model(input_ids=x, attention_mask=torch.ones_like(x), **inputs).logits[0]
        logp = torch.log_softmax(logits.float(), -1)
        want = -sum(float(logp[i - 1, full[i]]) for i in range(len(prompt), len(full))) / (len(full) - len(prompt))
        assert loss == pytest.approx(want, rel=1e-5)


@pytest.mark.slow
def test_cli_eval_protocol_clear(root, tmp_path):
    T.saved_tiny_llava(tmp_path / "model")
    env = T.cli_env()

    def run(*extra):
        return subprocess.run([EXE, "eval", str(tmp_path / "model"), "--data", "clear", "--root", str(root),
                               "--limit", "1", *extra], capture_output=True, text=True, env=env, timeout=900,
                              check=False)

    first = run("--output", str(tmp_path / "gold.json"))
    assert first.returncode == 0, first.stderr
    gold = json.loads((tmp_path / "gold.json").read_text())
    assert gold["vkd_fast"]["protocol"] == "clear" and "bb14c96" in gold["vkd_fast"]["template_revision"]
    for task in ("Real Faces", "Real World", "Retain", "Retain FaceRec", "Forget", "Forget FaceRec"):
        for metric in ("Prob.", "ROUGE", "Truth Ratio"):
            assert 0 <= gold[f"{metric} {task}"] <= 1, (metric, task)
    lines = (tmp_path / "gold.questions.jsonl").read_text().splitlines()
    assert len(lines) == 6 and all(json.loads(x)["generation_prompt"].startswith("USER: \n") for x in lines)
    second = run("--reference", str(tmp_path / "gold.json"), "--output", str(tmp_path / "b.json"))
    assert second.returncode == 0, second.stderr
    b = json.loads((tmp_path / "b.json").read_text())
    assert b["KS test p-value"] == pytest.approx(1.0) and b["JS metric"] == pytest.approx(0.0, abs=1e-6)
    bad = run("--reference", str(tmp_path / "missing.json"))
    assert bad.returncode == 2 and "--reference" in bad.stderr.strip().splitlines()[-1]


def test_scorer_adds_bos_like_the_processor():
    """CLEAR tokenises its LLaVA string with the processor, which adds BOS: the scorer does too."""
    from PIL import Image
    from tokenizers import processors

    model, tok = T.tiny_llava(), T.tiny_tokenizer()
    tok._tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    adapter = get_adapter(model)
    image = Image.new("RGB", (8, 8), YELLOW)
    scorer = ClearScorer(model, adapter, tok)
    got = scorer("what is the job ?", image, ["baker"])[0]
    inputs = adapter.preprocess([image])
    n = adapter.num_image_tokens(**inputs)[0]
    prompt = [1] + tok("USER: " + "<image>" * n + "\nwhat is the job ? ASSISTANT:", add_special_tokens=False).input_ids
    full = prompt + tok(" baker", add_special_tokens=False).input_ids
    assert scorer.renderer.encode(scorer_prompt("what is the job ?", image), answer="baker")[0] == full
    x = torch.tensor([full])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=x, attention_mask=torch.ones_like(x), **inputs).logits[0].float(), -1)
    want = -sum(float(logp[i - 1, full[i]]) for i in range(len(prompt), len(full))) / (len(full) - len(prompt))
    assert got == pytest.approx(want, rel=1e-5)


def scorer_prompt(question, image):
    from vkd_fast.eval.protocols import Prompt, Turn
    from vkd_fast.eval.protocols.prompt import IMAGE_SLOT

    return Prompt((Turn("USER: ", f"{IMAGE_SLOT}\n{question}"),), " ASSISTANT:", (image,))


def test_a_bad_reference_is_refused_before_any_work(root, tmp_path, capsys):
    from vkd_fast.cli import main

    (tmp_path / "likelihood.json").write_text(json.dumps({"model": "x", "metrics": {"forget_vqa": 0.5}}))
    code = main(["eval", str(tmp_path / "no-model-here"), "--data", "clear", "--root", str(root),
                 "--reference", str(tmp_path / "likelihood.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "--reference" in err[-1] and "truth ratios" in err[-1]
    s = Scripted()
    with pytest.raises(ValueError, match="truth ratios"):
        evaluate_clear(s.generate, s.score, load_clear_benchmark(root), reference={"vkd_fast": {"truth_ratios": {}}})
    assert not s.scored  # refused before scoring anything
