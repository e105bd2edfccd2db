"""Fake LLM servers for tests and benchmarks: real wire formats on 127.0.0.1, injectable faults."""

from .base import Delivered, FakeLLMServer, Faults
from .gemini import FakeGemini
from .openai_server import FakeOpenAI

__all__ = ["Delivered", "FakeGemini", "FakeLLMServer", "FakeOpenAI", "Faults"]
