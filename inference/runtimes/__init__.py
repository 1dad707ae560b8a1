"""Whole models on this workstation: torch, FP16, ONNX Runtime (FP32/INT8), and the fidelity gate each must pass."""
