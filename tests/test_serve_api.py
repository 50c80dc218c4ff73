"""`nanoseek serve` through the official openai client: chat (sync, async, streaming, n > 1,
include_usage, reasoning_content, token limits, thinking off, logprobs), completions (echo,
logprobs, token-id prompts, streaming), models, health, metrics, the page's files, and the
`nanoseek serve` command itself in a subprocess.

The server runs the scripted demo checkpoint (`nanoseek.serve.demo`): after the chat prompt it
always thinks DEMO_REASONING and answers DEMO_ANSWER, so every expectation here is exact.
"""

import asyncio
import subprocess
import sys
import time

import httpx
import pytest
import torch
from helpers import free_port
from openai import AsyncOpenAI, OpenAI

from nanoseek.engine import Engine
from nanoseek.serve import Prices, ServerConfig
from nanoseek.serve.cli import build_parser
from nanoseek.serve.demo import DEMO_ANSWER, DEMO_REASONING, demo_script

HI = [{"role": "user", "content": "Hello there!"}]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def engine(demo_checkpoint):
    return Engine.from_pretrained(demo_checkpoint, max_slots=8)


@pytest.fixture(scope="module")
def server_config():
    return ServerConfig(model_name="demo", prices=Prices(input=1.0, cached_input=0.5, output=4.0))


@pytest.fixture(scope="module")
def client(server):
    return OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def script(engine):
    """(reasoning token count incl. </think>, total completion tokens incl. EOS) of the demo reply."""
    ids = demo_script(engine.tokenizer)
    return ids.index(engine.tokenizer.end_think_id) + 1, len(ids)


def test_chat_sync_reasoning_content_usage_and_cost(client, script):
    r = client.chat.completions.create(model="demo", messages=HI, temperature=0.7, seed=3)
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.reasoning_content == DEMO_REASONING
    assert choice.message.reasoning == DEMO_REASONING  # vLLM's name
    assert choice.message.content == DEMO_ANSWER
    assert choice.finish_reason == "stop"
    assert r.object == "chat.completion" and r.model == "demo" and r.id.startswith("chatcmpl-")
    n_reasoning, n_completion = script
    u = r.usage
    assert u.completion_tokens == n_completion
    assert u.completion_tokens_details.reasoning_tokens == n_reasoning
    assert u.prompt_tokens_details.cached_tokens == 0
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    expected_cost = (u.prompt_tokens * 1.0 + u.completion_tokens * 4.0) / 1e6
    assert u.model_extra["cost"] == pytest.approx(expected_cost)


def test_chat_async_concurrent(server):
    async def main():
        client = AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        calls = [client.chat.completions.create(model="demo", messages=HI) for _ in range(6)]
        return await asyncio.gather(*calls)

    for r in asyncio.run(main()):
        assert r.choices[0].message.content == DEMO_ANSWER
        assert r.choices[0].message.reasoning_content == DEMO_REASONING


def test_chat_stream_thinking_then_answer(client):
    chunks = list(client.chat.completions.create(model="demo", messages=HI, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    reasoning, content = "", ""
    seen_content = False
    for chunk in chunks:
        assert chunk.object == "chat.completion.chunk"
        assert chunk.usage is None
        for choice in chunk.choices:
            delta = choice.delta
            r = delta.model_extra.get("reasoning_content")
            if r:
                assert delta.content is None  # content null while thinking
                assert not seen_content  # no thinking after the answer started
                assert delta.model_extra.get("reasoning") == r
                reasoning += r
            if delta.content:
                assert not delta.model_extra.get("reasoning_content")
                seen_content = True
                content += delta.content
    assert reasoning == DEMO_REASONING and content == DEMO_ANSWER
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_chat_stream_include_usage_and_n(client, script):
    stream = client.chat.completions.create(
        model="demo", messages=HI, stream=True, n=3, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    final = chunks[-1]
    assert final.choices == [] and final.usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    answers, finishes = {}, {}
    for chunk in chunks[:-1]:
        for choice in chunk.choices:
            answers[choice.index] = answers.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert answers == {i: DEMO_ANSWER for i in range(3)}
    assert finishes == {i: "stop" for i in range(3)}
    n_reasoning, n_completion = script
    assert final.usage.completion_tokens == 3 * n_completion
    assert final.usage.completion_tokens_details.reasoning_tokens == 3 * n_reasoning


def test_chat_n_samples(client):
    r = client.chat.completions.create(model="demo", messages=HI, n=4, temperature=1.0)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert all(c.message.content == DEMO_ANSWER for c in r.choices)


def test_max_tokens_limits_the_answer_and_max_completion_tokens_everything(client, script):
    n_reasoning, _ = script
    r = client.chat.completions.create(model="demo", messages=HI, max_tokens=2)
    assert r.choices[0].message.reasoning_content == DEMO_REASONING
    assert r.choices[0].message.content == "Hello"  # "\n\n" and "Hello": two answer tokens
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == n_reasoning + 2

    r = client.chat.completions.create(model="demo", messages=HI, max_completion_tokens=3)
    assert r.choices[0].message.reasoning_content == "The user greets"
    assert r.choices[0].message.content == ""
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == r.usage.completion_tokens_details.reasoning_tokens == 3


def test_max_tokens_cut_while_streaming_with_n(client):
    stream = client.chat.completions.create(model="demo", messages=HI, max_tokens=2, n=2, stream=True)
    content, finishes = {}, {}
    for chunk in stream:
        for c in chunk.choices:
            content[c.index] = content.get(c.index, "") + (c.delta.content or "")
            finishes[c.index] = c.finish_reason or finishes.get(c.index)
    assert content == {0: "Hello", 1: "Hello"} and finishes == {0: "length", 1: "length"}


@pytest.mark.parametrize(
    "extra",
    [{"thinking": {"type": "disabled"}}, {"chat_template_kwargs": {"enable_thinking": False}}],
    ids=["deepseek", "vllm"],
)
def test_thinking_off_answers_directly(client, extra):
    r = client.chat.completions.create(model="demo", messages=HI, extra_body=extra)
    assert r.choices[0].message.content == DEMO_ANSWER
    assert r.choices[0].message.model_extra.get("reasoning_content") is None
    assert r.usage.completion_tokens_details.reasoning_tokens == 0


def test_history_reasoning_content_is_accepted_and_ignored(client):
    turn = {"role": "assistant", "content": DEMO_ANSWER}
    follow = {"role": "user", "content": "And now?"}
    plain = client.chat.completions.create(model="demo", messages=[*HI, turn, follow])
    with_reasoning = client.chat.completions.create(
        model="demo",
        messages=[*HI, {**turn, "reasoning_content": "secret thoughts " * 20}, follow],
    )
    assert with_reasoning.usage.prompt_tokens == plain.usage.prompt_tokens
    assert with_reasoning.choices[0].message.content == DEMO_ANSWER


def test_sampling_parameters_and_stop(client):
    r = client.chat.completions.create(
        model="demo",
        messages=[{"role": "system", "content": "Be kind."}, *HI],
        temperature=1.3,
        top_p=0.9,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        seed=7,
        user="tester",
        stop=["warmly"],
        extra_body={"top_k": 5, "min_p": 0.01, "repetition_penalty": 1.1, "some_future_field": 1},
    )
    assert r.choices[0].message.reasoning_content == "The user greets me; reply"
    assert r.choices[0].finish_reason == "stop"


def test_chat_logprobs_split_between_thinking_and_answer(client, engine):
    r = client.chat.completions.create(model="demo", messages=HI, logprobs=True, top_logprobs=2)
    lp = r.choices[0].logprobs
    answer_tokens = [t.token for t in lp.content]
    thinking = lp.model_extra["reasoning_content"]
    assert "".join(answer_tokens).strip() == DEMO_ANSWER
    assert "".join(t["token"] for t in thinking) == DEMO_REASONING + "</think>"
    for entry in lp.content:
        assert len(entry.top_logprobs) == 2
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob
        assert entry.logprob == pytest.approx(0.0, abs=1e-3)  # the script is certain
        assert bytes(entry.bytes).decode() == entry.token


def test_completions_plain_echo_and_logprobs(client, engine):
    r = client.completions.create(model="demo", prompt="Hello there", max_tokens=3, temperature=0)
    assert r.choices[0].text == "The user greets"  # every non-script token leads into the script
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3

    r = client.completions.create(
        model="demo", prompt=["Hello there", "Tell me"], max_tokens=1, echo=True, logprobs=1, n=2
    )
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    first = r.choices[0]
    assert first.text == "Hello thereThe"
    lp = first.logprobs
    ids = [engine.tokenizer.bos_id, *engine.tokenizer.encode("Hello there")]
    assert len(lp.tokens) == len(ids) + 1  # the prompt's tokens, then the generated one
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(isinstance(v, float) for v in lp.token_logprobs[1:])
    assert lp.tokens[-1] == "The" and lp.token_logprobs[-1] == pytest.approx(0.0, abs=1e-3)
    assert lp.text_offset[1] == 0 and lp.text_offset[-1] == len("Hello there")  # BOS has no width
    assert r.usage.prompt_tokens == len(ids) + len(engine.tokenizer.encode("Tell me")) + 1


def test_completions_token_ids_echo_scores_like_the_model(client, engine):
    ids = engine.tokenizer.encode("Tell me a story about a dog")
    r = client.completions.create(model="demo", prompt=ids, max_tokens=0, echo=True, logprobs=2)
    choice = r.choices[0]
    assert choice.text == "Tell me a story about a dog" and r.usage.completion_tokens == 0
    with torch.no_grad():
        expected = torch.log_softmax(engine.model(torch.tensor([ids]))[0].float(), -1)
    for i in range(1, len(ids)):
        assert choice.logprobs.token_logprobs[i] == pytest.approx(expected[i - 1, ids[i]].item(), abs=1e-3)
        assert len(choice.logprobs.top_logprobs[i]) <= 2


def test_completions_stream_with_usage(client):
    chunks = list(
        client.completions.create(
            model="demo", prompt="Hi", max_tokens=4, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == "The user greets me"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4

    chunks = list(
        client.completions.create(model="demo", prompt="Hi", max_tokens=2, stream=True, echo=True, logprobs=1)
    )
    first = chunks[0].choices[0]
    assert first.text == "Hi" and first.logprobs.token_logprobs[0] is None  # the echoed prompt
    generated = [c.choices[0] for c in chunks[1:] if c.choices[0].text]
    assert "".join(c.text for c in generated) == "The user"
    assert [c.logprobs.tokens for c in generated] == [["The"], [" user"]]
    assert generated[1].logprobs.text_offset == [len("HiThe")]


def test_models_health_metrics(server, client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["demo"]
    assert models.data[0].model_extra["max_model_len"] == 256
    assert client.models.retrieve("demo").id == "demo"
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["slots"] == 8
    text = httpx.get(server.url + "/metrics").text
    for name in (
        "nanoseek_requests_total",
        "nanoseek_request_duration_seconds_bucket",
        "nanoseek_time_to_first_token_seconds_bucket",
        "nanoseek_generation_tokens_total",
        "nanoseek_reasoning_tokens_total",
        "nanoseek_cost_dollars_total",
        "nanoseek_queue_depth",
        "nanoseek_batch_occupancy",
        "nanoseek_active_slots 0.0",
    ):
        assert name in text, name
    assert 'nanoseek_requests_total{endpoint="/v1/chat/completions",status="200"}' in text


def test_chat_page_and_its_assets_are_served(server):
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "nanoseek chat" in page.text
    for asset in ("/static/chat.js", "/static/markdown.js", "/static/style.css"):
        assert httpx.get(server.url + asset).status_code == 200
    assert "http" not in page.text.replace("http-equiv", "")  # no CDN: everything comes from here


def test_serve_command_end_to_end(demo_checkpoint, tmp_path):
    args = build_parser().parse_args(["--model", str(demo_checkpoint)])
    assert (args.host, args.port, args.price_input, args.price_output) == ("127.0.0.1", 8000, 0.55, 2.19)
    config = ServerConfig.for_model(demo_checkpoint)
    assert (config.model_name, config.temperature, config.top_p) == ("model", 0.6, 0.95)  # generation_config

    port = free_port()
    keys = tmp_path / "keys"
    keys.write_text("sk-test\n")
    command = [sys.executable, "-m", "nanoseek.serve.cli", "--model", str(demo_checkpoint)]
    command += ["--port", str(port), "--served-model-name", "tiny", "--api-key-file", str(keys)]
    command += ["--threads", "1", "--log-level", "warning"]
    server = subprocess.Popen(command)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-test", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["tiny"]
        r = client.chat.completions.create(model="tiny", messages=HI)
        assert r.choices[0].message.content == DEMO_ANSWER and r.model == "tiny"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_prompt_logprobs_in_chunks_equal_one_forward(engine, monkeypatch):
    """What echo + logprobs shows: the engine's prompt_logprobs, a few positions of logits at a time."""
    from nanoseek.engine import GenerationRequest, SamplingParams, runner

    monkeypatch.setattr(runner, "LOGPROB_ROWS", 3)  # several pieces, a ragged last one
    ids = engine.tokenizer.encode("Tell me a story about a dog, please, today")
    params = SamplingParams(max_new_tokens=0, prompt_logprobs=2)
    scored = engine.generate([GenerationRequest(prompt=ids, params=params)])[0].prompt_logprobs
    with torch.no_grad():
        expected = torch.log_softmax(engine.model(torch.tensor([ids]))[0].float(), -1)
    assert scored[0] is None and len(scored) == len(ids)
    for i in range(1, len(ids)):
        assert scored[i].logprob == pytest.approx(expected[i - 1, ids[i]].item(), abs=1e-4)
        assert [t for t, _ in scored[i].top] == expected[i - 1].topk(2).indices.tolist()
