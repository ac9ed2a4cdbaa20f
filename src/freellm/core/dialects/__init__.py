"""Translations between OpenAI's chat format and each provider dialect: pure functions only."""
