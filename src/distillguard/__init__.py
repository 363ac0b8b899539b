"""distillguard: detect, stop, attribute and share intelligence on LLM distillation attacks."""

__version__ = "0.1.0"
