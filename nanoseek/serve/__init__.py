"""nanoseek.serve: a model behind an OpenAI/DeepSeek-compatible HTTP API, with a web chat page.

    nanoseek serve --model runs/sft/model          # `cli.serve_main`; flags in cli.py, docs/serving.md

    from nanoseek.serve import ServerConfig, create_app
    app = create_app(engine, ServerConfig(model_name="sft"))     # a FastAPI app; run it with uvicorn

Modules: `app` (the FastAPI app, error handlers, body limit), `chat_routes` (/v1/chat/completions),
`completions` (/v1/completions, echo + logprobs), `envelope` (what both share: the response and chunk
envelope, usage, the SSE stream), `openai_schema` (request bodies and validation),
`bridge` (the engine from asyncio: deltas, disconnects, timeouts, the queue bound), `logprobs`,
`usage` (token counts and cost), `metrics` (Prometheus), `auth` (API keys), `config`, `cli`,
`connections` (uvicorn with read deadlines and a connection cap), `demo` (a scripted toy checkpoint),
`background` (uvicorn on a thread), `loadgen` (streaming load), `static/` (the chat page).
"""

from nanoseek.serve.app import create_app
from nanoseek.serve.config import Prices, ServerConfig

__all__ = ["Prices", "ServerConfig", "create_app"]
