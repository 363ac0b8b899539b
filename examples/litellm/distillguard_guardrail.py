"""Shim that lets a LiteLLM proxy load distillguard's guardrail: keep this file next to config.yaml.

LiteLLM resolves ``guardrail: distillguard_guardrail.DistillGuardGuardrail`` to a file beside its config, so this
file only re-exports the class from the installed distillguard package.
"""

from distillguard.gateway.litellm_guardrail import DistillGuardGuardrail

__all__ = ["DistillGuardGuardrail"]
