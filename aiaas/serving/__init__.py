"""The data plane: ONNX Runtime predictor, micro-batcher, model cache, OIP v2 codec.

Nothing in this package imports torch or transformers (tests/serving checks it), so a
serving process starts in about a third of a second.
"""
