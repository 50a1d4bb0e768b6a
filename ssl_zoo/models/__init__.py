"""Encoders, the heads' one configurable MLP, the method contract and the target (momentum) helpers."""
