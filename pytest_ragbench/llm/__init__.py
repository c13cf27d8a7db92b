"""LLM providers, embedders and what makes calling them robust (resilience, cache, usage)."""
