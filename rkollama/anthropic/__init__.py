"""Anthropic's Messages API wire protocol and translators."""
