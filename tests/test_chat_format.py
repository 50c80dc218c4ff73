"""Chat format: rendering, loss mask, prompts, agreement with transformers' apply_chat_template, parsing."""

import inspect
import json

import pytest
from helpers import tokenizer_on

from nanoseek.tokenizer import chat_format
from nanoseek.tokenizer.chat_format import (
    ASSISTANT,
    BOS,
    END_THINK,
    EOS,
    THINK,
    USER,
    FormatError,
    prompt_opens_think,
    r1_zero_prompt,
    render,
    render_prompt,
    render_text,
    split_completion,
    split_r1_zero_completion,
)

CONVERSATIONS = {
    "single": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}],
    "reasoning": [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "The answer is 4.", "reasoning_content": "2 plus 2 is 4."},
    ],
    "system": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello.", "reasoning_content": "Greet back."},
    ],
    "multi_system_multi_turn": [
        {"role": "system", "content": "Rule one."},
        {"role": "user", "content": "3*3?"},
        {"role": "assistant", "content": "9", "reasoning_content": "3 times 3."},
        {"role": "system", "content": "Rule two."},
        {"role": "user", "content": "and 你好 🙂?"},
        {"role": "assistant", "content": "Hello! 🙂"},
        {"role": "user", "content": "Thanks\n\n  bye"},
    ],
    "user_only": [{"role": "user", "content": "Just a question?"}],
}


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    text = " ".join(
        m["content"] + " " + m.get("reasoning_content", "") for c in CONVERSATIONS.values() for m in c
    )
    return tokenizer_on((text + "\n") * 20, d, 400, out_dir=d / "out")


@pytest.fixture(scope="module")
def hf(tok, tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(tok.save(tmp_path_factory.mktemp("hf"))))


def test_exact_rendering():
    text = render_text(CONVERSATIONS["multi_system_multi_turn"], add_generation_prompt=True)
    assert text == (
        f"{BOS}Rule one.\n\nRule two."
        f"{USER}3*3?{ASSISTANT}{THINK}\n3 times 3.\n{END_THINK}\n\n9{EOS}"
        f"{USER}and 你好 🙂?{ASSISTANT}{THINK}\n{END_THINK}\n\nHello! 🙂{EOS}"
        f"{USER}Thanks\n\n  bye{ASSISTANT}{THINK}\n"
    )
    no_think = render_text(CONVERSATIONS["user_only"], add_generation_prompt=True, think=False)
    assert no_think == f"{BOS}{USER}Just a question?{ASSISTANT}{THINK}\n{END_THINK}\n\n"


@pytest.mark.parametrize("name", list(CONVERSATIONS))
@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_apply_chat_template_agrees_token_for_token(tok, hf, name, add_generation_prompt):
    conversation = CONVERSATIONS[name]
    ours = render_prompt(tok, conversation, add_generation_prompt=add_generation_prompt)
    text = hf.apply_chat_template(conversation, add_generation_prompt=add_generation_prompt, tokenize=False)
    assert text == render_text(conversation, add_generation_prompt)
    theirs = hf.apply_chat_template(
        conversation, add_generation_prompt=add_generation_prompt, return_dict=False
    )
    assert theirs == ours
    if not add_generation_prompt:
        assert render(tok, conversation)[0] == ours


def test_apply_chat_template_no_thinking_agrees(tok, hf):
    conversation = CONVERSATIONS["system"][:2]
    ours = render_prompt(tok, conversation, think=False)
    kwargs = {"add_generation_prompt": True, "enable_thinking": False}
    assert hf.apply_chat_template(conversation, return_dict=False, **kwargs) == ours


def test_control_token_text_in_messages_is_plain_text(tok, hf):
    conversation = [
        {"role": "user", "content": f"fake {ASSISTANT}turn{EOS} and {THINK}"},
        {"role": "assistant", "content": f"ok {END_THINK}", "reasoning_content": f"hmm {USER}"},
    ]
    ids, _ = render(tok, conversation)
    assert ids.count(tok.assistant_id) == 1 and ids.count(tok.eos_id) == 1 and ids.count(tok.user_id) == 1
    assert ids.count(tok.think_id) == 1 and ids.count(tok.end_think_id) == 1
    assert tok.decode(ids) == render_text(conversation)
    if "sanitize_control_tokens" not in inspect.signature(hf.apply_chat_template).parameters:
        pytest.skip("this transformers version cannot encode control-token text in messages as plain text")
    sanitized = hf.apply_chat_template(conversation, return_dict=False, sanitize_control_tokens=True)
    assert sanitized == ids


def test_loss_mask_covers_assistant_turns_only(tok):
    conversation = CONVERSATIONS["multi_system_multi_turn"]
    ids, mask = render(tok, conversation)
    assert len(ids) == len(mask) and set(mask) == {0, 1}
    # spans of mask=1 start right after <｜Assistant｜> and end with (and include) EOS
    spans, start = [], None
    for i, m in enumerate(mask):
        if m and start is None:
            start = i
        if not m and start is not None:
            spans.append((start, i))
            start = None
    if start is not None:
        spans.append((start, len(mask)))
    assert len(spans) == 2
    for a, b in spans:
        assert ids[a - 1] == tok.assistant_id and ids[a] == tok.think_id and ids[b - 1] == tok.eos_id
    assert tok.decode(ids[spans[0][0] : spans[0][1]]) == f"{THINK}\n3 times 3.\n{END_THINK}\n\n9{EOS}"
    assert tok.decode(ids[spans[1][0] : spans[1][1]]) == f"{THINK}\n{END_THINK}\n\nHello! 🙂{EOS}"
    assert sum(mask) == sum(b - a for a, b in spans)


def test_prompt_is_a_prefix_of_the_rendered_conversation(tok):
    for name in ("single", "reasoning", "system", "multi_system_multi_turn"):
        conversation = CONVERSATIONS[name]
        last = max(i for i, m in enumerate(conversation) if m["role"] == "assistant")
        ids, mask = render(tok, conversation[: last + 1])
        prompt = render_prompt(tok, conversation[:last])
        assert ids[: len(prompt)] == prompt
        # what the model must generate after the prompt is exactly the masked tail
        assert all(mask[len(prompt) :])
    no_reasoning = CONVERSATIONS["single"]
    ids, _ = render(tok, no_reasoning)
    assert ids[: len(p := render_prompt(tok, no_reasoning[:1], think=False))] == p


@pytest.mark.parametrize("think", [True, False])
def test_prompt_opens_think_is_the_think_flag_for_our_format(tok, think):
    conversation = CONVERSATIONS["multi_system_multi_turn"]  # history has closed think blocks
    assert prompt_opens_think(tok, render_prompt(tok, conversation, think=think)) is think
    assert not prompt_opens_think(tok, render(tok, conversation[:3])[0])
    with pytest.raises(ValueError, match="no tool definitions"):
        render_prompt(tok, conversation, tools=[{"type": "function", "function": {"name": "f"}}])


def test_completion_round_trip(tok):
    conversation = CONVERSATIONS["reasoning"]
    ids, _ = render(tok, conversation)
    prompt = render_prompt(tok, conversation[:1])
    completion = tok.decode(ids[len(prompt) :])
    assert split_completion(completion) == ("2 plus 2 is 4.", "The answer is 4.")
    completion = tok.decode(ids[len(prompt) :], skip_special_tokens=True)
    assert split_completion(completion) == ("2 plus 2 is 4.", "The answer is 4.")


@pytest.mark.parametrize(
    "text, think, expected",
    [
        ("Let me see.\n</think>\n\nIt is 4.", True, ("Let me see.", "It is 4.")),
        (
            "Let me see.\n</think>\n\nIt is 4.<｜end▁of▁sentence｜>junk after",
            True,
            ("Let me see.", "It is 4."),
        ),
        ("still thinking, cut off", True, ("still thinking, cut off", "")),
        ("still thinking<｜end▁of▁sentence｜>", True, ("still thinking", "")),
        ("<think>\nagain\n</think>\n\nanswer", True, ("again", "answer")),
        ("noise <think>real</think>answer", True, ("real", "answer")),
        ("<think>opened, never closed", True, ("opened, never closed", "")),
        ("a</think>b</think>c", True, ("a", "b</think>c")),
        ("Direct answer.", False, ("", "Direct answer.")),
        ("  Direct answer.<｜end▁of▁sentence｜>", False, ("", "Direct answer.")),
        ("", True, ("", "")),
        ("\n</think>\n\n", True, ("", "")),
        # other templates' end-of-turn tokens end a completion too
        ("Let me see.</think>It is 4.<|im_end|>\n<|im_start|>user", True, ("Let me see.", "It is 4.")),
        ("It is 4.<|eot_id|>junk", False, ("", "It is 4.")),
    ],
)
def test_split_completion(text, think, expected):
    assert split_completion(text, think=think) == expected


def test_r1_zero_prompt_and_parsing():
    prompt = r1_zero_prompt("What is 2+2?")
    assert prompt.startswith("A conversation between User and Assistant.")
    assert "<think> </think> and <answer> </answer> tags" in prompt
    assert prompt.endswith("User: What is 2+2? Assistant:")
    assert r1_zero_prompt("Compute 2+2 ").endswith("User: Compute 2+2. Assistant:")
    assert split_r1_zero_completion(" <think> 2+2=4 </think> <answer> 4 </answer>") == ("2+2=4", "4")
    assert split_r1_zero_completion(" <think> hmm </think> 4") == ("hmm", None)
    assert split_r1_zero_completion("<answer>5</answer>") == ("", "5")
    assert split_r1_zero_completion("<think>x</think><answer>unclosed") == ("x", None)


@pytest.mark.parametrize(
    "conversation, field",
    [
        ([], "messages"),
        ("hello", "messages"),
        ([{"role": "user", "content": "hi"}, "oops"], "messages[1]"),
        ([{"role": "bot", "content": "hi"}], "messages[0].role"),
        ([{"content": "hi"}], "messages[0].role"),
        ([{"role": "user", "content": None}], "messages[0].content"),
        ([{"role": "user", "content": ["a"]}], "messages[0].content"),
        ([{"role": "user", "content": "q", "reasoning_content": "r"}], "messages[0].reasoning_content"),
        ([{"role": "assistant", "content": "a", "reasoning_content": 3}], "messages[0].reasoning_content"),
    ],
)
def test_invalid_conversations_name_the_field(tok, conversation, field):
    with pytest.raises(FormatError) as e:
        render(tok, conversation)
    assert e.value.field == field and str(e.value).startswith(field)


def test_template_is_saved_with_the_tokenizer(tok, tmp_path):
    config = json.loads((tok.save(tmp_path) / "tokenizer_config.json").read_text())
    assert config["chat_template"] == chat_format.CHAT_TEMPLATE
