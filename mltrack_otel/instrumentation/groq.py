"""Groq SDK (a Stainless SDK): chat completions (create, sync and async, streams) and embeddings.

One declaration on the Stainless core: Groq's chat API is OpenAI's, so requests, responses, content and stream
chunks are read by openai.py's chat readers. The one difference: Groq reports a stream's usage unasked, in the
``x_groq.usage`` of the chunk that carries the finish reason (``stream_options`` is neither needed nor sent).
"""

from __future__ import annotations

from typing import Any

from ._stainless import Endpoint, Sdk, StainlessInstrumentor
from .openai import ChatRecorder, chat_inputs, chat_request, chat_response, embeddings_request, embeddings_response


class GroqChatRecorder(ChatRecorder):
    """OpenAI chat chunks, with the usage Groq puts in ``x_groq`` of the finish chunk."""

    __slots__ = ()

    def feed(self, chunk: Any) -> bool:
        keep = super().feed(chunk)
        if self.usage is None:
            extra = getattr(chunk, "x_groq", None)
            if extra is not None and extra.usage is not None:
                self.usage = extra.usage
        return keep


SDK = Sdk(
    module="groq",
    routes={
        "/openai/v1/chat/completions": Endpoint("chat", chat_request, chat_response, chat_inputs, GroqChatRecorder),
        "/openai/v1/embeddings": Endpoint("embeddings", embeddings_request, embeddings_response),
    },
    provider_name=lambda client, host: "groq",
    instruments=("groq >= 0.9",),
)


class GroqInstrumentor(StainlessInstrumentor):
    """Instruments the groq SDK (entry point `opentelemetry_instrumentor: groq`)."""

    sdk = SDK
