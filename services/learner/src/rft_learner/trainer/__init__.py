"""The trainer: data, policy model, SFT and RL updates, evaluation, checkpoints, the job loop.

Everything here except loop.py is synchronous torch code that the loop runs off the
event loop; loop.py orchestrates rollout, grading, updates and weight pushes.
"""
