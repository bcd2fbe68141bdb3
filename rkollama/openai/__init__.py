"""OpenAI's wire protocol (/v1): pure translators to and from the core request and events."""
