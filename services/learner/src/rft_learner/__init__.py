"""RFT learner service."""
