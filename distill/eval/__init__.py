"""Evaluation: decoding span scores into entities (windows merged) and span P/R/F1."""
