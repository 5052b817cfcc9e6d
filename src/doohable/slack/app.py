"""The Slack bot: ``/doohable-vote`` and an App Home with two images and buttons.

A thin edge over :mod:`doohable.voting`, like the API: a click records the vote for the
Slack user (mapped to a voter, created on first use) and shows the next pair. Bolt checks
the signing secret and the timestamp (bad or older than 5 minutes: 401, nothing recorded).
Slack's retries never count twice: the pair token travels in the button value (single
use), and redeliveries flagged ``X-Slack-Retry-Num`` are acknowledged without work.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import FastAPI, Request, Response
from slack_bolt import App, BoltRequest, BoltResponse
from slack_bolt.adapter.fastapi import SlackRequestHandler
from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
from slack_sdk import WebClient
from starlette.concurrency import run_in_threadpool

from doohable import voting
from doohable.config import Settings
from doohable.signing import image_url
from doohable.slack.users import voter_for_slack_user
from doohable.store.db import get_engine, session_scope

log = logging.getLogger(__name__)
ACTIONS = ("vote_left", "vote_right", "vote_tie", "vote_skip")


def public_base(request: BoltRequest) -> str:
    """The URL Slack used to reach us (so that image URLs are absolute and reachable)."""

    def header(name: str) -> str:
        values = request.headers.get(name) or [""]
        return values[0]

    proto = header("x-forwarded-proto") or "https"
    host = header("x-forwarded-host") or header("host")
    return f"{proto}://{host}"


def pair_blocks(pair: voting.Pair, base: str, settings: Settings, note: str = "") -> list[dict[str, Any]]:
    """Block Kit for one pair: the two images (signed URLs) and four buttons."""

    def value(**kw: Any) -> str:
        return json.dumps({"t": pair.token, **kw}, separators=(",", ":"))

    def image(side: str, img: voting.PairImage) -> dict[str, Any]:
        return {
            "type": "image",
            "image_url": base + image_url(img.sha256, img.format, settings),
            "alt_text": f"{side} image",
            "title": {"type": "plain_text", "text": side.capitalize()},
        }

    def button(action: str, text: str, val: str, style: str | None = None) -> dict[str, Any]:
        label = {"type": "plain_text", "text": text}
        b = {"type": "button", "action_id": action, "text": label, "value": val}
        return {**b, "style": style} if style else b

    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": "*Which one is more beautiful?*"}},
        image("left", pair.left),
        image("right", pair.right),
        {
            "type": "actions",
            "block_id": "doohable_vote",
            "elements": [
                button("vote_left", "⬅ Left", value(w=pair.left.id), "primary"),
                button("vote_right", "Right ➡", value(w=pair.right.id), "primary"),
                button("vote_tie", "Can't decide", value(w=None)),
                button("vote_skip", "Skip", value(skip=True)),
            ],
        },
    ]
    if note:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": note}]})
    return blocks


class SlackVoting:
    """The Slack handlers, bound to one database and settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = get_engine(settings.resolved_database_url)

    def next_blocks(self, slack_user: str, base: str, note: str = "") -> list[dict[str, Any]]:
        """The next pair for a Slack user, as blocks (or a message when there is none)."""
        with session_scope(self.engine) as s:
            voter = voter_for_slack_user(s, slack_user)
            try:
                pair = voting.next_pair(s, voter.id)
            except voting.VotingError as e:
                return [{"type": "section", "text": {"type": "mrkdwn", "text": str(e)}}]
            today = voting.voter_stats(s, voter.id)["today"]
        counted = f"Your votes today: *{today}*"
        return pair_blocks(pair, base, self.settings, f"{note}  {counted}".strip())

    def record(self, slack_user: str, action_id: str, raw_value: str) -> str:
        """Record a button click; return a short note for the next message."""
        try:
            value = json.loads(raw_value)
            token, winner = str(value["t"]), value.get("w")
        except (ValueError, KeyError, TypeError):
            return "That button is not one of ours."
        with session_scope(self.engine) as s:
            voter = voter_for_slack_user(s, slack_user)
            try:
                if action_id == "vote_skip":
                    voting.skip_pair(s, voter.id, token)
                    return "Skipped."
                result = voting.record_vote(s, voter.id, token, winner, channel="slack")
            except voting.VotingError as e:
                return f"Not recorded: {e}"
        return "Vote recorded." if result.created else "Already recorded."

    # ---- Bolt listeners (arguments are injected by name) ----
    def on_command(self, ack: Any, command: dict[str, Any], request: BoltRequest) -> None:
        ack(response_type="ephemeral", blocks=self.next_blocks(command["user_id"], public_base(request)))

    def on_home(self, event: dict[str, Any], client: WebClient, request: BoltRequest) -> None:
        if event.get("tab", "home") != "home":
            return
        blocks = self.next_blocks(event["user"], public_base(request))
        client.views_publish(user_id=event["user"], view={"type": "home", "blocks": blocks})

    def on_action(
        self, ack: Any, body: dict[str, Any], action: dict[str, Any], client: WebClient, respond: Any,
        request: BoltRequest,
    ) -> None:
        ack()
        user = body["user"]["id"]
        note = self.record(user, action["action_id"], action.get("value", ""))
        blocks = self.next_blocks(user, public_base(request), note)
        if (body.get("view") or {}).get("type") == "home":
            client.views_publish(user_id=user, view={"type": "home", "blocks": blocks})
        elif body.get("response_url"):
            respond(blocks=blocks, replace_original=True, response_type="ephemeral")


def ignore_retries(request: BoltRequest, next: Any) -> BoltResponse | None:
    """Acknowledge Slack's redeliveries (``X-Slack-Retry-Num``) without doing the work twice."""
    if request.headers.get("x-slack-retry-num"):
        return BoltResponse(status=200, body="")
    next()
    return None


def create_slack_app(settings: Settings) -> App:
    """The Bolt app (HTTP mode, ``process_before_response``) for ``settings``."""
    if settings.slack_signing_secret is None:
        raise ValueError("DOOHABLE_SLACK_SIGNING_SECRET is not set")
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else "xoxb-not-set"
    base_url = settings.slack_api_url or WebClient.BASE_URL
    client = WebClient(token=token, base_url=base_url if base_url.endswith("/") else base_url + "/")
    app = App(
        signing_secret=settings.slack_signing_secret.get_secret_value(),
        token=token,
        client=client,
        process_before_response=True,  # finish the work before answering (no lost work on exit)
        token_verification_enabled=False,  # no network call at start-up
    )
    handlers = SlackVoting(settings)
    app.middleware(ignore_retries)
    app.command("/doohable-vote")(handlers.on_command)
    app.event("app_home_opened")(handlers.on_home)
    app.action(re.compile("^(" + "|".join(ACTIONS) + ")$"))(handlers.on_action)
    return app


def mount_slack(api: FastAPI, settings: Settings) -> None:
    """Serve Slack's requests at ``POST /slack/events`` of the FastAPI app."""
    handler = SlackRequestHandler(create_slack_app(settings))

    @api.post("/slack/events", include_in_schema=False)
    async def slack_events(req: Request) -> Response:
        # the Bolt app is synchronous (database work): dispatch it off the event loop
        body = await req.body()
        bolt_resp = await run_in_threadpool(handler.app.dispatch, to_bolt_request(req, body))
        return to_starlette_response(bolt_resp)
