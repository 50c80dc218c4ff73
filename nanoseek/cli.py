"""The `nanoseek` command: a thin dispatcher to each stage's own entry point.

    nanoseek <command> [args]        nanoseek <command> --help for its options

Each command's parsing and behaviour live beside the code they drive; this file only routes, and
turns an error in what the user gave (a model directory that does not load, a missing file, a bad
record or config key) into one line, `nanoseek <command>: error: <message>`, with exit status 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import sys

# command -> ("module:function", one-line help); the function takes the command's argv
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("nanoseek.model.info:info_main", "parameters, FLOPs and KV cache of a preset or checkpoint"),
    "tokenizer train": ("nanoseek.tokenizer.train:tokenizer_train_main", "train a byte-level BPE tokenizer"),
    "tokenize": ("nanoseek.data.shards:tokenize_main", "tokenize corpora into memmap token shards"),
    "pretrain": ("nanoseek.train.cli:pretrain_main", "pretrain a DeepSeek-V3 model from a recipe"),
    "sft": ("nanoseek.train.cli:sft_main", "supervised fine-tuning on chat data (files, folders, Hub ids)"),
    "grpo": ("nanoseek.rl.cli:grpo_main", "reinforcement learning with GRPO (R1-Zero and R1 recipes)"),
    "distill": ("nanoseek.distill.cli:distill_main", "R1-style distillation into a small dense student"),
    "eval": ("nanoseek.eval.cli:eval_main", "pass@1 / cons@k / pass@k on tasks, for a checkpoint or a URL"),
    "generate": ("nanoseek.engine.cli:generate_main", "generate from a prompt with the native engine"),
    "chat": ("nanoseek.engine.cli:chat_main", "chat in the terminal, thinking shown apart from the answer"),
    "serve": (
        "nanoseek.serve.cli:serve_main",
        "a DeepSeek/OpenAI-compatible HTTP server with a web chat page",
    ),
    "arena": ("nanoseek.arena.cli:arena_main", "blind battles, votes and a Bradley-Terry leaderboard"),
    "export gguf": (
        "nanoseek.export.llamacpp:export_gguf_main",
        "a checkpoint as a GGUF file that llama.cpp runs (f32, f16, q8_0, q4_0)",
    ),
    "recipe": (
        "nanoseek.repro.cli:recipe_main",
        "the public R1 results as one command each (list, run NAME [--dry-run])",
    ),
    "speedrun": (
        "nanoseek.speedrun.cli:speedrun_main",
        "the whole R1 story end to end (tokenizer to distilled student, evals, report) in one command",
    ),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items())
    return f"usage: nanoseek <command> [args]\n\nDeepSeek-R1 in miniature.\n\ncommands:\n{rows}\n\nRun `nanoseek <command> --help` for a command's options."


FILE_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)
# errors that describe the user's input, each naming its file or field: (module, class)
USER_ERRORS = (
    ("nanoseek.errors", "CheckpointError"),  # exported as nanoseek.model.CheckpointError
    ("nanoseek.records", "DataError"),  # every reader of data files raises it
    ("nanoseek.train.config", "ConfigError"),
)


def is_user_error(exc: Exception) -> bool:
    """A missing or unusable file, or one of USER_ERRORS; those are looked up only among the modules
    already imported (a module never imported cannot have raised its error), so checking imports nothing."""
    if isinstance(exc, FILE_ERRORS):
        return True
    return any(
        isinstance(exc, getattr(sys.modules[module], name))
        for module, name in USER_ERRORS
        if module in sys.modules
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from nanoseek import __version__

        print(f"nanoseek {__version__}")
        return 0
    for words in (2, 1):  # two-word commands first ("tokenizer train")
        command = " ".join(argv[:words])
        if command in COMMANDS:
            module, function = COMMANDS[command][0].split(":")
            try:
                result = getattr(importlib.import_module(module), function)(argv[words:])
            except Exception as exc:
                if not is_user_error(exc):
                    raise
                print(f"nanoseek {command}: error: {exc}", file=sys.stderr)
                return 2
            return result if isinstance(result, int) else 0
    print(f"nanoseek: unknown command {' '.join(argv[:2])!r}\n\n{usage()}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
