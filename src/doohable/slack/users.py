"""Slack users as doohable voters: one voter per Slack user, created on first use."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from doohable.store.models import User
from doohable.store.users import add_user


def voter_for_slack_user(session: Session, slack_user_id: str) -> User:
    """The voter mapped to a Slack user, created (role voter) on first use."""
    user = session.scalar(select(User).where(User.slack_user_id == slack_user_id))
    if user is not None:
        return user
    try:
        with session.begin_nested():
            user, _token = add_user(session, f"slack-{slack_user_id}", "voter")
            user.slack_user_id = slack_user_id
            session.flush()
    except IntegrityError:  # created by a concurrent request
        user = session.scalar(select(User).where(User.slack_user_id == slack_user_id))
        if user is None:
            raise
    return user

