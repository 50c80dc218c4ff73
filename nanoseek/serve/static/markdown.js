/*
 * markdown.js: a small, safe Markdown renderer for the nanoseek chat page (no dependencies).
 *
 *   renderMarkdown("**bold** and `code`")  // -> "<p><strong>bold</strong> and <code>code</code></p>"
 *
 * Safety first: the whole input is HTML-escaped before any Markdown is interpreted, so model output
 * can never inject tags or attributes; the only tags produced are the ones below, and links are
 * kept only for http(s) and mailto URLs (which, being escaped, cannot break out of the attribute).
 *
 * Supported: fenced code blocks (``` or ~~~, with a language class), headings, paragraphs (single
 * newlines become <br>), bullet and numbered lists, block quotes, horizontal rules, simple
 * GitHub tables, and inline `code`, **bold**, __bold__, *italic*, _italic_, ~~strike~~, [links](url).
 */
(function (global) {
  "use strict";

  function escapeHtml(text) {
    return text
      .replace(/&/g, "&amp;")
      .replace(/</g, "&lt;")
      .replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;")
      .replace(/'/g, "&#39;");
  }

  // Placeholders keep code spans and links away from the emphasis rules; \u0000 never survives
  // from the input (render() replaces it), so a placeholder cannot be forged. Code spans bind first
  // (as in CommonMark), so a link's text may hold placeholders, restored recursively at the end
  // (a link holds code spans, each held before it); in a link's URL a code span is not code: its
  // source text goes back in, backticks percent-encoded.
  const PLACEHOLDER = /\u0000(\d+)\u0000/g;

  function inline(text) {
    const held = []; // html of each placeholder
    const source = []; // and the text it replaced
    const hold = (html, raw) => {
      source.push(raw);
      return "\u0000" + (held.push(html) - 1) + "\u0000";
    };
    const unhold = (s) => s.replace(PLACEHOLDER, (_, i) => unhold(held[Number(i)]));
    text = text.replace(/`([^`\n]+)`/g, (raw, code) => hold("<code>" + code + "</code>", raw));
    text = text.replace(/\[([^\]\n]+)\]\(([^()\s]+)\)/g, (match, label, url) => {
      url = url.replace(PLACEHOLDER, (_, i) => source[Number(i)]).replace(/`/g, "%60");
      if (!/^(https?:\/\/|mailto:)/i.test(url)) return match;
      const link = '<a href="' + url + '" target="_blank" rel="noopener noreferrer">' + emphasis(label) + "</a>";
      return hold(link, match);
    });
    return unhold(emphasis(text));
  }

  function emphasis(text) {
    return text
      .replace(/\*\*(?=\S)([^\n]*?\S)\*\*/g, "<strong>$1</strong>")
      .replace(/(^|[^\w])__(?=\S)([^\n]*?\S)__(?!\w)/g, "$1<strong>$2</strong>")
      .replace(/(^|[^*\w])\*(?=[^\s*])([^*\n]*?[^\s*])\*(?![*\w])/g, "$1<em>$2</em>")
      .replace(/(^|[^_\w])_(?=[^\s_])([^_\n]*?[^\s_])_(?![_\w])/g, "$1<em>$2</em>")
      .replace(/~~(?=\S)([^\n]*?\S)~~/g, "<del>$1</del>");
  }

  const FENCE = /^\s{0,3}(```+|~~~+)\s*([\w+#.-]*)\s*$/;
  const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
  const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;
  const QUOTE = /^\s{0,3}&gt;\s?/;
  const BULLET = /^\s*[-*+]\s+/;
  const NUMBERED = /^\s*(\d{1,9})[.)]\s+/;
  const TABLE_RULE = /^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$/;

  function startsBlock(line) {
    return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) ||
      BULLET.test(line) || NUMBERED.test(line);
  }

  function cells(line) {
    return line.trim().replace(/^\|/, "").replace(/\|$/, "").split("|").map((c) => inline(c.trim()));
  }

  function blocks(lines) {
    const out = [];
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      let m;
      if ((m = line.match(FENCE))) {
        const close = m[1];
        const code = [];
        i++;
        while (i < lines.length && !lines[i].trim().startsWith(close)) code.push(lines[i++]);
        i++; // the closing fence (or the end of an unfinished stream)
        const lang = m[2] ? ' class="language-' + m[2] + '"' : "";
        out.push("<pre><code" + lang + ">" + code.join("\n") + "</code></pre>");
      } else if (!line.trim()) {
        i++;
      } else if ((m = line.match(HEADING))) {
        const level = m[1].length;
        out.push("<h" + level + ">" + inline(m[2]) + "</h" + level + ">");
        i++;
      } else if (RULE.test(line)) {
        out.push("<hr>");
        i++;
      } else if (QUOTE.test(line)) {
        const inner = [];
        while (i < lines.length && QUOTE.test(lines[i])) inner.push(lines[i++].replace(QUOTE, ""));
        out.push("<blockquote>" + blocks(inner) + "</blockquote>");
      } else if (BULLET.test(line) || NUMBERED.test(line)) {
        const ordered = !BULLET.test(line);
        const marker = ordered ? NUMBERED : BULLET;
        const items = [];
        while (i < lines.length && lines[i].trim()) {
          if (marker.test(lines[i])) items.push(lines[i].replace(marker, ""));
          else if (/^\s+/.test(lines[i]) && items.length) items[items.length - 1] += "\n" + lines[i].trim();
          else break;
          i++;
        }
        const start = ordered ? Number(line.match(NUMBERED)[1]) : 1;
        const open = ordered ? (start !== 1 ? '<ol start="' + start + '">' : "<ol>") : "<ul>";
        const body = items.map((item) => "<li>" + inline(item).replace(/\n/g, "<br>") + "</li>").join("");
        out.push(open + body + (ordered ? "</ol>" : "</ul>"));
      } else if (line.includes("|") && i + 1 < lines.length && TABLE_RULE.test(lines[i + 1])) {
        const head = cells(line).map((c) => "<th>" + c + "</th>").join("");
        const rows = [];
        i += 2;
        while (i < lines.length && lines[i].includes("|") && lines[i].trim()) {
          rows.push("<tr>" + cells(lines[i++]).map((c) => "<td>" + c + "</td>").join("") + "</tr>");
        }
        out.push("<table><thead><tr>" + head + "</tr></thead><tbody>" + rows.join("") + "</tbody></table>");
      } else {
        const para = [];
        while (i < lines.length && lines[i].trim() && !(para.length && startsBlock(lines[i]))) {
          para.push(lines[i++]);
        }
        out.push("<p>" + para.map(inline).join("<br>") + "</p>");
      }
    }
    return out.join("\n");
  }

  function renderMarkdown(markdown) {
    const text = String(markdown == null ? "" : markdown)
      .replace(/\u0000/g, "\uFFFD")
      .replace(/\r\n?/g, "\n");
    return blocks(escapeHtml(text).split("\n"));
  }

  global.renderMarkdown = renderMarkdown;
  global.escapeHtml = escapeHtml;
})(typeof window !== "undefined" ? window : globalThis);
