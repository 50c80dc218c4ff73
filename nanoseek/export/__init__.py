"""nanoseek.export: a checkpoint as another engine's file format (layer: model + tokenizer, beside engine).

    nanoseek export gguf runs/sft --out sft.q8_0.gguf --type q8_0      # llama.cpp (llamacpp.py)

The model layer writes the tensors and hyperparameters (model/formats/gguf_export.py), the tokenizer
layer its vocabulary (tokenizer/gguf_vocab.py); this package joins the two and is the command.
"""
