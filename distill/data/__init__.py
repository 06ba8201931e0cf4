"""Data: the document type, readers for each format, tokenization into windows, the datamodule."""
