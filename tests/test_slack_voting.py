"""The Slack bot through the real app: signed requests (v0 HMAC computed here), and slack_sdk
pointed at a local fake Slack API server that records every call (no network)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import func, select

from doohable.api.app import create_app
from doohable.config import Settings
from doohable.store.blobs import open_blobs
from doohable.store.db import get_engine, session_scope
from doohable.store.models import User, Vote
from voting_support import add_images

SECRET = "test-signing-secret"


class FakeSlack:
    """A tiny Slack Web API + response_url endpoint that records the calls it gets."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                if self.headers.get("Content-Type", "").startswith("application/json"):
                    body = json.loads(raw or "{}")
                else:
                    body = {k: v[0] for k, v in urllib.parse.parse_qs(raw).items()}
                outer.calls.append((self.path, body))
                out = json.dumps({"ok": True, "user_id": "UBOT", "bot_id": "B1", "team_id": "T1"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def named(self, path: str) -> list[dict[str, Any]]:
        return [body for p, body in self.calls if p == path]


def signed(body: str, secret: str = SECRET, age_s: int = 0) -> dict[str, str]:
    ts = str(int(time.time()) - age_s)
    sig = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={sig}"}


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def slack(settings: Settings) -> Iterator[tuple[TestClient, FakeSlack, Any]]:
    fake = FakeSlack()
    s2 = settings.model_copy(update={
        "slack_signing_secret": SecretStr(SECRET),
        "slack_bot_token": SecretStr("xoxb-test"),
        "slack_api_url": f"{fake.url}/api/",
    })
    engine = get_engine(s2.resolved_database_url)
    with session_scope(engine) as s:
        add_images(s, 4, blobs=open_blobs(s2.resolved_blob_url))
    with TestClient(create_app(s2), base_url="https://doohable.example") as client:
        yield client, fake, engine
    fake.server.shutdown()


def command(client: TestClient, user: str, fake: FakeSlack) -> dict[str, Any]:
    body = urllib.parse.urlencode({
        "command": "/doohable-vote", "text": "", "user_id": user, "team_id": "T1", "channel_id": "C1",
        "response_url": f"{fake.url}/response/{user}", "trigger_id": "1.2.3",
    })
    r = client.post("/slack/events", content=body, headers={**FORM, **signed(body)})
    assert r.status_code == 200, r.text
    return dict(r.json())


def click(
    blocks: list[dict[str, Any]], action_id: str, user: str, fake: FakeSlack, home: bool = False
) -> str:
    actions = next(b for b in blocks if b["type"] == "actions")["elements"]
    button = next(e for e in actions if e["action_id"] == action_id)
    payload: dict[str, Any] = {
        "type": "block_actions", "user": {"id": user, "team_id": "T1"}, "team": {"id": "T1"},
        "api_app_id": "A1", "trigger_id": "1.2.3",
        "actions": [{"type": "button", "action_id": action_id, "block_id": "doohable_vote",
                     "value": button["value"], "action_ts": "1"}],
    }
    if home:
        payload |= {"container": {"type": "view", "view_id": "V1"}, "view": {"id": "V1", "type": "home"}}
    else:
        payload |= {"container": {"type": "message"}, "response_url": f"{fake.url}/response/{user}"}
    return urllib.parse.urlencode({"payload": json.dumps(payload)})


def votes(engine: Any) -> int:
    with session_scope(engine) as s:
        return int(s.scalar(select(func.count()).select_from(Vote)) or 0)


def test_command_shows_a_pair_with_signed_images(slack: Any) -> None:
    client, fake, engine = slack
    reply = command(client, "U1", fake)
    images = [b["image_url"] for b in reply["blocks"] if b["type"] == "image"]
    assert len(images) == 2 and all(u.startswith("https://doohable.example/img/") for u in images)
    got = client.get(images[0].removeprefix("https://doohable.example"))
    assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg"
    with session_scope(engine) as s:
        user = s.scalar(select(User).where(User.slack_user_id == "U1"))
        assert user is not None and user.role == "voter"


def test_a_click_delivered_twice_records_one_vote(slack: Any) -> None:
    client, fake, engine = slack
    blocks = command(client, "U2", fake)["blocks"]
    body = click(blocks, "vote_left", "U2", fake)
    assert client.post("/slack/events", content=body, headers={**FORM, **signed(body)}).status_code == 200
    assert votes(engine) == 1
    # Slack's retry (flagged), then the same click again (a double click): still one vote
    retry = {**FORM, **signed(body), "X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    assert client.post("/slack/events", content=body, headers=retry).status_code == 200
    assert client.post("/slack/events", content=body, headers={**FORM, **signed(body)}).status_code == 200
    assert votes(engine) == 1
    with session_scope(engine) as s:
        vote = s.scalars(select(Vote)).one()
        assert vote.channel == "slack" and vote.winner_id == vote.left_id
    # the next pair replaced the message through response_url
    replies = fake.named("/response/U2")
    assert len(replies) == 2 and replies[0]["replace_original"] is True
    assert any(b["type"] == "image" for b in replies[0]["blocks"])
    assert "Vote recorded." in json.dumps(replies[0]["blocks"])
    assert "Already recorded." in json.dumps(replies[1]["blocks"])


def test_bad_or_old_signatures_get_401_and_record_nothing(slack: Any) -> None:
    client, fake, engine = slack
    blocks = command(client, "U3", fake)["blocks"]
    body = click(blocks, "vote_right", "U3", fake)
    bad = client.post("/slack/events", content=body, headers={**FORM, **signed(body, secret="wrong")})
    old = client.post("/slack/events", content=body, headers={**FORM, **signed(body, age_s=6 * 60)})
    none = client.post("/slack/events", content=body, headers=FORM)
    assert (bad.status_code, old.status_code, none.status_code) == (401, 401, 401)
    assert votes(engine) == 0 and fake.named("/response/U3") == []


def test_app_home_shows_a_pair_and_a_click_records_and_republishes(slack: Any) -> None:
    client, fake, engine = slack
    event = json.dumps({
        "type": "event_callback", "team_id": "T1", "api_app_id": "A1", "event_id": "Ev1",
        "event_time": int(time.time()),
        "event": {"type": "app_home_opened", "user": "U4", "channel": "D1", "tab": "home", "event_ts": "1"},
    })
    headers = {"Content-Type": "application/json", **signed(event)}
    r = client.post("/slack/events", content=event, headers=headers)
    assert r.status_code == 200
    published = fake.named("/api/views.publish")
    assert len(published) == 1 and published[0]["user_id"] == "U4"
    view = published[0]["view"]
    view = json.loads(view) if isinstance(view, str) else view
    assert view["type"] == "home" and sum(b["type"] == "image" for b in view["blocks"]) == 2
    body = click(view["blocks"], "vote_tie", "U4", fake, home=True)
    assert client.post("/slack/events", content=body, headers={**FORM, **signed(body)}).status_code == 200
    assert votes(engine) == 1 and len(fake.named("/api/views.publish")) == 2
    with session_scope(engine) as s:
        assert s.scalars(select(Vote)).one().winner_id is None  # "can't decide"
