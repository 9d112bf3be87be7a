"""Benchmarks' own evaluation protocols, beside our likelihood protocol (docs/method.md §4.3):
``mllmu`` (MLLMU-Bench's ``eval.py``: generated letters, fill-in-the-blank, ROUGE / BLEU) and
``clear`` (CLEAR's probabilities, truth ratios, ROUGE-L recall, forget quality), seeded, with a
per-question audit record for every score. Run them through :func:`vkd_fast.eval.evaluate` with
``protocol=``, or directly. Each registers itself (:func:`register_protocol`) where it is defined
(imported in the order they are listed: mllmu, clear)."""
# isort: skip_file

from .mllmu import MllmuBenchmark, MllmuProtocol, evaluate_mllmu, load_mllmu_benchmark, parse_choice
from .clear import ClearBenchmark, ClearProtocol, ClearScorer, evaluate_clear, load_clear_benchmark
from .prompt import ModelGenerator, Prompt, PromptRenderer, Turn
from .registry import BenchmarkProtocol, available_protocols, register_protocol

#: the protocols shipped with the package (``available_protocols()`` adds any registered later)
PROTOCOLS = available_protocols()

__all__ = ["PROTOCOLS", "BenchmarkProtocol", "ClearBenchmark", "ClearProtocol", "ClearScorer", "MllmuBenchmark",
           "MllmuProtocol", "ModelGenerator", "Prompt", "PromptRenderer", "Turn", "available_protocols",
           "evaluate_clear", "evaluate_mllmu", "load_clear_benchmark", "load_mllmu_benchmark", "parse_choice",
           "register_protocol"]
