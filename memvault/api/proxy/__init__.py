"""The OpenAI-compatible chat proxy: an app points its base URL at memvault and gains memory.

Each request's new messages are saved as turns, what memvault remembers is added to the prompt,
the call goes on to the configured LLM, and its answer is saved too (`chat.ChatProxy`). The
routes are in `memvault.api.routes.chat`.
"""
