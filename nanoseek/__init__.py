"""nanoseek: DeepSeek-R1 in miniature.

Train a tokenizer, pretrain a DeepSeek-V3-architecture model (MLA, DeepSeekMoE, MTP), teach it to
reason with GRPO, distill it, evaluate it, serve it and rank it, on a laptop CPU or on GPUs.
Run `nanoseek --help` for the commands.
"""

__version__ = "0.1.0"
