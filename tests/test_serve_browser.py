"""The chat page in headless Chromium (playwright, Debian's /usr/bin/chromium): a streamed answer
appears rendered as Markdown, with the thinking in a collapsible block; the history goes back to the
server on the next turn; the Markdown renderer escapes HTML, code spans in links included; the
page works under its Content-Security-Policy; the API key stays out of localStorage. Skipped without
chromium or playwright.
"""

import pytest
from helpers import CHROMIUM, CHROMIUM_ARGS, needs_chromium

from nanoseek.serve.demo import DEMO_REASONING

pytestmark = [needs_chromium, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def page(server):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(30_000)
        requests, console = [], []
        page.on("request", lambda r: requests.append(r))
        page.on("console", lambda m: console.append(m.text))
        page.goto(server.url + "/")
        page.requests, page.console = requests, console
        yield page
        browser.close()


def test_streamed_answer_with_thinking_block(page, server):
    page.fill("#prompt", "Hello, who are you?")
    page.click("#send")
    answer = page.locator(".message.assistant .answer").first
    answer.locator("strong", has_text="nanoseek").wait_for()  # Markdown: **nanoseek**
    page.locator("#send").wait_for(state="visible")  # the stream finished
    assert answer.inner_text().startswith("Hello! I am nanoseek")
    assert "streaming" not in page.locator(".message.assistant").first.get_attribute("class")
    thinking = page.locator(".message.assistant details.thinking").first
    assert thinking.is_visible()
    assert thinking.locator(".thinking-text").text_content() == DEMO_REASONING
    assert thinking.get_attribute("open") is None  # folded once the answer started
    thinking.locator("summary").click()
    assert thinking.locator(".thinking-text").is_visible()
    assert "completion tokens" in page.locator(".message.assistant .meta").first.inner_text()
    assert page.locator("#model-name").inner_text() == "demo"
    # everything the page loaded came from the server itself
    assert all(r.url.startswith(server.url) for r in page.requests)


def test_second_turn_sends_the_history_and_conversations_persist(page):
    with page.expect_request("**/v1/chat/completions") as request:
        page.fill("#prompt", "Tell me more.")
        page.keyboard.press("Enter")
    sent = request.value.post_data_json
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert "reasoning_content" not in sent["messages"][1]
    assert sent["stream"] is True and sent["thinking"] == {"type": "enabled"}
    page.locator(".message.assistant").nth(1).locator(".answer strong").wait_for()
    page.locator("#send").wait_for(state="visible")
    page.reload()
    assert page.locator(".message.assistant").count() == 2  # restored from localStorage
    page.click("#new-chat")
    assert page.locator(".message").count() == 0
    assert page.locator("#conversations li").count() == 2


def test_thinking_toggle_and_parameters_reach_the_request(page):
    page.uncheck("#thinking")
    page.fill("#max-tokens", "40")
    page.fill("#seed", "7")
    with page.expect_request("**/v1/chat/completions") as request:
        page.fill("#prompt", "Quick answer please")
        page.click("#send")
    sent = request.value.post_data_json
    assert sent["thinking"] == {"type": "disabled"}
    assert sent["max_completion_tokens"] == 40 and sent["seed"] == 7
    last = page.locator(".message.assistant").last
    last.locator(".answer strong").wait_for()
    page.locator("#send").wait_for(state="visible")
    assert last.locator("details.thinking").is_hidden()  # no thinking when it is off
    page.check("#thinking")


def test_markdown_renderer_escapes_html(page):
    html = page.evaluate("renderMarkdown('<img src=x onerror=alert(1)> **b** [x](javascript:alert(1))')")
    assert "<img" not in html and "&lt;img" in html
    assert "<strong>b</strong>" in html and "href" not in html
    html = page.evaluate("renderMarkdown('```\\n<b>code</b>\\n```\\n- item `x`')")
    assert "<pre><code>&lt;b&gt;code&lt;/b&gt;</code></pre>" in html
    assert "<li>item <code>x</code></li>" in html


def test_code_spans_in_links_render_without_placeholders(page):
    html = page.evaluate("renderMarkdown('[`a`](http://x) [b](http://x.com/`y`)')")
    assert "\x00" not in html and "<code>a</code></a>" in html
    assert 'href="http://x.com/%60y%60"' in html


def test_the_page_keeps_the_api_key_for_the_tab_only(page):
    page.fill("#api-key", "sk-secret")
    assert "sk-secret" not in page.evaluate("JSON.stringify(localStorage)")
    assert page.evaluate("sessionStorage.getItem('nanoseek.api-key')") == "sk-secret"
    page.reload()
    assert page.input_value("#api-key") == "sk-secret"  # the same tab keeps it
    assert "sessionStorage" in page.locator("#settings").inner_text()  # the page says so
    # an earlier version stored the key with the settings: it is moved out on the next load
    page.evaluate(
        "localStorage.setItem('nanoseek.settings.v1', JSON.stringify({'api-key': 'sk-old', seed: '5'}));"
        "sessionStorage.clear()"
    )
    page.reload()
    assert page.input_value("#api-key") == "sk-old" and page.input_value("#seed") == "5"
    assert "sk-old" not in page.evaluate("JSON.stringify(localStorage)")
    page.fill("#api-key", "")
    page.fill("#seed", "")
    # the page ran under its Content-Security-Policy without a violation
    assert not [m for m in page.console if "Content Security Policy" in m], page.console
