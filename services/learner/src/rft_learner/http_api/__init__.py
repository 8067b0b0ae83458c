"""The OpenAI-compatible HTTP API: files, fine-tuning jobs, graders, models and chat
completions in OpenAI's paths and payloads, served by the learner process next to its
gRPC API (docs/openai-migration.md)."""
