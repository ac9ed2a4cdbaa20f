"""freellm: one OpenAI-compatible endpoint in front of many free-tier LLM providers."""

__version__ = "0.1.0"
