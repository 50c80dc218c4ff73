"""The web arena in headless Chromium, with two tiny local checkpoints as contestants: a prompt, both
answers streamed side by side with the models hidden, a vote, the models revealed, the vote stored,
then the leaderboard page with its plot. Every request the pages make goes to the app itself.

Needs the `playwright` Python package and Debian's chromium (/usr/bin/chromium); skipped without them.
"""

from __future__ import annotations

import time

import pytest
from helpers import CHROMIUM, CHROMIUM_ARGS, TINY, needs_chromium, running_server, write_contestants

from nanoseek.arena import ArenaStore
from nanoseek.arena.app import create_app
from nanoseek.arena.contestants import close_contestants, load_contestants, open_contestants
from nanoseek.arena.live import LiveArena

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = [needs_chromium, pytest.mark.usefixtures("one_thread")]
TIMEOUT_MS = 90_000  # a busy 2-core machine: generous, never part of what is checked


def wait_until(page, predicate: str) -> None:
    """Poll a JS predicate from Python (the page's CSP forbids the eval behind `wait_for_function`)."""
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while not page.evaluate(predicate):
        assert time.monotonic() < deadline, f"timed out waiting for {predicate}"
        page.wait_for_timeout(50)


@pytest.fixture
def arena_url(tmp_path, tiny_checkpoints):
    config = write_contestants(tmp_path / "arena.toml", tiny_checkpoints, max_new_tokens=12)
    store = ArenaStore(tmp_path / "arena.db")
    contestants = open_contestants(load_contestants(config))
    for contestant in contestants.values():
        contestant.start()
    try:
        with running_server(create_app(LiveArena(contestants, store), num_bootstrap=10)) as url:
            yield url, store
    finally:
        close_contestants(contestants)


def test_a_battle_and_a_vote_in_chromium(arena_url):
    url, store = arena_url
    requests, problems = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(url + "/")
            assert page.title() == "nanoseek arena"
            assert page.is_disabled("#vote-a") and page.is_hidden("#battle")

            page.fill("#prompt", "What is 12 + 34?")
            page.click("#send")
            page.wait_for_selector("#vote-a:not([disabled])")  # both answers done
            shown = {side: page.text_content(f"#answer-{side}") for side in "ab"}
            thinking = {side: page.text_content(f"#thinking-{side}") for side in "ab"}
            assert any(shown.values()) or any(thinking.values())  # the models wrote something
            html = page.content()
            assert not any(name in html for name in TINY)  # hidden before the vote
            assert page.text_content("#name-a") == page.text_content("#name-b") == ""
            assert page.text_content("#status") == "Which answer is better?"

            page.click("#vote-b")
            page.wait_for_selector("#name-a:not(:empty)")
            name_a, name_b = page.text_content("#name-a"), page.text_content("#name-b")
            assert {name_a, name_b} == set(TINY)  # revealed after it
            result = page.text_content("#result")
            assert name_a in result and name_b in result and "You voted for B." in result
            assert "winner" in (page.get_attribute("#pane-b", "class") or "")
            assert page.is_disabled("#vote-a") and page.is_disabled("#vote-b")

            [battle] = store.battles()  # the vote is stored, for the battle the page showed
            assert (battle.winner, battle.model_a, battle.model_b) == ("model_b", name_a, name_b)
            assert battle.conversation_a[0] == {"role": "user", "content": "What is 12 + 34?"}
            assert battle.conversation_a[1]["content"] == shown["a"].strip()
            assert battle.conversation_b[1]["content"] == shown["b"].strip()

            page.click("text=Leaderboard")
            page.wait_for_selector("#board tbody tr")
            wait_until(page, "() => document.getElementById('plot').naturalWidth > 0")
            rows = page.locator("#board tbody tr").all_text_contents()
            assert rows[0].startswith("1" + name_b) and name_a in rows[1]  # the only battle's winner first
            assert page.evaluate("() => document.getElementById('plot').naturalWidth") > 100  # the PNG
            page.check("#style-control")
            page.wait_for_selector("#style:not([hidden]) tbody tr")
            assert "length" in page.text_content("#style")
        finally:
            browser.close()
    assert requests and all(r.startswith(url + "/") for r in requests), requests  # nothing from elsewhere
    assert not problems, problems
