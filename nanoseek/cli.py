"""The `nanoseek` command: a thin dispatcher to each stage's own entry point.

    nanoseek <command> [args]        nanoseek <command> --help for its options

Each command's parsing and behaviour live beside the code they drive; this file only routes.
"""

from __future__ import annotations

import importlib
import sys

# command -> (module, function taking argv, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "info": ("nanoseek.model.info", "info_main", "parameters, FLOPs and KV cache of a preset or checkpoint"),
    "tokenizer train": (
        "nanoseek.tokenizer.train",
        "tokenizer_train_main",
        "train a byte-level BPE tokenizer",
    ),
    "tokenize": ("nanoseek.data.shards", "tokenize_main", "tokenize corpora into memmap token shards"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {text}" for name, (_, _, text) in COMMANDS.items())
    return f"usage: nanoseek <command> [args]\n\nDeepSeek-R1 in miniature.\n\ncommands:\n{rows}\n\nRun `nanoseek <command> --help` for a command's options."


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
            module, function, _ = COMMANDS[command]
            return getattr(importlib.import_module(module), function)(argv[words:]) or 0
    print(f"nanoseek: unknown command {' '.join(argv[:2])!r}\n\n{usage()}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
