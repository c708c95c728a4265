"""Training: the teacher detector, bottlenecks by distillation, entropy-coded bottlenecks."""
