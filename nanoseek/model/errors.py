"""CheckpointError: the one exception a model directory that cannot be loaded raises.

    from nanoseek.model import CheckpointError, DeepSeekV3
    try:
        model = DeepSeekV3.from_pretrained("runs/x/model")
    except CheckpointError as e:
        print(e)        # runs/x/model/config.json: hidden_size: expected a positive integer, got 'big'
        e.path, e.field, e.problem

Every way loading can fail on what is in the directory raises it, in one line naming the file, the
config field (where one is to blame) and what was expected: a missing directory, config.json or
weights file; a config.json that is not JSON or has a field of the wrong type or range; a config too
large for this machine's memory; a weights file that is not safetensors (truncated, empty, garbage);
weights that do not match the config (missing, unexpected or misshapen tensors). It subclasses
ValueError, so code that caught ValueError from a load still does. `nanoseek <command>` prints it as
`nanoseek <command>: error: <message>` and exits with status 2. The tokenizer.json and
generation_config.json of a model directory raise it too; the class lives in `nanoseek.errors`,
below the tokenizer, which may not import the model. `some` keeps a list of tensor names to one line.
"""

from nanoseek.errors import CheckpointError

__all__ = ["CheckpointError", "some"]


def some(names: list[str], shown: int = 3) -> str:
    """The first few names, then how many more: one line however many there are."""
    head = ", ".join(names[:shown])
    return f"{head} and {len(names) - shown} more" if len(names) > shown else head
