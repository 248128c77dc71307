"""The OpenAI-compatible gateway (FastAPI + uvicorn)."""
