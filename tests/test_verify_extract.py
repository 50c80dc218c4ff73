"""Answer extraction, normalization, choice letters, the think/answer split and the format reward."""

import pytest

from nanoseek.verify import (
    answer_part,
    extract_answer,
    extract_choice,
    format_reward,
    last_boxed,
    normalize_answer,
    normalize_number,
    strip_units,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so \\boxed{42}.", "42"),
        (
            "\\boxed{\\frac{1}{2}} and later \\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}",
            "\\left( 3, \\frac{\\pi}{2} \\right)",
        ),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("\\boxed{a^{b^{c}}}", "a^{b^{c}}"),
        ("\\boxed 7 apples", "7"),
        ("\\fbox{12}", "12"),
        ("\\framebox[]{13}", "13"),
        ("no box here", None),
        ("\\boxed{unclosed", None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize(
    "text, answer, how",
    [
        ("... so the total is \\boxed{1,234}.", "1,234", "boxed"),
        ("The final answer is $\\boxed{5}$. I hope it is correct.", "5", "boxed"),
        ("The answer is $\\frac{1}{2}$.", "\\frac{1}{2}", "answer_is"),
        ("The answer is 3.5.", "3.5", "answer_is"),
        ("**Answer:** 42", "42", "answer_is"),
        (
            "The answer is \\left( 3, \\frac{\\pi}{2} \\right).",
            "\\left( 3, \\frac{\\pi}{2} \\right)",
            "answer_is",
        ),
        ("She sells 9 eggs.\n#### 18", "18", "hash"),
        ("so she pays 18 dollars, not 17", "17", "last_number"),
        ("so it costs 1,250.50 in total", "1,250.50", "last_number"),
        ("I don't know", None, "none"),
        # what prose wraps around an answer is peeled off
        ("**Answer: 18**", "18", "answer_is"),
        ("Final answer: **18**", "18", "answer_is"),
        ("**Answer**: _18_", "18", "answer_is"),
        ("Answer: `18`", "18", "answer_is"),
        ("The answer is 18!", "18", "answer_is"),  # an exclamation, not 18 factorial
        ("**The answer is 18!**", "18", "answer_is"),
        ("The answer is 18 (rounded to 2 decimal places).", "18", "answer_is"),
        ("The answer is 19 (not 18).", "19", "answer_is"),
        ("The answer is $18.", "$18", "answer_is"),  # dollars: normalize_number reads "$18"
        ("The answer is:\n\\[\n\\frac{1}{2}\n\\]\nDone.", "\\frac{1}{2}", "answer_is"),
        ("The answer is $$18$$", "18", "answer_is"),
        ("#### **72**", "72", "hash"),
        ("Total = 18.", "18", "last_number"),
        # ... but not what is math
        ("The answer is $5!$.", "5!", "answer_is"),
        ("The answer is (3, 4).", "(3, 4)", "answer_is"),
        ("The answer is 2 (x + 1).", "2 (x + 1)", "answer_is"),
        ("The answer is $z^*$.", "z^*", "answer_is"),
    ],
)
def test_extract_answer(text, answer, how):
    assert extract_answer(text) == (answer, how)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("18 apples", "18"),
        ("$18 per day", "$18"),
        ("18 dollars per day", "18"),
        ("1,250 km/h", "1,250"),
        ("18 cm^2", "18"),
        ("18 \\text{ cm}", "18"),
        ("18\\,\\mathrm{cm}", "18"),
        ("90^\\circ angle", "90^\\circ"),
        ("18, which is the total", "18"),
        ("18 pieces", "18"),  # "pi" only as a whole word
        # not units: kept whole, math-verify decides
        ("2 pi", "2 pi"),
        ("3 sqrt 2", "3 sqrt 2"),
        ("18 thousand", "18 thousand"),
        ("7 and a half", "7 and a half"),
        ("18 m", "18 m"),  # a one-letter unit reads as a variable
        ("3x", "3x"),
        ("18, 19", "18, 19"),
        ("\\frac{1}{2} cup", "\\frac{1}{2} cup"),
    ],
)
def test_strip_units(text, expected):
    assert strip_units(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("$1,234.00", "1234"),
        ("025", "25"),
        ("50%", "50"),
        ("50\\%", "50"),
        ("27.0", "27"),
        ("-0.50", "-0.5"),
        ("\\$18.90", "18.9"),
        ("\\$32,\\!348", "32348"),
        (".5", "0.5"),
        ("€18", "18"),
        ("90°", "90"),
        ("90\\degree", "90"),
        ("90^\\circ", "90"),
        ("90^{\\circ}", "90"),
        ("$90^\\circ$", "90"),
        ("10{,}000", "10000"),
        ("1,2", None),
        ("\\frac{1}{2}", None),
        ("x", None),
    ],
)
def test_normalize_number(text, expected):
    assert normalize_number(text) == expected


def test_normalize_answer_makes_vote_keys():
    assert normalize_answer("$1,234$") == normalize_answer("1234.0") == "1234"
    assert normalize_answer("\\text{Evelyn}") == "Evelyn"
    assert normalize_answer("x + 1") == normalize_answer("x+1")
    assert normalize_answer("\\pi r") != normalize_answer("\\pir")  # a command's trailing space matters
    assert normalize_answer(None) is None
    assert normalize_answer("5!") != normalize_answer("5")  # a boxed factorial is not its argument
    assert normalize_answer("90°") == normalize_answer("90^{\\circ}") == "90"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is (B).", "B"),
        ("so the answer is B.", "B"),
        ("Answer: A", "A"),
        ("**Answer:** (D)", "D"),
        ("\\boxed{C}", "C"),
        ("\\boxed{\\text{(D)}}", "D"),
        ("\\boxed{B) 42}", "B"),
        ("B", "B"),
        ("(C)", "C"),
        ("After checking each option:\nB) is the only one that works", "B"),
        ("A good answer is hard to find", None),
        ("The answer is (E).", None),
        ("", None),
    ],
)
def test_extract_choice(text, expected):
    assert extract_choice(text) == expected


def test_extract_choice_with_more_letters():
    assert extract_choice("The answer is (E).", letters="ABCDE") == "E"


@pytest.mark.parametrize(
    "completion, answer",
    [
        ("<think>\n2+2 is 4\n</think>\n\nThe answer is 4.", "The answer is 4."),
        ("2+2 is 4\n</think>\n\n4", "4"),  # the prompt opened the think block
        ("The answer is 4.", "The answer is 4."),  # already split by the chat format
        ("<think>\nthe answer is \\boxed{4}", ""),  # never finished thinking: no answer
        ("<think>x</think> <answer> 4 </answer>", "4"),
        ("</think>\n\n    return x\n", "    return x"),  # code keeps its indentation
    ],
)
def test_answer_part(completion, answer):
    assert answer_part(completion) == answer


@pytest.mark.parametrize(
    "completion, reward",
    [
        ("<think>\n2+2 is 4\n</think>\n\n4", 1.0),
        ("2+2 is 4\n</think>\n\n4", 1.0),
        ("<think>\n\n</think>\n\n4", 0.0),  # empty reasoning
        ("<think>\n2+2 is 4\n</think>\n\n", 0.0),  # empty answer
        ("<think>\n2+2 is 4", 0.0),  # unfinished
        ("4", 0.0),
        ("<think>a</think>b</think>c", 0.0),
        ("<think>a<think>b</think>c", 0.0),
        ("junk <think>a</think>c", 0.0),
        ("<think>a</think>c <think>", 0.0),
    ],
)
def test_format_reward(completion, reward):
    assert format_reward(completion) == reward


def test_format_reward_with_answer_tags():
    assert format_reward("<think>2+2 is 4</think> <answer>4</answer>", answer_tag=True) == 1.0
    assert format_reward("<think>2+2 is 4</think>\n<answer>\n4\n</answer>\n", answer_tag=True) == 1.0
    assert format_reward("<think>2+2 is 4</think> 4", answer_tag=True) == 0.0
    assert format_reward("<think>2+2 is 4</think> <answer> </answer>", answer_tag=True) == 0.0
    assert format_reward("<think>2+2 is 4</think> <answer>4</answer> and more", answer_tag=True) == 0.0
