"""Data sets (a synthetic detection set, COCO-format loaders) and mAP evaluation."""
