"""Planner fine-tuning: SFT and RRHF data, trainers and the evaluation harness."""
