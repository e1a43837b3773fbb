"""Groq SDK (a Stainless SDK): chat completions (create, sync and async, streams) and embeddings.

One declaration on the Stainless core: Groq's chat API is OpenAI's, so requests, responses, content and stream
chunks are read by openai.py's chat readers, which also read the usage Groq reports unasked in a stream's finish
chunk (``x_groq.usage``): ``stream_options`` is neither needed nor sent.
"""

from __future__ import annotations

from ._stainless import Endpoint, Sdk, StainlessInstrumentor
from .openai import ChatRecorder, chat_inputs, chat_request, chat_response, embeddings_request, embeddings_response

SDK = Sdk(
    module="groq",
    routes={
        "/openai/v1/chat/completions": Endpoint("chat", chat_request, chat_response, chat_inputs, ChatRecorder),
        "/openai/v1/embeddings": Endpoint("embeddings", embeddings_request, embeddings_response),
    },
    provider_name=lambda client, host: "groq",
    instruments=("groq >= 0.9",),
)


class GroqInstrumentor(StainlessInstrumentor):
    """Instruments the groq SDK (entry point `opentelemetry_instrumentor: groq`)."""

    sdk = SDK
