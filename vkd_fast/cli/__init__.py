"""``vkd-fast`` command line: ``main.py`` (parsers, dispatch), ``commands.py`` (each subcommand's
work), ``options.py`` (options from YAML / ``key=value``, plug-ins), ``specs.py`` (data, model and
tokenizer arguments), ``doctor.py`` (the environment report)."""

from .doctor import doctor_report
from .main import main
from .specs import load_items, load_model

__all__ = ["doctor_report", "load_items", "load_model", "main"]
