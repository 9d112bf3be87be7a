"""The benchmark-protocol registry (vkd_fast.eval.protocols.registry): evaluate() runs any registered
protocol by name, checks its data type and options, and knows none by name."""

import _tiny_models as T
import pytest

from vkd_fast.eval import available_protocols, evaluate, register_protocol
from vkd_fast.eval.protocols import BenchmarkProtocol
from vkd_fast.eval.protocols.registry import PROTOCOLS


class Questions(list):
    """The data a toy protocol evaluates: (question, expected answer) pairs."""


class ExactText(BenchmarkProtocol):
    summary = "greedy answer equals the expected text"
    data_type = Questions
    loader = "Questions([...])"
    options = ("max_new_tokens",)

    @classmethod
    def run(cls, model, tokenizer, data, adapter, generator, style, options):
        from vkd_fast.eval.protocols import Prompt, Turn

        n = options.get("max_new_tokens", 2)
        answers = [generator(Prompt((Turn("USER: ", q),), "ASSISTANT:"), n) for q, _ in data]
        records = [{"question": q, "generation": a, "correct": a == want} for (q, want), a in zip(data, answers)]
        return {"results": {"accuracy": sum(r["correct"] for r in records) / len(records)}, "records": records,
                "settings": {"max_new_tokens": n}}


@pytest.fixture
def exact():
    register_protocol("exact_text", ExactText)
    yield
    PROTOCOLS.remove("exact_text")


def test_a_registered_protocol_runs_through_evaluate(exact):
    assert available_protocols()[:3] == ("likelihood", "mllmu", "clear") and "exact_text" in available_protocols()
    model, tok = T.tiny_llava(), T.tiny_tokenizer()
    out = evaluate(model, tok, Questions([("What is red?", "x"), ("Who?", "y")]), protocol="exact_text",
                   max_new_tokens=3)
    assert len(out["records"]) == 2 and out["settings"]["max_new_tokens"] == 3
    assert out["results"]["accuracy"] == sum(r["generation"] == w for r, w in zip(out["records"], "xy")) / 2
    assert out["settings"]["model_type"] == "llava" and out["settings"]["prompt_format"]
    with pytest.raises(TypeError, match=r"protocol='exact_text' evaluates a benchmark folder: pass Questions\(\[\.\.\.\]\)"):
        evaluate(model, tok, {"forget_vqa": []}, protocol="exact_text")
    with pytest.raises(TypeError, match=r"protocol='exact_text' takes max_new_tokens; got \['seed'\]"):
        evaluate(model, tok, Questions([("q", "a")]), protocol="exact_text", seed=1)


def test_registry_refuses_the_runner_s_own_name_and_unknown_protocols():
    with pytest.raises(ValueError, match="'likelihood' is the runner's own"):
        register_protocol("likelihood", ExactText)
    with pytest.raises(ValueError, match="protocol must be one of"):
        evaluate(T.tiny_llava(), T.tiny_tokenizer(), {"a": []}, protocol="nope")
