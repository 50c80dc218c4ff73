"""Pull the final answer out of a model's answer text, and normalize it.

Scoring reads only the answer part of a completion (the text after `</think>`, see
`nanoseek.verify.format.answer_part`). From that text:

    extract_answer("... so the total is \\boxed{1,234}.")  # ("1,234", "boxed")
    extract_answer("The answer is $\\frac{1}{2}$.")         # ("\\frac{1}{2}", "answer_is")
    extract_answer("**Answer: 18**")                         # ("18", "answer_is")
    extract_answer("...\\n#### 72")                          # ("72", "hash")
    extract_answer("so she pays 18 dollars")                 # ("18", "last_number")
    strip_units("18 dollars per day")                        # "18"
    normalize_answer("$1,234.00")                            # "1234"
    extract_choice("The answer is (B).")                     # "B"

Precedence, first hit wins: the last `\\boxed{...}` (nested braces are fine), the last "answer is X" /
"Answer: X" / "Final answer: X", the last "#### X", the last number. The second element of
`extract_answer`'s result says which one matched ("boxed", "answer_is", "hash", "last_number", or
"none"), so a task can report or reward the format.

What prose wraps around an "answer is" / "####" answer is peeled off until nothing changes: markdown
emphasis and code marks (`**18**`, `_18_`, `` `18` ``), sentence punctuation after it (`18.`, `18!`,
`18?`: outside math mode a "!" ends the sentence; a factorial is written in math, `$5!$` or
`\\boxed{5!}`, and is kept), a parenthetical remark with a word in it (`18 (approx.)`,
`18 (rounded to 2 decimal places)`; `(3, 4)` or `2 (x + 1)` are kept), then one `$...$`, `\\(...\\)`,
`\\[...\\]` or `$$...$$` around the whole (display math may span lines). A `\\boxed{}` is read as
written. Units after a number (`18 apples`, `18 cm`, `18 dollars per day`, `18 \\text{ cm}`) are
dropped by `strip_units`, which math tasks call when the reference is a number; scale words
(`18 thousand`, `18 dozen`) and math words (`2 pi`, `3 sqrt`) are not units, and a one-letter unit
(`18 m`, `3x`) is kept, since it reads as a variable. `normalize_number` drops currency signs
(`$`, `\\$`, `€`, `£`, `¥`), a percent sign (`18%` equals 18: GSM8K writes percentages without it,
and math-verify, which decides the rest, takes `18\\%` as 18 or 0.18) and degree signs (`90°`,
`90\\degree`, `90^\\circ`, `90^{\\circ}`: MATH's own grader drops them too).
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


_ANSWER_IS = re.compile(r"answer[\s*_]*(?:is\b|:)[\s:*_]*", re.IGNORECASE)
_HASH = re.compile(r"####[ \t]*")
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")
_MATH_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_EMPHASIS = re.compile(r"^[*_`]+|(?<!\^)[*_`]+$")  # `z^*` (a conjugate) keeps its star
_SENTENCE_END = re.compile(r"[.!?,;:]+$")
_REMARK = re.compile(r"\s*\(([^()]*)\)$")
_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}")  # a word, not a LaTeX command's name


def _span_after(text: str, start: int) -> str:
    """The answer written from `start`: the rest of its line, or a display-math block opened on it."""
    line = text[start:].split("\n", 1)[0]
    for left, right in (("\\[", "\\]"), ("$$", "$$")):
        if line.lstrip().startswith(left) and right not in line.lstrip()[len(left) :]:
            close = text.find(right, start + line.index(left) + len(left))
            if close >= 0:
                return text[start : close + len(right)]
    return line


def _unwrap_math(span: str) -> str:
    """The inside of one math delimiter pair around the whole span (`$18$`, `\\(18\\)`, `$$18$$`)."""
    for left, right in _MATH_DELIMITERS:
        inner = span[len(left) : len(span) - len(right)]
        if span.startswith(left) and span.endswith(right) and inner.strip() and left not in inner:
            return inner.strip().rstrip(".,").rstrip()  # display math often ends with the period
    return span


def _strip_remark(span: str) -> str:
    """`18 (rounded to 2 decimal places)` -> `18`; a parenthesis without a word in it is math: kept."""
    match = _REMARK.search(span)
    if match and match.start() > 0 and _WORD.search(match.group(1)):
        return span[: match.start()]
    return span


def _clean(span: str) -> str:
    """Peel what prose wraps around an answer (see the module docstring) until nothing changes."""
    previous = None
    while span != previous:
        previous = span
        span = _strip_remark(_SENTENCE_END.sub("", _EMPHASIS.sub("", span.strip())).rstrip())
    return _unwrap_math(span.strip())


def extract_answer(text: str) -> tuple[str | None, str]:
    """The final answer in `text` and how it was written: (answer or None, format)."""
    boxed = last_boxed(text)
    if boxed:  # an empty box is the instruction's "\boxed{}" echoed, not an answer
        return boxed, "boxed"
    for pattern, how in ((_ANSWER_IS, "answer_is"), (_HASH, "hash")):
        spans = [_clean(_span_after(text, m.end())) for m in pattern.finditer(text)]
        spans = [span for span in spans if span]
        if spans:
            return spans[-1], how
    numbers = _NUMBER.findall(text)
    if numbers:
        return numbers[-1], "last_number"
    return None, "none"


_TEX_WORDS = re.compile(r"\\(?:text|textrm|textbf|textit|mathrm|mbox)\s*\{([^{}]*)\}")
_NUMBER_THEN_REST = re.compile(
    r"([-+]?(?:\\?\$|[€£¥])?\s*[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
    r"(?:\s*(?:\\?%|°|\\degree|\^\s*\\circ|\^\s*\{\s*\\circ\s*\}))?)\s*(.*)",
    re.DOTALL,
)
# words after a number, perhaps after a comma: "cm^2", "km/h", "dollars per day", ", which is the total"
_UNITS = re.compile(r"(?:[,;]\s+)?[A-Za-z]{2,}\.?(?:(?:\s+|\s*/\s*|-)[A-Za-z']+\.?)*(?:\^\{?[23]\}?|[²³])?")
_NOT_UNITS = re.compile(  # math and scale words: "2 pi", "3 sqrt 2", "18 thousand", "7 and a half"
    r"(?:pi|sqrt|root|squared|cubed|over|times|plus|minus|divided|factorial|and|or|to|sin|cos|tan|log|"
    r"ln|exp|(?:hundred|thousand|million|billion|trillion)(?:th)?s?|dozens?|half|halves|thirds?|"
    r"quarters?|tenths?)\b",
    re.IGNORECASE,
)


def strip_units(answer: str) -> str:
    """A number followed by units or words, as the number (`18 apples` -> `18`, `$18 per day` -> `$18`,
    `18 \\text{ cm}` -> `18`, `90^\\circ angle` -> `90^\\circ`); anything else unchanged. Scale and math
    words (`18 thousand`, `2 pi`) and one-letter units (`18 m`: a variable?) are not stripped."""
    plain = re.sub(r"\\[,;!: ]|~", " ", _TEX_WORDS.sub(r" \1 ", answer)).strip()
    match = _NUMBER_THEN_REST.fullmatch(plain)
    if match is None or not match.group(2):
        return answer
    rest = match.group(2).strip()
    if _UNITS.fullmatch(rest) and not _NOT_UNITS.match(rest.lstrip(",; ")):
        return match.group(1).strip()
    return answer


_DEGREES = re.compile(r"(?:\\,|\s)*(?:°|\\degree|\^\s*\\circ|\^\s*\{\s*\\circ\s*\})$")


def normalize_number(text: str) -> str | None:
    """Canonical form of a plain number ("$1,234.50" -> "1234.5", "025" -> "25", "50%" -> "50",
    "90^\\circ" -> "90", "€18" -> "18"), else None."""
    s = text.strip()
    s = re.sub(r"\\text\{\s*\}|\\!|\\,|\\ |\{,\}", lambda m: "," if m.group() == "{,}" else "", s)
    s = re.sub(r"\\?\$|[€£¥]", "", s).replace("\\%", "").rstrip("%").strip()
    s = _DEGREES.sub("", s).strip()
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
    s = _unwrap_math(_EMPHASIS.sub("", text.strip()).removesuffix(".").rstrip())
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
