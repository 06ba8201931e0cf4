"""distill: teacher-student distillation for GlobalPointer named-entity recognition."""

__version__ = "0.1.0"
