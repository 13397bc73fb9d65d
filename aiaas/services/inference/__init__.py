"""Inference as one use case (service.py), with its parts: what a name resolves to (targets.py),
loading artifacts (loader.py), the token estimate (tokens.py), charging and metering
(metering.py), and shaping answers (shaping.py)."""

from aiaas.services.inference.metering import Caller
from aiaas.services.inference.service import OIP_VERSION, Answer, InferenceService, check_inputs
from aiaas.services.inference.targets import Target
from aiaas.services.inference.tokens import estimate_tokens

__all__ = ["OIP_VERSION", "Answer", "Caller", "InferenceService", "Target", "check_inputs", "estimate_tokens"]
