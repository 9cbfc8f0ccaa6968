"""Real instrumentation libraries against the fake OpenAI server (tests/test_genai_*.py)."""
