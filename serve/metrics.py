"""``GET /metrics``: the server's counters and gauges in Prometheus's text format."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gptedge.serve.http import App


def prometheus(app: "App") -> str:
    e = app.engine
    figures = [
        ("gptedge_requests_total", "counter", "completion requests accepted", e.counts["requests"]),
        ("gptedge_requests_rejected_total", "counter", "requests refused with 429 (slots and queue full)",
         app.rejected),
        ("gptedge_requests_cancelled_total", "counter", "requests cancelled (their client went away)",
         e.counts["cancelled"]),
        ("gptedge_prompt_tokens_total", "counter", "prompt tokens of accepted requests", e.counts["prompt_tokens"]),
        ("gptedge_generated_tokens_total", "counter", "tokens generated", e.counts["generated_tokens"]),
        ("gptedge_tokens_per_second", "gauge", "tokens generated per second, all requests, last 10 s",
         round(e.tokens_per_second(), 3)),
        ("gptedge_queue_depth", "gauge", "requests waiting for a slot", e.queued),
        ("gptedge_slots_in_use", "gauge", "slots decoding a request", e.busy),
        ("gptedge_slots", "gauge", "slots (rows of the batch)", e.slots),
    ]
    lines = []
    for name, kind, help_text, value in figures:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]
    return "\n".join(lines) + "\n"
