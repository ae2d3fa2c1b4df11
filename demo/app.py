"""The demo page: type a prompt, watch the answer stream, see what each variant and setting costs.
A bundle that declares a chat template gets a Chat tab first: messages laid out by its template.

    gptedge demo [BUNDLE]          # in Python: serve(ModelPool(bundle), host, port)

Offline by construction: a theme with system fonts only (no web fonts), analytics off, no share
link unless asked, bound to 127.0.0.1 by default. Requests wait in a bounded queue and at most
``CONCURRENCY`` generate at once (the machine's cores are the real limit). A user's mistake (empty
or over-long prompt, a variant that does not run on the chosen provider, a bundle removed while
the page runs) is shown as a message in the page, never as a traceback.

The page's API (``/generate``, ``/next_word``, ``/chat``; gradio_client or a raw POST) can send
values the widgets never would: a variant not in the list, a number out of a slider's range, NaN,
a string, a lone surrogate. gradio's own checks of those (its components' ``preprocess``) answer
with a traceback in the server log, so the events run with ``preprocess=False`` and the handlers
check every value themselves (``checked``), against the same widgets, answering with a message.
The chat's history is not among them: it is kept on the server (``gr.State``), since gradio checks
a chat box's value before any handler runs.
"""

from __future__ import annotations

import os

# gradio reads this (not only Blocks' analytics_enabled) before each telemetry call and version check.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

from typing import Any, Iterator  # noqa: E402

import gradio as gr  # noqa: E402

from gptedge.demo import views  # noqa: E402
from gptedge.demo.models import (  # noqa: E402
    MAX_NEW_TOKENS,
    MAX_PROMPT_CHARS,
    ModelPool,
    chat_messages,
    check_choice,
    check_prompt,
    page_number,
    settings_from_page,
)
from gptedge.errors import UserError  # noqa: E402

CONCURRENCY = 2  # generations running at once; more only share the same cores
QUEUE_SIZE = 16  # requests waiting beyond that are turned away with a message

EXAMPLES = [
    "The for statement is used to",
    "A class definition defines",
    "When an exception is raised,",
    "The import statement",
]

THEME = gr.themes.Default(
    font=["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"],
    font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"],
)

CSS = """
.answer-tokens { line-height: 2.6; font-family: var(--font-mono); white-space: pre-wrap; }
.tok-prompt { color: var(--body-text-color-subdued); }
.tok { display: inline-flex; flex-direction: column; align-items: center; margin: 0 1px;
       padding: 0 2px; border-radius: 3px; line-height: 1.3; vertical-align: top; }
.tok-p { font-size: 0.7em; color: var(--body-text-color-subdued); }
"""


def text_widgets() -> tuple[gr.Textbox, gr.Button, gr.Button, gr.Button, gr.Textbox, gr.Markdown]:
    """A prompt for the model to continue, its buttons, and the answer with its stats line."""
    prompt = gr.Textbox(
        label=f"Prompt (up to {MAX_PROMPT_CHARS:,} characters)",
        lines=3,
        placeholder="Type the beginning of a text…",
        elem_id="prompt",
    )
    with gr.Row():
        generate = gr.Button("Generate", variant="primary", elem_id="generate")
        next_word = gr.Button("Next word only", elem_id="next-word")
        stop = gr.Button("Stop", variant="stop", elem_id="stop")
    gr.Examples(EXAMPLES, inputs=prompt, label="Example prompts", elem_id="examples")
    answer = gr.Textbox(label="Answer", lines=8, interactive=False, elem_id="answer")
    stats = gr.Markdown("", elem_id="stats")
    return prompt, generate, next_word, stop, answer, stats


def chat_widgets() -> tuple[gr.Chatbot, gr.State, gr.Textbox, gr.Button, gr.Button, gr.Button, gr.Markdown]:
    """The conversation (shown, and kept as the model saw it), a message box, its buttons and the last
    answer's stats line."""
    # Plain text, as the model wrote it (as Markdown, a small model's ">>>" or "*" would vanish); no share
    # button (it needs Hugging Face) and no likes (nobody collects them).
    chatbot = gr.Chatbot(label="Conversation", height=360, render_markdown=False, buttons=["copy", "copy_all"],
                         feedback_options=None, elem_id="chat")
    history = gr.State([])  # per visitor, on the server: what the model was given and answered
    message = gr.Textbox(label=f"Message (up to {MAX_PROMPT_CHARS:,} characters)", lines=2,
                         placeholder="Type a message…", elem_id="chat-message")
    with gr.Row():
        send = gr.Button("Send", variant="primary", elem_id="chat-send")
        stop = gr.Button("Stop", variant="stop", elem_id="chat-stop")
        clear = gr.Button("Clear", elem_id="chat-clear")
    stats = gr.Markdown("", elem_id="chat-stats")
    return chatbot, history, message, send, stop, clear, stats


def build_page(pool: ModelPool) -> gr.Blocks:
    sampling = pool.manifest.sampling
    headers, rows = views.variant_table(pool.manifest)
    is_chat = pool.manifest.chat_template is not None

    with gr.Blocks(title="gptedge demo", analytics_enabled=False) as page:
        gr.Markdown(views.bundle_description(pool.manifest, pool.bundle_dir))
        with gr.Row():
            with gr.Column(scale=3):
                if is_chat:  # a chat model: its conversation first, plain text beside it
                    with gr.Tabs():
                        with gr.Tab("Chat", id="chat", elem_id="chat-tab"):
                            chatbot, history, message, send, chat_stop, clear, chat_stats = chat_widgets()
                        with gr.Tab("Text", id="text", elem_id="text-tab"):
                            prompt, generate, next_word, stop, answer, stats = text_widgets()
                else:
                    prompt, generate, next_word, stop, answer, stats = text_widgets()
            with gr.Column(scale=2):
                variant = gr.Dropdown(pool.variants, value=pool.default_variant, label="Variant", elem_id="variant")
                provider = gr.Dropdown(pool.providers, value=pool.default_provider, label="Provider",
                                       elem_id="provider")
                temperature = gr.Slider(0.0, 2.0, value=sampling.temperature, step=0.05,
                                        label="Temperature", info="0 always picks the most likely token",
                                        elem_id="temperature")
                top_k = gr.Slider(0, 200, value=sampling.top_k, step=1, label="Top-k", info="0: off")
                top_p = gr.Slider(0.05, 1.0, value=sampling.top_p, step=0.01, label="Top-p", info="1: off")
                repetition_penalty = gr.Slider(0.5, 2.0, value=sampling.repetition_penalty, step=0.05,
                                               label="Repetition penalty", info="1: off")
                max_new_tokens = gr.Slider(1, MAX_NEW_TOKENS, step=1, label="Max new tokens", elem_id="max-new-tokens",
                                           value=min(MAX_NEW_TOKENS, sampling.max_new_tokens))
                seed = gr.Number(value=-1, precision=0, minimum=-1, label="Seed",
                                 info="-1: a new random seed each time")
                stop_strings = gr.Textbox(label="Stop strings", lines=2, info="one per line; \\n stands for a newline")
        gr.Markdown("### Next word\nWhat the model thinks comes next, before temperature, top-k and top-p "
                    "reshape it: the 10 most likely tokens after the prompt (click one to append it and see the "
                    "next choice), and for each token of the answer the probability the model gave it (pale: a "
                    "surprise that sampling picked anyway).")
        with gr.Row():
            with gr.Column(scale=2):
                bars = gr.Label(label="The 10 most likely next tokens",
                                num_top_classes=10, show_heading=False, elem_id="next-word-bars")
            with gr.Column(scale=3):
                tokens = gr.HTML(label="Each generated token and the probability the model gave it",
                                 elem_id="answer-tokens")
        gr.Markdown("### Look inside\nThe prompt and the answer through the model once more, showing what "
                    "happens inside: who attends to whom in each layer and head, and how the guess for the next "
                    "token forms layer by layer." + ("" if pool.inspection_variant else
                    f" This bundle has no inspection variant yet: add it with `gptedge inspect --make "
                    f"{pool.bundle_dir}`."))
        shape = pool.manifest.model
        with gr.Row():
            look = gr.Button("Look inside", elem_id="look-inside", interactive=pool.inspection_variant is not None)
            layer = gr.Dropdown(list(range(shape.n_layer)), value=0, label="Layer", elem_id="inspect-layer")
            head = gr.Dropdown(list(range(shape.n_head)), value=0, label="Head", elem_id="inspect-head")
            token = gr.Dropdown([], label="Token", info="whose attention the bars show", elem_id="inspect-token")
        with gr.Row():
            with gr.Column(scale=3):
                gr.Markdown(views.ATTENTION_CAPTION)
                heatmap = gr.Plot(label="Attention", elem_id="attention-map")
            with gr.Column(scale=2):
                gr.Markdown(views.LENS_CAPTION)
                lens = gr.Dataframe(interactive=False, elem_id="lens-table")
        gr.Markdown(views.POURS_CAPTION)
        pours = gr.Plot(label="Where the chosen token looks", elem_id="attention-pours")
        gr.Markdown("### This bundle's variants\nSize from the manifest; held-out perplexity, agreement with "
                    "fp32's next token and greedy text, and speed from `gptedge eval` (blank until it has run).")
        gr.Dataframe(value=rows, headers=headers, interactive=False, elem_id="variants")

        choice = [variant, provider]
        knobs = [temperature, top_k, top_p, repetition_penalty, max_new_tokens, seed, stop_strings]

        def checked(variant_name: Any, provider_name: Any, *values: Any) -> Any:
            """The model chosen, after each knob's value is held to its widget's bounds."""
            check_choice(variant_name, pool.variants, "variant")
            check_choice(provider_name, pool.providers, "provider")
            for widget, value in zip(knobs, values):
                if isinstance(widget, gr.Slider) or (isinstance(widget, gr.Number) and value is not None):
                    page_number(value, widget.label.lower(), widget.minimum, widget.maximum)
            return pool.get(variant_name, provider_name)

        def run_generate(text: str, variant_name: str, provider_name: str, *values: Any) -> Iterator[tuple]:
            try:
                text, model = check_prompt(text), checked(variant_name, provider_name, *values)
                settings = settings_from_page(*values)
                yield "", "generating…", views.candidate_bars(pool.next_words(model, text)), ""
                shown = ""
                for piece in pool.stream(model, text, settings):
                    if isinstance(piece, str):
                        shown += piece
                        yield shown, gr.skip(), gr.skip(), gr.skip()
                    else:
                        result = piece
                probabilities = pool.answer_probabilities(model, text, result)
                yield (result.text, views.stats_line(result, variant_name, provider_name), gr.skip(),
                       views.answer_html(text, probabilities))
            except UserError as e:
                gr.Warning(str(e))
                yield gr.skip(), f"⚠ {e}", gr.skip(), gr.skip()

        def run_chat(text: Any, history: list, variant_name: Any, provider_name: Any, *values: Any) -> Iterator[tuple]:
            """The conversation with the user's message and the model's answer streaming in; then the
            answer joins the history the next message is sent with."""
            try:
                messages, model = chat_messages(history, text), checked(variant_name, provider_name, *values)
                settings = settings_from_page(*values)
                prompt_text = model.chat_prompt(messages)
                answered = lambda text: [*messages, {"role": "assistant", "content": text}]  # noqa: E731
                yield views.conversation(answered("")), gr.skip(), "", "generating…"
                shown = ""
                for piece in pool.stream(model, prompt_text, settings):
                    if isinstance(piece, str):  # a new list each time: gradio sends what changed since the last one
                        shown += piece
                        yield views.conversation(answered(shown)), gr.skip(), gr.skip(), gr.skip()
                    else:
                        result = piece
                yield (views.conversation(answered(result.text)), answered(result.text), gr.skip(),
                       views.stats_line(result, variant_name, provider_name))
            except UserError as e:
                gr.Warning(str(e))
                yield gr.skip(), gr.skip(), gr.skip(), f"⚠ {e}"

        def run_next_word(text: str, variant_name: str, provider_name: str) -> Any:
            try:
                text, model = check_prompt(text), checked(variant_name, provider_name)
                return views.candidate_bars(pool.next_words(model, text))
            except UserError as e:  # a toast in the page, an error with this message for an API caller
                raise gr.Error(str(e), print_exception=False) from None

        def pick_word(text: str, variant_name: str, provider_name: str, evt: gr.SelectData) -> Any:
            """Append the clicked candidate to the prompt: generation by hand, one choice at a time."""
            try:
                text, model = check_prompt(text), checked(variant_name, provider_name)
                candidates = pool.next_words(model, text)
            except UserError as e:
                raise gr.Error(str(e), print_exception=False) from None
            chosen = dict(zip(views.candidate_bars(candidates), candidates)).get(evt.value)
            return text + chosen.text if chosen is not None else gr.skip()

        def inspected(text: Any, answer_text: Any) -> Any:
            text = check_prompt(text)
            if answer_text is not None and not isinstance(answer_text, str):
                raise UserError(f"the answer must be text, not {type(answer_text).__name__}")
            return pool.look_inside(text + (answer_text or ""))

        def run_look(text: Any, answer_text: Any, layer_value: Any, head_value: Any) -> tuple:
            try:
                seen = inspected(text, answer_text)
                L = page_number(layer_value, "layer", 0, shape.n_layer - 1)
                H = page_number(head_value, "head", 0, shape.n_head - 1)
                last = len(seen.tokens) - 1
                headers, rows = views.lens_rows(seen)
                return (gr.update(choices=views.token_choices(seen), value=last), views.attention_figure(seen, int(L), int(H)),
                        views.pours_figure(seen, int(L), last), gr.update(value=rows, headers=headers))
            except UserError as e:
                raise gr.Error(str(e), print_exception=False) from None

        def run_pick(text: Any, answer_text: Any, layer_value: Any, head_value: Any, token_value: Any) -> tuple:
            try:
                seen = inspected(text, answer_text)
                L = int(page_number(layer_value, "layer", 0, shape.n_layer - 1))
                H = int(page_number(head_value, "head", 0, shape.n_head - 1))
                last = len(seen.tokens) - 1
                chosen = last if token_value is None else int(page_number(token_value, "token", 0, last))
                return views.attention_figure(seen, L, H), views.pours_figure(seen, L, chosen)
            except UserError as e:
                raise gr.Error(str(e), print_exception=False) from None

        # One queue for everything that runs the model, so CONCURRENCY bounds them together.
        inputs, outputs = [prompt, *choice, *knobs], [answer, stats, bars, tokens]
        raw = dict(concurrency_id="model", preprocess=False)  # values reach the handlers as sent: see `checked`
        clicked = generate.click(run_generate, inputs, outputs, api_name="generate", **raw)
        submitted = prompt.submit(run_generate, inputs, outputs, api_name=False, **raw)
        next_word.click(run_next_word, [prompt, *choice], bars, api_name="next_word", **raw)
        bars.select(pick_word, [prompt, *choice], prompt, api_name=False, **raw).then(
            run_next_word, [prompt, *choice], bars, api_name=False, **raw)
        stop.click(lambda: "stopped", None, stats, cancels=[clicked, submitted], queue=False, api_name=False)
        look.click(run_look, [prompt, answer, layer, head], [token, heatmap, pours, lens], api_name="look_inside", **raw)
        for widget in (layer, head, token):
            widget.input(run_pick, [prompt, answer, layer, head, token], [heatmap, pours], api_name=False, **raw)
        if is_chat:
            chat_inputs, chat_outputs = [message, history, *choice, *knobs], [chatbot, history, message, chat_stats]
            sent = send.click(run_chat, chat_inputs, chat_outputs, api_name="chat", **raw)
            entered = message.submit(run_chat, chat_inputs, chat_outputs, api_name=False, **raw)
            chat_stop.click(lambda: "stopped", None, chat_stats, cancels=[sent, entered], queue=False, api_name=False)
            cleared = dict(fn=lambda: ([], [], "", ""), inputs=None, outputs=[chatbot, history, message, chat_stats],
                           queue=False, api_name=False)
            clear.click(**cleared)
            chatbot.clear(**cleared)  # the box's own clear icon forgets the history too
    return page


def serve(
    pool: ModelPool,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    block: bool = True,
) -> gr.Blocks:
    """Start the page; with ``block=False`` return at once (tests, notebooks) and leave it running."""
    pool.get(pool.default_variant, pool.default_provider)  # load now: the first visitor should not wait
    page = build_page(pool)
    page.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY)
    page.launch(
        server_name=host,
        server_port=port,
        share=share,
        prevent_thread_lock=not block,
        theme=THEME,
        css=CSS,
        quiet=not block,
        show_error=False,
        footer_links=["api"],
    )
    return page
