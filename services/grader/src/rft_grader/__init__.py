"""RFT grader service."""
