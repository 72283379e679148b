"""The chat page: build_ui(coach, settings) -> gr.Blocks (never launches by itself).

Built from Gradio's public components and events only: a Chatbot drawn from the conversation kept as
data (coach.ui.chat), a Textbox, the saved conversations in the browser (BrowserState), the "My plan"
panel (coach.ui.plan_panel), and an `/chat` API endpoint for gradio_client.
"""

from __future__ import annotations

import html
from collections.abc import AsyncIterator, Generator
from typing import Any

import gradio as gr

from coach.background import in_background
from coach.coach import Coach
from coach.config import Settings
from coach.errors import CoachError
from coach.feedback import FeedbackStore
from coach.llm.base import parallel_answers
from coach.planner.store import PlanStore
from coach.ui import chat
from coach.ui.answering import (
    Backends,
    Step,
    answer_steps,
    forget,
    save_conversation,
    settle,
    status_line,
)
from coach.ui.chat import Conversation
from coach.ui.feedback import record_feedback
from coach.ui.identity import Identity
from coach.ui.plan_panel import PlanService, build_panel, wire_panel
from coach.ui.server import browser_storage_key

API_NAME = "chat"
ANSWERING = "coach-answer"  # the concurrency group of everything that asks the model
EXAMPLES = [
    ("Responsibilities", "What are the key responsibilities of the role?"),
    ("Skills", "Which technical and soft skills does the role require?"),
    ("Progression", "How does career progression work in this role?"),
    ("Pay", "What is the base salary range in the US?"),
]


# -- the page ---------------------------------------------------------------------------------------
def build_ui(coach: Coach, settings: Settings, store: PlanStore | None = None) -> gr.Blocks:
    """The chat page for this coach; call launch()/serve() to run it."""
    backends = Backends(coach, settings)
    store = store or PlanStore(settings.database)
    feedback = FeedbackStore(store.database)  # the same database and connections as the profiles
    plans = PlanService(coach, store, Identity.of(settings))
    try:
        role = coach.role()
        roles = coach.roles()
    except CoachError:
        role, roles = "this role", ()

    def submit_steps(message: str, conversation: Conversation | None, backend: str | None, top_k: float | None,
                     person: str = "", picked_role: str | None = None) -> Generator[tuple[Any, ...], None, None]:
        if not (message or "").strip():
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        busy = gr.Textbox(value="", submit_btn=False, stop_btn=True)
        profile = plans.saved_profile(person)
        for step in answer_steps(backends, settings, message, conversation, backend, top_k, profile, picked_role):
            yield busy, *step

    def api_steps(message: str, conversation: Conversation | None, backend: str | None, top_k: float | None,
                  picked_role: str | None = None) -> Generator[Step, None, None]:
        if not (message or "").strip():
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        yield from answer_steps(backends, settings, message, conversation, backend, top_k, role=picked_role)

    # Async generators, so that a stop is felt while the model is silent (see in_background).
    async def on_submit(message: str, conversation: Conversation | None, backend: str | None,
                        top_k: float | None, picked_role: str | None, request: gr.Request
                        ) -> AsyncIterator[tuple[Any, ...]]:
        person = plans.person(request)
        async for step in in_background(lambda: submit_steps(message, conversation, backend, top_k, person,
                                                             picked_role)):
            yield step

    async def on_api(message: str, conversation: Conversation | None, backend: str | None, top_k: float | None,
                     picked_role: str | None = None) -> AsyncIterator[Step]:
        async for step in in_background(lambda: api_steps(message, conversation, backend, top_k, picked_role)):
            yield step

    async def on_example(conversation: Conversation | None, backend: str | None, top_k: float | None,
                         picked_role: str | None, data: gr.SelectData, request: gr.Request
                         ) -> AsyncIterator[tuple[Any, ...]]:
        value = data.value if isinstance(data.value, dict) else {}
        question, person = str(value.get("text", "")), plans.person(request)
        async for step in in_background(lambda: submit_steps(question, conversation, backend, top_k, person,
                                                             picked_role)):
            yield step

    def on_role(picked_role: str | None) -> tuple[Any, Any]:
        """Another role picked: a new conversation about it (the one shown is saved and keeps its own role)."""
        return chat.new_conversation(picked_role), []

    def on_open(index: int, saved_chats: list[Conversation] | None) -> tuple[Any, Any, Any]:
        """A saved conversation opened: shown, and the picker set to its role."""
        if not saved_chats or not 0 <= index < len(saved_chats):
            return gr.skip(), gr.skip(), gr.skip()
        picked = saved_chats[index]
        kept = chat.role_of(picked)
        return picked, chat.render(picked), gr.Dropdown(value=kept) if kept in roles else gr.skip()

    def on_like(conversation: Conversation | None, data: gr.LikeData) -> str:
        return record_feedback(feedback, chat.feedback_row(conversation, data.index, data.liked))

    initial = plans.views(None, set())  # made outside the page: an update, not a component of it
    with gr.Blocks(title="Career coach", fill_height=True) as demo:
        conversation = gr.State(None)
        saved = gr.BrowserState([], storage_key="coach_conversations", secret=browser_storage_key(settings))
        title = f"Career coach: {html.escape(role)}" if len(roles) <= 1 else "Career coach"
        gr.Markdown(f"### {title}\nAnswers come only from the knowledge base, with their sources under each answer.")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=160):
                # Shown when the knowledge base holds several roles; each conversation keeps the role it began with.
                role_choice = gr.Dropdown(list(roles), value=roles[0] if roles else None, label="Role",
                                          visible=len(roles) > 1, elem_id="coach-role", interactive=True)
                new_chat = gr.Button("New chat", variant="primary", elem_id="coach-new-chat")
                chats = gr.Dataset(components=[gr.Textbox(visible=False)], samples=[], type="index",
                                   layout="table", label="Conversations", elem_id="coach-chats")
            with gr.Column(scale=4, min_width=360):
                # As tall as the window allows (an open sources block is long), never below 380 px.
                chatbot = gr.Chatbot(label="Coach", height="calc(100vh - 330px)", min_height=380,
                                     elem_id="coach-chatbot", buttons=["copy"], sanitize_html=True,
                                     placeholder="Ask about the role, or pick an example below.",
                                     examples=[{"display_text": label, "text": q} for label, q in EXAMPLES])
                textbox = gr.Textbox(placeholder="Ask a question about the role…", show_label=False, autofocus=True,
                                     submit_btn=True, stop_btn=False, elem_id="coach-input", max_lines=8)
                with gr.Accordion("Settings for this chat", open=False):
                    backend_choice = gr.Dropdown(backends.choices, value=coach.backend_name, label="Backend",
                                                 info="Which model writes the answers")
                    top_k = gr.Slider(1, 10, value=min(settings.top_k, 10), step=1, label="Passages",
                                      info="How many passages to retrieve for each question")
                status = gr.Markdown(status_line(coach), elem_id="coach-status")
                notice = gr.Markdown(elem_id="coach-notice")
                details = gr.JSON(label="details", visible=False)
                api_trigger = gr.Button(visible=False)
            # Room for the Gaps table's five columns; on a narrower window the panel goes below the chat.
            with gr.Column(scale=4, min_width=440, elem_id="plan-panel"):
                gr.Markdown("### My plan")
                panel = build_panel(plans.card(), initial)

        inputs = [textbox, conversation, backend_choice, top_k, role_choice]
        page_outputs = [textbox, chatbot, status, details, conversation]
        # Each answer runs on a worker thread of its own (in_background), up to this many at once.
        answering: dict[str, Any] = {"concurrency_id": ANSWERING,
                                     "concurrency_limit": parallel_answers(settings, coach.backend_name)}
        asked = textbox.submit(on_submit, inputs, page_outputs, api_visibility="private", **answering)
        picked = chatbot.example_select(on_example, inputs[1:], page_outputs, api_visibility="private",
                                        **answering)
        api_trigger.click(on_api, inputs, [chatbot, status, details, conversation], api_name=API_NAME, **answering)
        private: dict[str, Any] = {"queue": False, "api_visibility": "private"}
        for event in (asked, picked):
            event.then(settle, [conversation], [conversation], **private).then(
                lambda c: (gr.Textbox(submit_btn=True, stop_btn=False), chat.render(c)), [conversation],
                [textbox, chatbot], **private).then(
                save_conversation, [conversation, saved], [saved], **private).then(
                plans.on_chat_answer, [details], [*panel.fields, *panel.views, panel.notice], **private)
        wire_panel(demo, panel, plans)
        textbox.stop(None, None, None, cancels=[asked, picked], api_visibility="private")

        chatbot.like(on_like, [conversation], [notice], queue=False, api_visibility="private")
        # Leaving a chat stops its answer in progress, which would otherwise come back and take over the new one.
        leave: dict[str, Any] = {"cancels": [asked, picked], "queue": False, "api_visibility": "private"}
        new_chat.click(lambda r: (chat.new_conversation(r if len(roles) > 1 else None), []), [role_choice],
                       [conversation, chatbot], **leave)
        role_choice.input(on_role, [role_choice], [conversation, chatbot], **leave)
        chatbot.clear(forget, [conversation, saved], [conversation, saved], **leave)
        gr.on([demo.load, saved.change], lambda s: gr.Dataset(samples=[[c.get("title", "")] for c in s or []]),
              [saved], [chats], queue=False, api_visibility="private")
        chats.click(on_open, [chats, saved], [conversation, chatbot, role_choice], **leave)
        demo.load(lambda: status_line(coach), None, [status], queue=False, api_visibility="private")
    return demo
