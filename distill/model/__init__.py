"""The model: GlobalPointer span heads on any transformers encoder; encoders, offline models, shapes."""
