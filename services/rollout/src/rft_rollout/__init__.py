"""RFT rollout service."""
