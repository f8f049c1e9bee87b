"""Inference: streaming embed/predict (inputs → batches → outputs), int8 quantisation."""
