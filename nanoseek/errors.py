"""CheckpointError, defined here, below every layer, so that each loader of a model directory's files
raises the same type: the model (`nanoseek.model`, which exports it), the tokenizer
(`nanoseek.tokenizer`, which may not import the model) and the server's generation settings.

    from nanoseek.model import CheckpointError      # the documented import; this module is its home
    try:
        engine = Engine.from_pretrained("runs/x/model")
    except CheckpointError as e:
        print(e)        # runs/x/model/tokenizer.json: not a tokenizer file the `tokenizers` library reads (...)

See `nanoseek.model.errors` for everything that raises it. This module imports nothing.
"""

from __future__ import annotations

from pathlib import Path


class CheckpointError(ValueError):
    """A model directory (or one of its files) that cannot be loaded: `path` (the file or directory at
    fault), `field` (the field that probably disagrees, or None) and `problem` (what is wrong, what was
    expected). The message is one line, `<path>: <problem>`."""

    def __init__(self, path: str | Path, problem: str, field: str | None = None):
        self.path, self.problem, self.field = str(path), problem, field
        super().__init__(f"{path}: {problem}")
