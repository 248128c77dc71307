"""The OpenAI-compatible request and response shapes, shared by CLI and gateway."""
