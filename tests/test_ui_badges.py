"""One status vocabulary: every badge comes from {% status_badge %}, worded and coloured the
same on every page."""

from __future__ import annotations

import re
from pathlib import Path

from django.template import Context, Template

from dashboard.templatetags.badges import OTHER_STATES, badge_parts
from mailing.models import MailingStatus, MessageStatus

ROOT = Path(__file__).resolve().parent.parent
CSS = (ROOT / "static/css/app.css").read_text()


def test_every_status_has_a_word_and_a_styled_tone():
    states = [*MailingStatus.values, *MessageStatus.values, *OTHER_STATES]
    for state in states:
        label, tone = badge_parts(state)
        assert label[0].isupper(), state
        assert f".badge-{tone} " in CSS or f".badge-{tone}," in CSS, tone


def test_the_tag_renders_the_word_not_the_value():
    html = Template("{% load badges %}{% status_badge s %}").render(Context({"s": "running"}))
    assert html == '<span class="badge badge-active" data-status="running">Running</span>'
    html = Template("{% load badges %}{% status_badge s suffix=3 %}").render(
        Context({"s": "failed"})
    )
    assert ">Failed 3<" in html


def test_no_template_builds_a_badge_class_by_hand():
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "templates").rglob("*.html")
        if re.search(r'class="badge\b', path.read_text())
    ]
    assert not offenders, offenders
