"""Shared library of the RFT services: server runtime, config, logging, metrics, clients."""
