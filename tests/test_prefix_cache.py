"""The prefix cache (engine/prefix_cache.py): the same outputs with and without it, hits in whole blocks,
memory within its budget (leaves evicted first), no contamination between samples that diverge after a
shared prefix, new weights clearing it, the disk tier across engines, and the server's usage fields.
"""

import copy
import json

import pytest
import torch
from helpers import greedy, ragged_prompts, random_model, tiny_config

from nanoseek.engine import Engine, GenerationRequest, SamplingParams
from nanoseek.serve import Prices

pytestmark = pytest.mark.usefixtures("one_thread")

BLOCK = 8


@pytest.fixture(scope="module")
def model():
    return random_model(tiny_config())


@pytest.fixture(scope="module")
def shared():
    """A 30-token prefix (a system prompt, say) and three continuations of it."""
    prefix = ragged_prompts([30], seed=3)[0]
    tails = ragged_prompts([5, 9, 12], seed=4)
    return prefix, [prefix + t for t in tails]


def one(engine: Engine, prompt: list[int], params: SamplingParams):
    return engine.generate([GenerationRequest(prompt=prompt, params=params)])


def block_bytes(engine: Engine) -> int:
    kv = engine.runner.cache.kv
    return sum(BLOCK * t.shape[-1] * t.element_size() for t in kv)


@pytest.mark.parametrize("speculative", [False, True], ids=["plain", "mtp"])
def test_same_tokens_and_logprobs_with_and_without_the_cache(model, shared, speculative):
    prefix, prompts = shared
    order = [prompts[0], prompts[1], prompts[0], prompts[2]]  # shared prefix, then a repeat
    params = greedy(8, logprobs=True, n=2)
    results = {}
    for mb in (0, 1):
        engine = Engine(
            model, max_slots=4, prefix_cache_mb=mb, prefix_cache_block=BLOCK, speculative=speculative
        )
        results[mb] = [one(engine, p, params) for p in order]
    for off, on in zip(results[0], results[1]):
        assert [c.token_ids for c in on] == [c.token_ids for c in off]
        for a, b in zip(off, on):
            assert [x.logprob for x in b.logprobs] == pytest.approx([x.logprob for x in a.logprobs], abs=1e-4)
    assert [c[0].cached_tokens for c in results[0]] == [0, 0, 0, 0]
    # the 30-token prefix holds 3 blocks of 8 (24 tokens); a repeat of a 35-token prompt 4 (32)
    hits = [24, 32, 24]
    if speculative:  # the prefix's last token is recomputed for the MTP layer's row
        hits = [h - 1 for h in hits]
    assert [c[0].cached_tokens for c in results[1]] == [0, *hits]
    assert all(
        c.cached_tokens == on[0].cached_tokens for on in results[1] for c in on
    )  # n samples: one prompt


@pytest.mark.parametrize("name", ["llama", "qwen2"])
def test_a_dense_gqa_model_hits_and_gives_the_same_tokens(name, hf_dense_dirs):
    """The grouped-query K/V cache (Llama: 2 K/V heads of 4; Qwen2: q/k/v biases, one K/V head) is
    reused block by block like MLA's latent cache: hits reported, the same greedy tokens and logprobs."""
    from nanoseek.model import from_pretrained

    dense = from_pretrained(hf_dense_dirs[name]).eval()
    prefix = ragged_prompts([30], vocab=96, seed=7)[0]
    prompts = [prefix + t for t in ragged_prompts([5, 9, 5], vocab=96, seed=8)]
    prompts[2] = prompts[0]  # a repeat
    params = greedy(8, logprobs=True)
    results = {}
    for mb in (0, 1):
        engine = Engine(dense, max_slots=2, max_len=64, prefix_cache_mb=mb, prefix_cache_block=BLOCK)
        results[mb] = [one(engine, p, params)[0] for p in prompts]
    for off, on in zip(results[0], results[1]):
        assert on.token_ids == off.token_ids
        assert [x.logprob for x in on.logprobs] == pytest.approx([x.logprob for x in off.logprobs], abs=1e-4)
    assert [c.cached_tokens for c in results[0]] == [0, 0, 0]
    assert [c.cached_tokens for c in results[1]] == [0, 24, 32]  # the shared 3 blocks; the repeat's 4
    assert engine.prefix_cache.hit_tokens == 56


def test_hits_are_whole_blocks_that_leave_a_token_to_prefill(model):
    engine = Engine(model, max_slots=2, prefix_cache_block=BLOCK)
    prompt = ragged_prompts([3 * BLOCK], seed=5)[0]  # exactly 3 blocks
    assert one(engine, prompt, greedy(2))[0].cached_tokens == 0
    again = one(engine, prompt, greedy(2))[0]
    assert again.cached_tokens == 2 * BLOCK  # the last block's last token must run: its logits are needed
    assert engine.prefix_cache.hit_tokens == 2 * BLOCK
    assert engine.prefix_cache.miss_tokens == 3 * BLOCK + BLOCK


def test_memory_stays_within_the_budget_and_evicts_leaves_first(model):
    engine = Engine(model, max_slots=2, prefix_cache_block=BLOCK)
    budget = 5 * block_bytes(engine)  # five blocks; the workload stores 3 per prompt, 10 prompts
    engine = Engine(model, max_slots=2, prefix_cache_block=BLOCK, prefix_cache_mb=budget / 2**20)
    cache = engine.prefix_cache
    prompts = ragged_prompts([3 * BLOCK + 2] * 10, seed=6)
    for p in prompts:
        one(engine, p, greedy(3))
        assert 0 < cache.bytes <= cache.max_bytes == budget
        assert cache.bytes == sum(sum(r.nbytes for r in b.rows) for b in cache.blocks.values())
    assert len(cache.blocks) == 5
    for p in prompts:  # what remains is reachable: each prompt's cached blocks are a prefix of its chain
        present = [k in cache.blocks for k in cache.keys(p, 3)]
        assert present == sorted(present, reverse=True)
    assert one(engine, prompts[-1], greedy(3))[0].cached_tokens == 3 * BLOCK  # the newest is whole
    assert one(engine, prompts[0], greedy(3))[0].cached_tokens == 0  # the oldest was evicted


def test_diverging_samples_after_a_shared_prefix_do_not_contaminate_each_other(model, shared):
    _, prompts = shared
    sampled = SamplingParams(temperature=1.0, max_new_tokens=20, ignore_eos=True, seed=11, n=3)
    plain = Engine(model, max_slots=4, prefix_cache_mb=0)
    expected = [one(plain, p, sampled) for p in prompts]
    engine = Engine(model, max_slots=4, prefix_cache_block=BLOCK)
    one(engine, prompts[0], greedy(1))  # stores the prefix
    before = {k: [r.clone() for r in b.rows] for k, b in engine.prefix_cache.blocks.items()}
    got = [one(engine, p, sampled) for p in prompts]  # three samples each write past the prefix
    assert [[c.token_ids for c in g] for g in got] == [[c.token_ids for c in e] for e in expected]
    assert len({tuple(c.token_ids) for c in got[1]}) > 1  # the samples did diverge
    assert all(c[0].cached_tokens > 0 for c in got)
    for key, rows in before.items():  # stored blocks are copies nobody writes
        assert all(torch.equal(a, b) for a, b in zip(rows, engine.prefix_cache.blocks[key].rows))


def test_new_weights_clear_the_cache(model, shared):
    _, prompts = shared
    mine = copy.deepcopy(model)
    engine = Engine(mine, max_slots=2, prefix_cache_block=BLOCK)
    one(engine, prompts[0], greedy(4))
    assert one(engine, prompts[0], greedy(4))[0].cached_tokens > 0
    engine.sync_weights(mine)  # unchanged weights: the cache stays
    assert engine.prefix_cache.blocks
    with torch.no_grad():
        for p in mine.parameters():
            p.mul_(1.5)
    engine.sync_weights(mine)
    assert not engine.prefix_cache.blocks
    out = one(engine, prompts[0], greedy(4))[0]
    assert out.cached_tokens == 0
    assert (
        out.token_ids == one(Engine(mine, max_slots=2, prefix_cache_mb=0), prompts[0], greedy(4))[0].token_ids
    )


def test_blocks_stored_without_speculation_never_serve_it(model, shared):
    """The MTP layer's rows are computed only while speculating: blocks stored by plain decoding hold
    none, so an engine switched to speculation (as serve's start-up probe does) must not reuse them."""
    _, prompts = shared
    engine = Engine(model, max_slots=2, prefix_cache_block=BLOCK, speculative=True)
    engine.speculative = False
    one(engine, prompts[0], greedy(4))
    assert one(engine, prompts[0], greedy(4))[0].cached_tokens > 0
    engine.speculative = True
    fresh = one(engine, prompts[0], greedy(6))[0]
    assert fresh.cached_tokens == 0
    again = one(engine, prompts[0], greedy(6))[0]
    assert again.cached_tokens > 0 and again.token_ids == fresh.token_ids


def test_the_disk_tier_serves_a_new_engine_on_the_same_weights_only(model, shared, tmp_path):
    _, prompts = shared
    disk = {"prefix_cache_block": BLOCK, "prefix_cache_dir": tmp_path / "px"}
    first = Engine(model, max_slots=2, **disk)
    expected = one(first, prompts[0], greedy(6))[0].token_ids
    files = list((tmp_path / "px").glob("*.safetensors"))
    assert len(files) == 4  # 35 tokens: 4 full blocks
    del first  # "restart"
    same = Engine(copy.deepcopy(model), max_slots=2, **disk)  # a new process would load these weights
    again = one(same, prompts[0], greedy(6))[0]
    assert again.cached_tokens == 4 * BLOCK and again.token_ids == expected
    other = Engine(random_model(tiny_config(), seed=1), max_slots=2, **disk)
    assert one(other, prompts[0], greedy(6))[0].cached_tokens == 0


def test_the_disk_tier_stays_within_its_budget(model, tmp_path):
    probe = Engine(model, max_slots=2, prefix_cache_block=BLOCK, prefix_cache_dir=tmp_path / "probe")
    one(probe, ragged_prompts([BLOCK + 1], seed=8)[0], greedy(1))
    file_size = next((tmp_path / "probe").glob("*.safetensors")).stat().st_size
    budget = 6 * file_size
    engine = Engine(
        model,
        max_slots=2,
        prefix_cache_block=BLOCK,
        prefix_cache_dir=tmp_path / "px",
        prefix_cache_disk_mb=budget / 2**20,
    )
    for p in ragged_prompts([2 * BLOCK + 1] * 8, seed=9):
        one(engine, p, greedy(1))
        on_disk = sum(f.stat().st_size for f in (tmp_path / "px").glob("*.safetensors"))
        assert on_disk == engine.prefix_cache.disk.bytes <= budget
    assert len(list((tmp_path / "px").glob("*.safetensors"))) == 6


# ------------------------------------------------------------------------- the server (demo checkpoint)


def chat_body(system: str, user: str, **extra) -> dict:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    return {"model": "demo", "messages": messages, "max_completion_tokens": 4, **extra}


def check_usage(usage: dict, hit: int) -> None:
    prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
    assert usage["prompt_cache_hit_tokens"] == usage["prompt_tokens_details"]["cached_tokens"] == hit
    assert usage["prompt_cache_miss_tokens"] == prompt - hit
    assert usage["cost"] == pytest.approx(Prices().cost(prompt, hit, completion))


def test_usage_reports_cache_hits_and_prices_them(http):
    system = "You are nanoseek, a tiny reasoning model. Answer briefly, think step by step. " * 2
    first = http.post("/v1/chat/completions", json=chat_body(system, "Hi there"))
    assert first.status_code == 200, first.text
    check_usage(first.json()["usage"], 0)
    second = http.post("/v1/chat/completions", json=chat_body(system, "What is 2 + 2?")).json()["usage"]
    hit = second["prompt_cache_hit_tokens"]
    assert 0 < hit < second["prompt_tokens"] and hit % 16 == 0
    check_usage(second, hit)
    assert second["cost"] < Prices().cost(second["prompt_tokens"], 0, second["completion_tokens"])

    body = chat_body(system, "What is 2 + 2?", stream=True, stream_options={"include_usage": True})
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: {")]
    streamed = json.loads(lines[-1][len("data: ") :])["usage"]
    repeat = (streamed["prompt_tokens"] - 1) // 16 * 16  # a repeated prompt: every block but a last token
    assert streamed["prompt_cache_hit_tokens"] == repeat >= hit
    check_usage(streamed, streamed["prompt_cache_hit_tokens"])

    metrics = http.get("/metrics").text
    rate = next(line for line in metrics.splitlines() if line.startswith("nanoseek_prefix_cache_hit_rate "))
    assert 0 < float(rate.split()[-1]) < 1
    assert "nanoseek_prefix_cache_bytes " in metrics and "nanoseek_cached_prompt_tokens_total " in metrics
