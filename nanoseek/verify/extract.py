"""Pull the final answer out of a model's answer text, and normalize it.

Scoring reads only the answer part of a completion (the text after `</think>`, see
`nanoseek.verify.format.answer_part`). From that text:

    extract_answer("... so the total is \\boxed{1,234}.")  # ("1,234", "boxed")
    extract_answer("The answer is $\\frac{1}{2}$.")         # ("\\frac{1}{2}", "answer_is")
    extract_answer("...\\n#### 72")                          # ("72", "hash")
    extract_answer("so she pays 18 dollars")                 # ("18", "last_number")
    normalize_answer("$1,234.00")                            # "1234"
    extract_choice("The answer is (B).")                     # "B"

Precedence, first hit wins: the last `\\boxed{...}` (nested braces are fine), the last "answer is X" /
"Answer: X", the last "#### X", the last number. The second element of `extract_answer`'s result
says which one matched ("boxed", "answer_is", "hash", "last_number", or "none"), so a task can
report or reward the format.
"""

import re
from decimal import Decimal, InvalidOperation

BOXED_COMMANDS = ("\\boxed", "\\fbox", "\\framebox")


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox`, `\\framebox`) in `text`, braces matched.

    Also reads the brace-less form `\\boxed 5`. Returns None when there is no complete box."""
    start = max(text.rfind(cmd) for cmd in BOXED_COMMANDS)
    if start < 0:
        return None
    i = start + 1
    while i < len(text) and text[i].isalpha():  # skip the command name
        i += 1
    if text.startswith("[]", i):  # \framebox[]{...} has an optional width argument
        i += 2
    if i < len(text) and text[i] == " ":  # \boxed 5
        match = re.match(r"\s*([^\s$]+)", text[i:])
        return match.group(1) if match else None
    if i >= len(text) or text[i] != "{":
        return None
    depth = 0
    j = i
    while j < len(text):
        ch = text[j]
        if ch == "\\":  # \{ and \} are literal braces in LaTeX, not grouping
            j += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
        j += 1
    return None  # unbalanced: the box was never closed


_ANSWER_IS = re.compile(r"answer\s*(?:is\b|:)[\s:*]*(.*)", re.IGNORECASE)
_HASH = re.compile(r"####\s*(.*)")
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")


def _unwrap(span: str) -> str:
    for left, right in (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"), ("**", "**")):
        if span.startswith(left) and span.endswith(right) and len(span) >= len(left) + len(right):
            span = span[len(left) : len(span) - len(right)].strip()
    return span


def _clean(span: str) -> str:
    """Strip what a sentence wraps around an answer: markdown bold, $...$, \\(...\\), a final period."""
    span = _unwrap(span.strip())
    if span.endswith("."):  # the sentence's period, also after a number: "The answer is 18."
        span = span[:-1].rstrip()
    return _unwrap(span)


def extract_answer(text: str) -> tuple[str | None, str]:
    """The final answer in `text` and how it was written: (answer or None, format)."""
    boxed = last_boxed(text)
    if boxed:  # an empty box is the instruction's "\boxed{}" echoed, not an answer
        return boxed, "boxed"
    for pattern, how in ((_ANSWER_IS, "answer_is"), (_HASH, "hash")):
        matches = [m for m in pattern.finditer(text) if _clean(m.group(1))]
        if matches:
            return _clean(matches[-1].group(1)), how
    numbers = _NUMBER.findall(text)
    if numbers:
        return numbers[-1], "last_number"
    return None, "none"


def normalize_number(text: str) -> str | None:
    """Canonical form of a plain number ("$1,234.50" -> "1234.5", "025" -> "25", "50%" -> "50"), else None."""
    s = text.strip()
    s = re.sub(r"\\text\{\s*\}|\\!|\\,|\\ ", "", s)
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "").rstrip("%").strip()
    if re.fullmatch(r"[-+]?\d{1,3}(,\d{3})+(\.\d*)?", s):
        s = s.replace(",", "")
    if not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)", s):
        return None
    try:
        value = Decimal(s)
    except InvalidOperation:
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def normalize_answer(text: str | None) -> str | None:
    """A canonical string for an extracted answer, used to compare and to majority-vote (cons@k).

    Numbers get `normalize_number`; anything else is unwrapped ($...$, \\text{...}), has its whitespace
    removed and a trailing period dropped. Equivalent forms can still differ ("1/2" vs "\\frac{1}{2}");
    `nanoseek.verify.verify_math` decides those."""
    if text is None:
        return None
    number = normalize_number(text)
    if number is not None:
        return number
    s = _clean(text)
    match = re.fullmatch(r"\\(?:text|textbf|mathrm)\{(.*)\}", s)
    if match:
        s = match.group(1)
    s = re.sub(r"(\\[A-Za-z]+)\s+(?=[A-Za-z])", r"\1{}", s)  # "\pi r" must not become "\pir"
    s = re.sub(r"\s+", "", s).rstrip(".")
    number = normalize_number(s)
    return number if number is not None else s


def extract_choice(text: str, letters: str = "ABCD") -> str | None:
    """The multiple-choice letter a text picks, or None.

    Reads, first hit wins: `\\boxed{B}` (also `\\boxed{\\text{(B)}}`), "The answer is (B)" / "Answer: B",
    a text that is just the letter ("B", "(B)", "B)"), and a last line that starts with "(B)" or "B)"."""
    letter_class = "[" + re.escape(letters) + "]"
    bare = rf"\(?\s*({letter_class})\s*\)?(?:[.:)]|\s|$)"

    boxed = last_boxed(text)
    if boxed is not None:
        inner = re.sub(r"\\(?:text|textbf|mathrm)\{(.*?)\}", r"\1", boxed).strip()
        match = re.match(bare, inner + " ")
        if match:
            return match.group(1)
    matches = list(re.finditer(rf"answer[\s*]*(?:is|:)[\s*:]*(?:option\s*)?{bare}", text, re.IGNORECASE))
    matches = [m for m in matches if m.group(1) in letters]
    if matches:
        return matches[-1].group(1)
    stripped = text.strip().strip("*$").strip()
    match = re.fullmatch(rf"\(?({letter_class})\)?\.?", stripped)
    if match:
        return match.group(1)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if lines:
        match = re.match(rf"\(({letter_class})\)|({letter_class})\)", lines[-1])
        if match:
            return match.group(1) or match.group(2)
    return None
