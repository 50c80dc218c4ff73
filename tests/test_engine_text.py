"""Text: streamed deltas (multi-byte safe, stop strings held back), chat completions split into
reasoning_content / content like the chat format, text prompts, on a scripted model and a tiny BPE."""

import random

import pytest
from helpers import ANSWER, REASONING, USER, make_tokenizer, scripted

from nanoseek.engine import Engine, GenerationRequest, SamplingParams
from nanoseek.engine.detok import ReasoningSplitter, TextStream
from nanoseek.tokenizer.chat_format import split_completion

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def chat_engine(tok):
    prompt = tok.render_prompt(USER)
    completion = [*tok.encode(f"{REASONING}</think>{ANSWER}"), tok.eos_id]
    return Engine(scripted(tok, prompt, completion), tok, max_slots=4)


def test_chat_completion_is_split_into_reasoning_and_content(chat_engine, tok):
    [c] = chat_engine.generate([GenerationRequest(messages=USER, params=SamplingParams(temperature=0))])
    assert c.finish_reason == "stop" and c.token_ids[-1] == tok.eos_id  # EOS kept in ids, not text
    assert c.text == f"{REASONING}</think>{ANSWER}"
    assert (c.reasoning_content, c.content) == (REASONING, ANSWER)
    assert c.prompt_tokens == len(tok.render_prompt(USER)) and c.completion_tokens == len(c.token_ids)


def test_streamed_deltas_never_split_a_character_and_add_up(chat_engine, tok):
    request = GenerationRequest(messages=USER, params=SamplingParams(temperature=0))
    deltas = list(chat_engine.stream([request]))
    assert "".join(d.text for d in deltas) == f"{REASONING}</think>{ANSWER}"
    assert "".join(d.reasoning_content for d in deltas) == REASONING
    assert "".join(d.content for d in deltas) == ANSWER
    assert all("\ufffd" not in d.text for d in deltas)
    emoji_tokens = len(tok.encode("🙂"))
    assert emoji_tokens > 1 and sum(1 for d in deltas if d.token_ids and not d.text) >= emoji_tokens - 1
    assert deltas[-1].finish_reason == "stop" and all(d.finish_reason is None for d in deltas[:-1])
    assert [t for d in deltas for t in d.token_ids][-1] == tok.eos_id


def test_stop_strings_end_the_text_and_never_reach_the_stream(chat_engine):
    params = SamplingParams(temperature=0, stop=["6 🙂"])
    request = GenerationRequest(messages=USER, params=params)
    deltas = list(chat_engine.stream([request]))
    text = "".join(d.text for d in deltas)
    assert text == f"{REASONING}</think>4" and deltas[-1].finish_reason == "stop"
    [c] = chat_engine.generate([request])
    assert c.text == text and c.content == "4"


def test_think_false_and_text_prompts(tok):
    prompt = tok.render_prompt(USER, think=False)
    engine = Engine(scripted(tok, prompt, [*tok.encode(ANSWER), tok.eos_id]), tok)
    [c] = engine.generate(
        [GenerationRequest(messages=USER, think=False, params=SamplingParams(temperature=0))]
    )
    assert (c.reasoning_content, c.content) == ("", ANSWER)
    prompt_text = "the cat"
    ids = [tok.bos_id, *tok.encode(prompt_text)]  # text prompts start with BOS, like our documents
    engine = Engine(scripted(tok, ids, [*tok.encode(" sat on"), tok.eos_id]), tok)
    [c] = engine.generate([GenerationRequest(prompt=prompt_text, params=SamplingParams(temperature=0))])
    assert c.text == " sat on" and c.prompt_tokens == len(ids)
    assert c.reasoning_content is None and c.content is None


def test_text_stream_holds_back_possible_stop_strings(tok):
    text = "I add them: 46. the cat 🙂 sat"
    for stop in (["46."], ["cat 🙂"], ["zzz", "them:"], []):
        stream = TextStream(tok, stop)
        deltas = [stream.push(t) for t in tok.encode(text)]
        deltas.append(stream.finish())
        cut = min([text.index(s) for s in stop if s in text], default=len(text))
        assert "".join(deltas) == stream.text == text[:cut]
        assert all("\ufffd" not in d for d in deltas)
        seen = ""
        for d in deltas:  # no prefix of the output ever contained (part of) a stop string
            seen += d
            assert not any(s in seen for s in stop)


@pytest.mark.parametrize("think", [True, False])
def test_reasoning_splitter_streams_split_completion(think):
    texts = [
        "  I add\n 12 and 34 \n</think>\n\n 46 ",
        "just thinking, never done ",
        "\n</think>\n\nonly the answer",
        "a </thi nk> b</think>c",
    ]
    rng = random.Random(0)
    for text in texts:
        cuts = sorted(rng.sample(range(1, len(text)), 5))
        pieces = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)])]
        splitter = ReasoningSplitter(think)
        out = [splitter.push(p) for p in pieces] + [splitter.finish()]
        streamed = ("".join(r for r, _ in out), "".join(c for _, c in out))
        if think or "</think>" not in text:  # think=False with a </think>: only the final split knows
            assert streamed == split_completion(text, think)
