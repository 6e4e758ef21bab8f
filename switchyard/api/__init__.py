"""The OpenAI-compatible front door: Files, Batches, chat completions and models over HTTP."""
