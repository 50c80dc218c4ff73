"""Incremental text for streaming: multi-byte-safe deltas, stop strings, and the thinking/answer split.

    text = TextStream(tokenizer, stop=["\\n\\n"])
    for token_id in generated:
        delta = text.push(token_id)          # "" while a character or a possible stop string is open
        if text.stopped: break               # a stop string appeared; text.text ends before it
    delta = text.finish()                    # whatever was held back

    split = ReasoningSplitter(think=True)    # the prompt opened a think block (prompt_opens_think)
    reasoning, content = split.push(delta)   # the same split as chat_format.split_completion,
    reasoning, content = split.finish()      # streamed: `</think>` dropped, both parts stripped

`TextStream` builds on the tokenizer's `StreamDecoder` (which never emits half of a UTF-8 character)
and holds back the longest tail that could still grow into a stop string, so a stop string never
reaches the client, not even in pieces.
"""

from __future__ import annotations

from nanoseek.tokenizer import StreamDecoder, Tokenizer
from nanoseek.tokenizer.chat_format import END_THINK, THINK


def open_prefix_len(text: str, patterns: list[str]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of one of `patterns`."""
    best = 0
    for pattern in patterns:
        for n in range(min(len(pattern) - 1, len(text)), best, -1):
            if text.endswith(pattern[:n]):
                best = n
                break
    return best


class TextStream:
    """Text of one sample, token by token (special tokens such as EOS are skipped)."""

    def __init__(self, tokenizer: Tokenizer, stop: list[str] | None = None):
        self.decoder = StreamDecoder(tokenizer, skip_special_tokens=True)
        self.stop = [s for s in (stop or []) if s]
        self.text = ""  # everything emitted so far
        self.held = ""  # decoded, not yet emitted: it may be the start of a stop string
        self.stopped = False  # a stop string was found; nothing more is emitted

    def push(self, token_id: int) -> str:
        if self.stopped:
            return ""
        return self._emit(self.decoder.push(token_id), final=False)

    def finish(self) -> str:
        """End of generation: emit what was held back (an unfinished character comes out as U+FFFD)."""
        if self.stopped:
            return ""
        return self._emit(self.decoder.flush(), final=True)

    def _emit(self, new: str, final: bool) -> str:
        buf = self.held + new
        self.held = ""
        hits = [i for i in (buf.find(s) for s in self.stop) if i >= 0]
        if hits:
            self.stopped = True
            out = buf[: min(hits)]
        elif final or not self.stop:
            out = buf
        else:
            keep = open_prefix_len(buf, self.stop)
            out, self.held = buf[: len(buf) - keep], buf[len(buf) - keep :]
        self.text += out
        return out


class ReasoningSplitter:
    """Streams `split_completion`: text before `</think>` is reasoning, after it the answer; each part
    loses its leading and trailing whitespace. `think`: the prompt opened a think block
    (`chat_format.prompt_opens_think`: R1's format, R1-distill's template), so the completion starts
    as reasoning; otherwise it is answer, unless it opens with `<think>` itself (Qwen3, QwQ). A
    `<think>` opening the completion is dropped in both cases. The finished Completion uses
    split_completion itself; this is its live view (which cannot take back text it has streamed as
    answer when a `</think>` nobody opened comes later)."""

    def __init__(self, think: bool = True):
        self.in_reasoning = think
        self.opening = True  # nothing but whitespace yet: a leading "<think>" may still come
        self.held = ""  # a possible start of "<think>" / "</think>", or trailing whitespace
        self.started = False  # the current part has emitted a non-space character

    def push(self, text: str) -> tuple[str, str]:
        reasoning = content = ""
        buf = self.held + text
        self.held = ""
        if self.opening:
            head = buf.lstrip()
            if head.startswith(THINK):
                buf, self.opening, self.in_reasoning = head[len(THINK) :], False, True
            elif THINK.startswith(head):  # "", "<", "<thi", ...: wait for more
                self.held = buf
                return "", ""
            else:
                self.opening = False
        if self.in_reasoning and END_THINK in buf:
            before, _, buf = buf.partition(END_THINK)
            reasoning = self._part(before, final=True)
            self.in_reasoning, self.started = False, False
        out = self._part(buf, final=False)
        if self.in_reasoning:
            reasoning += out
        else:
            content += out
        return reasoning, content

    def finish(self) -> tuple[str, str]:
        """What was held back: trailing whitespace is dropped (as strip() would), a cut-off "<thi" or
        "</thi" is text of the current part."""
        out = self._part(self.held, final=True)
        self.held = ""
        return (out, "") if self.in_reasoning else ("", out)

    def _part(self, buf: str, final: bool) -> str:
        """Emit `buf` within the current part: drop leading spaces, hold trailing ones (and a possible
        '</think>' prefix while in reasoning) until more text shows they are inside the part."""
        if not self.started:
            buf = buf.lstrip()
            self.started = bool(buf)
        if final:
            return buf.rstrip()
        keep = open_prefix_len(buf, [END_THINK]) if self.in_reasoning else 0
        body, tail = buf[: len(buf) - keep], buf[len(buf) - keep :]
        stripped = body.rstrip()
        self.held = body[len(stripped) :] + tail
        return stripped
