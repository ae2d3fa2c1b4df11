"""``gptedge serve``: an OpenAI-compatible HTTP server over one bundle variant, with continuous
batching (``gptedge.runtime.Engine``). Imports only the runtime and the standard library, so it
runs wherever the runtime does.

    openai.py   the completions API as data: requests checked, responses and errors shaped
    http.py     the threaded HTTP server: routes, API key, server-sent events, disconnects
    metrics.py  Prometheus text for /metrics
    cli.py      the command
"""
