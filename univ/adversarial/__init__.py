"""Adversarial attacks and projections."""
