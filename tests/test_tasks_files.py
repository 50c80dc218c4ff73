"""RL and eval on the user's own problems: train= / test= files and seeded held-out fractions, the generic
`problems` task, Countdown in TinyZero's format (JSONL and parquet), GSM8K's train split from the data
folders, errors that name file, record and field, and GRPO refusing to train on its evaluation problems
(the runs use a scripted rollout Generator that records which prompts it was asked for)."""

import json
from pathlib import Path

import pytest

from nanoseek.tasks import DataError, get_task, parse_task_spec, prompt_key, train_eval_overlap
from nanoseek.tasks.files import BENCHMARKS_DIR_ENV, TRAIN_DIR_ENV

pytestmark = pytest.mark.usefixtures("one_thread")

SHARED = Path(__file__).resolve().parents[2] / "shared/data"


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def question(i: int) -> str:
    return f"Problem {i:03d}: what is {i} + 1?"


def qa_rows(numbers) -> list[dict]:
    return [{"question": question(i), "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"} for i in numbers]


def task(spec: str):
    return parse_task_spec(spec).build()


# ------------------------------------------------------------------------------ train= / test= files


def test_train_and_test_files_and_a_test_file_alone(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", qa_rows(range(10)))
    b = write_jsonl(tmp_path / "b.jsonl", qa_rows(range(100, 104)))
    both = task(f"gsm8k?train={a}&test={b}")
    assert [p.reference for p in both.problems("train")] == [str(i + 1) for i in range(10)]
    assert [p.reference for p in both.problems("test")] == ["101", "102", "103", "104"]
    assert both.split_source("train") == str(a.resolve()) and both.split_source("test") == str(b.resolve())
    # "gsm8k:FILE" keeps meaning a test file; its missing train split says how to give one
    alone = task(f"gsm8k:{b}")
    assert len(alone.problems("test")) == 4
    with pytest.raises(ValueError, match=r"no train split: only test=.*b.jsonl was given.*gsm8k\?train="):
        alone.problems("train")
    with pytest.raises(ValueError, match="two test files"):
        task(f"gsm8k:{a}?test={b}")


def test_holdout_is_seeded_disjoint_and_independent_of_row_order(tmp_path):
    rows = qa_rows(range(40))
    spec = "problems:{}?holdout=0.25&seed={}"
    path = write_jsonl(tmp_path / "all.jsonl", rows + rows[:3])  # 3 duplicate rows
    t = task(spec.format(path, 0))
    train, test = t.problems("train"), t.problems("test")
    assert len({p.prompt for p in test}) == 10  # round(0.25 x 40 distinct problems)
    assert len(train) + len(test) == 43  # every row, duplicates on one side (below)
    assert not {prompt_key(p) for p in train} & {prompt_key(p) for p in test}
    assert [p.id for p in test] == sorted((p.id for p in test), key=lambda s: int(s.rsplit("-", 1)[1]))
    assert [p.prompt for p in task(spec.format(path, 0)).problems("test")] == [p.prompt for p in test]
    shuffled = write_jsonl(tmp_path / "shuffled.jsonl", rows[::-1])
    assert {p.prompt for p in task(spec.format(shuffled, 0)).problems("test")} == {p.prompt for p in test}
    other = {p.prompt for p in task(spec.format(path, 1)).problems("test")}
    assert other != {p.prompt for p in test}  # another seed, another split
    larger = {p.prompt for p in task(f"problems:{path}?holdout=0.5&seed=0").problems("test")}
    assert {p.prompt for p in test} < larger  # the same seed holds out a superset
    assert train_eval_overlap(t, "train", "test", train, test).shared == 0
    assert task(f"problems:{path}?holdout=0.01").problems("test")  # at least one
    with pytest.raises(ValueError, match="holdout splits one file"):
        task(f"problems?train={path}&test={shuffled}&holdout=0.1")
    with pytest.raises(ValueError, match="holdout=1.5"):
        task(f"problems:{path}?holdout=1.5")
    one = write_jsonl(tmp_path / "one.jsonl", qa_rows([1, 1]))
    with pytest.raises(ValueError, match="at least 2 distinct problems"):
        task(f"problems:{one}?holdout=0.5").problems("test")


# ------------------------------------------------------------------------------ your own problems


def test_own_problems_with_configured_columns_and_graders(tmp_path):
    rows = [
        {"q": "Half of 1?", "a": "\\frac{1}{2}", "key": "h"},
        {"q": "How many apples?", "a": "So 1,250 in all.\n#### 1,250", "key": "a"},
        {"q": "Answer in a box.", "a": "It is \\boxed{7}.", "key": "b"},
        {"q": "A float", "a": 27.0, "key": "f"},
    ]
    path = write_jsonl(tmp_path / "mine.jsonl", rows)
    t = task(f"problems:{path}?question_field=q&answer_field=a&id_field=key")
    half, apples, boxed, number = t.problems("test")
    assert [p.reference for p in (half, apples, boxed, number)] == ["\\frac{1}{2}", "1250", "7", "27"]
    assert half.id == "problems-h" and half.prompt.startswith("Half of 1?\n\nPlease reason step by step")
    assert t.score(apples, "<think>x</think> The answer is 1250 apples.")[0] == 1.0
    assert t.score(apples, "\\boxed{1251}")[0] == 0.0
    assert t.score(number, "\\boxed{27}")[0] == 1.0
    assert t.score(half, "\\boxed{0.5}")[0] == 1.0  # math-verify: equivalent forms

    words = write_jsonl(tmp_path / "words.csv", [])
    words.write_text('question,answer\n"Capital of France?",Paris\n"Colour of the sky?",blue\n')
    exact = task(f"problems:{words}?grader=exact&instruction=")
    paris, blue = exact.problems("test")
    assert paris.prompt == "Capital of France?" and paris.reference == "Paris"
    assert [exact.score(paris, "\\boxed{Paris}")[0], exact.score(paris, "\\boxed{Lyon}")[0]] == [1.0, 0.0]
    with pytest.raises(ValueError, match="grader='fuzzy'"):
        task(f"problems:{words}?grader=fuzzy")


@pytest.mark.parametrize(
    "spec, rows, record, field, problem",
    [
        ("problems", [{"question": "q", "answer": 1}, {"text": "q"}], 2, "question / problem / prompt", "missing"),
        ("problems", [{"question": "q", "answer": "#### "}], 1, "answer", "no final answer"),
        ("problems", [{"question": "q", "answer": None}], 1, "answer", "non-empty"),
        ("problems?id_field=uid", [{"question": "q", "answer": 1}], 1, "uid", "missing"),
        ("problems?question_field=q", [{"question": "q", "answer": 1}], 1, "q", "missing"),
        ("countdown", [{"target": 5, "nums": [1, 2]}, {"target": -1, "nums": [2, 3]}], 2, "target", "whole number"),
        ("countdown", [{"target": 5, "nums": "12"}], 1, "nums", "list"),
        ("countdown", [{"target": 5, "nums": [4]}], 1, "nums", "at least 2"),
        ("countdown", [{"target": 5, "nums": [1, 2.5]}], 1, "nums", "whole number"),
        ("countdown", [{"nums": [1, 2]}], 1, "target", "missing"),
        ("countdown", [{"reward_model": {"ground_truth": {"target": 3}}}], 1, "reward_model.ground_truth.numbers", "list"),
        ("gsm8k", [{"question": "q", "answer": "#### 1"}, '{"question": '], 2, None, "invalid JSON"),
    ],
)  # fmt: skip
def test_bad_rows_name_file_record_and_field(tmp_path, spec, rows, record, field, problem):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    name, _, query = spec.partition("?")
    with pytest.raises(DataError) as error:
        task(f"{name}?train={path}" + (f"&{query}" if query else "")).problems("train")
    e = error.value
    assert (e.path, e.record, e.field) == (str(path), record, field) and problem in e.problem, str(e)


# ------------------------------------------------------------------------------ Countdown, TinyZero's files


TINYZERO_ROWS = [{"target": 24, "nums": [4, 6, 1]}, {"target": 10, "nums": [2, 5, 3, 7]}]


def tinyzero_parquet(path: Path, prepared: bool = False) -> Path:
    """Countdown-Tasks-3to4's columns, or (prepared) the parquet TinyZero's countdown.py writes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if prepared:
        rows = [
            {
                "data_source": "countdown",
                "prompt": [{"role": "user", "content": f"Using the numbers {r['nums']} ..."}],
                "ability": "math",
                "reward_model": {
                    "style": "rule",
                    "ground_truth": {"target": r["target"], "numbers": r["nums"]},
                },
                "extra_info": {"split": "train", "index": i},
            }
            for i, r in enumerate(TINYZERO_ROWS)
        ]
    else:
        rows = TINYZERO_ROWS
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("form", ["jsonl", "parquet", "prepared parquet", "csv"])
def test_countdown_from_tinyzero_files_is_scored_by_its_verifier(tmp_path, form):
    if form == "jsonl":
        path = write_jsonl(tmp_path / "cd.jsonl", TINYZERO_ROWS)
    elif form == "csv":
        path = tmp_path / "cd.csv"
        path.write_text('target,nums\n24,"[4, 6, 1]"\n10,"[2, 5, 3, 7]"\n')
    else:
        path = tinyzero_parquet(tmp_path / "cd.parquet", prepared=form == "prepared parquet")
    t = get_task(f"countdown:{path}")  # was: "task 'countdown' is generated, it does not read a file"
    first, second = t.problems("test")
    assert first.meta == {"numbers": [4, 6, 1], "target": 24} and first.reference == "24"
    assert first.prompt.startswith("Using the numbers 4, 6, 1, make 24.") and "exactly once" in first.prompt
    results = t.score_batch(
        [first, first, first, second, second],
        ["<think>4*6=24</think> \\boxed{4 * 6 * 1}", "\\boxed{4 * 6}", "\\boxed{4 + 6 + 1}",
         "<answer> (7 - 5) * 3 + 2 + 2 </answer>", "The answer is 2 * 5 + 3 - 7 + 4"],
    )  # fmt: skip
    assert [r for r, _ in results] == [1.0, 0.0, 0.0, 0.0, 0.0]
    errors = [d["error"] for _, d in results]
    assert errors[1] == "does not use every number" and errors[2].startswith("evaluates to 11")
    assert "more often than given" in errors[3] and "not given" in errors[4]
    assert t.score(second, "\\boxed{(2 + 3) * (7 - 5)}")[0] == 1.0
    # TinyZero's (and R1-Zero's) answer: the whole <answer> is the expression, not its last number
    tagged = "<think> 5 * 2 = 10 </think> <answer> (2 + 3) * (7 - 5) </answer>"
    reward, details = t.score(second, tagged)
    assert reward == 1.0 and details["format"] == "expression" and details["extracted"] == "(2+3)*(7-5)"
    generated = get_task("countdown", use_all=True)
    assert generated.score(second, tagged)[0] == 1.0
    loose = get_task(f"countdown:{path}", use_all=False)  # TinyZero's rule off: each number at most once
    assert loose.score(loose.problems("test")[0], "\\boxed{4 * 6}")[0] == 1.0


def test_countdown_files_per_split_and_held_out(tmp_path):
    rows = [{"target": i + 3, "nums": [i, 3]} for i in range(1, 21)]
    path = write_jsonl(tmp_path / "cd.jsonl", rows)
    t = task(f"countdown:{path}?holdout=0.2&seed=0")
    train, test = t.problems("train"), t.problems("test")
    assert len(test) == 4 and len(train) == 16
    assert not {p.prompt for p in train} & {p.prompt for p in test}
    assert task(f"countdown?train={path}").problems("train")[0].meta == {"numbers": [1, 3], "target": 4}
    with pytest.raises(ValueError, match="is generated"):
        get_task(f"sort:{path}")


# ------------------------------------------------------------------------------ GSM8K's train split


def test_gsm8k_reads_its_train_split_beside_the_benchmarks_folder(tmp_path, monkeypatch):
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "train").mkdir()
    test_file = write_jsonl(tmp_path / "benchmarks" / "gsm8k_test.jsonl", qa_rows(range(100, 102)))
    train_file = write_jsonl(tmp_path / "train" / "gsm8k_train.jsonl", qa_rows(range(3)))
    monkeypatch.setenv(BENCHMARKS_DIR_ENV, str(tmp_path / "benchmarks"))
    monkeypatch.delenv(TRAIN_DIR_ENV, raising=False)
    gsm8k = get_task("gsm8k")
    assert [p.reference for p in gsm8k.problems("train")] == ["1", "2", "3"]
    assert [p.reference for p in gsm8k.problems("test")] == ["101", "102"]
    assert gsm8k.split_source("train") == str(train_file.resolve())
    assert gsm8k.split_source("test") == str(test_file.resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_jsonl(elsewhere / "gsm8k_train.jsonl", qa_rows(range(7)))
    monkeypatch.setenv(TRAIN_DIR_ENV, str(elsewhere))  # an explicit train folder comes first
    assert len(get_task("gsm8k").problems("train")) == 7


@pytest.mark.skipif(not (SHARED / "train/gsm8k_train.jsonl").is_file(), reason="no shared GSM8K files")
def test_gsm8k_splits_from_the_shared_data(monkeypatch):
    monkeypatch.setenv(BENCHMARKS_DIR_ENV, str(SHARED / "benchmarks"))
    monkeypatch.delenv(TRAIN_DIR_ENV, raising=False)
    gsm8k = get_task("gsm8k")
    train, test = gsm8k.problems("train"), gsm8k.problems("test")
    assert (len(train), len(test)) == (7473, 1319) and train[0].reference == "72"
    assert not train_eval_overlap(gsm8k, "train", "test", train, test)  # the published splits are disjoint


# ------------------------------------------------------------------------------ GRPO on your own problems


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from helpers import build_checkpoint

    return build_checkpoint(tmp_path_factory.mktemp("files_grpo") / "model", seed=0, max_positions=1024)


class RecordingGenerator:
    """A rollout Generator that answers " <think> ok </think> <answer> j </answer>" for sample j and
    records the prompts it is asked for: rollouts (n = G > 1) apart from evaluations (greedy, n = 1)."""

    def __init__(self, tokenizer):
        self.tokenizer, self.rollouts, self.evals = tokenizer, [], []

    def generate(self, requests):
        from nanoseek.engine.protocol import Completion, TokenLogprob

        out = []
        for r_index, request in enumerate(requests):
            text = self.tokenizer.decode(request.prompt)
            (self.rollouts if request.params.n > 1 else self.evals).append(text)
            for j in range(request.params.n):
                answer = f" <think> ok </think> <answer> {j} </answer>"
                ids = self.tokenizer.encode_ordinary(answer)
                logprobs = [TokenLogprob(t, -1.0) for t in ids]
                out.append(
                    Completion(
                        answer, ids, "stop", len(request.prompt), logprobs, request_index=r_index, index=j
                    )
                )
        return out

    def stream(self, requests):
        raise NotImplementedError

    def sync_weights(self, model):
        pass

    def asked(self, texts: list[str], numbers) -> set[int]:
        """Which of the problems `numbers` the prompts `texts` asked."""
        found = {i for i in numbers for t in texts if question(i) in t}
        assert len(found) == len(set(texts)), "every prompt is one of the problems"
        return found


def grpo(base, out, spec, *extra, generator=True):
    from nanoseek.rl import GRPOTrainer, load_grpo_config
    from nanoseek.tokenizer import Tokenizer

    cfg = load_grpo_config(
        None,
        [
            f"run.out={out}", f"model.init={base}", f'task.name="{spec}"', "run.device=cpu", "run.progress=false",
            "rollout.group_size=2", "rollout.prompts_per_step=3", "rollout.max_new_tokens=16",
            "train.max_steps=2", "eval.every=0", "eval.problems=50", "cost.peak_flops=1e10", *extra,
        ],
    )  # fmt: skip
    recorder = RecordingGenerator(Tokenizer.from_dir(base)) if generator else None
    return GRPOTrainer(cfg, generator=recorder), recorder


@pytest.mark.parametrize("split", ["files", "holdout"])
def test_grpo_evaluates_only_problems_it_never_trained_on(base, tmp_path, split):
    if split == "files":
        train_file = write_jsonl(tmp_path / "train.jsonl", qa_rows(range(12)))
        test_file = write_jsonl(tmp_path / "test.jsonl", qa_rows(range(100, 105)))
        spec = f"problems?train={train_file}&test={test_file}&instruction="
        trained, held = set(range(12)), set(range(100, 105))
    else:
        path = write_jsonl(tmp_path / "all.jsonl", qa_rows(range(20)))
        spec = f"problems:{path}?holdout=0.25&seed=3&instruction="
        held = {int(p.prompt[8:11]) for p in task(spec).problems("test")}
        trained = set(range(20)) - held
        assert len(held) == 5
    trainer, recorder = grpo(base, tmp_path / "run", spec)
    summary = trainer.run()
    assert summary["step"] == 2 and summary["eval_problems"] == 5 and summary["train_eval_overlap"] == 0
    rolled, evaluated = (
        recorder.asked(recorder.rollouts, trained | held),
        recorder.asked(recorder.evals, trained | held),
    )
    assert len(recorder.rollouts) == 6 and rolled <= trained  # 2 steps x 3 prompts, all training problems
    assert evaluated == held and not rolled & evaluated  # start and end: every held-out problem, no other


def test_grpo_refuses_to_train_on_its_evaluation_problems(base, tmp_path, capsys):
    from nanoseek.rl.cli import grpo_main
    from nanoseek.train.config import ConfigError

    path = write_jsonl(tmp_path / "mine.jsonl", qa_rows(range(8)))
    # the run: one file, its test split trained on (task.train_split=test)
    with pytest.raises(ConfigError) as error:
        grpo(base, tmp_path / "a", f"problems:{path}?instruction=", "task.train_split=test", generator=False)
    message = str(error.value)
    assert f"train and eval read the same data ({path.resolve()})" in message
    assert "8 of the 8 evaluation problems are also training problems" in message
    assert "task.allow_train_on_eval=true (--allow-train-on-eval)" in message and "holdout=" in message
    # a copy under another name, with only some of the problems: found by their texts
    copy = write_jsonl(tmp_path / "copy.jsonl", qa_rows([2, 5, 50, 51]))
    with pytest.raises(ConfigError, match=r"train reads .*copy.jsonl, eval reads .*mine.jsonl; 2 of the 8"):
        grpo(base, tmp_path / "b", f"problems?train={copy}&test={path}", generator=False)
    # the command line says the same and exits 2, before it loads a model
    with pytest.raises(SystemExit) as exit_:
        grpo_main(
            [
                "--out",
                str(tmp_path / "c"),
                "--init",
                str(base),
                "--task",
                f"problems?train={path}&test={path}",
            ]
        )
    assert exit_.value.code == 2 and "--allow-train-on-eval" in capsys.readouterr().err
    # told so in so many words, it runs, and the summary says how many it trained on
    trainer, recorder = grpo(
        base,
        tmp_path / "d",
        f"problems:{path}?instruction=",
        "task.train_split=test",
        "task.allow_train_on_eval=true",
    )
    assert trainer.run()["train_eval_overlap"] == 8
    assert recorder.asked(recorder.rollouts, range(8)) <= recorder.asked(recorder.evals, range(8))


def test_cli_flag_allows_training_on_eval(tmp_path):
    from nanoseek.rl.cli import parse_args

    cfg, _ = parse_args(["--out", str(tmp_path), "--allow-train-on-eval", "--task", "problems:x.jsonl"])
    assert cfg.task.allow_train_on_eval and cfg.task.name == "problems:x.jsonl"
    assert not parse_args(["--out", str(tmp_path)])[0].task.allow_train_on_eval
