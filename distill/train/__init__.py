"""Training: the one LightningModule, its losses, the teacher-logit cache, students, the run loop."""
