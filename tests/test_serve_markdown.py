"""The chat page's Markdown renderer (`nanoseek/serve/static/markdown.js`) run by node: code spans in
links (the internal placeholder once leaked into link texts and URLs), precedence as in CommonMark,
and HTML escaping. Skipped without node; tests/test_serve_browser.py runs it in Chromium too.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

MARKDOWN_JS = Path(__file__).parents[1] / "nanoseek" / "serve" / "static" / "markdown.js"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="no node on PATH")

CASES = {
    # a code span as a link's text, and in its URL (not code there: backticks percent-encoded)
    "[`a`](http://x)": '<p><a href="http://x" target="_blank" rel="noopener noreferrer"><code>a</code></a></p>',
    "[a](http://x.com/`y`)": (
        '<p><a href="http://x.com/%60y%60" target="_blank" rel="noopener noreferrer">a</a></p>'
    ),
    "see [**b** `c` and `d`](https://e.org/`f`?q=`g`) _i_": (
        '<p>see <a href="https://e.org/%60f%60?q=%60g%60" target="_blank" rel="noopener noreferrer">'
        "<strong>b</strong> <code>c</code> and <code>d</code></a> <em>i</em></p>"
    ),
    # code spans bind before links (CommonMark): these are code, not links
    "`[a](http://x)`": "<p><code>[a](http://x)</code></p>",
    "[not a `link](/foo`)": "<p>[not a <code>link](/foo</code>)</p>",
    # only http(s) and mailto links; everything escaped
    "[x](javascript:`alert(1)`)": "<p>[x](javascript:<code>alert(1)</code>)</p>",
    '[<b>](http://x/"onmouseover="alert)': (
        '<p><a href="http://x/&quot;onmouseover=&quot;alert" target="_blank" rel="noopener noreferrer">'
        "&lt;b&gt;</a></p>"
    ),
    "a\u0000b `\u0000`": "<p>a\ufffdb <code>\ufffd</code></p>",
    "- [`x`](http://x)\n- `y`": (
        '<ul><li><a href="http://x" target="_blank" rel="noopener noreferrer"><code>x</code></a></li>'
        "<li><code>y</code></li></ul>"
    ),
}


def render(texts: list[str]) -> list[str]:
    script = (
        f"require({json.dumps(str(MARKDOWN_JS))});"
        "const texts = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "process.stdout.write(JSON.stringify(texts.map((t) => renderMarkdown(t))));"
    )
    out = subprocess.run(
        [NODE, "-e", script], input=json.dumps(texts), capture_output=True, text=True, check=True, timeout=60
    )
    return json.loads(out.stdout)


def test_code_spans_in_links_and_precedence():
    texts = list(CASES)
    for text, html in zip(texts, render(texts)):
        assert html == CASES[text], text


def test_no_placeholder_ever_leaks():
    pieces = ["[", "]", "(", ")", "`", "http://x", "a", "**", "_", " ", "\n", "|", "- ", "# ", "\u0000"]
    texts = ["".join(pieces[(i * 7 + j * 3) % len(pieces)] for j in range(i % 23 + 3)) for i in range(400)]
    texts += [f"[`{i}`](http://x/`{i}`) `{i}` [{i}](http://y)" * 3 for i in range(12)]
    for text, html in zip(texts, render(texts)):
        assert "\u0000" not in html, (text, html)
